#!/usr/bin/env bash
# The GPU parity check and token-budget sweep: the ../shared encoders (transformers' exports, so the
# load-time attention-mask rewrite applies) scored on CUDA with and without the rewrite and the IO binding,
# and on CPU, against the PyTorch + scikit-learn reference probabilities; then ESM-2 8M on synthetic
# nanobodies at several token budgets, beside PyTorch eager float32 on the same GPU (batches of 32).
# Prints both tables and writes them to --results.
#
#   ORT_DYLIB_PATH=.../libonnxruntime.so.1.31.1 scripts/gpu_parity.sh --shared ../shared [--rows 50000]
#
# Needs what scripts/bench_gpu.sh needs: the onnxruntime-gpu 1.31.1 libraries, the CUDA 13 libraries
# (found in pip's nvidia-* packages), a Python with numpy, torch and transformers, a release build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

shared=""
rows=50000
budgets="2048 8192 16384 65536"
device=cuda
python="${ESMBENCH_PYTHON:-python3}"
esmbench="$root/target/release/esmbench"
work=""
results=""
while [ $# -gt 0 ]; do
  case "$1" in
    --shared) shared="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --budgets) budgets="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;   # cpu: checks the script on a machine without a GPU
    --python) python="$2"; shift 2 ;;
    --esmbench) esmbench="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "gpu_parity: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$shared" ] && [ -d "$shared/models/reference" ] || { echo "gpu_parity: --shared DIR must hold models/ and datasets/" >&2; exit 2; }
[ -x "$esmbench" ] || { echo "gpu_parity: $esmbench is missing; run cargo build --release" >&2; exit 2; }
[ -n "$work" ] || work="$(mktemp -d)"
mkdir -p "$work/parity" "$work/budgets"
nvidia_libs="$("$python" scripts/nvidia_libs.py)"
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log() { echo "gpu_parity: $*" >&2; }

for model in esm2_tiny_seed0 esm2_t6_8M_seed0; do
  for dataset in jain_86 shehata_398 boughter_914 harvey_lowthroughput_48; do
    for variant in cpu rewrite as-is no-io-binding; do
      case $variant in
        cpu) flags=(--device cpu) ;;
        rewrite) flags=(--device "$device") ;;
        as-is) flags=(--device "$device" --no-graph-rewrite) ;;
        no-io-binding) flags=(--device "$device" --no-io-binding) ;;
      esac
      out="$work/parity/$model.$dataset.$variant"
      log "$model $dataset $variant"
      "$esmbench" test --model "$shared/models/$model.onnx" --head "$shared/models/$model.head.json" \
        --data "$shared/datasets/$dataset.csv" --bootstrap 0 --out "$out" "${flags[@]}" >"$out.log" 2>&1 \
        || { cat "$out.log" >&2; exit 1; }
    done
  done
done

log "data: $rows synthetic Harvey-like rows"
"$python" scripts/make_synthetic_harvey.py --rows "$rows" --seed 0 --out "$work/budgets/data.csv"
model=esm2_t6_8M_seed0
for round in 1 2; do
  for budget in $budgets; do
    log "esmbench $model --max-tokens $budget, round $round"
    out="$work/budgets/$budget.$round"
    "$esmbench" test --model "$shared/models/$model.onnx" --head "$shared/models/$model.head.json" \
      --data "$work/budgets/data.csv" --device "$device" --max-tokens "$budget" --out "$out" >"$out.log" 2>&1 \
      || { cat "$out.log" >&2; exit 1; }
  done
done
log "PyTorch eager float32 on $device, batch 32, file order"
"$python" scripts/bench_python.py pytorch --data "$work/budgets/data.csv" --head "$shared/models/$model.head.json" \
  --torch-source "random-init:esm2_t6_8M:seed=0" --threads "$(nproc)" --batch 32 --device "$device" \
  --dtype float32 --out "$work/budgets/pytorch.csv" --json "$work/budgets/pytorch.json"

