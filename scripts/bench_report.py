"""The bookkeeping side of scripts/bench.sh: timing wrapper, machine description, comparisons, results file.

This file owns:

* ``measure --json F -- CMD...``  runs CMD as a child and records its wall time (process start to
  exit) and peak RSS (the child's own rusage, from os.wait4), so every contender is measured the
  same way whatever language it is written in; exits with CMD's status;
* ``machine --json F``  CPU model, logical and physical cores, AVX2/AVX-512/AMX flags, RAM, OS,
  load average, the default thread count (physical cores this process may use), tool versions;
* ``report --work DIR``  reads what bench.sh left in its work folder and writes the dated
  Markdown results file (and the same numbers as JSON next to it), ending with each target of the
  throughput issue, the figure this run measured for it and whether it is met.

Definitions used in the results file:

* seq/s (end to end) = rows / process wall time, imports, model load and output included: what a
  user waits for. seq/s (loop) = rows / time from the first batch to the last prediction
  (esmbench: wall_seconds - model_load_seconds from report.json).
* outside the model = (process wall time - time inside the model) per 1,000 rows: process start, imports,
  model load, reading, tokenising, batching, the head and the outputs. Time inside the model is the
  model call and the residue-mean pooling of its output, for every contender: esmbench's report.json
  inference_seconds (wall time with any batch in flight; its backend pools before it returns) and, for
  the Python contenders, the summed time of their session.run / model(...) calls with the pooling after
  each. Runs before 2026-11-26 run 12 left the Python contenders' pooling outside the model.
* start-up = process wall time of the same command on a one-row CSV (process start to the first,
  and only, prediction written).
* % in model = esmbench report.json performance.inference_seconds / wall_seconds.
* onnxruntime alone (bound) = esmbench's own batches (length-sorted under its token budget), padded
  before the clock starts and run as many at once as esmbench ran, through the graph esmbench runs
  (its load-time rewrite, written by simplify_attention_mask.py); only session.run and the pooling are
  timed. Its seq/s (loop) is what no tool on this runtime and graph can beat on this machine; its end
  to end and outside-the-model figures include the untimed padding.
* fp32 ceiling = best measured float32 matmul GFLOP/s on the same threads (PyTorch, numpy, and ONNX
  Runtime's own MatMul run as esmbench ran its batches; runs before 2026-12-07 measured PyTorch and numpy
  only) / FLOPs per sequence (scripts/bench_python.py flops_per_sequence, at the data's mean token count).
* inside the model, by op type = the bound's batches and graph run again on the first rows with ONNX
  Runtime's profiler on (scripts/bench_python.py profile): each kernel's time summed by op type, over all
  threads that ran batches at once. A MatMul's GFLOP/s = 2 x output elements x inner dimension / its
  kernel time, on the threads one kernel ran on. The profiler's own cost is in these times.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path


def _dump(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- measure


def speed_probe() -> float:
    """GFLOP/s of a fixed float32 matmul workload. Run just before every measured process, so a virtual machine
    whose speed changes during the benchmark (other tenants on the host) shows it in the results file: the
    contenders are timed minutes apart, and their ratios are only as good as the machine's steadiness."""
    import numpy as np

    n, rounds = 512, 20
    a = np.full((n, n), 0.5, dtype=np.float32)
    a @ a
    speeds = []
    for _ in range(5):  # the median of five short windows, about 0.3 s in all
        start = time.perf_counter()
        for _ in range(rounds):
            a @ a
        speeds.append(rounds * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return sorted(speeds)[2]


def cmd_measure(args) -> int:
    command = args.command[1:] if args.command and args.command[0] == "--" else args.command
    if not command:
        raise SystemExit("bench_report measure: no command after --")
    probe = speed_probe()
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is KiB on Linux and bytes on macOS.
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    _dump(args.json, {"command": command, "wall_seconds": wall, "peak_rss_bytes": peak,
                      "exit_code": child.returncode, "user_seconds": usage.ru_utime,
                      "system_seconds": usage.ru_stime, "probe_gflops": probe})
    return child.returncode


# ----------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def physical_cores() -> int:
    """Physical cores this process may run on (esmbench's default --threads follows the same rule)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = set()
    physical_id = core_id = None
    for line in _read("/proc/cpuinfo").splitlines() + [""]:
        if line.startswith("physical id"):
            physical_id = line.split(":")[1].strip()
        elif line.startswith("core id"):
            core_id = line.split(":")[1].strip()
        elif not line.strip():
            if core_id is not None:
                cores.add((physical_id, core_id))
            physical_id = core_id = None
    total_logical = os.cpu_count() or 1
    if not cores:
        sysctl = _run(["sysctl", "-n", "hw.physicalcpu"])
        physical = int(sysctl) if sysctl.isdigit() else total_logical
    else:
        physical = len(cores)
    per_core = max(1, total_logical // max(1, physical))
    return max(1, min(physical, logical // per_core if logical >= per_core else logical))


def cmd_machine(args) -> int:
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    model = model.group(1).strip() if model else (_run(["sysctl", "-n", "machdep.cpu.brand_string"]) or platform.processor())
    flags_line = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    wanted = ["avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"]
    if not flags and sys.platform == "darwin":
        flags = set(_run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"]).lower().split())
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    ram = int(mem.group(1)) * 1024 if mem else int(_run(["sysctl", "-n", "hw.memsize"]) or 0)
    os_release = re.search(r'^PRETTY_NAME="?([^"\n]+)', _read("/etc/os-release"), re.M)
    versions = {"python": platform.python_version()}
    for module in ("torch", "transformers", "onnxruntime", "onnx", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "not installed"
    if args.esmbench:
        versions["esmbench"] = _run([args.esmbench, "--version"]).removeprefix("esmbench ")
    # The crate version stays 0.1.0 across changes; the commit says which code a results file measured.
    commit = _run(["git", "-C", str(Path(__file__).resolve().parent.parent), "describe", "--always", "--dirty"])
    if commit:
        versions["esmbench commit"] = commit
    versions["rustc"] = _run(["rustc", "--version"]).removeprefix("rustc ")
    if args.ort_lib:
        versions["onnxruntime library (esmbench)"] = Path(args.ort_lib).name
    data = {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "cpu_flags": {f: (f in flags) for f in wanted} if flags else {},
        "hypervisor": "hypervisor" in flags,
        "ram_bytes": ram,
        "os": os_release.group(1) if os_release else platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }
    if args.json:
        _dump(args.json, data)
    if args.print_threads:
        print(data["physical_cores"])
    if args.print_label:
        slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
        slug = re.sub(r"-(processor|cpu|with-radeon-graphics)$", "", slug)[:40].strip("-")
        isa = "avx512" if data["cpu_flags"].get("avx512f") else ("avx2" if data["cpu_flags"].get("avx2") else platform.machine())
        print(f"{slug}-{data['physical_cores']}c-{isa}")
    return 0


# ----------------------------------------------------------------------------- comparisons


def _probabilities(path: Path) -> list[float]:
    with open(path, newline="", encoding="utf-8") as f:
        return [float(r["probability"]) for r in csv.DictReader(f)]


def compare(a: Path, b: Path, threshold: float = 0.5) -> dict | None:
    if not (a.exists() and b.exists()):
        return None
    pa, pb = _probabilities(a), _probabilities(b)
    if len(pa) != len(pb) or not pa:
        return {"error": f"row counts differ: {len(pa)} vs {len(pb)}"}
    diffs = [abs(x - y) for x, y in zip(pa, pb)]
    agree = sum((x > threshold) == (y > threshold) for x, y in zip(pa, pb))
    return {"rows": len(pa), "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
            "label_agreement": agree / len(pa)}


# ----------------------------------------------------------------------------- report


def _contender(section: Path, name: str) -> dict | None:
    """Throughput, memory and start-up of one contender in one section of the work folder."""
    measure = _load(section / f"{name}.measure.json")
    if measure is None or measure.get("exit_code") != 0:
        return None
    out = {"process_wall_seconds": measure["wall_seconds"], "peak_rss_bytes": measure["peak_rss_bytes"]}
    if name.startswith("esmbench"):
        report = _load(section / name / "report.json") or {}
        perf = report.get("performance", {})
        rows = report.get("data", {}).get("rows_scored", 0)
        out.update({
            "rows": rows,
            "loop_seconds": perf.get("wall_seconds", 0) - perf.get("model_load_seconds", 0),
            "model_seconds": perf.get("inference_seconds"),
            "load_seconds": perf.get("model_load_seconds"),
            "inference_fraction": (perf.get("inference_seconds", 0) / perf["wall_seconds"]) if perf.get("wall_seconds") else None,
            "report_seq_per_s": perf.get("sequences_per_second"),
            "padding_efficiency": perf.get("padding_efficiency"),
            "batches": perf.get("batches"),
            "threads": report.get("execution", {}).get("threads"),
            "parallel_batches": report.get("execution", {}).get("parallel_batches", 1),
            "max_tokens": report.get("execution", {}).get("max_tokens"),
            "report_peak_rss_bytes": perf.get("peak_rss_bytes"),
            "cpus_busy": cpus_busy_while_scoring(perf.get("timeline") or []),
        })
    else:
        info = _load(section / f"{name}.json") or {}
        out.update({"rows": info.get("rows", 0), "loop_seconds": info.get("loop_seconds"),
                    "load_seconds": info.get("load_seconds"), "model_seconds": info.get("model_seconds"),
                    "settings": {k: v for k, v in info.items() if k not in ("rows", "loop_seconds", "load_seconds", "model_seconds")}})
    rows = out["rows"] or 0
    out["seq_per_s"] = rows / out["process_wall_seconds"] if out["process_wall_seconds"] else None
    out["loop_seq_per_s"] = rows / out["loop_seconds"] if out.get("loop_seconds") else None
    # Everything but the model: process start, imports, reading, tokenising, batching, pooling, output.
    if out.get("model_seconds") is not None and rows:
        out["outside_model_seconds"] = out["process_wall_seconds"] - out["model_seconds"]
        out["outside_model_ms_per_1k_rows"] = 1000 * 1000 * out["outside_model_seconds"] / rows
    startup = _load(section / f"startup-{name}.measure.json")
    if startup and startup.get("exit_code") == 0:
        out["startup_seconds"] = startup["wall_seconds"]
    return out


CONTENDERS = [
    ("esmbench", "esmbench (release binary, its defaults)"),
    ("esmbench-serial", "esmbench, one batch at a time, --max-tokens 2048 (as before parallel batches)"),
    ("esmbench-as-is", "esmbench --no-graph-rewrite (the file's per-layer attention mask, as before the load-time rewrite)"),
    ("esmbench-no-ci", "esmbench --bootstrap 0 (no confidence intervals, which the Python contenders do not compute)"),
    ("pytorch", "PyTorch eager, batch 32, file order"),
    ("ort-file", "onnxruntime Python, batch 32, file order"),
    ("ort-sorted", "onnxruntime Python, length-sorted, token budget"),
    ("ort-bound", "onnxruntime alone on esmbench's batches, inputs padded before the clock (bound)"),
]


def _f(x, digits: int = 1, suffix: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}{suffix}"


def _mib(x) -> str:
    return "-" if x is None else f"{x / 2**20:,.0f} MiB"


def _ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _predictions(section: Path, key: str) -> Path:
    return section / key / "predictions.csv" if key.startswith("esmbench") else section / f"{key}.csv"


def section_numbers(work: Path, name: str) -> dict | None:
    section = work / name
    settings = _load(section / "settings.json")
    if settings is None:
        return None
    # A contender this run did not include (an older work folder) has no entry; one that failed maps to None.
    contenders = {key: _contender(section, key) for key, _ in CONTENDERS
                  if key == "esmbench" or (section / f"{key}.measure.json").exists()}
    threshold = settings.get("threshold", 0.5)
    ours = section / "esmbench" / "predictions.csv"
    parity = {key: compare(ours, _predictions(section, key), threshold) for key, _ in CONTENDERS[1:]}
    return {"settings": settings, "contenders": contenders, "parity": parity,
            "ceiling": _load(section / "ceiling.json"), "verify": _load(section / "verify.json"),
            "profile": _load(section / "profile.json")}


def _section_markdown(title: str, s: dict) -> list[str]:
    st, c = s["settings"], s["contenders"]
    lines = [f"## {title}", ""]
    lines.append(f"Model `{st['model_name']}` ({st.get('architecture', '?')}), head `{st.get('head_name', 'metadata')}`; "
                 f"data: {st['rows']:,} synthetic Harvey-like nanobodies (scripts/make_synthetic_harvey.py --seed {st.get('seed', 0)}, "
                 f"mean {st.get('mean_residues', 0):.1f} residues); {st['threads']} threads for every contender; "
                 f"token budget {st['max_tokens']} (esmbench's, also given to the sorted onnxruntime loop); "
                 f"esmbench ran {(c.get('esmbench') or {}).get('parallel_batches', '?')} batch(es) at once; "
                 f"PyTorch weights: `{st['torch_source']}`.")
    v = s.get("verify")
    if v:
        line = f"Weights check: max |ONNX - PyTorch| last_hidden_state = {v['max_abs_last_hidden_state']:.2e}"
        if "initializers" in v:
            i = v["initializers"]
            line += (f"; a fresh `export_onnx.py --random-init` has {'identical' if i['identical'] else 'DIFFERENT'} "
                     f"initializers ({i['model']} tensors, compared by dtype, shape and SHA-256)")
        lines += [line + ".", ""]
    lines += ["", "| contender | seq/s (end to end) | seq/s (loop) | esmbench ÷ it (end to end) | esmbench ÷ it (loop) | outside the model, ms per 1k rows | it ÷ esmbench (outside the model) | peak RSS | start-up (1 row) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ours = c.get("esmbench") or {}
    for key, label in CONTENDERS:
        if key not in c:
            continue
        x = c[key]
        if x is None:
            lines.append(f"| {label} | not run / failed | | | | | | | |")
            continue
        lines.append(
            f"| {label} | {_f(x['seq_per_s'])} | {_f(x['loop_seq_per_s'])} | "
            f"{'' if key == 'esmbench' else _ratio(ours.get('seq_per_s'), x['seq_per_s'])} | "
            f"{'' if key == 'esmbench' else _ratio(ours.get('loop_seq_per_s'), x['loop_seq_per_s'])} | "
            f"{_f(x.get('outside_model_ms_per_1k_rows'))} | "
            f"{'' if key == 'esmbench' else _ratio(x.get('outside_model_ms_per_1k_rows'), ours.get('outside_model_ms_per_1k_rows'))} | "
            f"{_mib(x['peak_rss_bytes'])} | {_f(x.get('startup_seconds'), 2, ' s')} |")
    lines.append("")
    if ours:
        frac = ours.get("inference_fraction")
        lines.append(f"esmbench: {_f(frac * 100 if frac is not None else None)}% of wall time inside the model "
                     f"(report.json inference_seconds / wall_seconds); model load {_f(ours.get('load_seconds'), 2, ' s')}; "
                     f"padding efficiency {_f(ours.get('padding_efficiency'), 3)}; {ours.get('batches')} batches; "
                     f"its own report says {_f(ours.get('report_seq_per_s'))} seq/s and peak RSS {_mib(ours.get('report_peak_rss_bytes'))}"
                     + (f", and {ours['cpus_busy']:.2f} CPUs busy while scoring on {ours.get('threads')} threads"
                        if ours.get("cpus_busy") else "") + ".")
        bound = (c.get("ort-bound") or {}).get("loop_seq_per_s")
        if bound and ours.get("loop_seq_per_s"):
            lines.append("")
            lines.append(f"Against onnxruntime alone on the same batches ({_f(bound)} seq/s, nothing but `session.run` and the "
                         f"pooling timed), esmbench's loop runs at {100 * ours['loop_seq_per_s'] / bound:.0f}%. The difference is what "
                         f"reading, tokenising, batching, the head and the outputs cost while the model runs, plus run-to-run noise.")
        lines.append("")
    parity = [(label, s["parity"].get(key)) for key, label in CONTENDERS[1:] if s["parity"].get(key)]
    if parity:
        lines += ["| esmbench vs | max \\|Δp\\| | mean \\|Δp\\| | labels agree |", "|---|---:|---:|---:|"]
        for label, p in parity:
            if "error" in p:
                lines.append(f"| {label} | {p['error']} | | |")
            else:
                lines.append(f"| {label} | {p['max_abs_diff']:.2e} | {p['mean_abs_diff']:.2e} | {p['label_agreement'] * 100:.2f}% |")
        lines.append("")
    ceiling = s.get("ceiling")
    if ceiling and "gflop_per_sequence" in ceiling:
        mm = ceiling["matmul"]
        # Files before the onnxruntime measurement have torch and numpy only.
        shapes = ", ".join(f"{k} {v['shape'][0]}x{v['shape'][1]}x{v['shape'][2]}: torch {v['torch_gflops']:.0f} / numpy {v['numpy_gflops']:.0f}"
                           + (f" / onnxruntime {v['onnxruntime_gflops']:.0f}" if "onnxruntime_gflops" in v else "")
                           for k, v in mm.items())
        ort_parallel = ceiling.get("onnxruntime_parallel")
        if ort_parallel and ort_parallel > 1:
            shapes += f"; onnxruntime as {ort_parallel} runs at once, as esmbench ran its batches"
        best = ours.get("seq_per_s") if ours else None
        lines.append(f"fp32 ceiling: measured sgemm GFLOP/s on {ceiling['threads']} threads ({shapes}); "
                     f"{ceiling['gflop_per_sequence']:.3f} GFLOP per sequence at {ceiling['mean_tokens']:.1f} tokens "
                     f"-> at most {ceiling['ceiling_seq_per_s']:.1f} seq/s (square-sgemm peak) or "
                     f"{ceiling['ceiling_seq_per_s_model_shapes']:.1f} seq/s (the model's own matmul shapes). "
                     f"esmbench end to end reaches {_f(100 * best / ceiling['ceiling_seq_per_s'] if best else None)}% of the first.")
        lines.append("")
    lines += _profile_markdown(s.get("profile"))
    return lines


def _profile_markdown(profile: dict | None, shown: int = 8) -> list[str]:
    """Where the time inside the model goes: ONNX Runtime's kernel time by op type."""
    if not profile or not profile.get("ops"):
        return []
    ops = profile["ops"]
    lines = [f"Inside the model, by op type (ONNX Runtime's profiler on the bound's graph and batches, first "
             f"{profile['rows']:,} rows, {profile['parallel_batches']} batch(es) at once on {profile['kernel_threads']} "
             f"thread(s) each; thread time, so shares add up to 100%):", "",
             "| op type | share of kernel time | thread-ms per 1k rows | kernel runs | GFLOP/s per kernel |",
             "|---|---:|---:|---:|---:|"]
    for v in ops[:shown]:
        lines.append(f"| {v['op_type']} | {100 * v['share']:.1f}% | {_f(v['thread_ms_per_1k_rows'])} | {v['kernels']:,} | "
                     f"{_f(v.get('gflops'), 0)} |")
    rest = ops[shown:]
    if rest:
        lines.append(f"| {len(rest)} other op types | {100 * sum(v['share'] for v in rest):.1f}% | "
                     f"{_f(sum(v['thread_ms_per_1k_rows'] for v in rest))} | {sum(v['kernels'] for v in rest):,} | |")
    if profile.get("kernel_fraction") is not None:
        lines += ["", f"Kernels filled {100 * profile['kernel_fraction']:.1f}% of the batch threads' time during the profiled "
                     f"run ({profile['batches']} batches); the rest is ONNX Runtime's own work between kernels and the "
                     f"profiler's."]
    if profile.get("matmul_flops_expected"):
        lines.append(f"The MatMul FLOPs read from the profiler's shapes are {100 * profile['matmul_flops_counted'] / profile['matmul_flops_expected']:.2f}% "
                     f"of the architecture's count on the same batches (scripts/bench_python.py flops_per_sequence).")
    lines.append("")
    return lines


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "**not met**")


