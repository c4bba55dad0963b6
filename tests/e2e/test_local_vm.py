"""End to end: `llmdeploy local up` boots the example local stack (Pulumi.local.yaml: llama.cpp on the tiny
model, a certificate from a local pebble through certbot) in a real QEMU VM, once for this module, and:

- the smoke test passes, over HTTPS and over SSH;
- through the forwarded loopback ports only 22, 80 and 443 answer; the engine's port 8080, forwarded too,
  does not (it listens on the guest's loopback only, and the firewall rejects it);
- the image's firewall rules (OCI's rules.v4, which the local image ships as OCI's Ubuntu images do) are kept:
  only root may reach 169.254.0.2:3260 (the iSCSI boot volume), before and after the reboot;
- after a reboot every service comes back and the smoke test passes;
- the stack has an hfToken (LLMDEPLOY_HF_TOKEN, as a user passes it): the model server, the stack's
  hfEndpoint, refuses downloads without it, the model came through it, and the token, like the API key,
  is in no file but its own, no journal and no command line.

The VM and the host-side servers (model server, pebble) are stopped by PID by `llmdeploy local down` when
the module ends, also when a test fails; the VM's state lives in a temporary folder, the image in the
user's cache (built on the first run, ~1.5 min). Under TCG on 2 cores the module takes about 10 minutes.

Two checks of the guest alone run in the systemd container modules only (test_local_nspawn.py on this stack,
test_local_engines.py on the engine stacks), which boot the same tree with the same user-data at native speed:
running the provisioning again changes nothing, and a SIGKILLed engine comes back. Nothing of the runtime takes
part in either (the guest's own provision script; the guest's systemd), and under TCG they took 80 s and 28 s.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmdeploy.local import checks, procs
from llmdeploy.local.image import OCI_RULES_V4
from llmdeploy.local.lifecycle import PROCESS_NAMES
from llmdeploy.local.nspawn import SPEC_FILE, ContainerSpec
from llmdeploy.local.runtime import of as runtime_of
from llmdeploy.local.ssh import loopback_login
from llmdeploy.sshclient import Session, SshError
from llmdeploy.local.state import VmState
from llmdeploy.polling import attempts
from llmdeploy.vmpaths import BUNDLE_STAGE, USAGE_LOG
from support.project import ROOT

pytestmark = pytest.mark.e2e

STACK = "local"
UP_TIMEOUT_S = 30 * 60
ENGINE_PORT = 8080
# What a provisioning run installs or configures; a second run must leave every byte as it was.
# The engine's systemd unit is named after it (llamacpp, vllm, xinference), its virtualenv in /opt/llmdeploy too.
INSTALLED = ["/etc/llmdeploy", "/etc/letsencrypt/live", "/etc/letsencrypt/renewal", "/etc/nginx/sites-enabled",
             "/etc/nginx/sites-available/llmdeploy.conf", "/etc/systemd/system/{unit}.service",
             "/usr/local/lib/llmdeploy", "/usr/local/share/llmdeploy", "/etc/ssh/sshd_config.d",
             "/etc/apt/apt.conf.d/20auto-upgrades", "/etc/iptables", "/var/lib/llmdeploy/models"]
INSTALLED_STATE_COMMAND = (
    "set -e; cd /var/lib/llmdeploy/stages; "
    "for f in *; do printf 'marker %s %s %s\\n' \"$f\" \"$(stat -c %Y \"$f\")\" \"$(cat \"$f\")\"; done; "
    f"find -L {' '.join(INSTALLED)} -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sed 's/^/file /'; "
    "echo \"packages $(dpkg-query -W -f='${Package}=${Version}\\n' | sha256sum | cut -c1-16)\"; "
    "echo \"venv $(/opt/llmdeploy/{unit}/bin/python -m pip freeze 2>/dev/null | sha256sum | cut -c1-16)\"; "
    "echo \"iptables $( (iptables -S; ip6tables -S) | sha256sum | cut -c1-16)\"; "
    "for u in {unit} nginx; do echo \"pid $u $(systemctl show -p MainPID --value $u)\"; done"
)
# A file of the gated model, as the guest downloads it from the model server (the stack's hfEndpoint).
GATED_FILE = {"llamacpp": "/tiny-llama.gguf", "vllm": "/llmdeploy/tiny-llama/resolve/main/config.json",
              "xinference": "/llmdeploy/tiny-llama-gguf/resolve/main/tiny-llama.gguf"}
# How long an engine takes to serve its model again after a restart or a SIGKILL (measured under nspawn:
# llama.cpp in seconds; vLLM-CPU recompiles from its cache; Xinference relaunches the model from its autostart).
BACK_WITHIN_S = {"llamacpp": 180, "vllm": 420, "xinference": 300}


@dataclass
class Vm:
    state: VmState
    env: dict[str, str] = field(repr=False)  # it carries the HF token: kept out of pytest's failure reports
    up_seconds: float
    up_log: str = field(repr=False)
    hf_token: str = field(repr=False)

    @property
    def unit(self) -> str:
        """The engine's systemd unit."""
        return self.state.engine

    @property
    def health_url(self) -> str:
        """The engine's own health check in the guest (render.ENGINE_HEALTH: 200 once the model is served)."""
        path = f"/v1/models/{self.state.model_name}" if self.state.engine == "xinference" else "/health"
        return f"http://127.0.0.1:{self.state.engine_port}{path}"

    @property
    def installed_state_command(self) -> str:
        return INSTALLED_STATE_COMMAND.replace("{unit}", self.unit)

    def login(self) -> Session:
        return loopback_login(self.state.port(22), self.state.admin_user, self.state.ssh_key,
                              host_key=self.state.host_key, timeout=30)

    def run(self, command: str, timeout: float = 300) -> tuple[int, str, str]:
        session = self.login()
        try:
            result = session.run(command, timeout=timeout)
        finally:
            session.close()
        return result.exit_code, result.stdout, result.stderr

    def sudo(self, command: str, timeout: float = 300) -> str:
        code, out, err = self.run(f"sudo -n sh -c {shlex.quote(command)}", timeout=timeout)
        assert code == 0, f"`{command}` exited {code}: {err[-2000:]}"
        return out


