#!/usr/bin/env python3
"""Runs one `esmbench test` command and prints, for each window of its report's timeline (2 s; wider once
a long run's timeline is thinned), the rows per second beside where the CPU time went: how busy
esmbench's batch threads were (100% = one CPU), which CPUs they ran on, what its other threads took, and
the machine's idle and steal time.

It tells a slow stretch that is esmbench's (batch threads waiting: under 100% each, or sharing one CPU)
from one that is the machine's (batch threads busy on their own CPUs, yet fewer rows per second: the
virtual CPUs themselves ran slower, e.g. a host's hyperthread sibling or a container's CPU quota).

    python3 scripts/cpu_timeline.py -- target/release/esmbench test --model M.onnx --data D.csv --out DIR

Linux only (it reads /proc); the standard library only. --out is required: the timeline is read from
DIR/report.json once the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BATCH_THREAD_PREFIX = "esmbench-batch"
TICKS = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid: int) -> dict[str, tuple[str, int, int]]:
    """tid -> (thread name, CPU it last ran on, user + system ticks so far)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        # Fields after the name, 0-based: utime 11, stime 12, processor 36 (proc(5)).
        out[tid] = (name, int(fields[36]), int(fields[11]) + int(fields[12]))
    return out


def machine_ticks() -> list[int]:
    """The first line of /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal, ..."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def out_dir(command: list[str]) -> Path:
    for i, arg in enumerate(command):
        if arg == "--out" and i + 1 < len(command):
            return Path(command[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
    sys.exit("cpu_timeline.py: the esmbench command needs --out DIR (its report.json holds the timeline)")


def sample(command: list[str], every: float) -> list[dict]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    started = time.perf_counter()
    samples, last_threads, last_machine, last = [], thread_ticks(process.pid), machine_ticks(), 0.0
    while process.poll() is None:
        time.sleep(every)
        threads, machine, now = thread_ticks(process.pid), machine_ticks(), time.perf_counter() - started
        samples.append({
            "seconds": now,
            "interval": now - last,
            "threads": {tid: (name, cpu, ticks - last_threads.get(tid, (name, cpu, ticks))[2])
                        for tid, (name, cpu, ticks) in threads.items()},
            "machine": [b - a for a, b in zip(last_machine, machine)],
        })
        last_threads.update(threads)
        last_machine, last = machine, now
    if process.returncode != 0:
        sys.exit(f"cpu_timeline.py: esmbench exited {process.returncode}")
    return samples


def windows(timeline: list[dict], samples: list[dict]) -> list[str]:
    rows = ["| window end, s | rows/s | batch threads, CPU % each | their CPUs | other esmbench threads, CPU % "
            "| machine idle % | machine steal % |", "|---:|---:|---|---|---:|---:|---:|"]
    for a, b in zip(timeline[:-1], timeline[1:]):
        span = b["seconds"] - a["seconds"]
        inside = [s for s in samples if a["seconds"] < s["seconds"] <= b["seconds"]]
        if span <= 0 or not inside:
            continue
        busy: dict[str, int] = {}
        cpus: dict[str, set[int]] = {}
        other = 0
        for s in inside:
            for tid, (name, cpu, ticks) in s["threads"].items():
                if name.startswith(BATCH_THREAD_PREFIX):
                    busy[tid] = busy.get(tid, 0) + ticks
                    if ticks:
                        cpus.setdefault(tid, set()).add(cpu)
                else:
                    other += ticks
        machine = [sum(col) for col in zip(*(s["machine"] for s in inside))]
        total = sum(machine) or 1
        seconds = sum(s["interval"] for s in inside)
        percent = lambda ticks: 100 * ticks / TICKS / seconds
        rows.append(
            f"| {b['seconds']:.1f} | {(b['rows_done'] - a['rows_done']) / span:,.0f} | "
            + " / ".join(f"{percent(busy[t]):.0f}" for t in sorted(busy)) + " | "
            + " / ".join(",".join(map(str, sorted(cpus.get(t, ())))) or "-" for t in sorted(busy)) + " | "
            + f"{percent(other):.0f} | {100 * machine[3] / total:.0f} | "
            + f"{100 * (machine[7] if len(machine) > 7 else 0) / total:.0f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=0.25, help="seconds between samples (default 0.25)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the esmbench test command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the esmbench command after --")
    report_dir = out_dir(command)
    samples = sample(command, args.every)
    report = json.loads((report_dir / "report.json").read_text())
    performance = report["performance"]
    print(f"{report['data']['rows_scored']:,} rows at {performance['sequences_per_second']:,.1f} seq/s, "
          f"{report['execution'].get('parallel_batches', 1)} batch(es) at once\n")
    table = windows(performance["timeline"], samples)
    print("\n".join(table) if len(table) > 2 else "the run was too short for a timeline window (2 s each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
