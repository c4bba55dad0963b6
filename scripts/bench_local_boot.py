#!/usr/bin/env python3
"""How long the local VM takes: from the guest's start (QEMU on the cached image, or with --runtime nspawn the
systemd container on the cached tree) to a passing smoke test, and which provisioning stages and cloud-init
modules (`cloud-init analyze blame`) take the time.

It runs `llmdeploy local up` as a user does (the example stack Pulumi.local.yaml unless --stack says
otherwise), with its VM state in a temporary folder so that a VM of the user's own is left alone, reads the
timeline `up` records, asks the VM for `cloud-init analyze blame`, then runs `llmdeploy local down`, which
stops the VM and the host-side servers by PID, also when something fails. The image is built first if it is
not cached (that time is shown separately and not counted).

Target: under 6 minutes from boot to a passing smoke test on a 2-core machine under TCG.

    python3 scripts/bench_local_boot.py [--stack local] [--runtime qemu|nspawn] [--top 8]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra")]

from llmdeploy.local import runtime  # noqa: E402
from llmdeploy.local.guestlogin import login  # noqa: E402
from llmdeploy.local.progress import clock  # noqa: E402
from llmdeploy.local.state import VmState  # noqa: E402

TARGET_S = 6 * 60


def stage_times(state: VmState) -> list[tuple[str, float]]:
    """(stage, seconds) from the timeline `up` recorded (as seen by its 3-second poll)."""
    t = state.timeline
    return [(s, t[f"{s}:done"] - t[f"{s}:start"]) for s in state.stages if f"{s}:start" in t and f"{s}:done" in t]


def blame(state: VmState, top: int) -> list[str]:
    session = login(state)
    try:
        analysed = session.run("sudo -n cloud-init analyze blame", timeout=120)
    finally:
        session.close()
    if not analysed.ok:
        return [f"(cloud-init analyze blame exited {analysed.exit_code}: {analysed.stderr.strip()[:200]})"]
    rows = [line.strip() for line in analysed.stdout.splitlines() if line.strip().endswith(")")]
    return sorted(rows, key=lambda r: float(r.split("s", 1)[0]), reverse=True)[:top]


def report(state: VmState, up_seconds: float, top: int) -> bool:
    t = state.timeline
    guest = runtime.of(state)
    started = t[guest.started_event]
    boot_to_smoke = t["smoke_done"] - started
    print(f"\n{guest.describe(state)} ({state.accel_reason}); {os.cpu_count()} host cores")
    print(f"llmdeploy local up, whole command:        {clock(up_seconds)}")
    print(f"boot -> SSH login:                        {clock(t['ssh_up'] - started)}")
    print(f"boot -> provisioning finished (ready):    {clock(t['ready_marker'] - started)}")
    print(f"boot -> passing smoke test:               {clock(boot_to_smoke)}  "
          f"(target < {clock(TARGET_S)}: {'MET' if boot_to_smoke < TARGET_S else 'MISSED'})")
    print("\nprovisioning stages (llmdeploy's own markers):")
    for stage, seconds in sorted(stage_times(state), key=lambda x: -x[1]):
        print(f"  {seconds:7.1f}s  {stage}")
    print(f"\nslowest cloud-init modules (cloud-init analyze blame, top {top}):")
    for row in blame(state, top):
        print(f"  {row}")
    return boot_to_smoke < TARGET_S


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="local")
    parser.add_argument("--runtime", choices=runtime.RUNTIMES, default="qemu",
                        help="qemu (a VM, the default) or nspawn (a systemd container)")
    parser.add_argument("--top", type=int, default=8, help="how many cloud-init modules to show")
    args = parser.parse_args()

    start = time.monotonic()
    img, built = runtime.get(args.runtime).ensure_image(lambda line: print(line, flush=True))
    print(f"image: {img.folder} ({'built now in ' + clock(time.monotonic() - start) if built else 'cached'})")

    with tempfile.TemporaryDirectory(prefix="llmdeploy-bench-") as tmp:
        os.environ["LLMDEPLOY_STATE_DIR"] = tmp  # this process and `llmdeploy local` read the same state
        log = Path(tmp).parent / f"{Path(tmp).name}-up.log"
        try:
            started = time.monotonic()
            with open(log, "wb") as fh:
                code = subprocess.call(["llmdeploy", "local", "up", "--stack", args.stack, "--runtime", args.runtime,
                                        "--project-dir", str(ROOT)], stdout=fh, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
            up_seconds = time.monotonic() - started
            state = VmState.load(args.stack)
            if code != 0 or state is None or state.phase != "ready":
                print(f"llmdeploy local up exited {code}; its output:\n{log.read_text(errors='replace')[-4000:]}")
                return 1
            met = report(state, up_seconds, args.top)
        finally:
            subprocess.call(["llmdeploy", "local", "down", "--stack", args.stack], stdout=subprocess.DEVNULL)
            log.unlink(missing_ok=True)  # it holds the printed API key
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
