"""The container runtime of `llmdeploy local up --runtime nspawn`: the same Debian 12 tree as the VM image
(image.py's cached rootfs), booted by systemd-nspawn at native speed, with the same NoCloud user-data.

- **Root filesystem**: each container boots its own copy of the cached tree (`cp -a`, a few seconds), so the
  cache stays clean and `down` removes the copy.
- **cloud-init**: the seed is a folder in the copy, /var/lib/cloud/seed/nocloud/{meta-data,user-data}; the
  image already limits cloud-init to `datasource_list: [NoCloud, None]`, so ds-identify picks NoCloud. The
  network is set up from outside (below), so cloud-init is told to leave it alone.
- **Network**: a network namespace of its own (`ip netns`, named after the container), with a veth pair: the
  host side holds .1 of a private /30 chosen per container, the guest side (eth0 in the container) .2, and
  a default route through the host. The host NATs the /30 (iptables MASQUERADE, IPv4 forwarding on while a
  container runs), so the guest reaches Debian's mirror and PyPI as this machine does, and it reaches the
  model server and pebble at the host side's address. The namespace outlives the container, so a reboot
  (the container exits, the runtime starts it again) keeps its address.
- **Ports**: guest ports 22/80/443 (and --forward ones) are forwarded to loopback ports by a small TCP
  forwarder in the supervisor, as QEMU's hostfwd does; nothing on the host's own interfaces changes.
- **Processes**: one supervisor per container (`python -m llmdeploy.local.nspawn supervise SPEC`), in its
  own process group, stopped by PID: it runs the forwarders and systemd-nspawn, starts the container again
  when it reboots (exit 133), and on SIGTERM shuts it down in order (nspawn passes SIGRTMIN+3 to the
  container's systemd; the supervisor asks again every few seconds, since a systemd still starting drops it).
  `stop` then kills whatever of the container is left, removes the NAT rules and the namespace (and with it the
  veth pair), and the root copy.

What a container does not prove: it has no kernel of its own (the host's runs it: the kernel-wide sysctl
keys are read-only in it, the network ones are its namespace's), a "reboot" restarts the container, not a
machine, and its firewall rules act on its own namespace only.

The host has no systemd as PID 1: `--register=no --keep-unit` keep nspawn from asking it for a scope unit.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import Failure
from ..polling import attempts, wait_for

NSPAWN = "systemd-nspawn"
REBOOT_EXIT = 133  # systemd-nspawn's exit code when the container's systemd reboots
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")  # one /30 per container
STOP_GRACE_S = 60.0  # an orderly shutdown of the container's services
STOP_REPEAT_S = 5.0  # how often a stopping supervisor asks the container's systemd to halt again
HOST_TOOLS = {NSPAWN: "systemd-container", "ip": "iproute2", "iptables": "iptables"}
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# nspawn mounts /proc/sys read-only; "network" leaves /proc/sys/net writable: the container's own network
# namespace's settings (the stack's sysctl hardening sets them), while the kernel-wide keys stay the host's.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
# The container's network is configured from outside (the namespace), not by cloud-init.
CLOUD_CFG = """\
# llmdeploy local (systemd container): eth0's address and route are set up by the runtime, from outside.
network: {config: disabled}
"""
SEED_DIR = "var/lib/cloud/seed/nocloud"


class NspawnError(Failure):
    """The container could not be created or started; the message says why and what to do."""


def missing_nspawn_tools() -> list[str]:
    import shutil

    return sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})


@dataclass
class ContainerSpec:
    name: str  # the machine name; also the network namespace's
    root: str  # the container's own root filesystem
    subnet: str  # "10.213.x.y/30": host .1, guest .2
    console_log: str  # what the container prints on its console (cloud-init's host keys among it)
    forwards: dict[int, int] = field(default_factory=dict)  # guest port -> loopback port on the host

    @property
    def host_if(self) -> str:
        return "llh-" + self.name.rsplit("-", 1)[-1][:11]  # at most 15 characters (IFNAMSIZ)

    @property
    def host_ip(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[1])

    @property
    def guest_ip(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[2])

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.name}"

    def command(self) -> list[str]:
        return [NSPAWN, "--boot", "--register=no", "--keep-unit", "--quiet", "-D", self.root, "-M", self.name,
                f"--network-namespace-path={self.netns_path}", "--resolv-conf=copy-host", "--link-journal=no",
                "--console=read-only",
                # Its own network namespace: it may manage its firewall and interfaces there, as a VM does.
                "--capability=CAP_NET_ADMIN"]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ContainerSpec":
        data = json.loads(path.read_text())
        data["forwards"] = {int(g): int(h) for g, h in data.get("forwards", {}).items()}
        return cls(**data)


# ---------------------------------------------------------------------------------------------- plan and root

def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    out += subprocess.run(["ip", "-o", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    nets = []
    for word in out.split():
        try:
            nets.append(ipaddress.ip_interface(word).network if "/" in word else ipaddress.ip_network(f"{word}/32"))
        except ValueError:
            continue
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def choose_subnet(name: str, used: list[ipaddress.IPv4Network] | None = None) -> str:
    """A /30 of SUBNET_POOL that no address or route of this machine overlaps, starting at one derived from
    the name (so two containers rarely even try the same one)."""
    taken = _used_networks() if used is None else used
    subnets = list(SUBNET_POOL.subnets(new_prefix=30))
    first = int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(subnets)
    for i in range(len(subnets)):
        candidate = subnets[(first + i) % len(subnets)]
        if not any(candidate.overlaps(n) for n in taken):
            return str(candidate)
    raise NspawnError(f"no free /30 left in {SUBNET_POOL} for the container's network")


SPEC_FILE = "container.json"


def plan(folder: Path, name: str, forwards: dict[int, int]) -> ContainerSpec:
    """The container's spec (saved in `folder`, its state folder): its name, root copy, /30 and ports."""
    spec = ContainerSpec(name=name, root=str(folder / "rootfs"), subnet=choose_subnet(name),
                         console_log=str(folder / "serial.log"), forwards=dict(forwards))
    spec.save(folder / SPEC_FILE)
    return spec