def _timeline(section: Path) -> list[dict]:
    return ((_load(section / "esmbench" / "report.json") or {}).get("performance") or {}).get("timeline") or []


def cpus_busy_while_scoring(timeline: list[dict]) -> float | None:
    """CPUs esmbench kept busy while rows were scored: its CPU time over the wall time of the timeline
    intervals in which rows_done grew (report.md's CPU row; None for reports before schema 6)."""
    cpu = wall = 0.0
    for a, b in zip(timeline, timeline[1:]):
        if b["rows_done"] > a["rows_done"] and b["seconds"] > a["seconds"]:
            cpu += max(0.0, b.get("cpu_seconds", 0.0) - a.get("cpu_seconds", 0.0))
            wall += b["seconds"] - a["seconds"]
    return cpu / wall if wall > 0 and cpu > 0 else None


def window_rates(section: Path) -> list[float]:
    """seq/s between consecutive timeline samples of one esmbench run, the first interval (start-up and the
    pipeline filling) and the last (a partial one) left out. The batches are alike all through a run of
    synthetic rows, so their spread is how much the machine's own speed moved during the run."""
    timeline = _timeline(section)
    pairs = list(zip(timeline[1:-2], timeline[2:-1]))
    return [(b["rows_done"] - a["rows_done"]) / (b["seconds"] - a["seconds"]) for a, b in pairs if b["seconds"] > a["seconds"]]


