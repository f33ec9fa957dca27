#!/usr/bin/env bash
# The GPU benchmark: first the committed micro fixture on CUDA against its PyTorch reference (IO binding on
# and off; it stops if they differ by more than 1e-5), then esmbench on CUDA (fp16 export, with and without
# the IO binding over page-locked host memory) against PyTorch eager on the same GPU (float16, batches of 32
# in file order, the old pipeline's way), on the same random-init ESM-2 graph and the same synthetic
# Harvey-like nanobodies. Writes a results file (markdown + json) and prints the table.
#
#   ORT_DYLIB_PATH=.../libonnxruntime.so.1.31.1 scripts/bench_gpu.sh [--arch esm2_t33_650M] [--rows 20000]
#
# Needs: the onnxruntime-gpu 1.31.1 libraries (scripts/setup_runtime.sh --gpu puts them in .ort/lib), the
# CUDA 13 libraries they load (cuDNN 9, cuBLAS, cuFFT, cuRAND, the CUDA runtime: the nvidia-*-cu13 pip
# packages that PyTorch's CUDA wheels bring are found automatically), a Python with torch (CUDA),
# transformers, onnx and onnxruntime (scripts/requirements-export.txt), and a release build of esmbench.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

arch=esm2_t33_650M
device=cuda
rows=20000
max_tokens="16384 65536"
python="${ESMBENCH_PYTHON:-python3}"
esmbench="$root/target/release/esmbench"
work=""
results="$root/bench/results"
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;   # cpu: checks the script on a machine without a GPU
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --esmbench) esmbench="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "bench_gpu: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$esmbench" ] || { echo "bench_gpu: $esmbench is missing; run cargo build --release" >&2; exit 2; }
[ -n "$work" ] || work="$(mktemp -d)"
mkdir -p "$work" "$results"

# The CUDA libraries that pip's nvidia-* packages carry, for ONNX Runtime's CUDA provider.
nvidia_libs="$("$python" scripts/nvidia_libs.py)"
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

log() { echo "bench_gpu: $*" >&2; }

log "data: $rows synthetic Harvey-like rows"
"$python" scripts/make_synthetic_harvey.py --rows "$rows" --seed 0 --out "$work/data.csv"
"$python" - "$work/head.json" "$arch" <<'PY'
import json, sys
import numpy as np
sys.path.insert(0, "scripts")
import export_onnx as ex
path, arch = sys.argv[1], sys.argv[2]
hidden = ex.ARCHS[arch][1]
coef = np.random.default_rng(0).normal(0.0, 0.05, hidden)
json.dump({"type": "logistic_regression", "pooling": "mean_residues", "threshold": 0.5,
           "coef": coef.tolist(), "intercept": 0.0}, open(path, "w"))
PY

# Parity first, so a broken provider fails in seconds rather than after the export: the committed micro fixture
# (float32) on this device, with and without the IO binding, against its PyTorch reference probabilities.
log "parity: tests/fixtures/esm2_micro.onnx on $device, IO binding on and off, against its PyTorch reference"
"$python" - "$work/micro.csv" <<'PY'
import csv, json, sys
reference = json.load(open("tests/fixtures/esm2_micro.reference.json"))["sequences"]
with open(sys.argv[1], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "sequence", "label"])
    w.writerows([i, r["sequence"], i % 2] for i, r in enumerate(reference))
PY
for binding in iobinding plain; do
  flag=""; [ "$binding" = plain ] && flag="--no-io-binding"
  "$esmbench" test --model tests/fixtures/esm2_micro.onnx --head tests/fixtures/esm2_micro.head.json \
    --data "$work/micro.csv" --device "$device" --bootstrap 0 $flag --out "$work/micro-$binding" \
    >"$work/micro-$binding.log" 2>&1 || { cat "$work/micro-$binding.log" >&2; exit 1; }
done
"$python" - "$work" <<'PY'
import csv, json, pathlib, sys
work = pathlib.Path(sys.argv[1])
reference = json.load(open("tests/fixtures/esm2_micro.reference.json"))["sequences"]
parity = {}
for binding in ("iobinding", "plain"):
    rows = list(csv.DictReader(open(work / f"micro-{binding}" / "predictions.csv")))
    assert len(rows) == len(reference), f"micro-{binding}: {len(rows)} of {len(reference)} rows"
    parity[binding] = max(abs(float(r["probability"]) - reference[int(r["id"])]["probability"]) for r in rows)
    print(f"bench_gpu: parity {binding}: max |p - PyTorch| = {parity[binding]:.2e} over {len(rows)} rows", file=sys.stderr)
(work / "parity.json").write_text(json.dumps(parity))
# float32 in float32 (TF32 off) lands near 1e-7; TF32 would give about 1e-4.
if max(parity.values()) > 1e-5:
    sys.exit("bench_gpu: the micro fixture is off its PyTorch reference by more than 1e-5")
PY

t0="$(date +%s)"
if [ -f "$work/model.onnx" ] && [ "$(cat "$work/model.arch" 2>/dev/null)" = "$arch" ]; then
  log "export: reusing $work/model.onnx ($arch) from an earlier run in this work folder"
