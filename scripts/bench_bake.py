#!/usr/bin/env python3
"""Cold against baked: for each stack, from the guest's start to a passing smoke test, booted from the base image
(`llmdeploy local up --no-baked`) and from a bake of its install (`llmdeploy bake`, then `local up`), and the ratio.

Each run is `llmdeploy` as a user runs it, with its VM state and its bakes in temporary folders (the user's own are
left alone; --keep-bakes DIR keeps the bakes there instead), and `local down` after each boot, also on failure.
Targets (issue 24): nspawn under 0:15 for llama.cpp (`local`) and under 1:00 for `local-vllm` and `local-xinference`;
QEMU under 1:30 for `local`. Run it under the heavy lock, one stack at a time:

    flock /tmp/llmdeploy-heavy.lock python3 scripts/bench_bake.py --runtime nspawn --stack local
    python3 scripts/bench_bake.py --runtime nspawn --stack local-vllm --stack local-xinference
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra")]

from llmdeploy.local.progress import clock  # noqa: E402
from llmdeploy.local.state import VmState  # noqa: E402

TARGET_S = {("nspawn", "local"): 15, ("nspawn", "local-vllm"): 60, ("nspawn", "local-xinference"): 60,
            ("qemu", "local"): 90}


def llmdeploy(args: list[str], env: dict[str, str], log: Path) -> int:
    with open(log, "ab") as fh:
        fh.write(f"\n$ llmdeploy {' '.join(args)}\n".encode())
        fh.flush()
        return subprocess.call([sys.executable, "-m", "llmdeploy.cli", *args], env=env, stdout=fh,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def boot_to_smoke(stack: str, runtime: str, env: dict[str, str], log: Path, extra: list[str]) -> tuple[float, str]:
    """Seconds from the guest's start to a passing smoke test, and the line `up` said about the bake."""
    offset = log.stat().st_size if log.exists() else 0
    try:
        code = llmdeploy(["local", "up", "--stack", stack, "--runtime", runtime, "--project-dir", str(ROOT), *extra],
                         env, log)
        state = VmState.load(stack)
        if code != 0 or state is None or state.phase != "ready":
            raise SystemExit(f"llmdeploy local up {stack} exited {code}; see {log}")
        t = state.timeline
        text = log.read_bytes()[offset:].decode(errors="replace")  # this run's lines only
        said = next((line.split("] ", 1)[-1] for line in text.splitlines() if "baked image:" in line), "")
        return t["smoke_done"] - t[f"{runtime}_started"], said
    finally:
        llmdeploy(["local", "down", "--stack", stack], env, log)


def bench(stack: str, runtime: str, env: dict[str, str], log: Path, skip_cold: bool) -> tuple[float, float, float]:
    cold = 0.0
    if not skip_cold:
        cold, said = boot_to_smoke(stack, runtime, env, log, ["--no-baked"])
        print(f"  cold:  {clock(cold)}  ({said})", flush=True)
    start = time.monotonic()
    if llmdeploy(["bake", "--stack", stack, "--runtime", runtime, "--project-dir", str(ROOT)], env, log) != 0:
        raise SystemExit(f"llmdeploy bake {stack} failed; see {log}")
    bake_s = time.monotonic() - start
    print(f"  bake:  {clock(bake_s)}  (once per install; not counted)", flush=True)
    baked, said = boot_to_smoke(stack, runtime, env, log, ["--baked"])
    print(f"  baked: {clock(baked)}  ({said})", flush=True)
    return cold, baked, bake_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", action="append", help="a local stack (repeatable; default: local)")
    parser.add_argument("--runtime", choices=("nspawn", "qemu"), default="nspawn")
    parser.add_argument("--skip-cold", action="store_true",
                        help="bake and boot the bake only (a cold boot of vLLM or Xinference takes minutes more)")
    parser.add_argument("--keep-bakes", metavar="DIR", help="keep the bakes in DIR (default: a temporary folder)")
    args = parser.parse_args()
    stacks = args.stack or ["local"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmdeploy-bench-bake-") as tmp:
        bakes = Path(args.keep_bakes).resolve() if args.keep_bakes else Path(tmp) / "baked"
        env = {**os.environ, "LLMDEPLOY_STATE_DIR": str(Path(tmp) / "state"), "LLMDEPLOY_BAKED_DIR": str(bakes),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "infra"), os.environ.get("PYTHONPATH")]))}
        os.environ["LLMDEPLOY_STATE_DIR"] = env["LLMDEPLOY_STATE_DIR"]  # VmState.load here reads the same state
        log = Path(tmp) / "bench.log"
        try:
            for stack in stacks:
                print(f"{stack} on {args.runtime}:", flush=True)
                rows.append((stack, *bench(stack, args.runtime, env, log, args.skip_cold)))
        except BaseException:
            print(f"failed; the last lines of the log:\n{log.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            if not args.keep_bakes:
                shutil.rmtree(bakes, ignore_errors=True)
    print(f"\nboot to passing smoke test, {args.runtime}, {os.cpu_count()} host cores:")
    print(f"  {'stack':18} {'cold':>6} {'baked':>6} {'ratio':>6} {'bake':>6}  target")
    met = True
    for stack, cold, baked, bake_s in rows:
        target = TARGET_S.get((args.runtime, stack))
        ok = target is None or baked < target
        met = met and ok
        ratio = f"{cold / baked:5.1f}x" if cold else "     -"
        print(f"  {stack:18} {clock(cold) if cold else '-':>6} {clock(baked):>6} {ratio} {clock(bake_s):>6}  "
              f"{'< ' + clock(target) + (' MET' if ok else ' MISSED') if target else '-'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
