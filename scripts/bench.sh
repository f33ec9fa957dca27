#!/usr/bin/env bash
# The throughput benchmark: esmbench against PyTorch eager and a plain onnxruntime Python loop,
# in one go, on the same model, data and thread count; writes bench/results/YYYY-MM-DD-<label>.md (+ .json).
# This script owns the order of the runs and the work folder layout; scripts/bench_python.py runs the
# Python contenders and the fp32 ceiling, scripts/bench_report.py times every process and writes the file.
#
#   scripts/bench.sh                 the full run (10 to 25 minutes on 2 cores; run it on a quiet machine)
#   scripts/bench.sh --quick         small sizes, to check the script works (its numbers mean nothing)
#
# Sections: (1) the main model (default ../shared/models/esm2_t6_8M_seed0.onnx) on --rows synthetic
# Harvey-like nanobodies: esmbench, PyTorch eager (batch 32, file order), onnxruntime Python (batch 32 in
# file order; length-sorted under the token budget), onnxruntime alone on esmbench's own batches (the bound
# for any tool on this runtime), start-up on one row, the fp32 matmul ceiling, and
# esmbench on fp32 / --optimize / --quantize int8 / int8-vnni re-exports; (2) the tiny model on --tiny-rows (default 141,021,
# Harvey's size): the same contenders; (3) esmbench linearity on the tiny model at --linearity sizes, and
# on the main model at --linearity-main sizes when given (141,021 rows of ESM-2 8M take about 25 minutes on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() {
  cat <<'EOF'
usage: scripts/bench.sh [options]
  --model M.onnx         main model (default ../shared/models/esm2_t6_8M_seed0.onnx)
  --head H.json          its head (default: M.head.json next to it, else the model's metadata)
  --torch-source S       PyTorch weights: random-init:ARCH:seed=N or checkpoint:NAME_OR_DIR
                         (default: read from the model's export metadata or shared file name)
  --rows N               main data rows (default 2000)
  --tiny-model M.onnx    second section's model (default ../shared/models/esm2_tiny_seed0.onnx; 'none' skips)
  --tiny-head H.json     (default: next to it, else metadata)   --tiny-torch-source S
  --tiny-rows N          (default 141021)
  --linearity "N N"      extra esmbench-only sizes on the tiny model (default "1000 10000")
  --linearity-main "N N" esmbench-only sizes on the main model, run there and back (default none;
                         "1000 10000 141021" measures the issue's sizes where the model, not the fixed
                         start-up, dominates: about 30 minutes on 2 cores)
  --threads N            threads for every contender (default: physical cores, esmbench's default)
  --max-tokens N         esmbench and sorted-ORT token budget (default: esmbench's own default for the
                         model, which the sorted-ORT loop and the ceiling then use too)
  --no-variants          skip the fp32 / --optimize / --quantize int8 re-exports
  --calibration D.csv    sequences for the bias-corrected int8 variants (default 'held-out': 1,000
                         synthetic rows from another seed, like the scored rows but none of them;
                         'none' skips those variants)
  --fp16                 also run an --fp16 re-export (slow on CPU; meant for GPUs)
  --quick                --rows 200 --tiny-rows 3000 --linearity 1000 (checks the script, not the machine)
  --label L              results file label (default: CPU model, cores and ISA, e.g. amd-epyc-2c-avx2)
  --results DIR          where the results file goes (default bench/results)
  --work DIR             scratch folder (default: a new temp folder, removed unless --keep)
  --keep                 keep the work folder
  --python P             Python with the export requirements (default: $ESMBENCH_PYTHON, else
                         scripts/setup_export_env.sh)
EOF
}

shared="$root/../shared"
model="$shared/models/esm2_t6_8M_seed0.onnx"
head=""
torch_source=""
rows=2000
tiny_model="$shared/models/esm2_tiny_seed0.onnx"
tiny_head=""
tiny_torch_source=""
tiny_rows=141021
linearity="1000 10000"
linearity_main=""
threads=""
max_tokens=""
variants=1
calibration=held-out
fp16=0
quick=0
label=""
results="$root/bench/results"
work=""
keep=0
python="${ESMBENCH_PYTHON:-}"
command_line="scripts/bench.sh $*"

while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --head) head="$2"; shift 2 ;;
    --torch-source) torch_source="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --tiny-model) tiny_model="$2"; shift 2 ;;
    --tiny-head) tiny_head="$2"; shift 2 ;;
    --tiny-torch-source) tiny_torch_source="$2"; shift 2 ;;
    --tiny-rows) tiny_rows="$2"; shift 2 ;;
    --linearity) linearity="$2"; shift 2 ;;
    --linearity-main) linearity_main="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --no-variants) variants=0; shift ;;
    --calibration) calibration="$2"; shift 2 ;;
    --fp16) fp16=1; shift ;;
    --quick) quick=1; rows=200; tiny_rows=3000; linearity="1000"; shift ;;
    --label) label="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

