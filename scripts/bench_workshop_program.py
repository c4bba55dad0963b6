#!/usr/bin/env python3
"""Benchmark: the Pulumi program for a workshop of N attendees (dedicated layout, one VM each), run
whole under Pulumi's mocks. Prints wall time, peak memory and resources registered, for 1 and N
attendees, each in a fresh process (so peak memory is that run's own).

    python3 scripts/bench_workshop_program.py [N]     # default 200
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"


def one_run(attendees: int) -> dict[str, float]:
    sys.path[:0] = [str(ROOT / "infra"), str(ROOT / "tests")]
    from llmdeploy.stack_yaml import read_stack
    from support.pulumi_mocks import run_program

    with tempfile.TemporaryDirectory() as tmp:
        roster = Path(tmp) / "roster.csv"
        roster.write_text("id,name,email\n" + "".join(f"ws{i:03d},Attendee {i},ws{i:03d}@example.org\n"
                                                     for i in range(attendees)))
        values = read_stack(ROOT, "llamacpp-cpu") | {"sshPrivateKey": KEY, "workshopRoster": str(roster)}
        start = time.perf_counter()
        run = run_program(ROOT / "infra" / "__main__.py", values, stack="bench", secret_keys=("sshPrivateKey",))
        seconds = time.perf_counter() - start
    assert len(run.outputs["attendees"]) == attendees
    return {"attendees": attendees, "seconds": round(seconds, 2), "resources": len(run.resources),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(one_run(int(sys.argv[2]))))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    results = []
    for count in (1, n):
        out = subprocess.run([sys.executable, __file__, "--child", str(count)], capture_output=True, text=True,
                             check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(f"{r['attendees']:4d} attendee(s): {r['seconds']:7.2f} s, {r['resources']:5d} resources, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    one, many = results
    print(f"ratio {n}/1: time x{many['seconds'] / one['seconds']:.1f}, "
          f"{(many['seconds'] - one['seconds']) / (n - 1) * 1000:.0f} ms per extra attendee, "
          f"memory +{many['peak_rss_mb'] - one['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