def prepare_root(spec: ContainerSpec, base: Path, user_data: str, meta_data: str) -> None:
    """The container's own root: a copy of the cached tree with the NoCloud seed in it."""
    copy_root(base, Path(spec.root))
    write_seed(Path(spec.root), user_data, meta_data)


def copy_root(base: Path, root: Path) -> None:
    """The container's own copy of the cached tree (hard links would let the container change the cache)."""
    if root.exists():
        remove_root(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        remove_root(root)
        raise NspawnError(f"copying the root filesystem {base} to {root} failed: {proc.stderr.strip()[-500:]}")


def remove_root(root: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False, capture_output=True)


def write_seed(root: Path, user_data: str, meta_data: str) -> Path:
    """The NoCloud seed as a folder in the container's root (0600: the user-data names users and keys)."""
    seed = root / SEED_DIR
    seed.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, text in (("user-data", user_data), ("meta-data", meta_data)):
        path = seed / name
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text, encoding="utf-8")
    (root / "etc/cloud/cloud.cfg.d/95-llmdeploy-container.cfg").write_text(CLOUD_CFG)
    return seed


# ---------------------------------------------------------------------------------------------- network

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NspawnError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _nat_rules(spec: ContainerSpec) -> list[list[str]]:
    """The host's iptables rules for this container (table, chain, rule), each tagged with its name."""
    tag = ["-m", "comment", "--comment", f"llmdeploy {spec.name}"]
    return [["-t", "nat", "POSTROUTING", "-s", spec.subnet, "!", "-o", spec.host_if, "-j", "MASQUERADE", *tag],
            ["-t", "filter", "FORWARD", "-i", spec.host_if, "-j", "ACCEPT", *tag],
            ["-t", "filter", "FORWARD", "-o", spec.host_if, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
             "-j", "ACCEPT", *tag]]


def _iptables(action: str, rule: list[str]) -> subprocess.CompletedProcess[str]:
    table, chain, *spec = rule[1], rule[2], *rule[3:]
    where = [chain, "1"] if action == "-I" else [chain]
    return subprocess.run(["iptables", "-w", "-t", table, action, *where, *spec], capture_output=True, text=True)


