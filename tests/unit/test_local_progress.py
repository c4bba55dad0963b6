"""`llmdeploy local up`'s wait for provisioning (llmdeploy.local.readiness.wait_ready) against a scripted VM:
the VM's own llmdeploy-wait-ready decides (its exit code and output), while the stage-marker polls only feed
the display. So a poll that shows every marker does not end the wait, a wait-ready that fails ends it with
what it printed, a dropped connection runs it again for the time left, and every stage is reported done at
the end even when the last marker shows up after the previous poll. No VM: the session is a stand-in."""
from __future__ import annotations

import io

import pytest

from llmdeploy.local.progress import POLL_SCRIPT, BootProgress
from llmdeploy.local.readiness import ProvisionFailed, wait_ready
from llmdeploy.sshclient import CommandResult
from llmdeploy.vmpaths import WAIT_READY

STEPS = ["10-base", "40-engine", "90-ready"]


class ScriptedRun:
    """wait-ready on the VM: still running for `polls` looks, then `code` (-1: the connection dropped)."""

    def __init__(self, polls: int, code: int, stdout: str = "", stderr: str = "") -> None:
        self.polls, self.code, self.stdout, self.stderr = polls, code, stdout, stderr

    def poll(self) -> int | None:
        if self.polls > 0:
            self.polls -= 1
            return None
        return self.code

    def output(self) -> tuple[str, str]:
        return self.stdout, self.stderr


class ScriptedVm:
    """Each login is a session; each wait-ready started is the next ScriptedRun; marker polls answer the next
    scripted output (the last one repeats)."""

    def __init__(self, runs: list[ScriptedRun], polls: list[str]) -> None:
        self.runs, self.polls = runs, polls
        self.started: list[str] = []
        self.marker_polls = 0

    def login(self) -> ScriptedVm:
        return self

    def start(self, command: str) -> ScriptedRun:
        self.started.append(command)
        return self.runs.pop(0)

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 120) -> CommandResult:
        assert POLL_SCRIPT.split()[0] in command and WAIT_READY not in command
        out = self.polls[min(self.marker_polls, len(self.polls) - 1)]
        self.marker_polls += 1
        return CommandResult(command, 0, out, "", 0.0)

    def close(self) -> None:
        pass


def marker(step: str, state: str = "done") -> str:
    return f"marker {step}.{state} 2026-11-30T03:00:00Z\nlog {step}.log\n"


ALL_DONE = "".join(marker(s) for s in STEPS)


def run_wait(vm: ScriptedVm, timeout_s: int = 60, alive: object = lambda: None) -> tuple[str, str]:
    out = io.StringIO()
    stdout = wait_ready(vm.login, BootProgress(STEPS, lambda: 1.0, out), timeout_s,  # type: ignore[arg-type]
                        alive=alive, poll_s=0.01)  # type: ignore[arg-type]
    return stdout, out.getvalue()


def test_every_marker_done_does_not_end_the_wait_only_wait_ready_does() -> None:
    # The old watch returned at the first poll that showed every marker (and the ready marker): before
    # cloud-init had finished and before the engine answered. Now it keeps waiting for wait-ready's verdict.
    vm = ScriptedVm([ScriptedRun(5, 0, "ready: every stage done\n")], [ALL_DONE])
    stdout, shown = run_wait(vm)
    assert vm.marker_polls == 6  # five while wait-ready ran, one after it returned
    assert stdout == "ready: every stage done\n"
    assert vm.started == [f"sudo -n {WAIT_READY} 60"]
    assert all(f"{s} done" in shown for s in STEPS)


def test_every_stage_is_reported_done_when_the_last_marker_appears_after_the_last_poll() -> None:
    vm = ScriptedVm([ScriptedRun(2, 0)], [marker("10-base") + "log 40-engine.log\n", marker("10-base"), ALL_DONE])
    _, shown = run_wait(vm)
    assert shown.index("10-base done") < shown.index("40-engine done")
    assert all(f"{s} done" in shown for s in STEPS)


def test_a_failing_wait_ready_ends_the_wait_with_what_it_printed() -> None:
    said = "provisioning FAILED at stage 40-engine (2026-11-30T03:00:00Z exit=22); last lines of ...: curl: (22)"
    vm = ScriptedVm([ScriptedRun(1, 1, stderr=said)], [marker("10-base") + marker("40-engine", "failed")])
    with pytest.raises(ProvisionFailed, match=r"llmdeploy-wait-ready exited 1:\nprovisioning FAILED at stage 40-engine"):
        run_wait(vm)
    assert len(vm.started) == 1  # a failure is not retried


def test_a_failed_marker_alone_is_shown_but_does_not_decide() -> None:
    vm = ScriptedVm([ScriptedRun(2, 0)], [marker("10-base") + marker("40-engine", "failed"), ALL_DONE])
    _, shown = run_wait(vm)
    assert "40-engine FAILED (2026-11-30T03:00:00Z)" in shown and "90-ready done" in shown


def test_a_dropped_connection_runs_wait_ready_again_for_the_time_left() -> None:
    vm = ScriptedVm([ScriptedRun(1, -1), ScriptedRun(0, 0, "ready\n")], [ALL_DONE])
    stdout, _ = run_wait(vm, timeout_s=600)
    assert stdout == "ready\n" and len(vm.started) == 2
    assert all(c.startswith(f"sudo -n {WAIT_READY} ") for c in vm.started)
    assert 590 <= int(vm.started[1].split()[-1]) <= 600


def test_a_guest_that_dies_ends_the_wait() -> None:
    vm = ScriptedVm([ScriptedRun(100, 0)], [marker("10-base")])
    with pytest.raises(ProvisionFailed, match="the VM stopped during provisioning: QEMU exited 1"):
        run_wait(vm, alive=lambda: "QEMU exited 1")


def test_a_guest_that_dies_before_a_login_works_ends_the_wait() -> None:
    from llmdeploy.sshclient import SshError

    def refused() -> ScriptedVm:
        raise SshError("connection refused")

    with pytest.raises(ProvisionFailed, match="the VM stopped during provisioning: the container exited"):
        wait_ready(refused, BootProgress(STEPS, lambda: 1.0, io.StringIO()), 600,  # type: ignore[arg-type]
                   alive=lambda: "the container exited", poll_s=0.01)


class FakeClock:
    """polling's `time`: sleeping advances the clock at once, so a 10-minute deadline passes in no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_no_login_until_the_deadline_says_what_it_last_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmdeploy import polling
    from llmdeploy.sshclient import SshError

    clock = FakeClock()
    monkeypatch.setattr(polling, "time", clock)
    logins: list[float] = []

    def refused() -> ScriptedVm:
        logins.append(clock.now)
        raise SshError("NoValidConnectionsError: connection refused")

    with pytest.raises(ProvisionFailed, match="not finished after 10 min; last seen: SSH: NoValidConnectionsError"):
        wait_ready(refused, BootProgress(STEPS, lambda: 1.0, io.StringIO()), 600, poll_s=3)  # type: ignore[arg-type]
    # It kept trying every poll until the deadline, not once, and had a last look at it (polling.attempts).
    assert logins[:3] == [0, 3, 6] and len(logins) == 201 and logins[-1] == 600
