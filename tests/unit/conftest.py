"""The unit tier's rule, enforced: a unit test runs in the pytest process. Binding a socket (a server) or
starting any program (a subprocess) fails it, naming the fix, during its setup, call and teardown."""
from __future__ import annotations

import gc
import platform
import socket
import subprocess
import sys
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
    _freeze_new_modules()


_modules_frozen = 0
# The tier allocates in bursts (Pulumi's mocked runs, asyncio, Jinja): at Python's default of a young-generation
# collection every 700 allocations, about 2,300 of them ran; every 5,000 takes 1.3-2 s less CPU of the tier, with
# the same peak memory (320 MB).
gc.set_threshold(5_000, 10, 10)


def _freeze_new_modules() -> None:
    """Most of the tier's heap is modules its tests import on first use (pulumi_oci alone lazily loads some 520),
    which live until the process ends; the cyclic garbage collector scanned all of them at each full collection,
    about 20 times a run (and 5 more at exit, pytest's unraisable-exception check): some 5 s of a 20 s tier.
    Moving what exists into the permanent generation once a test has imported something stops that. The price:
    garbage left by the few tests that import something is never collected (peak memory stays 320 MB)."""
    global _modules_frozen
    if len(sys.modules) != _modules_frozen:
        _modules_frozen = len(sys.modules)
        gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    # Collection imported the test modules, llmdeploy and its libraries: all live for the whole session.
    _freeze_new_modules()
