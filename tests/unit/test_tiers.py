"""The tiers are folders (tests/conftest.py marks each test by its folder), and the unit tier's rule holds
while a unit test runs: no server, no subprocess (tests/unit/conftest.py)."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest


def test_a_unit_test_is_marked_unit_and_nothing_else(request: pytest.FixtureRequest) -> None:
    assert [m.name for m in request.node.iter_markers() if m.name in ("unit", "integration", "e2e")] == ["unit"]


def test_a_unit_test_cannot_start_a_server() -> None:
    with socket.socket() as sock, pytest.raises(AssertionError, match="binds a socket .* move it to tests/integration/"):
        sock.bind(("127.0.0.1", 0))


def test_a_unit_test_cannot_start_a_program() -> None:
    with pytest.raises(AssertionError, match=r"starts a program \(subprocess\): move it to tests/integration/"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
