"""A real systemd (this machine's own, from /usr) booted in a throwaway container, to run unit files under
systemd's own semantics: Restart=, PartOf=, BindsTo=, WantedBy= and job propagation are systemd's, not a model.

Why: the test machine's PID 1 is not systemd, so `systemctl` has no manager to talk to. `systemd-nspawn
--directory=/ --volatile=yes` boots the host's /usr on an empty tmpfs root (nothing of the host is written),
with a private network and no machined registration; it boots to basic.target (no services of the
host's presets) in a few seconds. Units go into the
container's /etc/systemd/system; commands run inside with nsenter. Stopped by PID (poweroff, then the nspawn
process group), also when a test fails.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .procs import start_process, stop_process, tail

BOOT_S = 60.0


@dataclass
class Systemd:
    leader: int  # the container's PID 1, as this machine sees it
    log: Path
    shared: Path  # this folder is /srv inside the container

    def run(self, cmd: Sequence[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.leader), "-a", *cmd], capture_output=True, text=True,
                              timeout=timeout, check=check)

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run(["systemctl", *args], check=check).stdout.strip()

    def install_unit(self, name: str, text: str) -> None:
        (self.shared / name).write_text(text)
        self.run(["cp", f"/srv/{name}", f"/etc/systemd/system/{name}"])

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit)


def _leader(nspawn: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + BOOT_S
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited ({nspawn.returncode}):\n{tail(log)}")
        for child in Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split():
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd" and \
                    os.path.exists(f"/proc/{child}/ns/user"):
                return int(child)
        time.sleep(0.2)
    raise AssertionError(f"no systemd in the container after {BOOT_S:.0f} s:\n{tail(log)}")


@contextmanager
def booted_systemd(work: Path, name: str) -> Iterator[Systemd]:
    """A booted systemd whose /srv is `work`/srv; powered off and stopped by PID at exit."""
    shared = work / "srv"
    shared.mkdir(parents=True, exist_ok=True)
    log = work / "nspawn.log"
    nspawn = start_process(["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network",
                            "--directory=/", "--volatile=yes", f"--bind={shared}:/srv", f"--machine={name}",
                            "--boot", "--", "systemd.firstboot=off", "systemd.unit=basic.target"], log)
    try:
        box = Systemd(_leader(nspawn, log), log, shared)
        deadline = time.monotonic() + BOOT_S
        state = ""
        while time.monotonic() < deadline:
            state = box.run(["systemctl", "is-active", "basic.target"], check=False).stdout.strip()
            if state == "active":
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the container's systemd is {state!r} after {BOOT_S:.0f} s:\n{tail(log)}")
        yield box
        box.run(["systemctl", "poweroff"], check=False)
        nspawn.wait(timeout=30)
    finally:
        stop_process(nspawn, grace=10.0)