else
  log "export: $arch random-init seed 0, --fp16 (checked against PyTorch float32)"
  "$python" scripts/export_onnx.py --random-init "$arch" --seed 0 --fp16 --check-rows 0 \
    --torch-threads "$(nproc)" --head "$work/head.json" --out "$work/model.onnx"
  echo "$arch" >"$work/model.arch"
fi
t1="$(date +%s)"

declare -a names=()
run_esmbench() {
  local name="$1"; shift
  log "esmbench $name"
  "$esmbench" test --model "$work/model.onnx" --data "$work/data.csv" --device "$device" \
    --out "$work/$name" "$@" >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; exit 1; }
  names+=("$name")
}
for budget in $max_tokens; do
  run_esmbench "esmbench-iobinding-$budget" --max-tokens "$budget"
  run_esmbench "esmbench-plain-$budget" --max-tokens "$budget" --no-io-binding
done

log "PyTorch eager float16 on $device, batch 32, file order"
"$python" scripts/bench_python.py pytorch --data "$work/data.csv" --head "$work/head.json" \
  --torch-source "random-init:$arch:seed=0" --threads "$(nproc)" --batch 32 --device "$device" --dtype float16 \
  --out "$work/pytorch.csv" --json "$work/pytorch.json"

"$python" - "$work" "$results" "$arch" "$rows" "$((t1 - t0))" "${names[@]}" <<'PY'
import csv, datetime, json, pathlib, subprocess, sys
import numpy as np
work, results, arch, rows, export_s = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
names = sys.argv[6:]
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except FileNotFoundError:
    gpu = "none (nvidia-smi not found)"
def proba(path, column="probability"):
    with open(path) as f:
        return np.array([float(r[column]) for r in csv.DictReader(f)])
torch_p = proba(work / "pytorch.csv")
torch_json = json.loads((work / "pytorch.json").read_text())
torch_rate = torch_json["rows"] / torch_json["loop_seconds"]
table = []
for name in names:
    report = json.loads((work / name / "report.json").read_text())
    perf, ex = report["performance"], report["execution"]
    p = proba(work / name / "predictions.csv")
    table.append({
        "contender": name, "execution_provider": ex["execution_provider"], "io_binding": ex["io_binding"],
        "max_tokens": ex["max_tokens"], "seq_per_s": perf["sequences_per_second"],
        "wall_s": perf["wall_seconds"], "load_s": perf["model_load_seconds"],
        "inference_s": perf["inference_seconds"], "peak_rss_mb": perf["peak_rss_bytes"] / 2**20,
        "padding_efficiency": perf["padding_efficiency"], "ratio_vs_pytorch": perf["sequences_per_second"] / torch_rate,
        "max_abs_diff_vs_pytorch_fp16": float(np.abs(p - torch_p).max()),
        "label_agreement": float(((p > 0.5) == (torch_p > 0.5)).mean()),
    })
table.append({"contender": "pytorch-eager-fp16-batch32", "seq_per_s": torch_rate, "wall_s": torch_json["loop_seconds"],
              "load_s": torch_json["load_seconds"], "ratio_vs_pytorch": 1.0})
parity = json.loads((work / "parity.json").read_text())
date = datetime.date.today().isoformat()
out = results / f"{date}-gpu-{arch}.md"
lines = [f"# esmbench GPU benchmark, {date}", "", f"- GPU: {gpu}", f"- model: {arch} random-init, --fp16 export" + (f" (export + check {float(export_s):.0f} s)" if float(export_s) > 1 else " (reused from an earlier run)"),
         f"- data: {rows} synthetic Harvey-like nanobodies (scripts/make_synthetic_harvey.py --seed 0)",
         "- parity: tests/fixtures/esm2_micro.onnx (float32) on this device, max |p - PyTorch reference| "
         f"{parity['iobinding']:.1e} with the IO binding, {parity['plain']:.1e} without", "",
         "| contender | max_tokens | seq/s | x PyTorch | wall s | load s | in model s | peak RSS MB | max abs diff vs PyTorch fp16 | label agreement |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for r in table:
    lines.append("| {} | {} | {:.0f} | {:.2f} | {:.1f} | {:.1f} | {} | {} | {} | {} |".format(
        r["contender"], r.get("max_tokens", "32 rows"), r["seq_per_s"], r["ratio_vs_pytorch"], r["wall_s"], r["load_s"],
        f'{r["inference_s"]:.1f}' if "inference_s" in r else "", f'{r["peak_rss_mb"]:.0f}' if "peak_rss_mb" in r else "",
        f'{r["max_abs_diff_vs_pytorch_fp16"]:.2e}' if "max_abs_diff_vs_pytorch_fp16" in r else "",
        f'{r["label_agreement"]:.4f}' if "label_agreement" in r else ""))
out.write_text("\n".join(lines) + "\n")
out.with_suffix(".json").write_text(json.dumps({"gpu": gpu, "arch": arch, "rows": rows, "micro_fixture_parity": parity, "runs": table}, indent=1) + "\n")
print("\n".join(lines))
print(f"\nwrote {out}")
PY
