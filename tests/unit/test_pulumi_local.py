"""The Pulumi program's local target (infra/__main__.py under Pulumi's mocks): one command.local.Command
that runs `llmdeploy local up` on create and `llmdeploy local down` on delete, no cloud resource, API keys
from Pulumi as secrets that reach the command only as secret environment."""
from __future__ import annotations

import json
import os
from typing import Any

import pytest

from llmdeploy.config import StackConfig
from llmdeploy.local import API_KEYS_ENV, lifecycle
from llmdeploy.stack import output_names as out
from llmdeploy.stack.local import down_command, endpoint_from, up_command
from llmdeploy.stack_yaml import CONFIG_ENV, StackFileError, read_stack
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
    assert inputs["create"] == up_command("local", str(ROOT)) == \
        f"llmdeploy local up --stack local --project-dir {ROOT} --config-from-env"
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


def booted_config(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> StackConfig:
    """What `llmdeploy local up --config-from-env` parses from the command's environment."""
    for name in [n for n in os.environ if n.startswith("LLMDEPLOY_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    opts = lifecycle.UpOptions(stack="local", project_dir=ROOT, config_from_env=True)
    return lifecycle.check_stack(opts, lifecycle.stack_values(opts))


def test_local_up_boots_the_config_pulumi_resolved_not_the_stack_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # Values only Pulumi knows (another config source: `pulumi config set`, a --config-file, ESC): not in
    # Pulumi.local.yaml, which `local up` used to read again from disk.
    on_disk = read_stack(ROOT, "local")
    assert "modelName" not in on_disk or on_disk["modelName"] != "from-pulumi-only"
    run, _ = run_local(modelName="from-pulumi-only", localMemoryMb="3072", apiKeys=json.dumps(["default", "ci"]))
    env = unwrap(run.one("command:local:Command").inputs["environment"])
    cfg = booted_config(env, monkeypatch)
    assert cfg.model_name == "from-pulumi-only" and cfg.local_vm.memory_mb == 3072
    assert [k.name for k in cfg.auth.api_keys] == ["default", "ci"]
    assert "from-pulumi-only" in env[CONFIG_ENV]  # the non-secret values travel as JSON


def test_secret_config_reaches_local_up_as_secret_environment_never_in_the_json_or_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    token, password = "hf_OnlyPulumiKnows0123456789abc", "alice-long-secret-passphrase"
    run, _ = run_local(hfToken=token, basicAuthUsers=json.dumps(["alice"]),
                       basicAuthPasswords=json.dumps({"alice": password}))
    vm = run.one("command:local:Command")
    env = unwrap(vm.inputs["environment"])
    assert is_secret(vm.inputs["environment"])
    assert env["LLMDEPLOY_HF_TOKEN"] == token
    inputs = unwrap(vm.inputs)
    for value in (token, password):
        assert value not in env[CONFIG_ENV]
        assert value not in json.dumps([inputs["create"], inputs["delete"], inputs["triggers"], inputs["dir"]])
    cfg = booted_config(env, monkeypatch)
    assert cfg.hf_token.reveal() == token and cfg.auth.basic_passwords["alice"].reveal() == password


def test_a_secret_in_the_config_json_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StackFileError, match="LLMDEPLOY_STACK_CONFIG holds the secret.* hfToken; pass each as "
                                             "LLMDEPLOY_HF_TOKEN"):
        booted_config({CONFIG_ENV: json.dumps({"target": "local", "hfToken": "hf_x"})}, monkeypatch)
    with pytest.raises(StackFileError, match="LLMDEPLOY_STACK_CONFIG is not set"):
        booted_config({}, monkeypatch)


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
