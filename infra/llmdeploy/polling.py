"""Polling with a deadline: the one definition every wait in the package uses.

A wait asks again until its question is answered or its time runs out, and then says which. The clock is
`time.monotonic`, so a wall-clock jump neither ends a wait early nor stretches it.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Deadline:
    """`seconds` from now; `left` counts down to 0, `expired` once it is reached."""

    seconds: float
    start: float = field(default_factory=lambda: time.monotonic())  # looked up per call: a test may swap the clock

    @property
    def left(self) -> float:
        return max(0.0, self.start + self.seconds - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.left <= 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def sleep(self, interval: float) -> None:
        """Sleep `interval`, or what is left when less: a wait never oversleeps its deadline."""
        time.sleep(min(interval, self.left))


def attempts(within: float, every: float) -> Iterator[Deadline]:
    """Yield at once, then every `every` seconds until `within` seconds have passed (the last yield comes at the
    deadline, so a wait gets one last look); the loop body breaks or returns when its question is answered."""
    deadline = Deadline(within)
    while True:
        yield deadline
        if deadline.expired:
            return
        deadline.sleep(every)


def wait_for(probe: Callable[[], T | None], within: float, every: float = 1.0) -> T | None:
    """Call `probe` until it returns something other than None or False; that value, or None at the deadline."""
    for _ in attempts(within, every):
        answer = probe()
        if answer is not None and answer is not False:
            return answer
    return None
