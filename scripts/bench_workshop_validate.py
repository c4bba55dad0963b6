#!/usr/bin/env python3
"""Benchmark: `llmdeploy render` and `llmdeploy validate` of a dedicated workshop of N attendees (one endpoint
each, Let's Encrypt names <id>.ws.example.org), in a throwaway project. Prints wall time of each command and
milliseconds per attendee. validate runs the real tools (cloud-init, shellcheck, nginx, systemd-analyze).

    python3 scripts/bench_workshop_validate.py [N] [--render-only]     # default 3000
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra"), str(ROOT / "tests")]

from llmdeploy.cli import main  # noqa: E402
from support.workshop_stack import workshop_project  # noqa: E402


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    assert code == 0, f"{argv}: exit {code}"
    return time.perf_counter() - start


def run(attendees: int, render_only: bool) -> None:
    rows = [{"id": f"u{i:04d}", "name": f"Attendee {i}", "email": f"u{i:04d}@example.org"} for i in range(attendees)]
    with tempfile.TemporaryDirectory() as tmp:
        root = workshop_project(Path(tmp), rows, tlsMode="letsencrypt", workshopDomain="ws.example.org")
        common = ["--stack", "ws", "--project-dir", str(root)]
        seconds = timed(["render", *common, "--out", str(Path(tmp) / "out")])
        print(f"render   {attendees:5d} attendees: {seconds:7.1f} s ({seconds / attendees * 1000:5.1f} ms each)")
        if not render_only:
            seconds = timed(["validate", *common])
            print(f"validate {attendees:5d} attendees: {seconds:7.1f} s ({seconds / attendees * 1000:5.1f} ms each)")


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(int(numbers[0]) if numbers else 3000, "--render-only" in sys.argv)