"$python" - "$work" "$shared" "$rows" "$results" <<'PY'
import csv, json, pathlib, subprocess, sys
import numpy as np
work, shared, rows, results = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def proba(path):
    with open(path) as f:
        return np.array([float(r["probability"]) for r in csv.DictReader(f)])
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except FileNotFoundError:
    gpu = "none (nvidia-smi not found)"
lines = [f"- GPU: {gpu}", "", "| model | dataset | run | provider | rewrite | IO binding | max abs diff vs reference | vs CPU | labels |",
         "|---|---|---|---|---|---|---|---|---|"]
parity = []
for d in sorted(p for p in (work / "parity").iterdir() if p.is_dir()):
    model, dataset, variant = d.name.split(".")
    ex = json.loads((d / "report.json").read_text())["execution"]
    p, ref = proba(d / "predictions.csv"), proba(shared / "models/reference" / f"{model}.{dataset}.proba.csv")
    cpu = proba(work / "parity" / f"{model}.{dataset}.cpu" / "predictions.csv")
    row = {"model": model, "dataset": dataset, "run": variant, "provider": ex["execution_provider"],
           "rewrite": bool(ex.get("graph_rewrite")), "io_binding": ex["io_binding"],
           "max_abs_diff_reference": float(np.abs(p - ref).max()), "max_abs_diff_cpu": float(np.abs(p - cpu).max()),
           "labels_agree": int(((p > 0.5) == (ref > 0.5)).sum()), "rows": len(ref)}
    parity.append(row)
    lines.append(f"| {model} | {dataset} | {variant} | {row['provider']} | {row['rewrite']} | {row['io_binding']} | "
                 f"{row['max_abs_diff_reference']:.2e} | {row['max_abs_diff_cpu']:.2e} | {row['labels_agree']}/{row['rows']} |")
torch = json.loads((work / "budgets/pytorch.json").read_text())
torch_rate, torch_p = torch["rows"] / torch["loop_seconds"], proba(work / "budgets/pytorch.csv")
lines += ["", f"ESM-2 8M float32, {rows} synthetic nanobodies; PyTorch eager float32, batch 32: {torch_rate:.0f} seq/s (its loop)", "",
          "| max_tokens | round | seq/s e2e | x PyTorch | in model s | wall s | load s | peak RSS MiB | max abs diff vs PyTorch |",
          "|---|---|---|---|---|---|---|---|---|"]
budgets = []
for d in sorted((p for p in (work / "budgets").iterdir() if p.is_dir()), key=lambda p: tuple(map(int, p.name.split(".")))):
    budget, rnd = map(int, d.name.split("."))
    perf = json.loads((d / "report.json").read_text())["performance"]
    row = {"max_tokens": budget, "round": rnd, "seq_per_s": perf["sequences_per_second"], "inference_s": perf["inference_seconds"],
           "wall_s": perf["wall_seconds"], "load_s": perf["model_load_seconds"], "peak_rss_mib": perf["peak_rss_bytes"] / 2**20,
           "max_abs_diff_pytorch": float(np.abs(proba(d / "predictions.csv") - torch_p).max())}
    budgets.append(row)
    lines.append(f"| {budget} | {rnd} | {row['seq_per_s']:.0f} | {row['seq_per_s'] / torch_rate:.2f} | {row['inference_s']:.2f} | "
                 f"{row['wall_s']:.2f} | {row['load_s']:.2f} | {row['peak_rss_mib']:.0f} | {row['max_abs_diff_pytorch']:.2e} |")
print("\n".join(lines))
if results:
    out = pathlib.Path(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"gpu": gpu, "rows": rows, "pytorch_seq_per_s": torch_rate,
                                                    "parity": parity, "budgets": budgets}, indent=1) + "\n")
    print(f"\nwrote {out.with_suffix('.md')}")
PY