say() { printf '\n== %s\n' "$*" >&2; }

[ -f "$model" ] || { echo "bench.sh: model $model not found (pass --model)" >&2; exit 2; }
if [ -z "$head" ] && [ -f "${model%.onnx}.head.json" ]; then head="${model%.onnx}.head.json"; fi
if [ "$tiny_model" != "none" ]; then
  [ -f "$tiny_model" ] || { echo "bench.sh: tiny model $tiny_model not found (pass --tiny-model none to skip)" >&2; exit 2; }
  if [ -z "$tiny_head" ] && [ -f "${tiny_model%.onnx}.head.json" ]; then tiny_head="${tiny_model%.onnx}.head.json"; fi
fi
if [ -z "$python" ]; then python="$(scripts/setup_export_env.sh)"; fi

say "building esmbench (release) and the ONNX Runtime library"
scripts/setup_runtime.sh
cargo build --release --quiet
esmbench="$root/target/release/esmbench"
ort_lib="$(ls "$root"/.ort/lib/libonnxruntime* 2>/dev/null | head -n 1 || true)"

if [ -z "$work" ]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/esmbench-bench.XXXXXX")"
  [ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
echo "bench.sh: work folder $work" >&2
# The results file names the scratch and results folders by role, not by their paths on this machine
# (the default results folder is the repository's own, and stays as it is).
command_line="${command_line//"--work $work"/--work WORK}"
[ "$results" = "$root/bench/results" ] || command_line="${command_line//"--results $results"/--results RESULTS}"

py() { "$python" "$@"; }
measure() { local json="$1"; shift; py scripts/bench_report.py measure --json "$json" -- "$@"; }
# One setting esmbench ran with (report.json's execution section) in section folder $1: key $2, else $3.
ran_with() {
  py -c 'import json, sys; print(json.load(open(sys.argv[1]))["execution"][sys.argv[2]])' "$1/esmbench/report.json" "$2" 2>/dev/null \
    || echo "$3"
}

py scripts/bench_report.py machine --json "$work/machine.json" --esmbench "$esmbench" ${ort_lib:+--ort-lib "$ort_lib"}
[ -n "$threads" ] || threads="$(py scripts/bench_report.py machine --print-threads)"
[ -n "$label" ] || label="$(py scripts/bench_report.py machine --print-label)"
[ "$quick" = 1 ] && label="$label-quick"
date="$(date +%Y-%m-%d)"
echo "bench.sh: $threads threads, label $label" >&2

# One section: settings, weights check, the contenders (+ start-up on one row), ceiling.
# $1 section name, $2 model, $3 head ('' = metadata), $4 torch source ('' = guess), $5 rows
run_section() {
  local name="$1" m="$2" h="$3" src="$4" n="$5"
  local dir="$work/$name"
  mkdir -p "$dir"
  [ -n "$src" ] || src="$(py scripts/bench_python.py source --model "$m")"
  local -a hargs=()
  [ -n "$h" ] && hargs=(--head "$h")

  say "$name: data ($n synthetic Harvey-like rows)"
  py scripts/make_synthetic_harvey.py --rows "$n" --seed 0 --out "$dir/data.csv"
  head -n 2 "$dir/data.csv" > "$dir/one.csv"

  say "$name: are the PyTorch weights ($src) the ONNX model's?"
  local -a reexport=()
  if [[ "$src" == random-init:* ]]; then
    # A fresh export of the same random init must give the very same initializers.
    local arch="${src#random-init:}"; local seed="${arch##*:seed=}"; arch="${arch%:seed=*}"
    py scripts/export_onnx.py --random-init "$arch" --seed "$seed" --out "$dir/reexport.onnx" > "$dir/reexport.log" 2>&1
    reexport=(--reexport "$dir/reexport.onnx")
  fi
  py scripts/bench_python.py verify --model "$m" --torch-source "$src" --threads "$threads" ${reexport[@]+"${reexport[@]}"} \
    --json "$dir/verify.json"

  local -a ours=("$esmbench" test --model "$m" ${hargs[@]+"${hargs[@]}"} --threads "$threads" ${max_tokens:+--max-tokens "$max_tokens"})
  say "$name: esmbench"
  measure "$dir/esmbench.measure.json" "${ours[@]}" --data "$dir/data.csv" --out "$dir/esmbench" > "$dir/esmbench.log" 2>&1 \
    || echo "bench.sh: esmbench failed, see $dir/esmbench.log" >&2
  tail -n 3 "$dir/esmbench.log" >&2
  measure "$dir/startup-esmbench.measure.json" "${ours[@]}" --data "$dir/one.csv" --out "$dir/startup-esmbench" > /dev/null 2>&1 || true
  # The budget esmbench chose (or was given) is the one the sorted onnxruntime loop and the ceiling use.
  local budget
  budget="$(ran_with "$dir" max_tokens "${max_tokens:-2048}")"
  py scripts/bench_python.py settings --model "$m" ${hargs[@]+"${hargs[@]}"} --data "$dir/data.csv" --torch-source "$src" \
    --threads "$threads" --max-tokens "$budget" --json "$dir/settings.json"

  say "$name: esmbench as it ran before parallel batches (one batch at a time on all threads, --max-tokens 2048)"
  measure "$dir/esmbench-serial.measure.json" "$esmbench" test --model "$m" ${hargs[@]+"${hargs[@]}"} --threads "$threads" \
    --parallel-batches 1 --max-tokens 2048 --data "$dir/data.csv" --out "$dir/esmbench-serial" > "$dir/esmbench-serial.log" 2>&1 \
    || echo "bench.sh: esmbench (serial) failed, see $dir/esmbench-serial.log" >&2
  tail -n 1 "$dir/esmbench-serial.log" >&2

  say "$name: esmbench --no-graph-rewrite (the file's graph as it is, without the load-time mask rewrite)"
  measure "$dir/esmbench-as-is.measure.json" "${ours[@]}" --no-graph-rewrite --data "$dir/data.csv" --out "$dir/esmbench-as-is" \
    > "$dir/esmbench-as-is.log" 2>&1 || echo "bench.sh: esmbench (as is) failed, see $dir/esmbench-as-is.log" >&2
  tail -n 1 "$dir/esmbench-as-is.log" >&2

  say "$name: esmbench --bootstrap 0 (no confidence intervals, which the Python contenders do not compute either)"
  measure "$dir/esmbench-no-ci.measure.json" "${ours[@]}" --bootstrap 0 --data "$dir/data.csv" --out "$dir/esmbench-no-ci" \
    > "$dir/esmbench-no-ci.log" 2>&1 || echo "bench.sh: esmbench (--bootstrap 0) failed, see $dir/esmbench-no-ci.log" >&2
  tail -n 1 "$dir/esmbench-no-ci.log" >&2

  say "$name: PyTorch eager"
  local -a torch_cmd=("$python" scripts/bench_python.py pytorch --model "$m" ${hargs[@]+"${hargs[@]}"} --torch-source "$src" --threads "$threads")
  measure "$dir/pytorch.measure.json" "${torch_cmd[@]}" --data "$dir/data.csv" --out "$dir/pytorch.csv" --json "$dir/pytorch.json" \
    || echo "bench.sh: PyTorch failed" >&2
  measure "$dir/startup-pytorch.measure.json" "${torch_cmd[@]}" --data "$dir/one.csv" --out "$dir/startup-pytorch.csv" || true

  local order
  for order in file sorted; do
    say "$name: onnxruntime Python, $order order"
    local -a ort_cmd=("$python" scripts/bench_python.py ort --model "$m" ${hargs[@]+"${hargs[@]}"} --threads "$threads" --order "$order" --max-tokens "$budget")
    measure "$dir/ort-$order.measure.json" "${ort_cmd[@]}" --data "$dir/data.csv" --out "$dir/ort-$order.csv" --json "$dir/ort-$order.json" \
      || echo "bench.sh: onnxruntime Python ($order) failed" >&2
    measure "$dir/startup-ort-$order.measure.json" "${ort_cmd[@]}" --data "$dir/one.csv" --out "$dir/startup-ort-$order.csv" || true
  done

  # What no tool on this runtime could beat: onnxruntime alone on esmbench's batches, through the graph
  # esmbench runs (its load-time rewrite, which simplify_attention_mask.py writes to a file), with as many
  # batches at once as esmbench ran, inputs padded before the clock starts.
  say "$name: onnxruntime alone on esmbench's batches (the bound for any tool on this runtime)"
  local parallel bound_model="$dir/rewritten.onnx" profile_rows=500
  [ "$name" = tiny ] && profile_rows=5000
  parallel="$(ran_with "$dir" parallel_batches 1)"
  py scripts/simplify_attention_mask.py "$m" "$bound_model" > "$dir/rewritten.log" 2>&1 || bound_model="$m"
  measure "$dir/ort-bound.measure.json" "$python" scripts/bench_python.py bound --model "$bound_model" ${hargs[@]+"${hargs[@]}"} \
    --threads "$threads" --parallel "$parallel" --max-tokens "$budget" --data "$dir/data.csv" --out "$dir/ort-bound.csv" \
    --json "$dir/ort-bound.json" || echo "bench.sh: onnxruntime alone (bound) failed" >&2
  # Where the time inside the model goes: the same batches again with ONNX Runtime's profiler on, on the
  # first rows only (the trace holds one event per kernel run).
  say "$name: onnxruntime's kernel time by op type (profiler, first $profile_rows rows)"
  py scripts/bench_python.py profile --model "$bound_model" --data "$dir/data.csv" --rows "$profile_rows" \
    --threads "$threads" --parallel "$parallel" --max-tokens "$budget" --torch-source "$src" --json "$dir/profile.json" >&2 \
    || echo "bench.sh: the profile failed" >&2

  if [ "$name" = main ]; then
    # Only for the main model: the tiny model's matmuls are too small to measure a compute ceiling;
    # it is bound by per-batch overhead.
    say "$name: fp32 matmul ceiling"
    py scripts/bench_python.py ceiling --threads "$threads" --torch-source "$src" --data "$dir/data.csv" \
      --max-tokens "$budget" --parallel "$parallel" --json "$dir/ceiling.json"
  fi
  echo "$src" > "$dir/torch_source"
}

# esmbench on a re-export of the main model with one export option; $1 variant name, $2.. export flags.
run_variant() {
  local name="$1"; shift
  local dir="$work/variants/$name" src
  src="$(cat "$work/main/torch_source")"
  mkdir -p "$dir"
  say "variant $name: export_onnx.py $*"
  local -a from=() hargs=()
  case "$src" in
    random-init:*) local arch="${src#random-init:}"; from=(--random-init "${arch%:seed=*}" --seed "${arch##*:seed=}") ;;
    checkpoint:*) from=(--checkpoint "${src#checkpoint:}") ;;
  esac
  [ -n "$head" ] && hargs=(--head "$head")
  if ! py scripts/export_onnx.py ${from[@]+"${from[@]}"} ${hargs[@]+"${hargs[@]}"} "$@" --out "$dir/model.onnx" > "$dir/export.log" 2>&1; then
    echo "bench.sh: the $name export failed (see the results file)" >&2
    return 0
  fi
  grep -E "check:|fusions|bias correction" "$dir/export.log" >&2 || true
  measure "$dir/esmbench.measure.json" "$esmbench" test --model "$dir/model.onnx" --threads "$threads" \
    ${max_tokens:+--max-tokens "$max_tokens"} --data "$work/main/data.csv" --out "$dir/esmbench" > "$dir/esmbench.log" 2>&1 || true
  tail -n 2 "$dir/esmbench.log" >&2
}

