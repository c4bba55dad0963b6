"""The example workshop stack and its roster, for the workshop example tests."""
from __future__ import annotations

import csv

from support.project import ROOT

STACK = "workshop-a10"


def roster_rows() -> list[dict[str, str]]:
    with open(ROOT / "rosters" / "example.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def active_ids() -> list[str]:
    return [row["id"] for row in roster_rows() if row["status"] != "revoked"]