def _rss_growth_mib(x: dict, section: Path) -> float | None:
    """RSS from the sample nearest a quarter of the rows to the last sample: what a leak would show."""
    timeline = _timeline(section)
    rows = (x or {}).get("rows") or 0
    if len(timeline) < 3 or not rows:
        return None
    quarter = min(timeline[1:], key=lambda t: abs(t["rows_done"] - rows / 4))
    return (timeline[-1]["rss_bytes"] - quarter["rss_bytes"]) / 2**20


def targets(work: Path, main: dict | None, tiny: dict | None, variants: list, linearity: list,
            linearity_main: list | None = None) -> list[dict]:
    """Each target of the throughput issue with the figure this run measured for it (None: not measured)."""
    out = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    c = (main or {}).get("contenders", {})
    ours, torch_eager = c.get("esmbench") or {}, c.get("pytorch") or {}
    if ours.get("seq_per_s") and torch_eager.get("seq_per_s"):
        ratio = ours["seq_per_s"] / torch_eager["seq_per_s"]
        drift = ((main or {}).get("parity", {}).get("pytorch") or {}).get("max_abs_diff")
        ceiling = ((main or {}).get("ceiling") or {}).get("ceiling_seq_per_s")
        add("fp32: at least 1.35x PyTorch eager end to end, probabilities within 1e-4",
            (f"{ratio:.2f}x, max |Δp| {drift:.1e}" if drift is not None else f"{ratio:.2f}x, |Δp| not compared")
            + (f"; {100 * ours['seq_per_s'] / ceiling:.0f}% of the sgemm ceiling" if ceiling else ""),
            ratio >= 1.35 and drift is not None and drift <= 1e-4)
    if ours.get("inference_fraction") is not None:
        add("main model: at least 97% of wall time inside the model", f"{100 * ours['inference_fraction']:.1f}%",
            ours["inference_fraction"] >= 0.97)
    if ours.get("startup_seconds") is not None:
        add("start-up (one row, process start to prediction) under 1 s", f"{ours['startup_seconds']:.2f} s",
            ours["startup_seconds"] < 1.0)
    model_path = Path((main or {}).get("settings", {}).get("model_path", ""))
    if ours.get("peak_rss_bytes") and model_path.is_file():
        limit = 2 * model_path.stat().st_size + 150e6
        growth = _rss_growth_mib(ours, work / "main")
        add("peak RSS under twice the model file plus 150 MB, flat over the run",
            f"{_mib(ours['peak_rss_bytes'])} against {limit / 2**20:,.0f} MiB"
            + (f"; {growth:+.1f} MiB from a quarter of the rows to the end" if growth is not None else ""),
            ours["peak_rss_bytes"] <= limit)
    t = (tiny or {}).get("contenders", {})
    tiny_ours, loop = t.get("esmbench") or {}, t.get("ort-file") or {}
    if tiny_ours.get("seq_per_s") and loop.get("seq_per_s"):
        ratio = tiny_ours["seq_per_s"] / loop["seq_per_s"]
        outside = None
        if tiny_ours.get("outside_model_ms_per_1k_rows") and loop.get("outside_model_ms_per_1k_rows"):
            outside = loop["outside_model_ms_per_1k_rows"] / tiny_ours["outside_model_ms_per_1k_rows"]
        growth = _rss_growth_mib(tiny_ours, work / "tiny")
        # The issue's premise is that the tiny model costs almost nothing, so that a run measures what is
        # around it; where the model's own kernels dominate, end to end measures them instead. Both are shown.
        if outside is not None:
            # The verdict is on esmbench's defaults; the same work as the peers (no intervals) is shown beside it.
            no_ci = (t.get("esmbench-no-ci") or {}).get("outside_model_ms_per_1k_rows")
            add("around the model (tiny model, all rows): at least 5x the onnxruntime Python loop (file order) "
                "in time outside the model per row",
                f"{outside:.1f}x leaner ({tiny_ours['outside_model_ms_per_1k_rows']:.1f} against "
                f"{loop['outside_model_ms_per_1k_rows']:.1f} ms per 1k rows)"
                + (f"; with --bootstrap 0, the peers' work, {no_ci:.1f} ms: "
                   f"{loop['outside_model_ms_per_1k_rows'] / no_ci:.1f}x" if no_ci else ""),
                outside >= 5.0)
        inside = tiny_ours.get("inference_fraction")
        # Where the model's kernels dominate, 5x may ask for more than the runtime itself can do on these batches.
        bound = (t.get("ort-bound") or {}).get("loop_seq_per_s")
        add("tiny model, all rows: at least 5x the onnxruntime Python loop (file order) end to end",
            f"{ratio:.2f}x end to end"
            + (f"; {100 * inside:.1f}% of esmbench's wall time is inside the model" if inside is not None else "")
            + (f"; 5x is {5 * loop['seq_per_s']:,.0f} seq/s, while onnxruntime alone on esmbench's batches ran "
               f"{bound:,.0f} seq/s and esmbench's loop {100 * tiny_ours['loop_seq_per_s'] / bound:.0f}% of that"
               if bound and tiny_ours.get("loop_seq_per_s") else "")
            + (f"; RSS {growth:+.1f} MiB from a quarter of the rows to the end" if growth is not None else ""),
            ratio >= 5.0)
    for model, points, folder, section in (("tiny model", linearity, "linearity", "tiny"),
                                           ("main model", linearity_main or [], "linearity-main", "main")):
        if len(points) < 2:
            continue
        largest_rows, largest = points[-1]
        # The largest size is either one of the extra runs or the section's own run.
        run_dir = work / folder / str(largest_rows)
        growth = _rss_growth_mib(largest, run_dir if run_dir.is_dir() else work / section)
        windows = window_rates(run_dir if run_dir.is_dir() else work / section)
        e2e = [x["seq_per_s"] for _, x in points if x.get("seq_per_s")]
        loops = [x["loop_seq_per_s"] for _, x in points if x.get("loop_seq_per_s")]
        insides = [_inside_model_seq_per_s(r, x) for r, x in points if x.get("model_seconds")]
        if e2e:
            spread = max(e2e) / min(e2e) - 1
            loop_spread = max(loops) / min(loops) - 1 if loops else None
            inside_spread = max(insides) / min(insides) - 1 if len(insides) == len(points) else None
            sizes = "/".join(f"{r:,}" for r, _ in points)
            # Runs of one size, there and back, differ by the machine alone: the floor under any spread here.
            repeats = [(r, x["runs"]) for r, x in points if len(x.get("runs") or []) > 1]
            noise = max(((max(v) / min(v) - 1, r) for r, v in repeats), default=None)
            startup = ((c if section == "main" else t).get("esmbench") or {}).get("startup_seconds")
            smallest_wall = points[0][1].get("process_wall_seconds")
            add(f"{model}: seq/s at {sizes} rows within 5% of each other",
                f"end to end {100 * spread:.1f}% apart"
                + (f" (the {noise[1]:,}-row runs alone {100 * noise[0]:.1f}% apart)" if noise else "")
                + (f"; the one-row start-up ({startup:.2f} s) alone is {100 * startup / smallest_wall:.0f}% of the "
                   f"{points[0][0]:,}-row run's wall time" if startup and smallest_wall else "")
                + (f"; loop {100 * loop_spread:.1f}% apart" if loop_spread is not None else "")
                + (f"; inside the model {100 * inside_spread:.1f}% apart" if inside_spread is not None else "")
                + (f"; {largest_rows:,} rows: RSS {growth:+.1f} MiB from a quarter of the rows to the end"
                   if growth is not None else "")
                + (f"; that run's own {len(windows)} timeline windows ran {min(windows):,.0f} to {max(windows):,.0f} seq/s "
                   f"({100 * (max(windows) / min(windows) - 1):.0f}% apart) on alike batches"
                   if len(windows) >= 3 else ""),
                spread <= 0.05)
    quantized = [(n, x, p) for n, x, p, _ in variants if n.startswith("int8") and x and p]
    if quantized and torch_eager.get("seq_per_s"):
        ok = [(n, x, p) for n, x, p in quantized
              if p.get("mean_abs_diff") is not None and p["mean_abs_diff"] <= 0.01 and p.get("label_agreement", 0) >= 0.99]
        pool = ok or quantized
        n, x, p = max(pool, key=lambda v: v[1]["seq_per_s"])
        ratio = x["seq_per_s"] / torch_eager["seq_per_s"]
        add("int8: at least 2x PyTorch eager, mean |Δp| at most 0.01, labels agree on at least 99%",
            f"{n}: {ratio:.2f}x, mean |Δp| {p['mean_abs_diff']:.4f}, labels {100 * p['label_agreement']:.2f}%",
            bool(ok) and ratio >= 2.0)
    return out


