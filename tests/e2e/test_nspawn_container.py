"""The systemd container runtime on its own (nspawn.py), against the real thing: the cached Debian 12 tree
(image.py's rootfs, built once, ~1.5 min, the same tree the VM image is made from) booted by systemd-nspawn
with a trivial cloud-config from a NoCloud seed folder:

- cloud-init runs under nspawn from the seed (NoCloud, every stage), writes a file, creates the user, and
  sshd lets that user in with the key, through the loopback port forwarded to the guest's port 22; the host
  key matches the one cloud-init printed on the container's console;
- the guest reaches a server on the host side of its veth pair (where the model server and pebble listen),
  and the host's Debian mirror through the NAT;
- the firewall inside the container works on its own namespace (CAP_NET_ADMIN there);
- a reboot inside the container (nspawn exits 133) is followed by a fresh boot of the same root;
- after stop nothing is left: no nspawn or container process, no veth, no namespace, no NAT rule, no root
  copy, IPv4 forwarding as it was.

Every process is stopped by PID also when a test fails (the module fixture stops the supervisor).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmdeploy.local import image, nspawn, procs
from llmdeploy.local.qemu import free_ports
from llmdeploy.local.seed import meta_data
from llmdeploy.local.ssh import console_host_keys, loopback_login, make_key_pair, ssh_banner
from llmdeploy.sshclient import Session, SshError
from support.procs import start_process, stop_process

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-nspawn") is None,
                                 reason="needs root and systemd-nspawn (apt-get install systemd-container)")]

USER = "tester"
BOOT_DEADLINE_S = 120.0


@dataclass
class Container:
    spec: nspawn.ContainerSpec
    spec_path: Path
    pid: int
    key: Path
    forward_before: str

    def login(self) -> Session:
        return loopback_login(self.spec.forwards[22], USER, self.key, timeout=20)

    def sudo(self, command: str, timeout: float = 120) -> str:
        session = self.login()
        try:
            result = session.run(f"sudo -n sh -c '{command}'", timeout=timeout)
        finally:
            session.close()
        assert result.ok, f"{command}: exit {result.exit_code}: {result.stderr}"
        return result.stdout


def wait_for_login(box: Container, deadline_s: float = BOOT_DEADLINE_S) -> Session:
    deadline, last = time.monotonic() + deadline_s, "nothing yet"
    while time.monotonic() < deadline:
        assert procs.alive(box.pid), f"the supervisor exited: {procs.tail(Path(box.spec.console_log), 20)}"
        if ssh_banner(box.spec.forwards[22]):
            try:
                return box.login()
            except SshError as exc:
                last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"no SSH login after {deadline_s:.0f}s ({last}); console:\n"
                         f"{procs.tail(Path(box.spec.console_log), 30)}")


def leftovers(spec: nspawn.ContainerSpec) -> list[str]:
    found = []
    if subprocess.run(["ip", "link", "show", spec.host_if], capture_output=True).returncode == 0:
        found.append(f"link {spec.host_if}")
    if spec.name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        found.append(f"netns {spec.name}")
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
        found += [f"{table}: {r}" for r in rules.splitlines() if spec.name in r]
    found += [f"nspawn: {line}" for line in subprocess.run(["pgrep", "-a", "systemd-nspawn"], capture_output=True,
                                                           text=True).stdout.splitlines() if spec.root in line]
    if Path(spec.root).exists():
        found.append(f"root {spec.root}")
    return found


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    img, _ = image.ensure_rootfs(log=lambda line: print(line, flush=True))
    folder = tmp_path_factory.mktemp("nspawn")
    key = folder / "id_ed25519"
    public = make_key_pair(key, "nspawn-test")
    user_data = "\n".join([
        "#cloud-config",
        "users:",
        f"  - name: {USER}",
        "    sudo: ALL=(ALL) NOPASSWD:ALL",
        "    shell: /bin/bash",
        f"    ssh_authorized_keys: ['{public}']",
        "write_files:",
        "  - path: /etc/hello-from-cloud-init",
        "    content: written by cloud-init",
        "runcmd:",
        "  - [systemctl, enable, --now, ssh]",
        ""])
    name = f"llmdeploy-t{os.getpid():x}"
    forward_before = nspawn.IP_FORWARD.read_text().strip()
    spec = nspawn.plan(folder, name, dict(zip((22, 80), free_ports(2))))
    spec_path = folder / nspawn.SPEC_FILE
    pid = 0
    try:
        start = time.monotonic()
        nspawn.network_up(spec)
        nspawn.prepare_root(spec, img.rootfs, user_data, meta_data("iid-nspawn-test", "nspawn-test"))
        pid = nspawn.start_container(spec_path, folder / "supervisor.log")
        container = Container(spec, spec_path, pid, key, forward_before)
        wait_for_login(container).close()
        print(f"\ncontainer: SSH login {time.monotonic() - start:.1f}s after the copy started")
        yield container
    finally:
        nspawn.stop_container(spec_path, pid)
        assert not leftovers(spec)


def test_cloud_init_runs_from_the_seed_folder_and_sshd_lets_the_user_in(box: Container) -> None:
    # SSH can let the user in before cloud-init's final stage has finished.
    status = box.sudo("cloud-init status --wait >/dev/null; cloud-init status --long; systemd-detect-virt || true")
    assert box.sudo("cat /etc/hello-from-cloud-init") == "written by cloud-init"
    assert "status: done" in status and "DataSourceNoCloud [seed=/var/lib/cloud/seed/nocloud]" in status
    assert "systemd-nspawn" in status
    session = box.login()
    try:
        assert session.host_key in console_host_keys(Path(box.spec.console_log))
    finally:
        session.close()
    # The seed holds the user-data only this machine and root in the container read.
    assert box.sudo("stat -c %a /var/lib/cloud/seed/nocloud/user-data").strip() == "600"


def test_the_guest_reaches_the_host_side_and_the_mirror(box: Container, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("from the host\n")
    port = free_ports(1)[0]
    server = start_process([sys.executable, "-m", "http.server", str(port), "--bind", box.spec.host_ip,
                            "--directory", str(tmp_path)], tmp_path / "http.log")
    try:
        deadline = time.monotonic() + 10
        out = ""
        while time.monotonic() < deadline and "from the host" not in out:
            out = box.sudo(f"curl -s --max-time 5 http://{box.spec.host_ip}:{port}/file.txt || true")
            time.sleep(0.2)
        assert out == "from the host\n"
    finally:
        stop_process(server)
    mirror = image.host_mirror()[0]
    code = box.sudo(f"curl -s -o /dev/null -w %{{http_code}} --max-time 60 {mirror}/dists/{image.SUITE}/Release")
    assert code == "200"


def test_the_firewall_inside_acts_on_its_own_namespace(box: Container) -> None:
    # The image's OCI rules (netfilter-persistent) load in the container: only 22 is let in.
    rules = box.sudo("iptables -S INPUT")
    assert "--dport 22 -j ACCEPT" in rules and "-j REJECT" in rules
    host_rules = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True).stdout
    assert "icmp-host-prohibited" not in host_rules


def test_the_network_settings_are_the_containers_own_and_the_kernel_ones_the_hosts(box: Container) -> None:
    """The stack's sysctl hardening sets per-namespace network keys (they apply in the container's namespace,
    not the host's) and kernel-wide ones (read-only here: the host's kernel)."""
    key = "/proc/sys/net/ipv4/conf/all/log_martians"
    host_before = Path(key).read_text().strip()
    flipped = "0" if host_before == "1" else "1"
    assert box.sudo(f"sysctl -q -w net.ipv4.conf.all.log_martians={flipped} && cat {key}").strip() == flipped
    assert Path(key).read_text().strip() == host_before
    session = box.login()
    try:
        refused = session.run("sudo -n sysctl -w kernel.dmesg_restrict=1", timeout=30)
    finally:
        session.close()
    assert not refused.ok and "denied" in refused.stderr.lower(), refused.stderr


def test_a_reboot_starts_the_container_again(box: Container) -> None:
    box.sudo("echo before > /run/boot-marker")
    try:
        box.sudo("systemctl reboot", timeout=20)
    except (SshError, AssertionError):
        pass  # the connection may drop before the command returns
    deadline = time.monotonic() + BOOT_DEADLINE_S
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            if box.sudo("test -e /run/boot-marker || echo fresh").strip() == "fresh":
                break
        except (SshError, AssertionError, OSError):
            continue
    else:
        raise AssertionError(f"no fresh boot; console:\n{procs.tail(Path(box.spec.console_log), 30)}")
    assert procs.alive(box.pid, str(box.spec_path))
    log = (box.spec_path.parent / "supervisor.log").read_text()
    assert "systemd-nspawn exited 133" in log and "starting it again" in log
    assert box.sudo("cat /etc/hello-from-cloud-init") == "written by cloud-init"  # the same root


def test_stop_leaves_nothing(tmp_path: Path) -> None:
    """A second container, stopped at once: its supervisor, nspawn, the veth, the namespace, the rules and the
    root copy are gone, and IPv4 forwarding is as it was (when no other container runs)."""
    img, _ = image.ensure_rootfs()
    others = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
              if n.startswith("llmdeploy-")]
    before = nspawn.IP_FORWARD.read_text().strip()
    spec = nspawn.plan(tmp_path, f"llmdeploy-s{os.getpid():x}", {22: free_ports(1)[0]})
    pid = 0
    try:
        nspawn.network_up(spec)
        nspawn.prepare_root(spec, img.rootfs, "#cloud-config\n{}\n", meta_data("iid-stop", "stop"))
        pid = nspawn.start_container(tmp_path / nspawn.SPEC_FILE, tmp_path / "supervisor.log")
        assert nspawn.IP_FORWARD.read_text().strip() == "1"
        deadline = time.monotonic() + 60
        while not nspawn.container_pids(Path(spec.root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert nspawn.container_pids(Path(spec.root))
    finally:
        assert nspawn.stop_container(tmp_path / nspawn.SPEC_FILE, pid)
    assert not procs.alive(pid)
    # An orderly halt, though the container was still starting: not the kill once `stop`'s grace ran out.
    assert "systemd-nspawn exited 0" in (tmp_path / "supervisor.log").read_text()
    assert not leftovers(spec)
    assert not nspawn.container_pids(Path(spec.root))
    if not others:
        assert nspawn.IP_FORWARD.read_text().strip() == before


def test_subnets_avoid_what_the_machine_uses() -> None:
    from ipaddress import IPv4Network

    name = "llmdeploy-x"
    first = IPv4Network(nspawn.choose_subnet(name, used=[]))
    assert first.prefixlen == 30 and first.subnet_of(nspawn.SUBNET_POOL)
    assert nspawn.choose_subnet(name, used=[first]) != str(first)
    with pytest.raises(nspawn.NspawnError):
        nspawn.choose_subnet(name, used=[nspawn.SUBNET_POOL])
