"""The one wait-with-a-deadline: it answers as soon as the probe does, gives one last look at the deadline,
and never oversleeps it."""
from __future__ import annotations

import time

from llmdeploy.polling import Deadline, attempts, wait_for


def test_wait_for_returns_the_first_answer_without_waiting_further() -> None:
    calls = iter([None, False, "ready", "later"])
    start = time.monotonic()
    assert wait_for(lambda: next(calls), within=5, every=0.01) == "ready"
    assert time.monotonic() - start < 1


def test_wait_for_gives_up_at_the_deadline_after_a_last_look() -> None:
    looks: list[float] = []
    start = time.monotonic()
    assert wait_for(lambda: looks.append(time.monotonic() - start), within=0.2, every=0.05) is None
    assert 0.2 <= looks[-1] < 0.3, looks
    assert 4 <= len(looks) <= 7


def test_a_deadline_never_oversleeps() -> None:
    deadline = Deadline(0.05)
    deadline.sleep(10)
    assert deadline.expired and deadline.left == 0.0 and deadline.elapsed < 1


def test_attempts_yield_at_once_then_stop_after_the_deadline() -> None:
    seen = [d.elapsed for d in attempts(within=0.0, every=1)]
    assert len(seen) == 1 and seen[0] < 0.1
