"""Which runtime `llmdeploy local up` boots the stack in when --runtime is auto (the default):

1. QEMU with KVM, where a probe boot shows KVM works: a VM with its own kernel, firewall and reboot, fast;
2. else the systemd container (nspawn), when running as root with systemd-nspawn, ip and iptables here: the
   same image and user-data at native speed, but no kernel of its own;
3. else QEMU under TCG (software emulation): the full VM, but provisioning takes many minutes.

KVM is probed, never assumed: /dev/kvm can exist and still fail (a nested or software hypervisor). The probes
come in as functions, so the rule is tested without a hypervisor; `up` prints the choice and why.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import nspawn, qemu

AUTO = "auto"
LABELS = {"qemu": "QEMU", "nspawn": "systemd container (nspawn)"}


@dataclass(frozen=True)
class Probes:
    """What the choice asks of this machine."""

    kvm: Callable[[], tuple[bool, str]]  # (works, why)
    is_root: Callable[[], bool]
    nspawn_missing: Callable[[], list[str]]  # Debian packages the container runtime lacks here


@dataclass(frozen=True)
class Choice:
    runtime: str  # qemu | nspawn
    accel: str  # qemu: kvm | tcg | auto (probed at boot); nspawn: native
    reason: str

    @property
    def line(self) -> str:
        accel = f" with {self.accel.upper()}" if self.runtime == "qemu" and self.accel != AUTO else ""
        return f"runtime: {LABELS[self.runtime]}{accel}: {self.reason}"


def choose(wanted: str, accel: str, probes: Probes) -> Choice:
    """The runtime for `--runtime wanted --accel accel`; only auto (both) asks the probes."""
    if wanted == "nspawn":
        return Choice("nspawn", "native", "asked for with --runtime nspawn")
    if wanted == "qemu":
        return Choice("qemu", accel, "asked for with --runtime qemu")
    if accel != AUTO:
        return Choice("qemu", accel, f"--accel {accel} asks for QEMU")
    works, why = probes.kvm()
    if works:
        return Choice("qemu", "kvm", f"KVM works here ({why})")
    root, missing = probes.is_root(), probes.nspawn_missing()
    if root and not missing:
        return Choice("nspawn", "native", f"{why}; as root with systemd-nspawn, a systemd container runs at native "
                                          "speed (--runtime qemu for a VM with its own kernel)")
    lacks = ("not root (sudo llmdeploy local up)" if not root else
             f"{', '.join(missing)} missing (apt-get install {' '.join(missing)})")
    return Choice("qemu", "tcg", f"{why}, and no systemd container ({lacks}): QEMU under TCG, software emulation; "
                                 "this will be slow (many minutes to provision)")


def machine_probes(kernel: Callable[[], Path]) -> Probes:
    """This machine's probes; `kernel` gives the kernel the KVM probe boots (the cached image's, built if need be),
    asked only where /dev/kvm and QEMU are there at all."""

    def kvm() -> tuple[bool, str]:
        if shutil.which(qemu.QEMU) is None:
            return False, f"QEMU is not installed ({qemu.QEMU})"
        if not Path("/dev/kvm").exists():
            return False, "no /dev/kvm"
        return qemu.kvm_works(kernel())

    return Probes(kvm=kvm, is_root=lambda: os.geteuid() == 0, nspawn_missing=nspawn.missing_nspawn_tools)
