"""End to end, in the systemd container runtime (`llmdeploy local up --runtime nspawn`): the two engine stacks,
Pulumi.local-vllm.yaml (vLLM's CPU build on a tiny Hugging Face llama) and Pulumi.local-xinference.yaml
(Xinference in a virtualenv, the tiny GGUF registered and launched through its REST API), booted through the same
user-data steps a cloud VM runs, with the hfToken-checking Hub stand-in as hfEndpoint and this machine's CPU torch
as torchIndexUrl. test_local_vm.py's tests run against each (collected here, with this module's `vm`,
parametrized by stack), and three more:

- after `systemctl restart` of the engine the model is served again within test_local_vm.BACK_WITHIN_S (the
  SIGKILL test proves the same after a kill);
- an ordinary key gets 403 on a management route (vLLM's GET /metrics, Xinference's GET
  /v1/model_registrations/LLM), the admin key (apiKeys `ops:admin`) reaches the engine there;
- the guest's pip got torch from this machine's index, never download.pytorch.org.

What differs from llama.cpp's run, each for one reason: the smoke test speaks Xinference's dialect for its stack
(checks.target); the hfToken test asks the stand-in for a file of the engine's repository. The container's
limits are those of tests/e2e/test_local_nspawn.py (firewall in a network namespace, reboot = container restart).
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import requests

from llmdeploy.config import ENGINE_PORTS
from llmdeploy.local import checks
from test_local_vm import BACK_WITHIN_S, Vm, booted, main_pid, smoke, wait_served_again
# The VM's tests, in the VM module's order (the reboot last).
from test_local_vm import test_up_boots_provisions_and_smoke_tests_the_stack  # noqa: F401
from test_local_vm import test_the_certificate_comes_from_the_local_acme_server  # noqa: F401
from test_local_vm import (
    provisioning_again_changes_nothing as test_provisioning_again_changes_nothing,  # noqa: F401
)
from test_local_vm import test_the_api_key_is_never_in_user_data_logs_or_command_lines  # noqa: F401
from test_local_vm import test_the_hf_token_is_never_in_user_data_logs_or_command_lines  # noqa: F401
from test_local_vm import test_the_model_came_from_a_server_that_refuses_it_without_the_token  # noqa: F401
from test_local_vm import (
    a_killed_engine_is_restarted_by_systemd as test_a_killed_engine_is_restarted_by_systemd,  # noqa: F401
)
from test_local_vm import test_only_ssh_http_and_https_answer_through_the_forwarded_ports  # noqa: F401
from test_local_vm import test_the_image_firewall_rules_are_kept  # noqa: F401

pytestmark = pytest.mark.e2e

STACKS = {"local-vllm": "vllm", "local-xinference": "xinference"}
# A management route of each engine (routes.ENGINE_ROUTES) that answers a GET, and what the engine says there.
MANAGEMENT = {"vllm": ("/metrics", "vllm:"), "xinference": ("/v1/model_registrations/LLM", "llmdeploy-tiny")}


@pytest.fixture(scope="module", params=list(STACKS))
def vm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    stack = request.param
    start = time.monotonic()
    for booted_vm in booted(tmp_path_factory, "nspawn", stack, ENGINE_PORTS[STACKS[stack]]):
        assert booted_vm.state.runtime == "nspawn" and booted_vm.state.engine == STACKS[stack]
        yield booted_vm
    print(f"\n{stack}: module time on nspawn {time.monotonic() - start:.0f}s")


def get(vm: Vm, path: str, key: str) -> requests.Response:
    """GET through nginx, as a client does: https://llm.test:PORT (resolved to the forwarded loopback port)."""
    with checks.resolve({vm.state.domain: "127.0.0.1"}):
        return requests.get(f"https://{vm.state.domain}:{vm.state.port(443)}{path}", timeout=60,
                            headers={"Authorization": f"Bearer {key}"}, verify=str(vm.state.ca_file))


def test_an_ordinary_key_gets_403_on_a_management_route_and_the_admin_key_reaches_it(vm: Vm) -> None:
    keys = vm.state.api_keys()
    assert set(keys) == {"default", "ops"}, keys  # apiKeys: default, ops:admin
    path, engine_says = MANAGEMENT[vm.state.engine]
    refused = get(vm, path, keys["default"])
    assert refused.status_code == 403, (refused.status_code, refused.text[:300])
    reached = get(vm, path, keys["ops"])
    assert reached.status_code == 200 and engine_says in reached.text, (reached.status_code, reached.text[:300])


def test_after_systemctl_restart_the_model_is_served_again(vm: Vm) -> None:
    old = main_pid(vm, vm.unit)
    vm.sudo(f"systemctl restart {vm.unit}")
    took = wait_served_again(vm, old)
    assert took < BACK_WITHIN_S[vm.state.engine]
    smoke(vm)


def test_torch_came_from_this_machine_not_download_pytorch_org(vm: Vm) -> None:
    log = (vm.state.dir / "model-server.log").read_text()
    assert re.search(r"GET /wheels/torch-[^ ]+\.whl 200", log), log[-2000:]
    step = vm.sudo("cat /var/log/llmdeploy/40-engine.log")
    assert "download.pytorch.org" not in step and "Retrying" not in step, step[-3000:]


from test_local_vm import test_after_a_reboot_every_service_comes_back  # noqa: E402,F401  (the reboot last)
