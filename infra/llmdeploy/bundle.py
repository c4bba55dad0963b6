"""The provisioning bundle: every file render makes for a machine (steps, scripts, units, configs), packed as a
deterministic tar.gz that travels over SSH beside the secrets, while the instance metadata carries only a small
bootstrap and the bundle's SHA-256 (OCI refuses metadata over 32,000 bytes; the bundle is 60-75 KB plain).

Why SSH and not Object Storage: pulumi up's readiness gate and `llmdeploy local up` already log in to every
machine (a Ray worker or engine replica through its head) to deliver the secrets, after pinning the host key, so
the bundle adds no cloud resource, no egress path and no expiring URL. The cost is that provisioning starts when
the gate first logs in rather than at boot. The digest in the metadata is what the VM trusts: whatever carries
the bundle, a changed byte is refused (templates/receive-bundle.sh.j2, templates/bootstrap.sh.j2).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .secret_delivery import INSTALLER_WAIT_S
from .vmpaths import BUNDLE_STAGE, CLOUD_INIT_OUTPUT, INSTALL_SECRETS, RECEIVE_BUNDLE, STAGES_DIR


class _File(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def mode(self) -> str: ...


def pack(files: Iterable[_File]) -> bytes:
    """The files as a tar.gz with absolute paths made relative to /, root-owned, in path order, with no
    timestamps: the same files give the same bytes, and so the same digest and the same instance."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(files, key=lambda f: f.path):
            data = f.content.encode()
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), int(f.mode, 8), 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    # zlib's default level: within 1% of level 9's size (17-24 KB) at two thirds of its time (1.6 ms against 2.4
    # ms a stack). Level 1 would halve that again but adds 15%, which each gate's stdin keeps in the Pulumi state.
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def digest(bundle: bytes) -> str:
    return hashlib.sha256(bundle).hexdigest()


def _wait_for(path: str, what: str, timeout_s: int) -> str:
    """Shell: wait until `path` exists, reading nothing from stdin (the payload is stdin). One command in braces,
    so that `x && <this>` skips the wait when x fails: ungrouped, `x && i=0; until ...` waited out the timeout
    after a refused bundle (5 minutes) instead of failing at once."""
    return (f"{{ i=0; until [ -e {path} ]; do if [ \"$i\" -ge {int(timeout_s)} ]; then echo \"{what} after "
            f"{int(timeout_s)}s (see {CLOUD_INIT_OUTPUT} on the VM)\" >&2; exit 1; fi; sleep 2; i=$((i + 2)); "
            "done; } </dev/null")


def delivery_script(timeout_s: int = INSTALLER_WAIT_S) -> str:
    """Shell, run over SSH as the admin user with `payload()` on stdin: the bundle to its receiver (which refuses
    a digest that is not the metadata's), then, once the bootstrap has unpacked it, the secrets to their
    installer. The first line of stdin is the bundle; the rest, the secrets. `read` takes exactly one line."""
    done = f"{STAGES_DIR}/{BUNDLE_STAGE}.done"
    return (f"{_wait_for(RECEIVE_BUNDLE, f'{RECEIVE_BUNDLE} is not on the VM: cloud-init has not run', timeout_s)}"
            f" && IFS= read -r bundle && printf '%s' \"$bundle\" | base64 -d | sudo -n {RECEIVE_BUNDLE} && "
            f"{_wait_for(done, 'the bootstrap has not unpacked the bundle', timeout_s)} && "
            f"base64 -d | sudo -n {INSTALL_SECRETS}")


def payload(bundle: bytes, secrets_tar: bytes) -> bytes:
    """What delivery_script reads: the bundle and the secrets' tar archive, each base64 on a line of its own."""
    return base64.b64encode(bundle) + b"\n" + base64.b64encode(secrets_tar) + b"\n"


# OCI refuses an instance whose metadata is larger: "the combined size of metadata and extendedMetadata".
OCI_METADATA_LIMIT = 32_000


@dataclass(frozen=True)
class Provisioning:
    """What one machine is given: the user-data its metadata carries, and the bundle delivered over SSH."""

    user_data: str
    bundle: bytes

    def metadata(self) -> dict[str, str]:
        """The instance metadata, as stack/vm.py sends it: the bootstrap cloud-config, gzip and base64 (cloud-init
        unpacks gzip itself). No `ssh_authorized_keys` entry: cloud-init gives those to the image's default user
        only, which the user-data does not create; the admin user's keys are in the user-data."""
        return {"user_data": encode_user_data(self.user_data)}

    def metadata_bytes(self) -> int:
        """The metadata's size as JSON, keys and values: at least what OCI counts against its limit."""
        return len(json.dumps(self.metadata(), separators=(",", ":")).encode())

    def metadata_problem(self, machine: str) -> str:
        """"" when the metadata fits OCI's limit; else the numbers and the fix, for an error before any resource."""
        size = self.metadata_bytes()
        if size <= OCI_METADATA_LIMIT:
            return ""
        return (f"{machine}: the instance metadata is {size} bytes, over OCI's limit of {OCI_METADATA_LIMIT} (the "
                f"user-data carries the admin user's SSH keys and extraCaCerts): use fewer or shorter keys (an "
                f"Ed25519 key is 80 bytes, an RSA-4096 key about 740), or fewer extraCaCerts")


def encode_user_data(user_data: str) -> str:
    """What OCI's metadata.user_data takes: base64 of the gzipped cloud-config. mtime=0 keeps the bytes, and so
    the instance, stable across runs."""
    return base64.b64encode(gzip.compress(user_data.encode(), mtime=0)).decode()
