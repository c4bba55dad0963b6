"""What confines Docker's containers, run for real with iptables in network namespaces: an engine replica of the vm
target (vLLM in Docker on a GPU shape, `replicas: 2`) with OCI's image rules loaded first, its rendered firewall
run, then Docker's chains laid out as Docker lays them for `docker run -p ADDR:PORT:8000` on its default bridge
(DNAT in nat's DOCKER chain, FORWARD jumping to DOCKER-USER first, then Docker's ACCEPTs, MASQUERADE out).

Namespaces: the replica host; a "container" behind a bridge-like veth (172.17.0.2, forwarded through the host);
the head (10.42.1.10), another VM of the cluster NSG (10.42.2.11: the NSG admits it, so only the host can refuse
it), and a stand-in for OCI's instance metadata service at 169.254.169.254 (HTTP on 80, the VCN resolver's DNS on
53). Docker's rules come before INPUT, so without DOCKER-USER every VM of the VCN reaches the published engine and
every container reaches the metadata service.
"""
from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy import addresses, topology
from llmdeploy.config import parse
from llmdeploy.local.image import OCI_RULES_V4
from llmdeploy.render import FIREWALL, render
from support.project import minimal_raw
from support.vmroot import VmRoot, vm_root
from test_firewall import PROBE, sections

pytestmark = pytest.mark.integration

HEAD, REPLICA, OTHER, IMDS = addresses.head_ip(), addresses.worker_ip(0), addresses.worker_ip(1), "169.254.169.254"

# Runs as the replica host, in a namespace of its own. Every namespace and listener ends on its own (timeout) if
# this script is killed; the trap stops them by PID otherwise.
SCENARIO = r"""
set -euo pipefail
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
section() { printf '\n=== %s\n' "$1"; }
state() { cat /etc/iptables/rules.v4; iptables -S; }
ip link set lo up
sysctl -qw net.ipv4.ip_forward=1
iptables-restore </etc/iptables/rules.v4  # as netfilter-persistent at boot

bash /usr/local/lib/llmdeploy/firewall.sh >/dev/null
section saved
cat /etc/iptables/rules.v4

# Docker starts (30-docker, after 15-firewall): it makes DOCKER-USER only if it is not there, jumps to it
# first in FORWARD, and publishes the engine as `-p $REPLICA:$PORT:8000` says.
iptables -N DOCKER-USER 2>/dev/null || true
iptables -N DOCKER
iptables -I FORWARD 1 -j DOCKER-USER
iptables -I FORWARD 2 -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
iptables -I FORWARD 3 -o docker0 -j DOCKER
iptables -I FORWARD 4 -i docker0 ! -o docker0 -j ACCEPT
iptables -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 8000 -j ACCEPT
iptables -t nat -N DOCKER
iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
iptables -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
iptables -t nat -A DOCKER -d "$REPLICA/32" ! -i docker0 -p tcp -m tcp --dport "$PORT" \
  -j DNAT --to-destination 172.17.0.2:8000

# A re-run of the firewall (provisioning again) changes nothing, and keeps Docker's chains.
before=$(state)
bash /usr/local/lib/llmdeploy/firewall.sh >/dev/null
section second-run-changed
if [ "$(state)" = "$before" ]; then echo no; else diff <(echo "$before") <(state) || true; fi
section docker-user
iptables -S DOCKER-USER

for name in container head other imds; do
  unshare --net timeout 60 sleep 60 & pids+=("$!"); eval "$name=$!"
done
sleep 0.3
# The container behind docker0 (172.17.0.1 on the host), its default route through the host.
ip link add docker0 type veth peer name eth0 netns "$container"
ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up
nsenter -t "$container" -n sh -c 'ip link set lo up; ip addr add 172.17.0.2/16 dev eth0; ip link set eth0 up;
  ip route add default via 172.17.0.1'
# The replica's private address faces each other machine (point-to-point links, one per machine).
wire() {  # wire NAMESPACE-PID HOST-END ITS-ADDRESS
  ip link add "$2" type veth peer name eth0 netns "$1"
  ip addr add "$REPLICA/32" peer "$3/32" dev "$2" && ip link set "$2" up
  nsenter -t "$1" -n sh -c "ip link set lo up; ip addr add $3/32 peer $REPLICA/32 dev eth0; ip link set eth0 up"
}
wire "$head" to-head "$HEAD"
wire "$other" to-other "$OTHER"
wire "$imds" to-imds "$IMDS"

timeout 50 nsenter -t "$container" -n python3 -c "$PROBE" listen 172.17.0.2 8000 & pids+=("$!")
timeout 50 python3 -c "$PROBE" listen "$REPLICA" 22 9000 & pids+=("$!")  # sshd; 9000: an engine run on the host
timeout 50 nsenter -t "$imds" -n python3 -c "$PROBE" listen "$IMDS" 80 53 & pids+=("$!")
sleep 1
section from-head
nsenter -t "$head" -n python3 -c "$PROBE" connect "$REPLICA" "$PORT" 9000 22
section from-other
nsenter -t "$other" -n python3 -c "$PROBE" connect "$REPLICA" "$PORT" 9000 22
section container-to-imds
nsenter -t "$container" -n python3 -c "$PROBE" connect "$IMDS" 80 53
section root-to-imds
python3 -c "$PROBE" connect "$IMDS" 80 53
"""


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmRoot]:
    with vm_root(tmp_path / "vm") as root:
        yield root


