"""Start helper processes in their own process group and stop them by PID.

Why: every server a test starts (llama.cpp, nginx) must be gone when the test ends, also when
it fails. Each process gets its own session (process group id == its PID), writes its output to
a log file (never a pipe that could fill up and block it), and is stopped by signalling that
group: SIGTERM, a grace period, then SIGKILL, and always a wait() so no zombie is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def start_process(cmd: Sequence[str], log_path: Path, cwd: Path | None = None,
                  env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session with stdout and stderr appended to `log_path` (environment: `env`, else
    this process's)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """Stop the process group led by `proc.pid` and reap the process; return its exit code."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)  # also ends children the leader left behind
    return proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], str | None],
    proc: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    log_path: Path,
    interval: float = 0.05,
) -> None:
    """Poll `check` until it returns None (ready); it returns a description of what it saw.

    Raises RuntimeError with the last observation and the log's tail if the deadline passes or
    the process exits first.
    """
    deadline = time.monotonic() + timeout
    last = "nothing checked yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            headline = f"{what}: process {proc.pid} exited with {proc.returncode}"
            raise RuntimeError(_failure(headline, last, log_path))
        seen = check()
        if seen is None:
            return
        last = seen
        time.sleep(interval)
    raise RuntimeError(_failure(f"{what}: not ready after {timeout:.1f}s", last, log_path))


def _failure(headline: str, last: str, log_path: Path) -> str:
    return f"{headline}; last seen: {last}\n--- tail of {log_path} ---\n{tail(log_path)}"
