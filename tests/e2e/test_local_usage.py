"""End to end, in the systemd container runtime: per-key usage with two keys and a throttled one. `llmdeploy local
up` of the local example stack with three keys (`ann`, `ben`, and `cid` at 1 request a minute; rateLimitBurst stays
20, so that the smoke test's burst with ann's key passes) boots; the test sends known requests with each key and a
wrong one, and `llmdeploy usage --stack` must count exactly what each client saw: 200s per key, cid's 429s, the wrong
key's 401s, and print no key.

`down` runs when the module ends, also on failure (booted). About a minute on a cached image.
"""
from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_local_vm import Vm, booted, https_status, usage_by_key
from llmdeploy.polling import attempts
from support.project import ROOT

pytestmark = pytest.mark.e2e

STACK = "usage"


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    folder = tmp_path_factory.mktemp("usage-project")
    shutil.copy(ROOT / "Pulumi.yaml", folder / "Pulumi.yaml")
    text = (ROOT / "Pulumi.local.yaml").read_text()
    text, found = re.subn(r"\n  llmdeploy:apiKeys:\n    - default\n",
                          "\n  llmdeploy:apiKeys:\n    - ann\n    - ben\n    - cid:1r/m\n", text)
    assert found == 1, "Pulumi.local.yaml's apiKeys changed: update this test's substitution"
    (folder / f"Pulumi.{STACK}.yaml").write_text(text)
    import test_local_vm
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_local_vm, "ROOT", folder)  # booted() runs `local up --project-dir ROOT`
        # The console script runs this checkout's package, whichever one is installed.
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parents[2] / "infra"),
                                                               os.environ.get("PYTHONPATH")])))
        yield from booted(tmp_path_factory, "nspawn", STACK)


def test_usage_counts_each_keys_requests_and_the_throttled_keys_429s(vm: Vm) -> None:
    keys = vm.state.api_keys()
    assert set(keys) == {"ann", "ben", "cid"}
    before = usage_by_key(vm, "--stack", STACK)
    seen: dict[str, Counter[int]] = {name: Counter() for name in (*keys, "(no valid key)")}
    for name, count in (("ann", 3), ("ben", 2), ("cid", 25)):
        for _ in range(count):
            seen[name][https_status(vm.state, "/v1/models", keys[name])] += 1
    for _ in range(2):
        seen["(no valid key)"][https_status(vm.state, "/v1/models", "sk-llm-" + "x" * 43)] += 1
    assert seen["ann"] == {200: 3} and seen["ben"] == {200: 2} and seen["(no valid key)"] == {401: 2}
    # 1 a minute with rateLimitBurst's 20: the first 21 pass, the rest are throttled.
    assert seen["cid"][429] >= 3 and seen["cid"][200] + seen["cid"][429] == 25, seen["cid"]

    def grown(after: dict[str, dict[str, int]], name: str, field: str) -> int:
        return after.get(name, {}).get(field, 0) - before.get(name, {}).get(field, 0)

    want = {("ann", "ok"): 3, ("ben", "ok"): 2, ("cid", "ok"): seen["cid"][200], ("cid", "throttled"): seen["cid"][429],
            ("(no valid key)", "unauthorized"): 2}
    got: dict[tuple[str, str], int] = {}
    for _ in attempts(30, every=2):  # nginx writes a request's line just after answering it
        after = usage_by_key(vm, "--stack", STACK)  # asserts that no key is in what it prints
        got = {(name, field): grown(after, name, field) for name, field in want}
        if got == want:
            break
    assert got == want