def replica_raw() -> dict[str, object]:
    """vLLM in Docker on a GPU shape (the default engine and shape), two engine VMs."""
    return minimal_raw(replicas=2)


def run_replica(vm: VmRoot, tmp_path: Path) -> tuple[dict[str, str], int]:
    cfg = parse(replica_raw(), stack="containers")
    assert cfg.docker and cfg.engine == "vllm"
    rendered = render(cfg, node=topology.node(cfg, topology.REPLICA, 0))
    for path in ("/usr/local/lib/llmdeploy/lib.sh", FIREWALL):
        vm.install(path, rendered.file(path).content, 0o755)
    vm.install("/etc/iptables/rules.v4", OCI_RULES_V4, 0o640)
    script = tmp_path / "scenario.sh"
    script.write_text(SCENARIO)
    env = f"PROBE={shlex.quote(PROBE)} PORT={cfg.engine_port} REPLICA={REPLICA} HEAD={HEAD} OTHER={OTHER} IMDS={IMDS}"
    result = vm.run(f"{env} unshare --net bash {shlex.quote(str(script))}", timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return sections(result.stdout), cfg.engine_port


def test_only_the_head_reaches_a_replicas_published_engine_and_no_container_reaches_imds(
        vm: VmRoot, tmp_path: Path) -> None:
    out, port = run_replica(vm, tmp_path)
    # The head reaches the engine in Docker (DNAT, FORWARD), an engine on the host, and SSH.
    assert out["from-head"].split("\n")[:3] == [f"{port} open", "9000 open", "22 open"]
    # Another VM the cluster NSG admits: the engine in Docker is reset in DOCKER-USER, the host's engine port
    # rejected by INPUT; SSH (the readiness gate's way in, through the head) still answers.
    assert out["from-other"].split("\n")[:3] == [f"{port} refused", "9000 rejected", "22 open"]
    # A container: the metadata service refused, the VCN resolver's DNS still reachable.
    assert out["container-to-imds"].split("\n")[:2] == ["80 rejected", "53 open"]
    # Root on the host keeps OCI's InstanceServices rules: the metadata service answers.
    assert out["root-to-imds"].split("\n")[:2] == ["80 open", "53 open"]
    assert out["second-run-changed"].strip() == "no"


def test_the_rules_are_saved_for_the_next_boot_before_dockers_own(vm: VmRoot, tmp_path: Path) -> None:
    out, port = run_replica(vm, tmp_path)
    saved = out["saved"].splitlines()
    # The image's rules all stay; DOCKER-USER is declared in the filter table and holds the rules, in order.
    assert all(line in saved for line in OCI_RULES_V4.splitlines())
    assert ":DOCKER-USER - [0:0]" in saved
    rules = [line for line in saved if line.startswith("-A DOCKER-USER ")]
    assert rules == [
        f"-A DOCKER-USER -d {IMDS}/32 -p udp -m udp --dport 53 -j RETURN",
        f"-A DOCKER-USER -d {IMDS}/32 -p tcp -m tcp --dport 53 -j RETURN",
        "-A DOCKER-USER -d 169.254.0.0/16 -j REJECT --reject-with icmp-host-prohibited",
        f"-A DOCKER-USER ! -s {HEAD}/32 -p tcp -m conntrack --ctorigdst {REPLICA}/32 --ctorigdstport {port} "
        "--ctdir ORIGINAL -j REJECT --reject-with tcp-reset"]
    assert f"-A INPUT -s {HEAD}/32 -p tcp -m state --state NEW -j ACCEPT" in saved
    assert f"-A INPUT -s {addresses.VCN_CIDR} -p tcp -m state --state NEW -j ACCEPT" not in saved
    # Live, the same rules, first in DOCKER-USER (iptables -S writes a /32 conntrack address without its mask).
    live = out["docker-user"].splitlines()
    assert live[0] == "-N DOCKER-USER"
    assert live[1:5] == [r.replace(f"--ctorigdst {REPLICA}/32", f"--ctorigdst {REPLICA}") for r in rules], live


def test_the_replicas_engine_is_published_on_its_private_address_and_loopback_never_on_every_address() -> None:
    cfg = parse(replica_raw(), stack="containers")
    replica = render(cfg, node=topology.node(cfg, topology.REPLICA, 0))
    unit = replica.file("/usr/local/share/llmdeploy/files/vllm.service").content
    assert f"-p 127.0.0.1:{cfg.engine_port}:8000" in unit and f"-p {REPLICA}:{cfg.engine_port}:8000" in unit
    assert "-p 0.0.0.0:" not in unit
    head = render(cfg).file("/usr/local/share/llmdeploy/files/vllm.service").content
    assert f"-p 127.0.0.1:{cfg.engine_port}:8000" in head and REPLICA not in head


def test_a_docker_host_without_replicas_blocks_imds_for_containers_only() -> None:
    """The vm target's single vLLM VM: the same DOCKER-USER rules for the metadata service, none for a published
    port (it publishes on loopback only)."""
    fw = render(parse(minimal_raw(), stack="containers")).file(FIREWALL).content
    assert "confine_running\n" in fw and "readonly PUBLISHED_ADDRESS=''" in fw
    no_docker = render(parse(minimal_raw(engine="llamacpp", shape="VM.Standard.E4.Flex",
                                         llamacppModelUrl="https://models.invalid/m.gguf"), stack="c")).file(FIREWALL)
    assert "DOCKER-USER" not in no_docker.content  # nothing forwards there: the firewall renders as before
