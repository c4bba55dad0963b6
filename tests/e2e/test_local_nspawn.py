"""End to end, in the systemd container runtime: `llmdeploy local up --runtime nspawn` boots the example local
stack (llama.cpp on the tiny model, a certificate from a local pebble through certbot, an hfToken-gated model
server) from the same cached Debian tree and the same rendered user-data as the QEMU VM, at native speed, and
the VM's end-to-end tests (tests/e2e/test_local_vm.py) run against it, collected here with this module's `vm`.

They all hold in a container, each for the reason it holds in the VM, with two differences in what they
prove: the firewall test (only 22/80/443 answer) exercises OCI's rules in the container's own network
namespace, not a VM's kernel; and the reboot test restarts the container (systemd-nspawn exits 133, the
runtime starts it again on the same root), not a machine: no kernel, bootloader or initrd is involved.

`llmdeploy local down` stops the container's supervisor and the host-side servers by PID when the module ends,
also when a test fails, and removes the veth pair, the namespace, the NAT rules and the root copy: the
module's fixture checks that nothing of them is left. About 2 minutes on 2 cores (the QEMU module: about 10).
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_local_vm import Vm, booted
# The VM's tests, in the VM module's order (the reboot last): pytest collects them here, with this module's `vm`.
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
from test_local_vm import test_usage_counts_the_guests_requests_by_key_name_locally_and_over_ssh  # noqa: F401
from test_local_vm import test_status_and_logs_read_the_guest_locally_and_over_ssh  # noqa: F401
from test_local_vm import test_after_a_reboot_every_service_comes_back  # noqa: F401
from llmdeploy.local.nspawn import SPEC_FILE, ContainerSpec

pytestmark = pytest.mark.e2e


def leftovers(spec: ContainerSpec) -> list[str]:
    """What of the container is still on this machine: its veth, namespace, NAT rules, nspawn, root copy."""
    found = [f"link {spec.host_if}"] if subprocess.run(["ip", "link", "show", spec.host_if],
                                                       capture_output=True).returncode == 0 else []
    if spec.name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        found.append(f"netns {spec.name}")
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
        found += [f"{table}: {rule}" for rule in rules.splitlines() if spec.name in rule]
    nspawns = subprocess.run(["pgrep", "-a", "systemd-nspawn"], capture_output=True, text=True).stdout
    found += [f"process: {line}" for line in nspawns.splitlines() if spec.root in line]
    return found + ([f"root {spec.root}"] if Path(spec.root).exists() else [])


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    container: list[ContainerSpec] = []
    for booted_vm in booted(tmp_path_factory, "nspawn"):  # `down` runs when the loop resumes, also on failure
        assert booted_vm.state.runtime == "nspawn" and booted_vm.state.accel == "native"
        container.append(ContainerSpec.load(booted_vm.state.dir / SPEC_FILE))
        yield booted_vm
    assert container and not leftovers(container[0])  # after `down`


def test_the_guest_is_a_systemd_container_on_its_own_network(vm: Vm) -> None:
    spec = ContainerSpec.load(vm.state.dir / SPEC_FILE)
    assert vm.sudo("systemd-detect-virt || true").strip() == "systemd-nspawn"
    assert f"{spec.guest_ip}/30" in vm.sudo("ip -4 -o addr show dev eth0")
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True).stdout
    assert f"llmdeploy {spec.name}" in nat