def _forward_state_file() -> Path:
    from . import paths

    return paths.cache_root() / "nspawn-ip-forward"


def network_up(spec: ContainerSpec) -> None:
    """The namespace, the veth pair with both addresses, the default route, NAT and forwarding (idempotent)."""
    if not Path(spec.netns_path).exists():
        _ip("netns", "add", spec.name)
    if _ip("link", "show", spec.host_if, check=False).returncode != 0:
        _ip("link", "add", spec.host_if, "type", "veth", "peer", "name", "eth0", "netns", spec.name)
    prefix = ipaddress.ip_network(spec.subnet).prefixlen
    _ip("addr", "replace", f"{spec.host_ip}/{prefix}", "dev", spec.host_if)
    _ip("link", "set", spec.host_if, "up")
    _ip("-n", spec.name, "addr", "replace", f"{spec.guest_ip}/{prefix}", "dev", "eth0")
    _ip("-n", spec.name, "link", "set", "lo", "up")
    _ip("-n", spec.name, "link", "set", "eth0", "up")
    _ip("-n", spec.name, "route", "replace", "default", "via", spec.host_ip)
    for rule in _nat_rules(spec):
        if _iptables("-C", rule).returncode != 0:
            proc = _iptables("-I", rule)
            if proc.returncode != 0:
                raise NspawnError(f"iptables {' '.join(rule)} failed: {proc.stderr.strip()}")
    if IP_FORWARD.read_text().strip() != "1":
        state = _forward_state_file()
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text("0\n")  # it was off: turned off again when the last container is gone
        IP_FORWARD.write_text("1\n")


def network_down(spec: ContainerSpec) -> None:
    """Undo network_up: the rules, the namespace (and its veth pair), forwarding if this was the last one."""
    for rule in _nat_rules(spec):
        while _iptables("-C", rule).returncode == 0:
            if _iptables("-D", rule).returncode != 0:
                break
    _ip("link", "del", spec.host_if, check=False)
    if Path(spec.netns_path).exists():
        _ip("netns", "del", spec.name, check=False)
    state = _forward_state_file()
    others = [n for n in _ip("netns", "list", check=False).stdout.split() if n.startswith("llmdeploy-")]
    if state.is_file() and not others:
        IP_FORWARD.write_text(state.read_text().strip() + "\n")
        state.unlink()


# ---------------------------------------------------------------------------------------------- processes

def container_pids(root: Path) -> list[int]:
    """The processes whose root directory is the container's root (every process inside it)."""
    try:
        want = root.stat()
    except OSError:
        return []
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            seen = os.stat(proc / "root")
        except OSError:
            continue
        if (seen.st_dev, seen.st_ino) == (want.st_dev, want.st_ino):
            found.append(int(proc.name))
    return found


def kill_container(root: Path, timeout: float = 10.0) -> list[int]:
    """SIGKILL what still runs inside the container (an nspawn killed hard leaves its systemd running)."""
    pids = container_pids(root)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    wait_for(lambda: not container_pids(root), within=timeout, every=0.1)
    return pids


