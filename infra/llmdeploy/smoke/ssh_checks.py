"""Checks of a provisioned VM over SSH: cloud-init finished, every stage marker done, the engine and nginx
active, the engine's port on loopback only, the GPU visible on GPU shapes, disk and memory headroom.

Each check returns a CheckResult whose evidence lists the commands it ran (command, exit code, stdout,
stderr). A failure also carries the tail of cloud-init's output log, and a failed unit its journal, so the
report says why without a second login. Commands run through `sudo -n` unless the user is root (the VM's
admin user has passwordless sudo). The login is llmdeploy.sshclient's: the host key is pinned when one is
given; otherwise the check warns.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any

from ..result import FAIL, CheckResult, timed
from ..sshclient import HostKeyMismatch, Session, SshError, connect
from ..vmpaths import CLOUD_INIT_OUTPUT, READY_MARKER, STAGES_DIR, VM_FACTS_FILE, step_log

DISK_WARN_FREE = 0.10  # warn when less than this share of / is free
MEMORY_WARN_FREE = 0.15  # warn when less than this share of memory is available
LOG_TAIL_LINES = 40
JOURNAL_LINES = 50
GPU_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]


# ---------------------------------------------------------------------------------------------- login

def check_login(host: str, user: str, key_file: str, port: int = 22, host_key: str | None = None,
                timeout: float = 30) -> tuple[Session | None, CheckResult]:
    """Log in with the key file; the result passes (pinned key), warns (not pinned) or fails (with why)."""
    with timed("ssh: connect") as r:
        r.evidence.update(target=f"{user}@{host}:{port}", key_file=key_file)
        try:
            session = connect(host, port, user, key_file, host_key=host_key or "", timeout=timeout)
        except ValueError as exc:
            r.fail(str(exc), fatal=True)
            return None, r
        except SshError as exc:
            cause = exc.__cause__ or exc
            r.fail(str(exc), host_key_seen=exc.host_key_seen, exception=repr(cause),
                   fatal=isinstance(exc, HostKeyMismatch) or isinstance(cause, FileNotFoundError))
            return None, r
        r.evidence["host_key_seen"] = session.host_key_seen
        if host_key:
            r.summary = f"{user}@{host}:{port}; host key {session.host_key_seen} matches the pinned key"
        else:
            r.warn(f"{user}@{host}:{port}; host key {session.host_key_seen} NOT pinned "
                   "(pass the VM's host key to pin it)")
        return session, r
    return None, r  # only reached when timed() caught an unexpected exception


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

def read_vm_facts(vm: Session) -> tuple[CheckResult, dict[str, Any] | None]:
    with timed("ssh: stack info") as r:
        cmd = vm.sudo(["cat", VM_FACTS_FILE])
        r.evidence["commands"] = [cmd.evidence()]
        if not cmd.ok:
            r.fail(f"{VM_FACTS_FILE} not readable (exit {cmd.exit_code}): {cmd.stderr.strip()[:200]} "
                   "- cloud-init has not written it (yet), or this is not an llmdeploy VM")
            return r, None
        info = json.loads(cmd.stdout)
        r.summary = (f"stack {info.get('stack')!r}: {info.get('engine')} on port {info.get('engine_port')}, "
                     f"{len(info.get('stages', []))} stages")
        return r, info
    return r, None


def check_cloud_init(vm: Session, timeout: float) -> CheckResult:
    """`cloud-init status --wait --long`: exit 0 or 2 (recoverable errors) pass, 1 fails."""
    with timed("ssh: cloud-init finished") as r:
        cmd = vm.sudo(["cloud-init", "status", "--wait", "--long"], timeout=timeout)
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


def check_stage_markers(vm: Session, info: dict[str, Any]) -> CheckResult:
    """Every stage in stack.json has <step>.done; a .failed marker or a missing one fails, naming the step."""
    with timed("ssh: stage markers") as r:
        stages_dir = info.get("stages_dir", STAGES_DIR)
        ready_marker = info.get("ready_marker", READY_MARKER)
        listing = vm.sudo(["ls", "-1A", stages_dir])
        ready = vm.sudo(["test", "-e", ready_marker])
        commands = [listing, ready]
        present = set(listing.stdout.split()) if listing.ok else set()
        stages = list(info.get("stages", []))
        failed = [s for s in stages if f"{s}.failed" in present]
        missing = [s for s in stages if f"{s}.done" not in present and s not in failed]
        for step in failed:
            marker = vm.sudo(["cat", f"{stages_dir}/{step}.failed"])
            log = vm.sudo(["tail", "-n", str(LOG_TAIL_LINES), step_log(step)])
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


def check_unit(vm: Session, unit: str, role: str) -> CheckResult:
    """`systemctl is-active UNIT`; when it is not active, the unit's journal is attached."""
    with timed(f"ssh: {role} active") as r:
        cmd = vm.sudo(["systemctl", "is-active", unit])
        commands = [cmd]
        state = cmd.stdout.strip() or "unknown"
        r.evidence.update(unit=unit, state=state)
        if cmd.ok and state == "active":
            r.summary = f"{unit} is active"
        else:
            journal = vm.sudo(["journalctl", "-u", unit, "-n", str(JOURNAL_LINES), "--no-pager"])
            commands.append(journal)
            r.evidence["journal"] = journal.stdout
            r.fail(f"{unit} is {state} (systemctl is-active exit {cmd.exit_code}); its journal is attached")
        r.evidence["commands"] = [c.evidence() for c in commands]
    return r


