"""A Ray node's rendered host firewall run for real with iptables in network namespaces (as test_firewall.py does
for the vm target): Ray's ports, fixed and random, answer from inside the cluster's VCN and are rejected from
anywhere else; SSH answers from both."""
from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.project import minimal_raw
from llmdeploy.config import parse
from llmdeploy.render import FIREWALL, render
from llmdeploy.topology import WORKER, node
from support.vmroot import VmRoot, vm_root
from test_firewall import PROBE, sections


def ray_worker_raw() -> dict[str, object]:
    return minimal_raw(target="ray", shape="VM.GPU.A10.2", engine="vllm", vllmModel="Qwen/Qwen2.5-14B-Instruct",
                       modelName="qwen2.5-14b", tlsMode="self-signed", rayWorkers=1, rayTensorParallel=2)


SCENARIO = r"""
set -euo pipefail
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
ip link set lo up
bash /usr/local/lib/llmdeploy/firewall.sh >/dev/null
printf '\n=== saved\n'; cat /etc/iptables/rules.v4
# Two other hosts on one veth pair: one inside the cluster's VCN, one outside it.
unshare --net timeout 60 sleep 60 & client=$!; pids+=("$client")
sleep 0.2
ip link add fw-vm type veth peer name fw-client netns "$client"
ip addr add 10.42.2.10/24 dev fw-vm && ip addr add 192.0.2.1/24 dev fw-vm && ip link set fw-vm up
nsenter -t "$client" -n sh -c 'ip link set lo up; ip addr add 10.42.2.99/24 dev fw-client;
  ip addr add 192.0.2.99/24 dev fw-client; ip link set fw-client up'
timeout 50 python3 -c "$PROBE" listen 0.0.0.0 22 6379 10050 44217 & pids+=("$!")
sleep 1
printf '\n=== from-cluster\n'
nsenter -t "$client" -n python3 -c "$PROBE" connect 10.42.2.10 22 6379 10050 44217
printf '\n=== from-outside\n'
nsenter -t "$client" -n python3 -c "$PROBE" connect 192.0.2.1 22 6379 10050 44217
"""


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmRoot]:
    with vm_root(tmp_path / "vm") as root:
        yield root


def test_a_worker_accepts_ray_from_the_cluster_and_only_ssh_from_elsewhere(vm: VmRoot, tmp_path: Path) -> None:
    """Ray binds every interface, on fixed ports and random ones (44217 was one of a head's): the firewall admits
    any TCP from the VCN and nothing but SSH from elsewhere (the NSG already keeps the internet out)."""
    cfg = parse(ray_worker_raw(), stack="firewall")
    rendered = render(cfg, node=node(cfg, WORKER, 0))
    for path in ("/usr/local/lib/llmdeploy/lib.sh", FIREWALL):
        vm.install(path, rendered.file(path).content, 0o755)
    script = tmp_path / "scenario.sh"
    script.write_text(SCENARIO)
    result = vm.run(f"PROBE={shlex.quote(PROBE)} unshare --net bash {shlex.quote(str(script))}", timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    out = sections(result.stdout)
    assert "-A INPUT -s 10.42.0.0/16 -p tcp -m state --state NEW -j ACCEPT" in out["saved"].splitlines()
    assert out["from-cluster"].split("\n")[:4] == ["22 open", "6379 open", "10050 open", "44217 open"]
    assert out["from-outside"].split("\n")[:4] == ["22 open", "6379 rejected", "10050 rejected", "44217 rejected"]
    assert "80" not in rendered.file(FIREWALL).content.split("readonly PORTS=", 1)[1].split("\n", 1)[0]
