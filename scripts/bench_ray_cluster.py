#!/usr/bin/env python3
"""Time a real 2-node Ray cluster as the ray target builds it (tests/support/raytwonode.py): head up, worker
joined, echo app deployed to RUNNING (2 replicas), scale up under a bounded load, scale down after it, and the
endpoint answering again after the worker is killed. Needs root (network namespaces) and the Ray venv
(`python3 scripts/install_engines.py ray`). Run under the heavy lock:

    flock /tmp/llmdeploy-heavy.lock python3 scripts/bench_ray_cluster.py [--runs N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra"), str(ROOT)]

from tests.support.raytwonode import two_node_cluster  # noqa: E402

SCALE_UP_S, SCALE_DOWN_S, WORKER_LOST_S = 60, 90, 90


def one_run(work: Path) -> dict[str, float]:
    with two_node_cluster(work) as ray2:
        ray2.autoscale_cycle(SCALE_UP_S, SCALE_DOWN_S)
        ray2.lose_worker(SCALE_UP_S, WORKER_LOST_S)
        return dict(ray2.timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as work:
            runs.append(one_run(Path(work)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()), flush=True)
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key}: median {statistics.median(values):.1f} s (min {min(values):.1f}, max {max(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