def _cell(text: str) -> str:
    """Text for a Markdown table cell: its own pipes (as in |Δp|) escaped."""
    return text.replace("|", "\\|")


def _targets_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Targets", "",
             "The throughput issue's targets against this run (each a ratio within this run; GPU: scripts/bench_gpu.sh).", "",
             "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {_cell(r['target'])} | {_cell(r['measured'])} | {_verdict(r['met'])} |" for r in rows]
    return lines + [""]


def _linearity_points(folder: Path, section: dict | None) -> list[tuple[int, dict]]:
    """esmbench at each size under folder (N/, and N-runK/ for a size run again), with the section's own
    esmbench run as one more size when no size was run twice. A size run more than once gets the mean
    of its runs' seq/s and wall time (its runs' seq/s in "runs") and the largest of their peak RSS."""
    runs: dict[int, list[dict]] = {}
    for d in sorted(folder.glob("*"), key=lambda p: p.name):
        rows = d.name.split("-run")[0]
        x = _contender(d, "esmbench")
        if x and rows.isdigit():
            runs.setdefault(int(rows), []).append(x)
    repeated = any(len(r) > 1 for r in runs.values())
    if section and section["contenders"].get("esmbench") and not repeated:
        runs.setdefault(section["settings"]["rows"], []).append(section["contenders"]["esmbench"])
    points = []
    for rows, xs in sorted(runs.items()):
        if len(xs) == 1:
            points.append((rows, xs[0]))
            continue
        mean = lambda key: (sum(x[key] for x in xs) / len(xs)) if all(x.get(key) for x in xs) else None
        points.append((rows, {"seq_per_s": mean("seq_per_s"), "loop_seq_per_s": mean("loop_seq_per_s"),
                              "process_wall_seconds": mean("process_wall_seconds"),
                              "model_seconds": mean("model_seconds"),
                              "outside_model_seconds": mean("outside_model_seconds"),
                              "peak_rss_bytes": max(x["peak_rss_bytes"] for x in xs),
                              "runs": [x["seq_per_s"] for x in xs]}))
    return points


