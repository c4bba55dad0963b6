"""The unit tier's rule, enforced: a unit test runs in the pytest process. Binding a socket (a server) or
starting any program (a subprocess) fails it, naming the fix, during its setup, call and teardown."""
from __future__ import annotations

import platform
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


UNIT_DIR = Path(__file__).resolve().parent
# The standard library runs `uname -p` once per process for platform.processor() (the OCI SDK's user agent asks):
# ask before the guard, so a unit test's result does not depend on which test asked first.
platform.processor()


def _refuse(what: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError(f"a unit test runs in-process, but this one {what}: move it to tests/integration/")
    return refuse


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # pytest calls this hook for every item of the session, not only this folder's: integration tests run
    # in the same session under `make test`, and must keep their servers.
    if UNIT_DIR not in item.path.parents:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "bind", _refuse("binds a socket (starts a server)"))
        patch.setattr(subprocess.Popen, "__init__", _refuse("starts a program (subprocess)"))
        yield
