"""The rendered firewall run for real with iptables, in a network namespace of its own (`unshare --net`),
with OCI's image rules loaded first as netfilter-persistent loads them at boot (and, for an image without
saved rules, with none):

- afterwards only TCP 22, 80 and 443 are accepted from another host (a second namespace over a veth pair),
  and any other port is rejected, as the image rejects it;
- OCI's InstanceServices chain and its OUTPUT jump stay, live and in /etc/iptables/rules.v4 (what the next
  boot loads): root reaches 169.254.0.2:3260, any other user is refused;
- a second run changes neither the saved files nor the running rules, and does not flush chains others
  added since (Docker's).
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy.config import parse
from llmdeploy.local.image import OCI_RULES_V4
from llmdeploy.render import FIREWALL, render
from support.project import minimal_raw
from support.vmroot import VmRoot, vm_root

pytestmark = pytest.mark.skipif(shutil.which("iptables-restore") is None or shutil.which("unshare") is None,
                                reason="needs iptables and unshare (scripts/setup.sh installs iptables)")

# Runs in the "VM" network namespace. Listeners and the client namespace end on their own (timeout) even if
# this script is killed; the trap stops them by PID otherwise.
SCENARIO = r"""
set -euo pipefail
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
section() { printf '\n=== %s\n' "$1"; }
state() { cat /etc/iptables/rules.v4 /etc/iptables/rules.v6; iptables -S; ip6tables -S; }
ip link set lo up
if [ -f /etc/iptables/rules.v4 ]; then iptables-restore </etc/iptables/rules.v4; fi  # as netfilter-persistent at boot

section first-run
bash /usr/local/lib/llmdeploy/firewall.sh
section saved
cat /etc/iptables/rules.v4
section live
iptables -S
section live6
ip6tables -S
first=$(state)

# Docker adds chains after this step; a re-run must neither flush them nor change anything else.
iptables -N DOCKER-USER
iptables -I FORWARD -j DOCKER-USER
before=$(state)
section second-run
bash /usr/local/lib/llmdeploy/firewall.sh
section second-run-changed
if [ "$(state)" = "$before" ]; then echo no; else diff <(echo "$before") <(state) || true; fi
iptables -D FORWARD -j DOCKER-USER && iptables -X DOCKER-USER
[ "$(state)" = "$first" ]

# Another host on a veth pair; 169.254.0.2 (the iSCSI boot volume's address) lives there too.
unshare --net timeout 60 sleep 60 & client=$!; pids+=("$client")
sleep 0.2
ip link add fw-vm type veth peer name fw-client netns "$client"
ip addr add 10.77.0.1/24 dev fw-vm && ip link set fw-vm up
ip route add 169.254.0.2/32 dev fw-vm
nsenter -t "$client" -n sh -c 'ip link set lo up; ip addr add 10.77.0.2/24 dev fw-client;
  ip addr add 169.254.0.2/32 dev fw-client; ip link set fw-client up'
timeout 50 python3 -c "$PROBE" listen 10.77.0.1 22 80 443 8080 & pids+=("$!")
timeout 50 nsenter -t "$client" -n python3 -c "$PROBE" listen 169.254.0.2 3260 & pids+=("$!")
sleep 1
section inbound
nsenter -t "$client" -n python3 -c "$PROBE" connect 10.77.0.1 22 80 443 8080
section boot-volume-as-root
python3 -c "$PROBE" connect 169.254.0.2 3260
section boot-volume-as-nobody
setpriv --reuid=65534 --regid=65534 --clear-groups python3 -c "$PROBE" connect 169.254.0.2 3260
"""

PROBE = r"""
import errno, socket, sys, threading
mode, host, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
if mode == "listen":
    def serve(sock):
        while True:
            conn, _ = sock.accept()
            conn.close()
    threads = []
    for port in ports:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
        threads.append(threading.Thread(target=serve, args=(sock,), daemon=True))
        threads[-1].start()
    threads[0].join()
for port in ports:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print(port, "open")
    except OSError as exc:
        print(port, {errno.EHOSTUNREACH: "rejected", errno.ECONNREFUSED: "refused"}.get(exc.errno, repr(exc)))
