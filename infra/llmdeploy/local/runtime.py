"""Where `llmdeploy local up` boots the stack, behind one small interface: what lifecycle.py needs to know
about the guest (how to boot it, whether it still runs, where it sees this machine, how to stop it).

- `qemu`: a VM with its own kernel, firewall and reboot, the full-fidelity path; KVM where a probe shows it
  works, else TCG (software emulation: installs run many times slower).
- `nspawn`: a systemd container booting the same Debian tree and user-data at native speed (nspawn.py);
  no kernel of its own, and a reboot restarts the container.

Which one `up` boots when not told (--runtime auto) is choice.py's rule.

Both forward the guest's ports to loopback ports, and put the console (where cloud-init prints the SSH host
keys) in state.serial_log. The guest's process is state.pids[runtime.name], stopped by PID.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import Failure
from . import RUNTIMES as RUNTIMES  # defined in the package, so that the CLI's parser need not load this module
from . import hostsrv, image, nspawn, procs, qemu
from .progress import Clock, Say
from .seed import build_seed, meta_data
from .state import VmState

QEMU_TOOLS = {qemu.QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "genisoimage": "genisoimage"}


class RuntimeFailure(Failure):
    """The guest could not be booted or died; the message says why and what to do."""


class Runtime:
    name = ""
    label = ""

    @property
    def started_event(self) -> str:
        """The timeline event of the guest's start (boot-to-smoke is measured from it)."""
        return f"{self.name}_started"

    def tool_problems(self) -> list[str]:
        """Debian packages this runtime needs that are missing here."""
        raise NotImplementedError

    def ensure_image(self, say: Say) -> tuple[image.Image, bool]:
        raise NotImplementedError

    def prepare(self, state: VmState) -> None:
        """Before the host-side servers start (they listen where the guest can reach them)."""

    def bind_host(self, state: VmState) -> str:
        """Where host-side servers listen for the guest."""
        return "127.0.0.1"

    def guest_host(self, state: VmState) -> str:
        """This machine's address as the guest reaches it."""
        raise NotImplementedError

    def boot(self, state: VmState, img: image.Image, user_data: str, hostname: str, say: Say, elapsed: Clock) -> None:
        raise NotImplementedError

    def _started(self, state: VmState, pid: int, accel: str, reason: str, elapsed: Clock) -> str:
        """Record the guest's process and start; returns the forwarded ports, as `up` prints them."""
        state.pids[self.name] = pid
        state.accel, state.accel_reason = accel, reason
        state.phase = "booting"
        state.timeline[self.started_event] = round(elapsed(), 1)
        state.save()
        return ", ".join(f"{g}->127.0.0.1:{h}" for g, h in state.ports.items())

    def check_boot(self, state: VmState, img: image.Image, say: Say, elapsed: Clock) -> None:
        """While waiting for SSH: raise RuntimeFailure if the guest died (QEMU restarts a failed KVM boot)."""
        reason = self.gone(state)
        if reason:
            raise RuntimeFailure(f"{reason} during boot")

    def alive(self, state: VmState) -> bool:
        return procs.alive(state.pids.get(self.name), state.markers.get(self.name, ""))

    def gone(self, state: VmState) -> str | None:
        """Why the guest is not running any more, or None while it runs."""
        raise NotImplementedError

    def stop(self, state: VmState) -> bool:
        """Stop the guest by PID and remove what it used outside the state folder; True if it ran."""
        pid = state.pids.get(self.name)
        return bool(pid) and procs.stop_process(pid, state.markers.get(self.name, "\0never"))

    def describe(self, state: VmState) -> str:
        raise NotImplementedError