def start_container(spec_path: Path, log: Path) -> int:
    """Start the supervisor of the container described at spec_path, detached; return its PID once the
    forwarded ports listen. The spec's path is on its command line: the marker procs.alive/stop check."""
    from . import procs

    spec = ContainerSpec.load(spec_path)
    infra = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([infra, *filter(None, [os.environ.get("PYTHONPATH")])])}
    pid = procs.start_daemon([sys.executable, "-m", "llmdeploy.local.nspawn", "supervise", str(spec_path)], log,
                             env=env)
    for _ in attempts(30, every=0.1):
        if not procs.alive(pid):
            raise NspawnError(f"the container's supervisor exited at once; last lines of {log}:\n"
                              f"{procs.tail(log, 15)}\nconsole: {procs.tail(Path(spec.console_log), 15)}")
        if all(_listening(port) for port in spec.forwards.values()):
            return pid
    procs.stop_process(pid, str(spec_path), grace=STOP_GRACE_S)
    raise NspawnError(f"the container's port forwarders did not listen within 30s; {log}:\n{procs.tail(log, 15)}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def stop_container(spec_path: Path, pid: int | None) -> bool:
    """Stop the supervisor by PID (it shuts the container down in order), then remove whatever is left:
    processes inside the container, the NAT rules, the namespace, the root copy. True if something ran."""
    from . import procs

    stopped = procs.stop_process(pid, str(spec_path), grace=STOP_GRACE_S + 15)
    try:
        spec = ContainerSpec.load(spec_path)
    except (OSError, ValueError, TypeError):
        return stopped
    root = Path(spec.root)
    if kill_container(root):
        stopped = True
    network_down(spec)
    remove_root(root)
    return stopped


# ---------------------------------------------------------------------------------------------- supervisor

def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _relay(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()  # nothing listens in the guest (yet): the client sees the connection close, as with QEMU
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve_forward(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_relay, args=(client, target), daemon=True).start()


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] nspawn supervisor: {text}", flush=True)


def _container_init(root: Path) -> int | None:
    """The host PID of the container's systemd: the process inside it that is PID 1 in its own namespace."""
    for pid in container_pids(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if nspid and nspid[-1] == "1":
            return pid
    return None


def _wait_nspawn(child: subprocess.Popen[bytes], stopping: threading.Event, root: Path) -> int:
    """nspawn's exit code. Once stopping, the container's systemd is asked to halt again every STOP_REPEAT_S:
    nspawn passes the supervisor's SIGTERM on as SIGRTMIN+3 once, and a systemd still starting (its handler not
    yet in place) drops it and boots on, so a container stopped early ran until `stop` killed it 75 s later."""
    asked = since = 0.0
    while True:
        try:
            return child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if not stopping.is_set():
            continue
        if not asked:
            asked = since = time.monotonic()  # on_term asked once, through nspawn
        elif time.monotonic() - since > STOP_GRACE_S:
            child.kill()
            return child.wait()
        elif time.monotonic() - asked >= STOP_REPEAT_S:
            _say("the container is still running: asking its systemd to halt again")
            init = _container_init(root)
            if init is not None:
                try:
                    os.kill(init, signal.SIGRTMIN + 3)
                except ProcessLookupError:
                    pass
            asked = time.monotonic()


def supervise(spec_path: Path) -> int:
    """Forward the ports, run the container, start it again after each reboot, stop it on SIGTERM."""
    spec = ContainerSpec.load(spec_path)
    listeners = []
    for guest, host in sorted(spec.forwards.items()):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", host))
        sock.listen(64)
        listeners.append(sock)
        threading.Thread(target=_serve_forward, args=(sock, (spec.guest_ip, guest)), daemon=True).start()
    _say("forwarding " + ", ".join(f"127.0.0.1:{h} -> {spec.guest_ip}:{g}" for g, h in sorted(spec.forwards.items())))
    stopping = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def on_term(signum: int, frame: object) -> None:
        stopping.set()
        if child and child[0].poll() is None:
            child[0].send_signal(signal.SIGTERM)  # nspawn passes SIGRTMIN+3: the container shuts down in order

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    code = 0
    with open(spec.console_log, "ab") as console:
        while not stopping.is_set():
            _say(f"starting: {' '.join(spec.command())}")
            # Its own process group: a SIGTERM to the supervisor's group must reach nspawn once, from here (a
            # second SIGTERM makes nspawn kill the container at once instead of shutting it down).
            child[:] = [subprocess.Popen(spec.command(), stdin=subprocess.DEVNULL, stdout=console,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **NSPAWN_ENV})]
            try:
                code = _wait_nspawn(child[0], stopping, Path(spec.root))
            except BaseException:
                child[0].kill()
                raise
            _say(f"systemd-nspawn exited {code}")
            if code != REBOOT_EXIT:
                break
            _say("the container rebooted: starting it again")
    if stopping.is_set() and child and child[0].poll() is None:
        try:
            child[0].wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child[0].kill()
            child[0].wait()
    for sock in listeners:
        sock.close()
    return 0 if stopping.is_set() else code


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "supervise":
        print("usage: python -m llmdeploy.local.nspawn supervise SPEC.json", file=sys.stderr)
        return 2
    return supervise(Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
