"""Shared fixtures: the repository root, the example stacks, and a minimal valid raw config."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_ALL_STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
# Workshop examples hold an endpoint per attendee, not one: tests/test_workshop_example.py covers them.
WORKSHOP_STACKS = [s for s in _ALL_STACKS if "llmdeploy:workshopRoster" in (ROOT / f"Pulumi.{s}.yaml").read_text()]
EXAMPLE_STACKS = [s for s in _ALL_STACKS if s not in WORKSHOP_STACKS]
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm test@llmdeploy"


def minimal_raw(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {"compartmentId": "ocid1.compartment.oc1..aaaatest", "sshPublicKeys": [SSH_KEY]}
    raw.update(overrides)
    return raw


@pytest.fixture
def root() -> Path:
    return ROOT
