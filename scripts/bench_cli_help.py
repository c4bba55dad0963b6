#!/usr/bin/env python3
"""How long `llmdeploy --help` takes, as a ratio to starting Python itself (`python3 -c pass`): the median of N
runs of each, alternated so that both see the same machine load.

The ratio, not the seconds, is the figure: on a loaded 2-core machine both grow together. The CLI imports only
what building its parser needs (each command imports its own libraries when it runs; tests/integration/
test_cli_first_minutes.py checks that no HTTP, SSH or PDF library is loaded), so most of what is left is Python's
start-up, argparse and PyYAML.

    python3 scripts/bench_cli_help.py [--runs 21]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run; CPU time suffers less from a loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help="runs of each command (default: 21)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "infra")}  # this checkout's llmdeploy, installed or not
    help_argv = [sys.executable, "-m", "llmdeploy.cli", "--help"]
    bare_argv = [sys.executable, "-c", "pass"]
    wall(help_argv, env)  # warm the page cache and the bytecode cache once
    helps, bares = [], []
    for _ in range(args.runs):
        helps.append(wall(help_argv, env))
        bares.append(wall(bare_argv, env))
    help_s, bare_s = (statistics.median(w for w, _ in helps), statistics.median(w for w, _ in bares))
    help_cpu, bare_cpu = (statistics.median(c for _, c in helps), statistics.median(c for _, c in bares))
    print(f"{'':18}{'wall':>10}{'cpu':>10}   (medians of {args.runs} runs)")
    print(f"llmdeploy --help  {help_s * 1000:7.1f} ms{help_cpu * 1000:7.1f} ms")
    print(f"python3 -c pass   {bare_s * 1000:7.1f} ms{bare_cpu * 1000:7.1f} ms")
    print(f"ratio             {help_s / bare_s:10.2f}{help_cpu / bare_cpu:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
