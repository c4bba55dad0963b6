"""nginx's usage log (vmpaths.USAGE_LOG, moved under a test's root), read once the line a test waits for is there.

Why: nginx writes a request's line just after answering it, so the client's answer alone does not say the line is
written yet; a test that reads the log at once may miss its last request.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmdeploy.polling import attempts


def usage_records(log: Path, until: Callable[[list[dict[str, Any]]], bool], within: float = 10.0) -> list[dict[str, Any]]:
    """The log's records, once `until` holds for them (AssertionError with the last few if it never does)."""
    records: list[dict[str, Any]] = []
    for _ in attempts(within, every=0.05):
        records = [json.loads(line) for line in log.read_text().splitlines()]
        if until(records):
            return records
    raise AssertionError(f"{log} never held the line waited for; its last records: {records[-3:]}")