# esmbench on the main model file itself after scripts/simplify_attention_mask.py (no re-export).
run_simplified() {
  local dir="$work/variants/simplified"
  mkdir -p "$dir"
  say "variant simplified: simplify_attention_mask.py on the main model"
  if ! py scripts/simplify_attention_mask.py "$model" "$dir/model.onnx" > "$dir/export.log" 2>&1; then
    echo "bench.sh: simplify_attention_mask.py failed (see the results file)" >&2
    return 0
  fi
  grep -E "check:" "$dir/export.log" >&2 || true
  local -a hargs=()
  [ -n "$head" ] && hargs=(--head "$head")
  measure "$dir/esmbench.measure.json" "$esmbench" test --model "$dir/model.onnx" ${hargs[@]+"${hargs[@]}"} \
    --threads "$threads" ${max_tokens:+--max-tokens "$max_tokens"} --data "$work/main/data.csv" --out "$dir/esmbench" \
    > "$dir/esmbench.log" 2>&1 || true
  tail -n 2 "$dir/esmbench.log" >&2
}

if [ "$calibration" != none ] && [ "$calibration" != held-out ] && [ ! -f "$calibration" ]; then
  echo "bench.sh: calibration set $calibration not found; the bias-corrected int8 variants are skipped" >&2
  calibration=none