def _inside_model_seq_per_s(rows: int, x: dict) -> float | None:
    """Rows per second of time inside the model, or None when the run did not report its model time."""
    return rows / x["model_seconds"] if x.get("model_seconds") else None


def _linearity_markdown(model: str, points: list[tuple[int, dict]], section: dict | None) -> list[str]:
    if len(points) < 2:
        return []
    repeated = any(x.get("runs") for _, x in points)
    lines = [f"## Linearity (esmbench, {model})", ""]
    if repeated:
        lines += ["Sizes run there and back (each size's runs in run order); seq/s is their mean, so a machine "
                  "whose speed drifts linearly over the runs weighs on every size alike.", ""]
    lines += ["| rows |" + (" seq/s of each run |" if repeated else "")
              + " seq/s (end to end) | seq/s (loop) | marginal seq/s (from the size above) | seq/s inside the model"
              " | outside the model, s | outside the model, marginal ms per 1k rows | peak RSS |",
              "|---:|" + ("---:|" if repeated else "") + "---:|---:|---:|---:|---:|---:|---:|"]
    previous = None
    for rows, x in points:
        marginal = marginal_outside = None
        outside = x.get("outside_model_seconds")
        if previous and x["process_wall_seconds"] > previous[1]:
            marginal = (rows - previous[0]) / (x["process_wall_seconds"] - previous[1])
        if previous and outside is not None and previous[2] is not None:
            marginal_outside = 1000 * 1000 * (outside - previous[2]) / (rows - previous[0])
        inside = _inside_model_seq_per_s(rows, x)
        each = (" " + " / ".join(_f(v) for v in x.get("runs", [x["seq_per_s"]])) + " |") if repeated else ""
        lines.append(f"| {rows:,} |{each} {_f(x['seq_per_s'])} | {_f(x['loop_seq_per_s'])} | {_f(marginal)} | "
                     f"{_f(inside)} | {'-' if outside is None else f'{outside:.3f}'} | {_f(marginal_outside)} | "
                     f"{_mib(x['peak_rss_bytes'])} |")
        previous = (rows, x["process_wall_seconds"], outside)
    lines += ["", "Inside the model is the report's inference_seconds; outside it, the rest of the process's wall time "
              "(runtime library, model load, reading, tokenising, the head, metrics, reports). A fixed start-up with a "
              "flat marginal cost per row outside the model is linear growth of esmbench's own work; the rate inside "
              "the model follows the machine's speed at that moment."]
    startup = (section or {}).get("contenders", {}).get("esmbench", {}).get("startup_seconds")
    if startup is not None:
        lines += ["", f"Each run also pays a fixed start-up (runtime library, model load, reports): {startup:.2f} s on one row, "
                  "which is what separates the end-to-end seq/s of a small run from a large one."]
    return lines + [""]


