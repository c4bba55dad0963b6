"""Checks of a provisioned VM over SSH: cloud-init finished, every stage marker done, the engine and nginx
active, the engine's port on loopback only, the GPU visible on GPU shapes, disk and memory headroom.

Each check returns a CheckResult whose evidence lists the commands it ran (command, exit code, stdout,
stderr). A failure also carries the tail of cloud-init's output log, and a failed unit its journal, so the
report says why without a second login. Commands run through `sudo -n` unless the user is root (the VM's
admin user has passwordless sudo). The host key is pinned when one is given; otherwise the check warns.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import select
import shlex
import socket
import time
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from ..errors import Failure
from ..result import FAIL, CheckResult, timed
from ..vmpaths import CLOUD_INIT_OUTPUT, READY_MARKER, STACK_INFO, STAGES_DIR, step_log

DISK_WARN_FREE = 0.10  # warn when less than this share of / is free
MEMORY_WARN_FREE = 0.15  # warn when less than this share of memory is available
LOG_TAIL_LINES = 40
JOURNAL_LINES = 50
MAX_EVIDENCE_CHARS = 8000
GPU_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]

# Host key algorithms per key type, so that a pinned key's own type is the one the server presents.
HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
ALL_HOST_KEY_ALGORITHMS = tuple(a for algs in HOST_KEY_ALGORITHMS.values() for a in algs)


# ---------------------------------------------------------------------------------------------- host keys

def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob, as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def parse_host_key(spec: str) -> tuple[str | None, str]:
    """(key type or None, SHA256 fingerprint) from "SHA256:...", "TYPE BASE64 [comment]" or a known_hosts line."""
    spec = spec.strip()
    if spec.startswith("SHA256:"):
        return None, spec
    parts = spec.split()
    for i, part in enumerate(parts[:-1]):
        if part in HOST_KEY_ALGORITHMS or part.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                blob = base64.b64decode(parts[i + 1], validate=True)
            except ValueError as exc:
                raise ValueError(f"host key {spec!r}: the key after {part} is not base64") from exc
            return part, fingerprint(blob)
    raise ValueError(f"host key {spec!r}: expected 'SHA256:...', 'ssh-ed25519 AAAA...' or a known_hosts line")


class SshError(Failure):
    """An SSH login or command that did not work; the message says why."""


class HostKeyMismatch(SshError):
    """The server presented another host key than the pinned one: a re-created VM, or someone in between.
    Both SSH clients (these checks, and llmdeploy.local's logins) refuse the login with it."""


class _HostKeyCheck(paramiko.MissingHostKeyPolicy):
    """Called for every server key (no known_hosts is loaded): records it, refuses one that is not pinned."""

    def __init__(self, pinned: str | None) -> None:
        self.pinned = pinned
        self.seen: str = ""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.seen = f"{key.get_name()} {fingerprint(key.asbytes())}"
        if self.pinned and fingerprint(key.asbytes()) != self.pinned:
            raise HostKeyMismatch(f"host key mismatch for {hostname}: the server presented {self.seen}, "
                                  f"expected {self.pinned} (a re-created VM, or someone in between)")


# ---------------------------------------------------------------------------------------------- the remote

@dataclass
class Cmd:
    command: str
    exit_code: int  # -1: timed out
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def evidence(self) -> dict[str, Any]:
        return {"command": self.command, "exit_code": self.exit_code, "stdout": _clip(self.stdout),
                "stderr": _clip(self.stderr), "seconds": round(self.seconds, 3)}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_EVIDENCE_CHARS else "...\n" + text[-MAX_EVIDENCE_CHARS:]


def exec_command(transport: paramiko.Transport, command: str, timeout: float, stdin: bytes | None = None,
                 open_timeout: float = 30, poll: float = 0.02) -> tuple[int, str, str]:
    """Run one command on an open SSH connection: (exit code, stdout, stderr); exit code -1 when `timeout`
    seconds pass first. `stdin`, when given, is sent before standard input is closed (secrets travel that way,
    never on a command line)."""
    chan = transport.open_session(timeout=open_timeout)
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    try:
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()  # EOF on standard input: nothing waits for input that never comes
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                code = chan.recv_exit_status()
                break
            if time.monotonic() > deadline:
                code = -1
                break
            select.select([chan], [], [], poll)
    finally:
        chan.close()
    return code, out.decode(errors="replace"), err.decode(errors="replace")


class Remote:
    """Runs commands on the VM over one SSH connection; every command is recorded for the evidence."""

    def __init__(self, client: paramiko.SSHClient, user: str, timeout: float) -> None:
        self.client, self.user, self.timeout = client, user, timeout

    def run(self, argv: list[str], timeout: float | None = None) -> Cmd:
        """Run argv (via `sudo -n` unless root); stops waiting after `timeout` seconds (exit code -1)."""
        command = shlex.join((["sudo", "-n"] if self.user != "root" else []) + argv)
        transport = self.client.get_transport()
        assert transport is not None
        start = time.monotonic()
        code, out, err = exec_command(transport, command, timeout or self.timeout, open_timeout=self.timeout)
        return Cmd(command, code, out, err, time.monotonic() - start)


def check_login(host: str, user: str, key_file: str, port: int = 22, host_key: str | None = None,
            timeout: float = 30) -> tuple[paramiko.SSHClient | None, CheckResult]:
    """Log in with the key file; the result passes (pinned key), warns (not pinned) or fails (with why)."""
    with timed("ssh: connect") as r:
        r.evidence.update(target=f"{user}@{host}:{port}", key_file=key_file)
        try:
            pin_type, pinned = parse_host_key(host_key) if host_key else (None, None)
        except ValueError as exc:
            r.fail(str(exc), fatal=True)
            return None, r
        check = _HostKeyCheck(pinned)
        disabled = {}
        if pin_type in HOST_KEY_ALGORITHMS:
            disabled = {"keys": [a for a in ALL_HOST_KEY_ALGORITHMS if a not in HOST_KEY_ALGORITHMS[pin_type]]}
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(check)
        try:
            client.connect(host, port=port, username=user, key_filename=key_file, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False, allow_agent=False,
                           disabled_algorithms=disabled or None)
        except Exception as exc:  # noqa: BLE001 - reported as the check's failure
            client.close()
            r.fail(describe_connect_error(exc, host, port, user, key_file), host_key_seen=check.seen,
                   exception=repr(exc), fatal=isinstance(exc, (HostKeyMismatch, FileNotFoundError)))
            return None, r
        r.evidence["host_key_seen"] = check.seen
        if pinned:
            r.summary = f"{user}@{host}:{port}; host key {check.seen} matches the pinned key"
        else:
            r.warn(f"{user}@{host}:{port}; host key {check.seen} NOT pinned (pass the VM's host key to pin it)")
        return client, r
    return None, r  # only reached when timed() caught an unexpected exception


def describe_connect_error(exc: Exception, host: str, port: int, user: str, key_file: str) -> str:
    if isinstance(exc, HostKeyMismatch):
        return str(exc)
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed for {user}@{host}:{port} with key {key_file} ({exc})"
    if isinstance(exc, NoValidConnectionsError):
        return f"cannot connect to {host}:{port}: connection refused (sshd not up yet, or a firewall)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"cannot connect to {host}:{port}: timed out (security list, firewall or the VM is down)"
    if isinstance(exc, FileNotFoundError):
        return f"SSH key file not found: {key_file}"
    return f"cannot log in to {user}@{host}:{port}: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------- parsers

def parse_cloud_init_status(stdout: str) -> dict[str, Any]:
    """Fields of `cloud-init status --long` (tabular; a --wait run starts with dots): status,
    extended_status, detail, errors (list) and recoverable_errors (list of "LEVEL: message")."""
    fields: dict[str, Any] = {"errors": [], "recoverable_errors": []}
    section, level = "", ""
    for raw in stdout.splitlines():
        line = raw.lstrip(".") if raw.startswith(".") else raw
        if not line.strip():
            continue
        if line.startswith("\t- ") or line.startswith("  - "):
            item = line.strip()[2:]
            if section == "errors":
                fields["errors"].append(item)
            elif section == "recoverable_errors":
                fields["recoverable_errors"].append(f"{level}: {item}" if level else item)
            continue
        key, sep, value = line.partition(":")
        if section == "recoverable_errors" and sep and not value.strip() and key.isupper():
            level = key
            continue
        if sep:
            section = key.strip()
            if section not in ("errors", "recoverable_errors"):
                fields[section] = value.strip()
    return fields


def parse_listeners(ss_output: str) -> list[tuple[str, int]]:
    """(address, port) of each listening TCP socket in `ss -ltnH` output ("127.0.0.1:8080", "[::]:22", "*:80")."""
    found = []
    for line in ss_output.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        local = cols[3]
        addr, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        found.append((addr.strip("[]").split("%", 1)[0], int(port)))
    return found


def is_loopback(addr: str) -> bool:
    if addr in ("*", ""):
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def disk_headroom(df_output: str) -> tuple[int, int]:
    """(available, total) KiB of the filesystem in `df -P -k PATH` output."""
    cols = df_output.strip().splitlines()[-1].split()
    total, available = int(cols[1]), int(cols[3])
    return available, total


def memory_headroom(meminfo: str) -> tuple[int, int]:
    """(MemAvailable, MemTotal) in KiB from /proc/meminfo."""
    values = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip():
            values[key] = int(rest.split()[0])
    return values["MemAvailable"], values["MemTotal"]


def _gib(kib: int) -> str:
    return f"{kib / 1024 / 1024:.1f} GiB"


# ---------------------------------------------------------------------------------------------- checks

def read_stack_info(vm: Remote) -> tuple[CheckResult, dict[str, Any] | None]:
    with timed("ssh: stack info") as r:
        cmd = vm.run(["cat", STACK_INFO])
        r.evidence["commands"] = [cmd.evidence()]
        if not cmd.ok:
            r.fail(f"{STACK_INFO} not readable (exit {cmd.exit_code}): {cmd.stderr.strip()[:200]} "
                   "- cloud-init has not written it (yet), or this is not an llmdeploy VM")
            return r, None
        info = json.loads(cmd.stdout)
        r.summary = (f"stack {info.get('stack')!r}: {info.get('engine')} on port {info.get('engine_port')}, "
                     f"{len(info.get('stages', []))} stages")
        return r, info
    return r, None


def check_cloud_init(vm: Remote, timeout: float) -> CheckResult:
    """`cloud-init status --wait --long`: exit 0 or 2 (recoverable errors) pass, 1 fails."""
    with timed("ssh: cloud-init finished") as r:
        cmd = vm.run(["cloud-init", "status", "--wait", "--long"], timeout=timeout)
        r.evidence["commands"] = [cmd.evidence()]
        status = parse_cloud_init_status(cmd.stdout)
        state, extended = status.get("status", "?"), status.get("extended_status", "")
        r.metrics["exit_code"] = cmd.exit_code
        if cmd.exit_code == -1:
            r.fail(f"cloud-init still running after {timeout:.0f}s")
        elif cmd.exit_code == 1:
            errors = "; ".join(status["errors"]) or "no errors listed"
            r.fail(f"cloud-init reported an error (exit 1, status {state}): {errors[:300]}")
        elif cmd.exit_code not in (0, 2):
            r.fail(f"`cloud-init status` exited {cmd.exit_code}: {(cmd.stderr or cmd.stdout).strip()[:200]}")
        elif state != "done":
            r.fail(f"cloud-init status is {state!r}, not done (exit {cmd.exit_code})")
        elif cmd.exit_code == 2:
            warnings = status["recoverable_errors"]
            r.summary = (f"done with recoverable errors (exit 2, {extended or 'degraded done'}): "
                         f"{len(warnings)} listed{': ' + warnings[0][:150] if warnings else ''}")
        else:
            r.summary = f"done ({extended or state})"
    return r


def check_stage_markers(vm: Remote, info: dict[str, Any]) -> CheckResult:
    """Every stage in stack.json has <step>.done; a .failed marker or a missing one fails, naming the step."""
    with timed("ssh: stage markers") as r:
        stages_dir = info.get("stages_dir", STAGES_DIR)
        ready_marker = info.get("ready_marker", READY_MARKER)
        listing = vm.run(["ls", "-1A", stages_dir])
        ready = vm.run(["test", "-e", ready_marker])
        commands = [listing, ready]
        present = set(listing.stdout.split()) if listing.ok else set()
        stages = list(info.get("stages", []))
        failed = [s for s in stages if f"{s}.failed" in present]
        missing = [s for s in stages if f"{s}.done" not in present and s not in failed]
        for step in failed:
            marker = vm.run(["cat", f"{stages_dir}/{step}.failed"])
            log = vm.run(["tail", "-n", str(LOG_TAIL_LINES), step_log(step)])
            commands += [marker, log]
            r.evidence[f"{step}_log_tail"] = log.stdout
        r.evidence["commands"] = [c.evidence() for c in commands]
        r.evidence.update(stages=stages, failed=failed, missing=missing)
        if failed:
            marker_text = commands[2].stdout.strip()
            r.fail(f"step {failed[0]} failed ({marker_text or 'see its log'})"
                   + (f"; not done: {', '.join(missing)}" if missing else ""))
        elif missing:
            r.fail(f"stage marker missing for {', '.join(missing)} (no {missing[0]}.done in {stages_dir})")
        elif not ready.ok:
            r.fail(f"all {len(stages)} stages done but the ready marker {ready_marker} is missing")
        else:
            r.summary = f"all {len(stages)} stages done: {', '.join(stages)}; ready marker present"
    return r


def check_unit(vm: Remote, unit: str, role: str) -> CheckResult:
    """`systemctl is-active UNIT`; when it is not active, the unit's journal is attached."""
    with timed(f"ssh: {role} active") as r:
        cmd = vm.run(["systemctl", "is-active", unit])
        commands = [cmd]
        state = cmd.stdout.strip() or "unknown"
        r.evidence.update(unit=unit, state=state)
        if cmd.ok and state == "active":
            r.summary = f"{unit} is active"
        else:
            journal = vm.run(["journalctl", "-u", unit, "-n", str(JOURNAL_LINES), "--no-pager"])
            commands.append(journal)
            r.evidence["journal"] = journal.stdout
            r.fail(f"{unit} is {state} (systemctl is-active exit {cmd.exit_code}); its journal is attached")
        r.evidence["commands"] = [c.evidence() for c in commands]
    return r


def check_engine_loopback(vm: Remote, port: int) -> CheckResult:
    """The engine's port is bound, and only on loopback addresses (nginx is the only way in)."""
    with timed("ssh: engine port loopback only") as r:
        cmd = vm.run(["ss", "-ltnH"])
        r.evidence["commands"] = [cmd.evidence()]
        if not cmd.ok:
            r.fail(f"`ss -ltnH` exited {cmd.exit_code}: {cmd.stderr.strip()[:200]}")
            return r
        bound = [addr for addr, p in parse_listeners(cmd.stdout) if p == port]
        exposed = [addr for addr in bound if not is_loopback(addr)]
        r.evidence["bound"] = bound
        if not bound:
            r.fail(f"nothing listens on port {port}: the engine is down or on another port")
        elif exposed:
            shown = ", ".join(f"{a or '*'}:{port}" for a in exposed)
            r.fail(f"engine port {port} is reachable beyond loopback: bound to {shown}")
        else:
            r.summary = f"port {port} bound to {', '.join(sorted(set(bound)))} only"
    return r


def check_gpu(vm: Remote) -> CheckResult:
    with timed("ssh: GPU visible") as r:
        cmd = vm.run(GPU_QUERY)
        r.evidence["commands"] = [cmd.evidence()]
        gpus = [line.strip() for line in cmd.stdout.splitlines() if line.strip()] if cmd.ok else []
        r.metrics["gpus"] = len(gpus)
        if not gpus:
            r.fail(f"nvidia-smi sees no GPU (exit {cmd.exit_code}): {(cmd.stdout + cmd.stderr).strip()[:200]}")
        else:
            r.summary = f"{len(gpus)} GPU(s): " + "; ".join(gpus)
    return r


def check_disk(vm: Remote, path: str = "/") -> CheckResult:
    with timed("ssh: disk headroom") as r:
        cmd = vm.run(["df", "-P", "-k", path])
        r.evidence["commands"] = [cmd.evidence()]
        if not cmd.ok:
            r.fail(f"`df {path}` exited {cmd.exit_code}: {cmd.stderr.strip()[:200]}")
            return r
        available, total = disk_headroom(cmd.stdout)
        share = available / total if total else 0.0
        r.metrics.update(free_share=round(share, 4), free_gib=round(available / 1024 / 1024, 2))
        r.summary = f"{_gib(available)} of {_gib(total)} free on {path} ({share:.0%})"
        if share < DISK_WARN_FREE:
            r.warn(f"low disk: {r.summary}, under {DISK_WARN_FREE:.0%}")
    return r


def check_memory(vm: Remote) -> CheckResult:
    with timed("ssh: memory headroom") as r:
        cmd = vm.run(["cat", "/proc/meminfo"])
        r.evidence["commands"] = [cmd.evidence()]
        if not cmd.ok:
            r.fail(f"/proc/meminfo not readable (exit {cmd.exit_code})")
            return r
        available, total = memory_headroom(cmd.stdout)
        share = available / total if total else 0.0
        r.metrics.update(available_share=round(share, 4), available_gib=round(available / 1024 / 1024, 2))
        r.summary = f"{_gib(available)} of {_gib(total)} available ({share:.0%})"
        if share < MEMORY_WARN_FREE:
            r.warn(f"low memory: {r.summary}, under {MEMORY_WARN_FREE:.0%}")
    return r


def attach_cloud_init_tail(vm: Remote, results: list[CheckResult]) -> None:
    """On any failure, the tail of cloud-init's output log goes with each failed result."""
    failed = [r for r in results if r.status == FAIL]
    if not failed:
        return
    cmd = vm.run(["tail", "-n", str(LOG_TAIL_LINES), CLOUD_INIT_OUTPUT])
    for r in failed:
        r.evidence["cloud_init_output_tail"] = cmd.stdout if cmd.ok else f"(not readable: {cmd.stderr.strip()})"


def run_ssh_checks(host: str, user: str, key_file: str, port: int = 22, host_key: str | None = None,
                   timeout: float = 30, gpu: bool | None = None) -> list[CheckResult]:
    """Every SSH check, in order. gpu=None takes gpu_shape from the VM's stack.json."""
    client, connected = check_login(host, user, key_file, port, host_key, timeout)
    if client is None:
        return [connected]
    results = [connected]
    try:
        vm = Remote(client, user, timeout)
        info_result, info = read_stack_info(vm)
        results += [info_result, check_cloud_init(vm, timeout)]
        if info is not None:
            results.append(check_stage_markers(vm, info))
            results.append(check_unit(vm, str(info.get("engine_unit", info.get("engine"))), "engine"))
            results.append(check_unit(vm, "nginx", "nginx"))
            results.append(check_engine_loopback(vm, int(info["engine_port"])))
        gpu_shape = bool(info and info.get("gpu_shape")) if gpu is None else gpu
        if gpu_shape:
            results.append(check_gpu(vm))
        results += [check_disk(vm), check_memory(vm)]
        with timed("ssh: failure context") as extra:  # only reported when fetching the log itself fails
            attach_cloud_init_tail(vm, results)
        if not extra.ok:
            results.append(extra)
    finally:
        client.close()
    return results
