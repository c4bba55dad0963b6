#!/usr/bin/env python3
"""Benchmark: the unit tier (`python3 -m pytest -q tests/unit`), whose target is under 15 s on this 2-core
machine. Prints the wall time, the CPU time pytest used (what the wall time comes to on an idle machine: the
tier runs in one process and starts none), and the load average before and after, since a shared machine
stretches the wall time.

    python3 scripts/bench_unit_tier.py [--runs N]     # default 1; the best run is printed last
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run() -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-unit-") as tmp:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit",
                                 f"--basetemp={tmp}/bt"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"the unit tier failed (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    print(result.stdout.strip().splitlines()[-1])
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    runs = parser.parse_args().runs
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    results = [one_run() for _ in range(runs)]
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    wall, cpu = min(results)
    print(f"unit tier: {wall:.1f} s wall, {cpu:.1f} s CPU (target: under 15 s)")


if __name__ == "__main__":
    main()
