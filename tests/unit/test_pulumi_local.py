"""The Pulumi program's local target (infra/__main__.py under Pulumi's mocks): one command.local.Command
that runs `llmdeploy local up` on create and `llmdeploy local down` on delete, no cloud resource, API keys
from Pulumi as secrets that reach the command only as secret environment."""
from __future__ import annotations

import json
from typing import Any

import pytest

from llmdeploy.local import API_KEYS_ENV
from llmdeploy.stack import outputs as out
from llmdeploy.stack.local import down_command, endpoint_from, up_command
from llmdeploy.stackfile import read_stack
from support import pulumi_mocks
from support.project import ROOT
from support.pulumi_mocks import Run, is_secret, run_program, unwrap

MAIN = ROOT / "infra" / "__main__.py"


@pytest.fixture
def delete_before_replace(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """What each registration asked for deleteBeforeReplace (the mocks' recorder does not keep it)."""
    seen: dict[str, bool] = {}
    real = pulumi_mocks.RecordingMonitor.RegisterResource

    def register(self: Any, request: Any) -> Any:
        seen[request.name] = bool(request.deleteBeforeReplace)
        return real(self, request)

    monkeypatch.setattr(pulumi_mocks.RecordingMonitor, "RegisterResource", register)
    return seen


def run_local(**overrides: Any) -> tuple[Run, dict[str, Any]]:
    values = read_stack(ROOT, "local") | overrides
    return run_program(MAIN, values, stack="local"), values


def test_the_local_target_is_one_command_that_runs_up_and_down(delete_before_replace: dict[str, bool]) -> None:
    run, values = run_local()
    assert not [r.type for r in run.resources if r.type.startswith("oci:")]  # no cloud, no compartment
    component = run.one("llmdeploy:local:LocalVmEndpoint")
    vm = run.one("command:local:Command")
    inputs = unwrap(vm.inputs)
    assert inputs["create"] == up_command("local", str(ROOT)) == f"llmdeploy local up --stack local --project-dir {ROOT}"
    assert inputs["delete"] == down_command("local") == "llmdeploy local down --stack local"
    assert inputs["dir"] == str(ROOT)
    assert vm.parent == component.urn
    # The same stack name means the same state folder: the old VM must go before its replacement starts.
    assert delete_before_replace[vm.name] is True
    passwords = run.of_type("random:index/randomPassword:RandomPassword")
    assert len(passwords) == len(values["apiKeys"]) and all(p.parent == component.urn for p in passwords)
    assert len(inputs["triggers"]) == 1 + len(passwords)  # what the VM boots, and the keys


def test_api_keys_are_secret_and_reach_the_command_only_as_secret_environment() -> None:
    run, values = run_local()
    vm = run.one("command:local:Command")
    keys = run.outputs[out.API_KEYS]
    assert set(keys) == set(values["apiKeys"]) and all(k.startswith("sk-llm-") for k in keys.values())
    assert run.secret_outputs == {out.API_KEYS}
    assert is_secret(vm.inputs["environment"])
    assert json.loads(unwrap(vm.inputs["environment"])[API_KEYS_ENV]) == keys
    public = json.dumps({k: v for k, v in run.outputs.items() if k != out.API_KEYS})
    commands = json.dumps([unwrap(vm.inputs)["create"], unwrap(vm.inputs)["delete"], unwrap(vm.inputs)["triggers"]])
    for key in keys.values():
        assert key not in public and key not in commands


def test_secret_config_reaches_llmdeploy_as_secret_environment() -> None:
    password = "alice-long-secret-passphrase"
    run, _ = run_local(basicAuthUsers=["alice"], basicAuthPasswords=json.dumps({"alice": password}))
    vm = run.one("command:local:Command")
    env = unwrap(vm.inputs["environment"])
    assert is_secret(vm.inputs["environment"])
    assert json.loads(env["LLMDEPLOY_BASIC_AUTH_PASSWORDS"]) == {"alice": password}
    assert password not in unwrap(vm.inputs)["create"]


def test_outputs_come_from_what_local_up_printed() -> None:
    run, _ = run_local()
    vm_stdout = "PASS  all checks\n"  # what the mocks answer for every command.local.Command
    assert run.outputs[out.SMOKE_REPORT] == vm_stdout
    assert run.outputs[out.ENDPOINT_URL] == endpoint_from(vm_stdout) == ""
    assert endpoint_from("[5:01] ready\n\nendpoint: https://llm.test:41234\nmodel:    tiny\n") == \
        "https://llm.test:41234"


@pytest.mark.parametrize("overrides, message", [
    ({"engine": "ollama"}, "one of llamacpp, vllm, xinference for the local target"),
    ({"os": "ubuntu-22.04"}, "debian-12 for the local target"),
    ({"localMemoryMb": 64}, "localMemoryMb"),
])
def test_bad_local_config_fails_before_any_resource(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        run_local(**overrides)
    assert pulumi_mocks.LAST_MOCKS is not None and pulumi_mocks.LAST_MOCKS.resources == []