fi
calibration_note="$calibration"
if [ "$calibration" = held-out ]; then
  # Calibrate as the README advises: on sequences of the kind scored, never on the scored rows.
  mkdir -p "$work/variants"
  calibration="$work/variants/calibration.csv"
  py scripts/make_synthetic_harvey.py --rows 1000 --seed 1 --out "$calibration" > /dev/null
  calibration_note="1000 synthetic Harvey-like rows (seed 1; the scored rows are seed 0)"
fi

py - "$work/settings.json" "$date" "$label" "$quick" "$command_line" "$threads" "$max_tokens" "$calibration_note" <<'PY'
import json, sys
out, date, label, quick, command, threads, max_tokens, calibration = sys.argv[1:]
json.dump({"date": date, "label": label, "quick": quick == "1", "command": command,
           "threads": int(threads), "max_tokens": int(max_tokens) if max_tokens else "esmbench default",
           "calibration": calibration},
          open(out, "w"), indent=1)
PY
run_section main "$model" "$head" "$torch_source" "$rows"
if [ "$variants" = 1 ]; then
  # The same weights through this project's export (its attention mask traces into fewer nodes).
  run_simplified
  run_variant reexport
  run_variant optimize --optimize
  # The bench reports int8's probability drift rather than letting the export's check refuse the file.
  run_variant int8 --quantize int8 --tolerance 1
  run_variant int8-vnni --quantize int8-vnni --tolerance 1
  if [ "$calibration" != none ]; then
    run_variant int8-cal --quantize int8 --tolerance 1 --calibration "$calibration"
    run_variant int8-vnni-cal --quantize int8-vnni --tolerance 1 --calibration "$calibration"
    run_variant int8-mixed --quantize int8 --tolerance 1 --calibration "$calibration" --keep-fp32 attention-output
    run_variant int8-vnni-mixed --quantize int8-vnni --tolerance 1 --calibration "$calibration" --keep-fp32 attention-output
  fi