def cmd_report(args) -> int:
    work = Path(args.work)
    machine = _load(work / "machine.json") or {}
    settings = _load(work / "settings.json") or {}
    main = section_numbers(work, "main")
    tiny = section_numbers(work, "tiny")
    variants = []
    for name in ("simplified", "reexport", "optimize", "int8", "int8-vnni", "int8-cal", "int8-vnni-cal", "int8-mixed", "int8-vnni-mixed", "fp16"):
        d = work / "variants" / name
        x = _contender(d, "esmbench")
        if x is None:
            if (d / "export.log").exists():
                variants.append((name, None, None, (d / "export.log").read_text(errors="replace")[-400:]))
            continue
        log = (d / "export.log").read_text(errors="replace") if (d / "export.log").exists() else ""
        check = next((line.strip() for line in log.splitlines() if " check: " in line), None)
        variants.append((name, x, compare(work / "main" / "esmbench" / "predictions.csv", d / "esmbench" / "predictions.csv",
                                          (main or {}).get("settings", {}).get("threshold", 0.5)), check))
    linearity = _linearity_points(work / "linearity", tiny)
    linearity_main = _linearity_points(work / "linearity-main", main) if (work / "linearity-main").is_dir() else []

    date = settings.get("date") or dt.date.today().isoformat()
    lines = [f"# esmbench benchmark, {date}: {settings.get('label', '')}", ""]
    if settings.get("quick"):
        lines += ["**Quick validation run (--quick): small sizes, not a measurement.**", ""]
    load = machine.get("load_average")
    lines += [f"Command: `{settings.get('command', 'scripts/bench.sh')}`", ""]
    flags = ", ".join(f for f, on in machine.get("cpu_flags", {}).items() if on) or "unknown"
    lines += ["## Machine", "",
              f"- CPU: {machine.get('cpu_model')} ({machine.get('physical_cores')} physical cores, "
              f"{machine.get('logical_cores')} logical{', virtual machine' if machine.get('hypervisor') else ''})",
              f"- ISA flags: {flags}",
              f"- RAM: {machine.get('ram_bytes', 0) / 2**30:.1f} GiB; OS: {machine.get('os')} (kernel {machine.get('kernel')}, {machine.get('machine')})",
              f"- Load average when the run started: {', '.join(f'{x:.2f}' for x in load) if load else 'unknown'}"
              + (" (**the machine was busy: numbers are not trustworthy**)" if load and load[0] > 0.5 * (machine.get('logical_cores') or 1) else ""),
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())]
    probes = [x["probe_gflops"] for x in (_load(f) for f in sorted(work.rglob("*.measure.json"))) if x and x.get("probe_gflops")]
    if probes:
        spread = max(probes) / min(probes) - 1
        lines.append(f"- Speed probe (a fixed float32 matmul just before each of the {len(probes)} measured processes): "
                     f"{min(probes):.0f} to {max(probes):.0f} GFLOP/s, {100 * spread:.0f}% apart"
                     + (" (**the machine's speed changed during the run: a ratio between contenders timed at different "
                        "moments may be off by as much**)" if spread > 0.20 else ""))
    lines.append("")
    if main:
        lines += _section_markdown("Main comparison", main)
    if variants:
        lines += ["## Model variants (esmbench on the same file rewritten, or on a re-export of the same weights)", "",
                  "| variant | seq/s (end to end) | vs fp32 esmbench | vs PyTorch eager (end to end) | mean \\|Δp\\| vs fp32 | max \\|Δp\\| | labels agree | peak RSS | export check (vs PyTorch) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        base = (main or {}).get("contenders", {}).get("esmbench") or {}
        torch_eager = (main or {}).get("contenders", {}).get("pytorch") or {}
        flag = {"simplified": "simplify_attention_mask.py (same file)", "reexport": "fp32 (no option)", "optimize": "--optimize", "int8": "--quantize int8", "int8-vnni": "--quantize int8-vnni", "int8-cal": "--quantize int8 --calibration (bias correction)", "int8-vnni-cal": "--quantize int8-vnni --calibration (bias correction)", "int8-mixed": "--quantize int8 --calibration --keep-fp32 attention-output", "int8-vnni-mixed": "--quantize int8-vnni --calibration --keep-fp32 attention-output", "fp16": "--fp16"}
        for name, x, p, log in variants:
            if x is None:
                lines.append(f"| `{flag[name]}` | export or run failed: `{' '.join(log.split())[-200:]}` | | | | | | | |")
                continue
            p = p or {}
            lines.append(f"| `{flag[name]}` | {_f(x['seq_per_s'])} | {_ratio(x['seq_per_s'], base.get('seq_per_s'))} | "
                         f"{_ratio(x['seq_per_s'], torch_eager.get('seq_per_s'))} | "
                         f"{_f(p.get('mean_abs_diff'), 5)} | {_f(p.get('max_abs_diff'), 5)} | "
                         f"{_f(100 * p['label_agreement'] if p.get('label_agreement') is not None else None, 2, '%')} | {_mib(x['peak_rss_bytes'])} | "
                         f"{(log or '-').replace('|', chr(92) + '|')} |")
        lines.append("")
        if any(name.endswith(("-cal", "-mixed")) for name, *_ in variants):
            lines += [f"Bias correction calibrated on: {settings.get('calibration', 'unknown')}.", ""]
    if tiny:
        lines += _section_markdown("Tiny model at Harvey scale", tiny)
    lines += _linearity_markdown("tiny model", linearity, tiny)
    lines += _linearity_markdown("main model", linearity_main, main)
    checked = targets(work, main, tiny, variants, linearity, linearity_main)
    if not settings.get("quick"):
        lines += _targets_markdown(checked)
    lines += ["## Definitions", "", __doc__.split("Definitions used in the results file:")[1].strip(), ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    _dump(out.with_suffix(".json"), {"settings": settings, "machine": machine, "main": main, "tiny": tiny,
                                     "variants": [{"variant": n, "esmbench": x, "vs_fp32": p} for n, x, p, _ in variants],
                                     "linearity": [{"rows": r, "esmbench": x} for r, x in linearity],
                                     "linearity_main": [{"rows": r, "esmbench": x} for r, x in linearity_main],
                                     "targets": checked})
    print(out.read_text(encoding="utf-8"))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("measure")
    p.add_argument("--json", required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_measure)
    p = sub.add_parser("machine")
    p.add_argument("--json")
    p.add_argument("--esmbench")
    p.add_argument("--ort-lib")
    p.add_argument("--print-threads", action="store_true")
    p.add_argument("--print-label", action="store_true")
    p.set_defaults(fn=cmd_machine)
    p = sub.add_parser("report")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_report)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
