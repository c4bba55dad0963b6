"""Live provisioning progress: poll the VM's stage markers over SSH and print each step as it starts and
ends, with the elapsed time; stop at the ready marker, a failed step (with the tail of its log), or the
deadline (with what was last seen)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from ..errors import Failure
from ..render import READY_MARKER, STAGES_DIR
from .ssh import Session, SshError

BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished"
STEP_LOGS = "/var/log/llmdeploy"
POLL_SCRIPT = (
    f"cd {STAGES_DIR} 2>/dev/null && for f in *.done *.failed; do [ -e \"$f\" ] && "
    "printf 'marker %s %s\\n' \"$f\" \"$(head -c 200 \"$f\" | tr '\\n' ' ')\"; done; "
    f"ls {STEP_LOGS} 2>/dev/null | sed 's/^/log /'; "
    f"[ -e {BOOT_FINISHED} ] && echo boot-finished; [ -e {READY_MARKER} ] && echo ready; true"
)


class ProvisionFailed(Failure):
    def __init__(self, message: str, step: str = "") -> None:
        super().__init__(message)
        self.step = step


@dataclass
class Snapshot:
    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    boot_finished: bool = False
    ready: bool = False


def parse_poll(stdout: str) -> Snapshot:
    snap = Snapshot()
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "marker":
            name, _, content = rest.partition(" ")
            if name.endswith(".done"):
                snap.done.add(name[:-5])
            elif name.endswith(".failed"):
                snap.failed[name[:-7]] = content.strip()
        elif kind == "log" and rest.endswith(".log"):
            snap.started.add(rest[:-4])
        elif line == "boot-finished":
            snap.boot_finished = True
        elif line == "ready":
            snap.ready = True
    return snap


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class BootProgress:
    """Prints provisioning events; `elapsed` gives the seconds since `up` started (the left column)."""

    def __init__(self, steps: list[str], elapsed: Callable[[], float], out: TextIO | None = None,
                 on_event: Callable[[str, float], None] | None = None) -> None:
        self.steps = steps
        self.elapsed = elapsed
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.on_event = on_event or (lambda name, t: None)
        self.started_at: dict[str, float] = {}
        self.finished: set[str] = set()
        self.last_heartbeat = 0.0
        self._status_shown = False

    def say(self, text: str) -> None:
        if self._status_shown:
            self.out.write("\r\033[K")
            self._status_shown = False
        self.out.write(f"[{clock(self.elapsed())}] {text}\n")
        self.out.flush()

    def _status(self, text: str) -> None:
        now = self.elapsed()
        if self.tty:
            self.out.write(f"\r\033[K[{clock(now)}] {text}")
            self.out.flush()
            self._status_shown = True
        elif now - self.last_heartbeat >= 60:
            self.say(text)
        else:
            return
        self.last_heartbeat = now

    def update(self, snap: Snapshot) -> None:
        now = self.elapsed()
        for step in self.steps:
            if (step in snap.started or step in snap.done) and step not in self.started_at:
                self.started_at[step] = now
                self.on_event(f"{step}:start", now)
                if step not in snap.done:
                    self.say(f"{step} ...")
            if step in snap.done and step not in self.finished:
                self.finished.add(step)
                self.on_event(f"{step}:done", now)
                self.say(f"{step} done ({clock(now - self.started_at[step])})")
        running = [s for s in self.steps if s in self.started_at and s not in self.finished]
        if running:
            self._status(f"{running[0]} running for {clock(now - self.started_at[running[0]])}")
        elif not snap.ready:
            self._status("cloud-init: waiting for the first step")


def watch(session_factory: Callable[[], Session], progress: BootProgress, deadline_s: float, poll_s: float = 3.0,
          alive: Callable[[], str | None] = lambda: None) -> Snapshot:
    """Poll until the ready marker appears; ProvisionFailed on a failed step, a finished cloud-init without the
    ready marker, a dead VM (`alive` returns why) or the deadline."""
    end = time.monotonic() + deadline_s
    session: Session | None = None
    last_seen = "nothing yet"
    try:
        while True:
            dead = alive()
            if dead:
                raise ProvisionFailed(f"the VM stopped during provisioning: {dead}")
            try:
                if session is None:
                    session = session_factory()
                code, out, err = session.run(f"sudo -n sh -c {_quote(POLL_SCRIPT)}", timeout=60)
                if code != 0:
                    raise SshError(f"poll exited {code}: {err.strip()[:200]}")
                snap = parse_poll(out)
                last_seen = (f"done: {', '.join(s for s in progress.steps if s in snap.done) or 'none'}; "
                             f"cloud-init {'finished' if snap.boot_finished else 'running'}")
                progress.update(snap)
                if snap.failed:
                    step, marker = next(iter(snap.failed.items()))
                    _, log, _ = session.run(f"sudo -n tail -n 40 {STEP_LOGS}/{step}.log", timeout=60)
                    raise ProvisionFailed(f"step {step} FAILED ({marker}); last lines of {STEP_LOGS}/{step}.log:\n"
                                          f"{log.rstrip()}", step)
                # The last step writes the ready marker a moment before the runner writes that step's own
                # marker: wait for both, so that every stage is reported done.
                missing = [s for s in progress.steps if s not in snap.done]
                if snap.ready and not missing:
                    return snap
                if snap.ready and snap.boot_finished:
                    raise ProvisionFailed(f"cloud-init finished with the ready marker but without the stage "
                                          f"marker(s) of {', '.join(missing)} in {STAGES_DIR}")
                if snap.boot_finished:
                    _, log, _ = session.run("sudo -n tail -n 40 /var/log/cloud-init-output.log", timeout=60)
                    raise ProvisionFailed("cloud-init finished but provisioning never wrote its ready marker; last "
                                          f"lines of /var/log/cloud-init-output.log:\n{log.rstrip()}")
            except SshError as exc:  # a dropped connection while the VM is busy: log in again
                last_seen = f"SSH: {exc}"
                if session is not None:
                    session.close()
                session = None
            if time.monotonic() + poll_s > end:
                raise ProvisionFailed(f"provisioning not finished after {deadline_s / 60:.0f} min; last seen: "
                                      f"{last_seen}")
            time.sleep(poll_s)
    finally:
        if session is not None:
            session.close()


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)
