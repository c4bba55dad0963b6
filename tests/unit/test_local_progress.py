"""`llmdeploy local up`'s live progress (llmdeploy.local.progress.watch) against scripted polls of the VM's
stage markers: every stage is reported done, also when the ready marker shows up in the same poll as, or a
poll before, the last step's own marker (seen once in CI); a failed step and a finished cloud-init without
the ready marker stop it with the reason. No VM: the session is a stand-in that answers the poll script."""
from __future__ import annotations

import io

import pytest

from llmdeploy.local.progress import POLL_SCRIPT, BootProgress, ProvisionFailed, watch

STEPS = ["10-base", "40-engine", "90-ready"]


class ScriptedSession:
    """Answers the poll with the next scripted output (the last one repeats) and `tail` with a log line."""

    def __init__(self, polls: list[str]) -> None:
        self.polls = polls
        self.calls = 0

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 120) -> tuple[int, str, str]:
        if "tail -n 40" in command:
            return 0, "the step's last log line\n", ""
        assert "stages" in command and POLL_SCRIPT.split()[0] in command
        out = self.polls[min(self.calls, len(self.polls) - 1)]
        self.calls += 1
        return 0, out, ""

    def close(self) -> None:
        pass


def marker(step: str, state: str = "done") -> str:
    return f"marker {step}.{state} 2026-11-30T03:00:00Z\nlog {step}.log\n"


def run_watch(polls: list[str], deadline: float = 5.0) -> tuple[str, ScriptedSession]:
    out, session = io.StringIO(), ScriptedSession(polls)
    watch(lambda: session, BootProgress(STEPS, lambda: 1.0, out), deadline, poll_s=0.01)  # type: ignore[arg-type]
    return out.getvalue(), session


def test_every_stage_is_reported_done_when_ready_comes_before_the_last_marker() -> None:
    early_ready = marker("10-base") + marker("40-engine") + "log 90-ready.log\nready\n"
    text, session = run_watch(["", marker("10-base") + "log 40-engine.log\n", early_ready,
                               early_ready + marker("90-ready") + "boot-finished\n"])
    assert session.calls == 4  # it did not stop at the poll that saw the ready marker alone
    for step in STEPS:
        assert f"{step} done" in text


def test_ready_and_every_marker_in_one_poll() -> None:
    text, session = run_watch([marker("10-base") + marker("40-engine") + marker("90-ready") + "ready\n"])
    assert session.calls == 1 and all(f"{s} done" in text for s in STEPS)


def test_ready_without_a_stage_marker_after_cloud_init_finished_fails_naming_it() -> None:
    with pytest.raises(ProvisionFailed, match="without the stage marker.* of 40-engine"):
        run_watch([marker("10-base") + marker("90-ready") + "ready\nboot-finished\n"])


def test_a_failed_step_stops_with_its_log() -> None:
    with pytest.raises(ProvisionFailed, match="(?s)step 40-engine FAILED.*the step's last log line") as info:
        run_watch([marker("10-base") + marker("40-engine", "failed")])
    assert info.value.step == "40-engine"


def test_cloud_init_finished_without_ready_fails() -> None:
    with pytest.raises(ProvisionFailed, match="never wrote its ready marker"):
        run_watch([marker("10-base") + "boot-finished\n"])


def test_the_deadline_says_what_it_last_saw() -> None:
    with pytest.raises(ProvisionFailed, match="not finished after .* last seen: done: 10-base; cloud-init running"):
        run_watch([marker("10-base")], deadline=0.05)