fi
[ "$fp16" = 1 ] && run_variant fp16 --fp16

# One esmbench-only linearity run: $1 its folder, $2 model, $3 head ('' = metadata), $4 rows.
run_linearity() {
  local dir="$1" m="$2" h="$3" n="$4"
  mkdir -p "$dir"
  py scripts/make_synthetic_harvey.py --rows "$n" --seed 0 --out "$dir/data.csv" > /dev/null
  measure "$dir/esmbench.measure.json" "$esmbench" test --model "$m" ${h:+--head "$h"} \
    --threads "$threads" ${max_tokens:+--max-tokens "$max_tokens"} --data "$dir/data.csv" --out "$dir/esmbench" > "$dir/esmbench.log" 2>&1 \
    || echo "bench.sh: esmbench failed on $n rows of $(basename "$m")" >&2
}

if [ "$tiny_model" != "none" ]; then
  run_section tiny "$tiny_model" "$tiny_head" "$tiny_torch_source" "$tiny_rows"
  for n in $linearity; do
    say "linearity: esmbench, tiny model, $n rows"
    run_linearity "$work/linearity/$n" "$tiny_model" "$tiny_head" "$n"
  done
fi

# The sizes run there and back (1k 10k 141k 10k 1k): this VM's speed drifts by ~10% over the minutes a
# large run takes, and a drift that is linear in time then weighs on every size's mean alike.
read -r -a there <<< "$linearity_main"
back=()
for ((i = ${#there[@]} - 2; i >= 0; i--)); do back+=("${there[i]}"); done
for n in ${there[@]+"${there[@]}"} ${back[@]+"${back[@]}"}; do
  dir="$work/linearity-main/$n"
  k=1
  while [ -d "$dir" ]; do k=$((k + 1)); dir="$work/linearity-main/$n-run$k"; done
  say "linearity: esmbench, main model, $n rows (${dir##*/})"
  run_linearity "$dir" "$model" "$head" "$n"
done

say "results"
py scripts/bench_report.py report --work "$work" --out "$results/$date-$label.md"
