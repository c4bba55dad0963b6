"""Live provisioning progress, for display only: poll the VM's stage markers over SSH and print each step as it
starts and ends, with the elapsed time. Whether the VM is ready is llmdeploy-wait-ready's verdict
(local/readiness.py runs it), never this module's."""
from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from ..sshclient import Session, SshError
from ..vmpaths import LOG_DIR, STAGES_DIR

POLL_SCRIPT = (
    f"cd {STAGES_DIR} 2>/dev/null && for f in *.done *.failed; do [ -e \"$f\" ] && "
    "printf 'marker %s %s\\n' \"$f\" \"$(head -c 200 \"$f\" | tr '\\n' ' ')\"; done; "
    f"ls {LOG_DIR} 2>/dev/null | sed 's/^/log /'; true"
)


@dataclass
class Snapshot:
    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)


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
    return snap


Say = Callable[[str], None]  # prints one line of progress


class Clock:
    """Seconds since it was made (the left column of `up`'s output)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.start


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
        self.failed: set[str] = set()
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
            if step in snap.failed and step not in self.failed:
                self.failed.add(step)
                self.say(f"{step} FAILED ({snap.failed[step]})")
        running = [s for s in self.steps if s in self.started_at and s not in self.finished | self.failed]
        if running:
            self._status(f"{running[0]} running for {clock(now - self.started_at[running[0]])}")
        elif not self.started_at:
            self._status("cloud-init: waiting for the first step")


def show(session: Session, progress: BootProgress) -> None:
    """One look at the stage markers, printed; SshError when the VM does not answer (the caller goes on)."""
    polled = session.run(f"sudo -n sh -c {shlex.quote(POLL_SCRIPT)}", timeout=60)
    if not polled.ok:
        raise SshError(f"poll exited {polled.exit_code}: {polled.stderr.strip()[:200]}")
    progress.update(parse_poll(polled.stdout))