def llmdeploy(args: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
    """Run the CLI as a user does, in its own process group, stopped by PID if it overruns."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(["llmdeploy", *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # `up` cleans up after itself on SIGTERM too (KeyboardInterrupt)
            try:
                return proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait()


def booted(tmp_path_factory: pytest.TempPathFactory, runtime: str, stack: str = STACK,
           engine_port: int = ENGINE_PORT) -> Iterator[Vm]:
    """`llmdeploy local up --runtime RUNTIME` of the example stack (or `stack`, whose engine listens on
    `engine_port`, forwarded too), and `down` afterwards, also on failure."""
    state_dir = tmp_path_factory.mktemp(f"{stack}-{runtime}-state")
    # A gated model: the stack's hfToken as a user passes a secret to `local up` (the environment).
    hf_token = "hf_" + secrets.token_urlsafe(24)
    env = {**os.environ, "LLMDEPLOY_STATE_DIR": str(state_dir), "LLMDEPLOY_HF_TOKEN": hf_token}
    log = state_dir.parent / "local-up.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMDEPLOY_STATE_DIR", str(state_dir))
        start = time.monotonic()
        try:
            code = llmdeploy(["local", "up", "--stack", stack, "--project-dir", str(ROOT), "--runtime", runtime,
                              "--forward", str(engine_port)], env, log, UP_TIMEOUT_S)
            elapsed = time.monotonic() - start
            text = log.read_text(errors="replace")
            print(f"\nllmdeploy local up: exit {code} after {elapsed:.0f}s\n{text}")
            assert code == 0, f"llmdeploy local up exited {code}:\n{text[-6000:]}"
            state = VmState.load(stack)
            assert state is not None and state.phase == "ready"
            yield Vm(state, env, elapsed, text, hf_token)
        finally:
            left = VmState.load(stack)
            llmdeploy(["local", "down", "--stack", stack], env, log, 300)
            if left is not None:  # belt and braces: nothing of the VM may outlive the module
                runtime_of(left).stop(left)
                for name in PROCESS_NAMES:
                    procs.stop_process(left.pids.get(name), left.markers.get(name, "\0"))
            assert VmState.load(stack) is None


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    yield from booted(tmp_path_factory, "qemu")


def smoke(vm: Vm) -> None:
    report = checks.run_smoke(vm.state)
    failed = [r.line() for r in report.results if not r.ok]
    assert not failed, "\n".join(failed)
    names = [r.name for r in report.results]
    assert any(n.startswith("ssh: ") for n in names) and any(n.startswith("tls: ") for n in names)
    assert "ssh: engine port loopback only" in names and "stream: POST /v1/chat/completions" in names


def test_up_boots_provisions_and_smoke_tests_the_stack(vm: Vm) -> None:
    assert "PASS  ssh: stage markers" in vm.up_log and "FAIL " not in vm.up_log
    for step in vm.state.stages:
        assert f"{step} done" in vm.up_log  # live progress, stage by stage
    assert "endpoint: https://llm.test:" in vm.up_log and "curl --cacert" in vm.up_log
    timeline = vm.state.timeline
    started = timeline[f"{vm.state.runtime}_started"]
    print(f"\nboot to passing smoke ({vm.state.runtime}): {timeline['smoke_done'] - started:.0f}s; timeline: "
          f"{json.dumps(timeline)}")
    smoke(vm)  # again, from the test: HTTPS (TLS, auth, API, streams) and SSH


def test_the_certificate_comes_from_the_local_acme_server(vm: Vm) -> None:
    out = vm.sudo("readlink -f /etc/llmdeploy/tls/fullchain.pem; "
                  "openssl x509 -noout -issuer -in /etc/llmdeploy/tls/fullchain.pem")
    assert "/etc/letsencrypt/archive/llm.test/" in out and "Pebble" in out, out


def provisioning_again_changes_nothing(vm: Vm) -> None:
    """Running the provisioning again exits 0 and changes nothing (stage marker timestamps, installed files,
    packages, the services' PIDs). Collected by the container modules (see the module's docstring)."""
    before = vm.sudo(vm.installed_state_command)
    time.sleep(1.1)  # a rewritten marker would get a newer mtime
    code, out, err = vm.run("sudo -n /usr/local/sbin/llmdeploy-provision", timeout=900)
    assert code == 0, f"second provisioning run exited {code}:\n{(out + err)[-4000:]}"
    after = vm.sudo(vm.installed_state_command)
    assert before == after
    # Every step's marker, and the bootstrap's own (00-bundle: the bundle checked and unpacked).
    assert before.count("marker ") == len(vm.state.stages) + 1 and f"marker {BUNDLE_STAGE}.done" in before
    assert before.count("file ") > 20


# Where a secret must never be, on the VM. Each must be in one place, root only: the API key in nginx's key
# map, the Hugging Face token in hf.env.
GUEST_SEARCH = "/var/log /var/lib/cloud /run/cloud-init /etc /home /root /usr/local /var/lib/llmdeploy /tmp"
SECRET_HOMES = {"api key": "/etc/llmdeploy/secrets/api-keys.map", "hfToken": "/etc/llmdeploy/secrets/hf.env"}


def assert_only_at_home(vm: Vm, secret: str, home: str) -> None:
    # This machine: the VM's folder (user-data, seed, console, QEMU's and the servers' logs; not api-keys.json,
    # the user's own copy, nor the model server's 0600 token file, its copy of hfToken, nor the disk or the
    # container's root, which hold the guest's) and every process's command line.
    guest_root = vm.state.dir / "rootfs"
    own_copies = ("api-keys.json", "model-server.log.token", "disk.qcow2")
    leaks = [str(p) for p in vm.state.dir.rglob("*") if p.is_file() and p.name not in own_copies
             and guest_root not in p.parents and secret.encode() in p.read_bytes()]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if secret.encode() in (proc / "cmdline").read_bytes():
                leaks.append(f"command line of pid {proc.name}")
        except OSError:
            continue
    seed = vm.state.seed if vm.state.runtime == "qemu" else guest_root / "var/lib/cloud/seed/nocloud/user-data"
    assert (vm.state.dir / "user-data").is_file() and seed.is_file() and vm.state.serial_log.is_file()
    # The VM: files, the journal and command lines. The secret travels on stdin into a file in /dev/shm that
    # grep reads its pattern from, so this search puts it on no command line (sudo logs command lines; ps
    # shows them).
    script = ("pat=$(mktemp -p /dev/shm); cat > \"$pat\"; "
              f"grep -rlF -f \"$pat\" {GUEST_SEARCH} 2>/dev/null | grep -vxF {home}; "
              "journalctl --no-pager -o cat | grep -cF -f \"$pat\" | sed 's/^/journal /'; "
              "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -cF -f \"$pat\" | sed 's/^/cmdline /'; "
              f"grep -cF -f \"$pat\" {home} | sed 's/^/home /'; stat -c 'mode %a' {home}; rm -f \"$pat\"")
    session = vm.login()
    try:
        searched = session.run(f"sudo -n sh -c {shlex.quote(script)}", stdin=f"{secret}\n".encode(), timeout=300)
        out, err = searched.stdout, searched.stderr
    finally:
        session.close()
    found = out.split("\n")
    leaks += [line for line in found if line.startswith("/")]
    assert "journal 0" in found and "cmdline 0" in found and "mode 600" in found, (out, err)
    assert any(line.startswith("home ") and line != "home 0" for line in found), (out, err)
    assert not leaks, leaks


def test_the_api_key_is_never_in_user_data_logs_or_command_lines(vm: Vm) -> None:
    key = next(iter(vm.state.api_keys().values()))
    assert key.startswith("sk-llm-")
    assert_only_at_home(vm, key, SECRET_HOMES["api key"])


def test_the_hf_token_is_never_in_user_data_logs_or_command_lines(vm: Vm) -> None:
    assert re.search(r"secrets delivered over SSH: \d+ API key\(s\), hfToken", vm.up_log)
    assert_only_at_home(vm, vm.hf_token, SECRET_HOMES["hfToken"])


def test_the_model_came_from_a_server_that_refuses_it_without_the_token(vm: Vm) -> None:
    """The issue's proof: hfEndpoint points at a server that refuses downloads without the right bearer
    token; the model downloaded (the step waited for the token, delivered over SSH) and smoke passed."""
    log_path = vm.state.dir / "model-server.log"
    served = re.search(r"serving \S+ on \S+:(\d+), bearer token required", log_path.read_text())
    assert served, log_path.read_text()
    guest_host = "10.0.2.2" if vm.state.runtime == "qemu" else ContainerSpec.load(vm.state.dir / SPEC_FILE).host_ip
    gated = GATED_FILE[vm.state.engine]
    url = f"http://{guest_host}:{served.group(1)}{gated}"
    assert vm.sudo(f"curl -s -o /dev/null -w '%{{http_code}}' {url}") == "401"  # no token: refused
    log = log_path.read_text()
    repo_path = gated.rsplit("/resolve/", 1)[0]  # the engine asks for the repository's files (or the file) by path
    assert re.search(rf"authorized (/api/models)?{re.escape(repo_path)}\S* \(bearer token\)", log), log[-3000:]
    assert f"refused {gated}: no bearer token" in log
    assert f"hfEndpoint http://{guest_host}:" in vm.up_log and "PASS  ssh: stage markers" in vm.up_log
    engine_log = vm.sudo("cat /var/log/llmdeploy/40-engine.log")
    assert "hfToken was not delivered" not in engine_log


def wait_for(what: str, check: Callable[[], str | None], timeout: float) -> None:
    deadline, last = time.monotonic() + timeout, "nothing yet"
    while time.monotonic() < deadline:
        try:
            seen = check()
        except (SshError, OSError) as exc:
            seen = f"{type(exc).__name__}: {exc}"
        if seen is None:
            return
        last = seen
        time.sleep(3)
    raise AssertionError(f"{what}: not after {timeout:.0f}s; last seen: {last}")


def main_pid(vm: Vm, unit: str) -> int:
    return int(vm.sudo(f"systemctl show -p MainPID --value {unit}").strip() or 0)


def wait_served_again(vm: Vm, old: int) -> float:
    """Until the engine runs with a PID other than `old` and its health check answers 200; the seconds it took."""
    start = time.monotonic()

    def back() -> str | None:
        pid = main_pid(vm, vm.unit)
        code, out, _ = vm.run(f"systemctl is-active {vm.unit}; curl -s -o /dev/null -w '%{{http_code}}' "
                              f"{vm.health_url}")
        return None if pid not in (0, old) and out.split() == ["active", "200"] else f"pid {pid}: {out.split()}"

    deadline = BACK_WITHIN_S[vm.state.engine]
    wait_for(f"{vm.unit} running again with a new PID and healthy within {deadline}s", back, deadline)
    took = time.monotonic() - start
    print(f"\n{vm.unit} served again after {took:.0f}s (deadline {deadline}s)")
    return took


def a_killed_engine_is_restarted_by_systemd(vm: Vm) -> None:
    """A SIGKILLed engine is brought back by systemd, and the smoke test passes again. Collected by the container
    modules (see the module's docstring)."""
    old = main_pid(vm, vm.unit)
    assert old > 0
    vm.sudo(f"kill -KILL {old}")
    wait_served_again(vm, old)
    restarts = vm.sudo(f"systemctl show -p NRestarts --value {vm.unit}").strip()
    assert int(restarts) >= 1
    smoke(vm)


def answers(port: int, probe: bytes, timeout: float = 10.0) -> bytes:
    """What a loopback port says to `probe` (b'' when the connection is dropped, refused or stays silent)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if probe:
                sock.sendall(probe)
            return sock.recv(64)
    except OSError:
        return b""


def test_only_ssh_http_and_https_answer_through_the_forwarded_ports(vm: Vm) -> None:
    state = vm.state
    assert answers(state.port(22), b"").startswith(b"SSH-2.0-")
    assert answers(state.port(80), b"GET /healthz HTTP/1.0\r\nHost: llm.test\r\n\r\n").startswith(b"HTTP/1.1 ")
    context = ssl.create_default_context(cafile=str(state.ca_file))
    with socket.create_connection(("127.0.0.1", state.port(443)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="llm.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # The engine's port is forwarded too, and answers inside the guest, yet nothing comes back through it.
    assert vm.sudo(f"curl -s -o /dev/null -w '%{{http_code}}' {vm.health_url}") == "200"
    assert answers(state.port(state.engine_port), b"GET /health HTTP/1.0\r\n\r\n", timeout=15) == b""


def first_match(rules: list[str], dest: str, port: int, uid: int) -> str:
    """The target of the first rule in an `iptables -S CHAIN` listing that a TCP packet from `uid` to
    dest:port matches (the matches OCI's InstanceServices chain uses: -d, -p, --dport, --uid-owner)."""
    for rule in rules:
        words = rule.split()
        if words[0] != "-A":
            continue
        opts = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("-")}
        if "-d" in opts and ipaddress.ip_address(dest) not in ipaddress.ip_network(opts["-d"]):
            continue
        if opts.get("-p", "tcp") != "tcp" or opts.get("--dport", str(port)) != str(port):
            continue
        if opts.get("--uid-owner", str(uid)) != str(uid):
            continue
        return opts["-j"]
    return "(falls through)"


def assert_the_image_firewall_is_kept(vm: Vm) -> None:
    rules = vm.sudo("iptables -S").splitlines()
    assert "-A OUTPUT -d 169.254.0.0/16 -j InstanceServices" in rules and "-N InstanceServices" in rules
    chain = [r for r in rules if r.startswith("-A InstanceServices ")]
    image = [r for r in OCI_RULES_V4.splitlines() if r.startswith("-A InstanceServices ")]
    assert len(chain) == len(image), chain
    # By the rules, not the network (169.254.0.2 is not there under QEMU): root may, anyone else may not.
    assert first_match(chain, "169.254.0.2", 3260, uid=0) == "ACCEPT"
    assert first_match(chain, "169.254.0.2", 3260, uid=1000) == "REJECT"
    saved = vm.sudo("cat /etc/iptables/rules.v4")
    assert all(r in saved for r in image) and "--dport 443 -j ACCEPT" in saved
    assert vm.sudo("systemctl is-enabled netfilter-persistent").strip() == "enabled"
    assert vm.run("command -v ufw")[0] != 0


def test_the_image_firewall_rules_are_kept(vm: Vm) -> None:
    assert_the_image_firewall_is_kept(vm)


def https_status(state: VmState, path: str, key: str) -> int:
    """GET path on the guest's nginx through the forwarded HTTPS port, as llm.test, with key as the Bearer key: the
    status. (The key goes in the request, never on a command line.)"""
    context = ssl.create_default_context(cafile=str(state.ca_file))
    with socket.create_connection(("127.0.0.1", state.port(443)), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="llm.test") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: llm.test\r\nAuthorization: Bearer {key}\r\n"
                        "Connection: close\r\n\r\n".encode())
            return int(tls.recv(64).split()[1])


def usage_by_key(vm: Vm, *source: str) -> dict[str, dict[str, int]]:
    done = subprocess.run(["llmdeploy", "usage", *source, "--since", "1h", "--json"], env=vm.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for key in vm.state.api_keys().values():
        assert key not in done.stdout + done.stderr
    return {k["name"]: k for k in json.loads(done.stdout)["keys"]}


def test_usage_counts_the_guests_requests_by_key_name_locally_and_over_ssh(vm: Vm) -> None:
    """`llmdeploy usage --stack` (the local login) and `--ssh` (a cloud VM's way in, the host key pinned) read the
    guest's nginx log: 3 requests with the key and 2 with a wrong one show up as exactly that, under the key's name."""
    state = vm.state
    name, key = next(iter(state.api_keys().items()))
    before = usage_by_key(vm, "--stack", state.stack)
    statuses = [https_status(state, "/v1/models", key) for _ in range(3)]
    statuses += [https_status(state, "/v1/models", "sk-llm-" + "x" * 43) for _ in range(2)]
    assert statuses == [200, 200, 200, 401, 401]
    over_ssh = ["--ssh", f"{state.admin_user}@127.0.0.1:{state.port(22)}", "--ssh-key", str(state.ssh_key),
                "--ssh-host-key", state.host_key]
    nobody = "(no valid key)"
    was = (before.get(name, {}).get("ok", 0), before.get(nobody, {}).get("unauthorized", 0))
    grown = (0, 0)
    for _ in attempts(30, every=2):  # nginx writes a request's line just after answering it
        after = usage_by_key(vm, *over_ssh)
        grown = (after[name]["ok"] - was[0], after.get(nobody, {}).get("unauthorized", 0) - was[1])
        if grown == (3, 2):
            break
    assert grown == (3, 2), (before, after)
    assert vm.sudo(f"stat -c '%a %U %G' {USAGE_LOG}").strip() == "640 www-data adm"  # not for every local user


def cli(vm: Vm, *argv: str) -> subprocess.CompletedProcess[str]:
    """llmdeploy ARGV as a user runs it; no key may be in what it prints."""
    done = subprocess.run(["llmdeploy", *argv], env=vm.env, capture_output=True, text=True, timeout=120)
    for key in vm.state.api_keys().values():
        assert key not in done.stdout + done.stderr
    return done


def test_status_and_logs_read_the_guest_locally_and_over_ssh(vm: Vm) -> None:
    """`llmdeploy status` and `logs` over SSH, as for a cloud VM (host key pinned), and `--stack` (the local login):
    the same code after the login, the same answers."""
    state = vm.state
    over_ssh = ["--ssh", f"{state.admin_user}@127.0.0.1:{state.port(22)}", "--ssh-key", str(state.ssh_key),
                "--ssh-host-key", state.host_key]
    done = cli(vm, "status", *over_ssh, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert status["stages"] == {"done": [BUNDLE_STAGE, *state.stages], "failed": {}, "pending": []}, status["stages"]
    assert status["ready"] is True
    assert set(status["units"].values()) == {"active"} and len(status["units"]) == 2, status["units"]
    assert status["certificate"]["days_left"] >= 1 and status["disk"]["free_gb"] > 0 and status["gpus"] == []
    local = cli(vm, "status", "--stack", state.stack)
    assert local.returncode == 0 and f"stages:       {' '.join([BUNDLE_STAGE, *state.stages])}\n" in local.stdout, local.stdout
    steps = cli(vm, "logs", *over_ssh, "--step", "60-nginx", "-n", "5")
    assert steps.returncode == 0 and 0 < len(steps.stdout.splitlines()) <= 5, steps.stdout + steps.stderr
    engine = cli(vm, "local", "logs", "--stack", state.stack, "--engine", "-n", "3")
    assert engine.returncode == 0 and 0 < len(engine.stdout.splitlines()) <= 4, engine.stdout + engine.stderr
    wrong = cli(vm, "logs", "--stack", state.stack, "--step", "45-nothing")
    assert wrong.returncode == 2 and f"this VM's steps are {', '.join(state.stages)}" in wrong.stderr


def test_after_a_reboot_every_service_comes_back(vm: Vm) -> None:
    # A marker in /run (a tmpfs, new at every boot); the kernel's boot_id would not change in a container.
    vm.sudo("echo before-reboot > /run/llmdeploy-test-boot")
    try:
        vm.run("sudo -n systemctl reboot", timeout=20)
    except SshError:
        pass  # the connection may drop before the command returns

    def rebooted() -> str | None:
        if vm.sudo("cat /run/llmdeploy-test-boot 2>/dev/null || true").strip():
            return "still the old boot"
        # curl prints 000 and fails while the engine still starts (Xinference takes a minute): keep waiting.
        out = vm.sudo(f"systemctl is-active {vm.unit} nginx ssh netfilter-persistent certbot.timer || true; "
                      f"curl -s -o /dev/null -w '%{{http_code}}' {vm.health_url} || true")
        return None if out.split() == ["active"] * 5 + ["200"] else out.split().__repr__()

    wait_for("the rebooted VM with every service active", rebooted, 600)
    assert_the_image_firewall_is_kept(vm)  # loaded at boot by netfilter-persistent, not by a provisioning run
    test_only_ssh_http_and_https_answer_through_the_forwarded_ports(vm)
    smoke(vm)
