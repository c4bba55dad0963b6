"""What `llmdeploy local` knows about one stack's VM or container, in vms/<stack>/state.json (0600), plus the
files next to it: the disk overlay and seed (QEMU) or the root copy and container.json (nspawn), the SSH key
pair, the API keys (api-keys.json, 0600), logs.

Nothing secret is in state.json itself; the key files are 0600 and the folder 0700.
"""
from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Failure
from ..private_files import write_private
from . import paths

STATE_FILE = "state.json"


@dataclass
class VmState:
    stack: str
    folder: str
    project_dir: str = ""
    instance_id: str = ""
    created: str = ""
    phase: str = "creating"  # creating | booting | provisioning | ready | failed
    runtime: str = "qemu"  # qemu | nspawn (runtime.py); a state written before there was a choice is qemu's
    accel: str = ""
    accel_reason: str = ""
    vcpus: int = 0
    memory_mb: int = 0
    admin_user: str = ""
    engine: str = ""
    engine_port: int = 0
    model_name: str = ""
    tls_mode: str = ""
    domain: str = ""
    endpoint: str = ""  # https://host:port as this machine reaches it
    ports: dict[str, int] = field(default_factory=dict)  # guest port -> loopback port
    pids: dict[str, int] = field(default_factory=dict)  # qemu or nspawn, model_server, pebble, challtestsrv
    markers: dict[str, str] = field(default_factory=dict)  # what each pid's command line must hold
    host_key: str = ""  # the guest's SSH host key, "ssh-ed25519 AAAA..."
    keys_from_caller: bool = False  # the API keys came from $LLMDEPLOY_LOCAL_API_KEYS: never printed
    stages: list[str] = field(default_factory=list)
    timeline: dict[str, float] = field(default_factory=dict)  # event -> seconds since `up` started

    @property
    def dir(self) -> Path:
        return Path(self.folder)

    # files of the VM
    @property
    def ssh_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def api_keys_file(self) -> Path:
        return self.dir / "api-keys.json"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def overlay(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.dir / "seed.iso"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    @property
    def runtime_log(self) -> Path:
        """QEMU's output, or the container supervisor's."""
        return self.qemu_log if self.runtime == "qemu" else self.dir / f"{self.runtime}.log"

    def port(self, guest: int) -> int:
        return int(self.ports[str(guest)])

    @property
    def host(self) -> str:
        """The name clients use: the domain (letsencrypt; this machine's resolver may not know it) or 127.0.0.1."""
        return self.domain if self.tls_mode == "letsencrypt" and self.domain else "127.0.0.1"

    def api_keys(self) -> dict[str, str]:
        try:
            return json.loads(self.api_keys_file.read_text())
        except (OSError, ValueError):
            return {}

    def save(self) -> None:
        write_private(self.dir / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, stack: str) -> "VmState | None":
        path = paths.vm_dir(stack) / STATE_FILE
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"{path} is unreadable ({exc}); remove the folder {path.parent} "
                             "after stopping any QEMU it started") from None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class StateError(Failure):
    pass


def new_state(stack: str) -> VmState:
    folder = paths.vm_dir(stack)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    return VmState(stack=stack, folder=str(folder))


def remove_folder(stack: str) -> None:
    shutil.rmtree(paths.vm_dir(stack), ignore_errors=True)


@contextmanager
def stack_lock(stack: str) -> Iterator[None]:
    """One `up` or `down` at a time per stack."""
    root = paths.state_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(root / f".{stack}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(f"another `llmdeploy local` command is working on stack '{stack}'; wait for it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