def check_engine_loopback(vm: Session, port: int) -> CheckResult:
    """The engine's port is bound, and only on loopback addresses (nginx is the only way in)."""
    with timed("ssh: engine port loopback only") as r:
        cmd = vm.sudo(["ss", "-ltnH"])
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


def check_gpu(vm: Session) -> CheckResult:
    with timed("ssh: GPU visible") as r:
        cmd = vm.sudo(GPU_QUERY)
        r.evidence["commands"] = [cmd.evidence()]
        gpus = [line.strip() for line in cmd.stdout.splitlines() if line.strip()] if cmd.ok else []
        r.metrics["gpus"] = len(gpus)
        if not gpus:
            r.fail(f"nvidia-smi sees no GPU (exit {cmd.exit_code}): {(cmd.stdout + cmd.stderr).strip()[:200]}")
        else:
            r.summary = f"{len(gpus)} GPU(s): " + "; ".join(gpus)
    return r


def check_disk(vm: Session, path: str = "/") -> CheckResult:
    with timed("ssh: disk headroom") as r:
        cmd = vm.sudo(["df", "-P", "-k", path])
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


def check_memory(vm: Session) -> CheckResult:
    with timed("ssh: memory headroom") as r:
        cmd = vm.sudo(["cat", "/proc/meminfo"])
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


def attach_cloud_init_tail(vm: Session, results: list[CheckResult]) -> None:
    """On any failure, the tail of cloud-init's output log goes with each failed result."""
    failed = [r for r in results if r.status == FAIL]
    if not failed:
        return
    cmd = vm.sudo(["tail", "-n", str(LOG_TAIL_LINES), CLOUD_INIT_OUTPUT])
    for r in failed:
        r.evidence["cloud_init_output_tail"] = cmd.stdout if cmd.ok else f"(not readable: {cmd.stderr.strip()})"


def run_ssh_checks(host: str, user: str, key_file: str, port: int = 22, host_key: str | None = None,
                   timeout: float = 30, gpu: bool | None = None) -> list[CheckResult]:
    """Every SSH check, in order. gpu=None takes gpu_shape from the VM's stack.json."""
    vm, connected = check_login(host, user, key_file, port, host_key, timeout)
    if vm is None:
        return [connected]
    results = [connected]
    try:
        info_result, info = read_vm_facts(vm)
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
        vm.close()
    return results