"""


def sections(out: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in out.split("\n=== ")[1:]:
        name, _, body = chunk.partition("\n")
        found[name.strip()] = body
    return found


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmRoot]:
    with vm_root(tmp_path / "vm") as root:
        yield root


def run_firewall(vm: VmRoot, tmp_path: Path, image_rules: str | None) -> dict[str, str]:
    rendered = render(parse(minimal_raw(os="ubuntu-24.04", shape="VM.Standard.E4.Flex", engine="llamacpp"),
                            stack="firewall"))
    for path in ("/usr/local/lib/llmdeploy/lib.sh", FIREWALL):
        vm.install(path, rendered.file(path).content, 0o755)
    if image_rules is not None:
        vm.install("/etc/iptables/rules.v4", image_rules, 0o640)
    script = tmp_path / "scenario.sh"
    script.write_text(SCENARIO)
    result = vm.run(f"PROBE={shlex.quote(PROBE)} unshare --net bash {shlex.quote(str(script))}", timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return sections(result.stdout)


def test_on_an_oci_image_the_web_ports_open_and_instance_services_stay(vm: VmRoot, tmp_path: Path) -> None:
    out = run_firewall(vm, tmp_path, OCI_RULES_V4)
    saved, live = out["saved"], out["live"]
    for rules in (saved, live):
        lines = rules.splitlines()
        reject = lines.index("-A INPUT -j REJECT --reject-with icmp-host-prohibited")
        for port in (22, 80, 443):
            assert lines.index(f"-A INPUT -p tcp -m state --state NEW -m tcp --dport {port} -j ACCEPT") < reject
        assert "-A OUTPUT -d 169.254.0.0/16 -j InstanceServices" in lines
        assert sum(line.startswith("-A InstanceServices ") for line in lines) == 15  # all of the image's
    # The image's file, with two lines more and nothing else changed.
    assert sorted(saved.splitlines()) == sorted(OCI_RULES_V4.splitlines() + [
        f"-A INPUT -p tcp -m state --state NEW -m tcp --dport {port} -j ACCEPT" for port in (80, 443)])
    assert out["second-run-changed"].strip() == "no"
    assert out["inbound"].split("\n")[:4] == ["22 open", "80 open", "443 open", "8080 rejected"]
    assert out["boot-volume-as-root"].strip() == "3260 open"
    assert out["boot-volume-as-nobody"].strip() == "3260 refused"  # InstanceServices' tcp-reset
    # The image saved no IPv6 rules: the same inbound policy is written for IPv6.
    assert "-A INPUT -j REJECT --reject-with icmp6-adm-prohibited" in out["live6"]
    assert "-A INPUT -p tcp -m state --state NEW -m tcp --dport 443 -j ACCEPT" in out["live6"]
    assert vm.path("/etc/iptables/rules.v6").read_text() != ""


def test_an_image_without_saved_rules_gets_the_same_inbound_policy(vm: VmRoot, tmp_path: Path) -> None:
    out = run_firewall(vm, tmp_path, None)
    assert out["inbound"].split("\n")[:4] == ["22 open", "80 open", "443 open", "8080 rejected"]
    assert out["second-run-changed"].strip() == "no"
    assert out["saved"].splitlines()[-3:] == ["-A INPUT -j REJECT --reject-with icmp-host-prohibited",
                                              "-A FORWARD -j REJECT --reject-with icmp-host-prohibited", "COMMIT"]
    assert vm.path("/etc/iptables/rules.v4").stat().st_mode & 0o777 == 0o640


def test_the_base_step_keeps_netfilter_persistent_and_installs_no_ufw() -> None:
    """ufw's package breaks iptables-persistent, so installing it removes what loads OCI's rules at boot."""
    rendered = render(parse(minimal_raw(), stack="firewall"))
    base = rendered.file("/usr/local/lib/llmdeploy/steps/15-firewall.sh").content
    assert "ufw" not in base.replace("Not ufw", "").replace("against ufw", "")
    assert "iptables -F" not in base and "disable" not in base
    assert "apt_install iptables iptables-persistent" in base
    assert "systemctl enable --quiet --no-reload netfilter-persistent.service" in base
    assert "iptables-persistent/autosave_v4 boolean false" in base
    assert f"bash {FIREWALL}" in base
    assert subprocess.run(["bash", "-n"], input=rendered.file(FIREWALL).content, text=True).returncode == 0
