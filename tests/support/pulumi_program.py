"""Running the Pulumi program under mocks for a stack, for the Pulumi program tests."""
from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from llmdeploy.stack_yaml import read_stack
from support.project import EXAMPLE_STACKS, ROOT
from support.pulumi_mocks import Run, run_program

MAIN = ROOT / "infra" / "__main__.py"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"

VM_STACKS = [s for s in EXAMPLE_STACKS if read_stack(ROOT, s).get("target", "vm") == "vm"]


def run_stack(stack: str, **overrides: Any) -> tuple[Run, dict[str, Any]]:
    values = read_stack(ROOT, stack) | {"sshPrivateKey": PRIVATE_KEY} | overrides
    return run_program(MAIN, values, stack=stack, secret_keys=("sshPrivateKey",)), values


@cache
def example_run(stack: str) -> tuple[Run, dict[str, Any]]:
    """The program for an example stack as checked in, run once per session: the tests that take it only read it
    (it is the same program, config and mocks each time; a test that changes any of them calls run_stack)."""
    return run_stack(stack)


@pytest.fixture(scope="module", params=VM_STACKS)
def vm_run(request: pytest.FixtureRequest) -> tuple[str, Run, dict[str, Any]]:
    run, values = example_run(request.param)
    return request.param, run, values
