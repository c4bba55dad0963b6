"""Background processes of a local VM (QEMU, the model server, pebble), started detached and stopped by PID.

Each process leads its own session (process group id == PID) and writes to a log file, so it outlives
the `llmdeploy local up` that started it and `down` can stop it later from the PID in the state file.
Before signalling a PID, its command line is checked for a marker (the VM's state folder), so a PID
that the system has since reused for another program is never signalled.
"""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..polling import wait_for


def start_daemon(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    return proc.pid


# Popen objects of the processes this Python process started: kept so they can be reaped (no zombies)
# when the same process stops them (the tests, or `up` cleaning up after a failure).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int | None, marker: str = "") -> bool:
    """Whether pid runs (not a zombie) and, when a marker is given, its command line holds it."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker in cmdline(pid) if marker else True


def stop_process(pid: int | None, marker: str, grace: float = 10.0) -> bool:
    """SIGTERM the process group led by pid, SIGKILL after `grace` seconds; True if something was stopped.
    A pid whose command line lacks `marker` is left alone (it is not ours any more)."""
    if not pid or not alive(pid, marker):
        _reap(pid)
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        except PermissionError:
            os.kill(pid, sig)
        if wait_for(lambda: _reaped(pid), within=wait, every=0.1):
            return True
    _reap(pid)
    return True


def _reaped(pid: int) -> bool:
    """Whether pid has exited (and, if it is our child, been reaped)."""
    _reap(pid)
    return not alive(pid)


def _reap(pid: int | None) -> None:
    child = _CHILDREN.get(pid or 0)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(child.pid, None)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
