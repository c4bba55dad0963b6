"""Boot the VM with QEMU: KVM where it really works, else TCG; a qcow2 overlay on the cached image, the
NoCloud seed as a second disk, user-mode networking that forwards guest ports to loopback ports.

/dev/kvm can exist and still not work (a nested or software hypervisor: QEMU then stops with MSR errors
or "KVM internal error ... emulation failure"), so KVM is never assumed: a probe boots the image's
kernel with no root filesystem under KVM and expects it to reach its panic message within seconds. The
answer is cached per host boot. A VM whose KVM fails later anyway is restarted under TCG by `up`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Failure
from ..polling import attempts
from . import paths, procs

QEMU = "qemu-system-x86_64"
KVM_FAILURE_MARKS = ("KVM internal error", "emulation failure", "kvm run failed", "KVM_SET_MSRS", "failed to set MSR",
                     "Could not access KVM kernel module", "kvm_init_vcpu failed")
# A working KVM reaches the probe kernel's panic within a second or two (then QEMU exits: panic=-1, -no-reboot);
# a broken one (a software hypervisor here) hangs until the timeout, which `local up` pays once per host boot.
PROBE_TIMEOUT = 15.0


class QemuError(Failure):
    """QEMU could not start the VM; the message holds QEMU's own words."""


@dataclass(frozen=True)
class Accel:
    name: str  # kvm | tcg
    reason: str

    @property
    def args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def qemu_version() -> str:
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.splitlines()[0] if out else ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def probe_kvm(kernel: Path, timeout: float = PROBE_TIMEOUT, dev: Path = Path("/dev/kvm")) -> tuple[bool, str]:
    """(works, why): boot `kernel` under KVM with no root fs; a working KVM reaches the kernel's panic."""
    if not dev.exists():
        return False, "no /dev/kvm"
    if not os.access(dev, os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user (add it to the kvm group)"
    with tempfile.TemporaryDirectory(prefix="llmdeploy-kvm-probe-") as tmp:
        serial = Path(tmp) / "serial.log"
        cmd = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
               "-display", "none", "-no-reboot", "-serial", f"file:{serial}", "-kernel", str(kernel),
               "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
        timed_out = False
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            output = (proc.stdout + proc.stderr).strip()
        except subprocess.TimeoutExpired as exc:
            timed_out = True
            output = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else
                      str(exc.stdout or "")).strip()
        except OSError as exc:
            return False, f"cannot run {QEMU}: {exc}"
        console = serial.read_text(errors="replace") if serial.exists() else ""
    if "Kernel panic" in console or "VFS: Unable to mount root" in console:
        return True, "KVM boots a kernel"
    marks = [m for m in KVM_FAILURE_MARKS if m in output]
    if marks:
        detail = marks[0]
    elif timed_out:
        detail = f"a kernel booted under KVM did not reach its panic within {timeout:.0f} s"
    else:
        detail = (output.splitlines() or ["QEMU exited without output"])[0][:200]
    return False, f"KVM does not work here ({detail})"


def kvm_works(kernel: Path) -> tuple[bool, str]:
    """(works, why) for this machine's KVM: probe_kvm's answer, cached per host boot, QEMU version and kernel."""
    cache = paths.cache_root() / "kvm-probe.json"
    key = {"boot_id": _boot_id(), "qemu": qemu_version(), "kernel": kernel.name, "probe_timeout": PROBE_TIMEOUT}
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return bool(cached["works"]), str(cached["why"])
    except (OSError, ValueError, KeyError):
        pass
    works, why = probe_kvm(kernel)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "works": works, "why": why}))
    return works, why


def choose_accel(kernel: Path, wanted: str = "auto") -> Accel:
    """tcg or kvm as asked; auto probes KVM once per host boot (cached) and falls back to TCG."""
    if wanted == "tcg":
        return Accel("tcg", "asked for TCG")
    works, why = kvm_works(kernel)
    if works:
        return Accel("kvm", why)
    if wanted == "kvm":
        raise QemuError(f"--accel kvm: {why}; use --accel auto or tcg")
    return Accel("tcg", f"{why}; using TCG (software emulation, slower)")


def free_ports(count: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class VmSpec:
    name: str
    kernel: Path
    initrd: Path
    base_disk: Path
    overlay: Path
    seed: Path
    serial_log: Path
    qemu_log: Path
    forwards: dict[int, int]  # guest port -> loopback port on the host
    vcpus: int = 2
    memory_mb: int = 2048
    accel: Accel = field(default_factory=lambda: Accel("tcg", "default"))

    def command(self) -> list[str]:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in sorted(self.forwards.items()))
        return [QEMU, "-name", self.name, "-machine", "q35", *self.accel.args, "-smp", str(self.vcpus),
                "-m", str(self.memory_mb), "-nodefaults", "-no-user-config", "-display", "none",
                "-kernel", str(self.kernel), "-initrd", str(self.initrd),
                "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0",
                "-drive", f"file={self.overlay},if=virtio,format=qcow2,discard=unmap",
                "-drive", f"file={self.seed},if=virtio,format=raw,readonly=on",
                "-netdev", f"user,id=net0,{fwd}", "-device", "virtio-net-pci,netdev=net0",
                "-device", "virtio-rng-pci", "-serial", f"file:{self.serial_log}"]


def create_overlay(base: Path, overlay: Path) -> None:
    overlay.unlink(missing_ok=True)
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base.resolve()),
                           str(overlay)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise QemuError(f"qemu-img create failed: {proc.stderr.strip()}")


def start_qemu(spec: VmSpec, settle: float = 1.5) -> int:
    """Start QEMU detached and return its PID; raise QemuError with QEMU's output if it exits at once
    (a port already taken, a missing file, KVM refusing)."""
    spec.serial_log.unlink(missing_ok=True)
    pid = procs.start_daemon(spec.command(), spec.qemu_log)
    for _ in attempts(settle, every=0.1):  # it must stay up that long
        if not procs.alive(pid):
            raise QemuError(f"{QEMU} exited at once: {procs.tail(spec.qemu_log, 10) or 'no output'}")
    return pid


def kvm_failed(spec: VmSpec) -> str | None:
    """The KVM failure QEMU reported for this VM, if any."""
    text = procs.tail(spec.qemu_log, 200)
    return next((m for m in KVM_FAILURE_MARKS if m in text), None)
