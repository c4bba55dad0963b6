"""The e2e tier boots the base image: `llmdeploy local up` boots a matching bake of the stack by itself
(docs/baking.md), and a bake in the user's cache would make the tests of the install test a bake instead. Each
session points LLMDEPLOY_BAKED_DIR at an empty folder; tests/e2e/test_bake_local.py sets its own."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_bakes_of_the_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMDEPLOY_BAKED_DIR", str(tmp_path_factory.mktemp("no-bakes")))
        yield