class QemuRuntime(Runtime):
    name, label = "qemu", "QEMU"

    def __init__(self, accel: str = "auto", decided: qemu.Accel | None = None) -> None:
        self.accel = accel
        self.decided = decided  # the accelerator the runtime choice already probed for (choice.py)

    def tool_problems(self) -> list[str]:
        return sorted({pkg for tool, pkg in QEMU_TOOLS.items() if shutil.which(tool) is None})

    def ensure_image(self, say: Say) -> tuple[image.Image, bool]:
        return image.ensure_image(log=lambda line: say(line.strip()))

    def guest_host(self, state: VmState) -> str:
        return hostsrv.GUEST_HOST_IP

    def _spec(self, state: VmState, img: image.Image, accel: qemu.Accel) -> qemu.VmSpec:
        return qemu.VmSpec(name=f"llmdeploy-{state.stack}", kernel=img.kernel, initrd=img.initrd, base_disk=img.disk,
                           overlay=state.overlay, seed=state.seed, serial_log=state.serial_log,
                           qemu_log=state.qemu_log, forwards={int(g): h for g, h in state.ports.items()},
                           vcpus=state.vcpus, memory_mb=state.memory_mb, accel=accel)

    def boot(self, state: VmState, img: image.Image, user_data: str, hostname: str, say: Say, elapsed: Clock) -> None:
        build_seed(state.seed, user_data, state.instance_id, hostname)
        accel = self.decided or qemu.choose_accel(img.kernel, self.accel)
        self._launch(state, self._spec(state, img, accel), say, elapsed)

    def _launch(self, state: VmState, spec: qemu.VmSpec, say: Say, elapsed: Clock) -> None:
        qemu.create_overlay(spec.base_disk, spec.overlay)
        pid = qemu.start_qemu(spec)
        state.markers["qemu"] = str(spec.overlay)
        ports = self._started(state, pid, spec.accel.name, spec.accel.reason, elapsed)
        say(f"booting: QEMU pid {pid}, {spec.accel.name.upper()} ({spec.accel.reason}), {spec.vcpus} vCPU, "
            f"{spec.memory_mb} MB; ports {ports}")

    def check_boot(self, state: VmState, img: image.Image, say: Say, elapsed: Clock) -> None:
        """A VM whose KVM fails is restarted under TCG."""
        kvm = state.accel == "kvm"
        spec = self._spec(state, img, qemu.Accel(state.accel, state.accel_reason))
        failure = qemu.kvm_failed(spec) if kvm else None
        dead = not self.alive(state)
        if failure or (dead and kvm):
            say(f"KVM failed ({failure or 'QEMU exited'}); restarting the VM under TCG")
            procs.stop_process(state.pids.get("qemu"), state.markers.get("qemu", ""))
            spec.accel = qemu.Accel("tcg", f"KVM failed at boot ({failure or 'QEMU exited'})")
            self._launch(state, spec, say, elapsed)
        elif dead:
            raise RuntimeFailure(f"QEMU exited during boot; last lines of {state.qemu_log}:\n"
                                 f"{procs.tail(state.qemu_log, 15)}\nconsole: {procs.tail(state.serial_log, 15)}")

    def gone(self, state: VmState) -> str | None:
        if self.alive(state):
            return None
        return f"QEMU exited; last lines of {state.qemu_log}:\n{procs.tail(state.qemu_log, 10)}"

    def describe(self, state: VmState) -> str:
        return (f"QEMU pid {state.pids.get('qemu')}, {state.accel.upper()}, {state.vcpus} vCPU, "
                f"{state.memory_mb} MB")


class NspawnRuntime(Runtime):
    name, label = "nspawn", "systemd container"

    def _spec_path(self, state: VmState) -> Path:
        return state.dir / nspawn.SPEC_FILE

    def _spec(self, state: VmState) -> nspawn.ContainerSpec:
        return nspawn.ContainerSpec.load(self._spec_path(state))

    def tool_problems(self) -> list[str]:
        return nspawn.missing_nspawn_tools()

    def ensure_image(self, say: Say) -> tuple[image.Image, bool]:
        if os.geteuid() != 0:
            raise RuntimeFailure("--runtime nspawn needs root (systemd-nspawn, a network namespace and NAT): run "
                                 "`sudo llmdeploy local up --runtime nspawn`, or use --runtime qemu")
        return image.ensure_rootfs(log=lambda line: say(line.strip()))

    def prepare(self, state: VmState) -> None:
        """The container's network first: the host-side servers listen on its host-side address."""
        name = state.instance_id.replace(f"llmdeploy-{state.stack}-", "llmdeploy-", 1)
        spec = nspawn.plan(state.dir, name, {int(g): h for g, h in state.ports.items()})
        state.markers["nspawn"] = str(self._spec_path(state))
        state.save()
        nspawn.network_up(spec)

    def bind_host(self, state: VmState) -> str:
        return self._spec(state).host_ip

    def guest_host(self, state: VmState) -> str:
        return self._spec(state).host_ip

    def boot(self, state: VmState, img: image.Image, user_data: str, hostname: str, say: Say, elapsed: Clock) -> None:
        spec = self._spec(state)
        nspawn.prepare_root(spec, img.rootfs, user_data, meta_data(state.instance_id, hostname))
        pid = nspawn.start_container(self._spec_path(state), state.runtime_log)
        ports = self._started(state, pid, "native", "a systemd container on this machine's kernel", elapsed)
        say(f"booting: systemd container {spec.name} (supervisor pid {pid}), native speed, guest {spec.guest_ip}, "
            f"this machine {spec.host_ip}; ports {ports}")

    def gone(self, state: VmState) -> str | None:
        if self.alive(state):
            return None
        return (f"the container's supervisor exited; last lines of {state.runtime_log}:\n"
                f"{procs.tail(state.runtime_log, 10)}\nconsole: {procs.tail(state.serial_log, 10)}")

    def stop(self, state: VmState) -> bool:
        path = self._spec_path(state)
        if not path.is_file():
            return False
        return nspawn.stop_container(path, state.pids.get("nspawn"))

    def describe(self, state: VmState) -> str:
        try:
            spec = self._spec(state)
            where = f", guest {spec.guest_ip} ({spec.name})"
        except (OSError, ValueError, TypeError):
            where = ""
        return f"systemd container, supervisor pid {state.pids.get('nspawn')}, native speed{where}"


def get(name: str, accel: str = "auto", decided: qemu.Accel | None = None) -> Runtime:
    if name == "nspawn":
        return NspawnRuntime()
    return QemuRuntime(accel, decided)


def of(state: VmState) -> Runtime:
    return get(state.runtime or "qemu")
