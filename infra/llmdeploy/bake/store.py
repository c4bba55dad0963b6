"""Where the local bakes live and which one `llmdeploy local up` boots: images/baked/<digest>-<runtime>/ beside the
base image (paths.images_dir(); $LLMDEPLOY_BAKED_DIR moves them, as the tests do), each with a manifest.json
written last (a folder without one is an unfinished bake, never used) and the image itself: the scrubbed root tree
for the systemd container (rootfs/), a qcow2 backed by the base image's disk for QEMU (disk.qcow2).

The digest (local_digest) is bake/install.py's install digest over the stack rendered as `local up` renders it,
with the per-run values (the host servers' addresses and ports, this run's SSH key, pebble) replaced by fixed
ones, since they change on every run and say nothing about what is installed; the model file `local up` serves
and the torch wheels enter through the base image's identity, since the install steps download them by URL."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from ..config import StackConfig
from ..errors import UsageError
from ..local import image, paths
from ..local.hostsrv import GUEST_HOST_IP
from ..local.localconfig import ModelSource, local_config
from ..render import HostLayout, render
from .install import install_digest

MANIFEST = "manifest.json"
DEFAULT_MAX_AGE_DAYS = 30  # older bakes are refused: their packages miss the security updates since
# Stands in for `local up`'s own key in the rendered config: the digest must not change with each run's key.
PLACEHOLDER_SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEngwW5AII0QsI3JkC6Bs6/2wJ5WnlZsQrpo8+qRMy0a "
                       "llmdeploy-bake-placeholder")
# How `local up` chooses: auto uses a matching bake; no never does; require refuses to boot without one.
AUTO, NO, REQUIRE = "auto", "no", "require"


def baked_root() -> Path:
    explicit = os.environ.get("LLMDEPLOY_BAKED_DIR")
    return Path(explicit).expanduser() if explicit else paths.images_dir() / "baked"


@dataclass(frozen=True)
class BakedImage(image.Image):
    """A bake, booted as the base image is (the kernel and initrd stay the base image's)."""

    base: Path = Path()

    @property
    def kernel(self) -> Path:
        return self.base / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.base / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.folder / "disk.qcow2"

    @property
    def rootfs(self) -> Path:
        return self.folder / "rootfs"

    def complete(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def age_days(self, now: float | None = None) -> float:
        return ((now or time.time()) - float(self.manifest["created_epoch"])) / 86400  # type: ignore[arg-type]


def folder_for(digest: str, runtime: str) -> Path:
    return baked_root() / f"{digest}-{runtime}"


def find(digest: str, runtime: str, base: image.Image) -> BakedImage | None:
    found = BakedImage(folder_for(digest, runtime), base=base.folder)
    return found if found.complete() else None


def others(runtime: str, stack: str) -> list[BakedImage]:
    """The stack's complete bakes for this runtime, whatever their digest (to say why none matches)."""
    found = []
    for folder in sorted(baked_root().glob(f"*-{runtime}")):
        bake = BakedImage(folder)
        if bake.complete() and bake.manifest.get("stack") == stack:
            found.append(bake)
    return found


def write_manifest(folder: Path, fields: dict[str, Any]) -> None:
    now = time.time()
    data = {**fields, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "created_epoch": int(now)}
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(folder / MANIFEST)


# ---------------------------------------------------------------------------------------------- the digest

def _model_identity(model: ModelSource) -> str:
    """What the guest downloads from this machine: the file's (or the Hub folder's files') names, sizes and, for a
    file, its SHA-256 (a GGUF of a few hundred MB hashes in about a second)."""
    if model.serve is None:
        return f"url:{model.url}"
    if model.serve.is_file():
        h = hashlib.sha256()
        with open(model.serve, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return f"file:{model.filename}:{h.hexdigest()}"
    files = sorted(p for p in model.serve.rglob("*") if p.is_file())
    return "hub:" + ",".join(f"{p.relative_to(model.serve)}:{p.stat().st_size}" for p in files)


def local_digest(root: Path, stack: str, values: Mapping[str, Any], cfg0: StackConfig, model: ModelSource,
                 wheels: list[Path], base: image.Image) -> str:
    """The install digest of the stack as `local up` would render it, with each run's own values fixed."""
    host = f"http://{GUEST_HOST_IP}"
    token = bool(cfg0.hf_token.reveal())
    cfg = local_config(root, stack, values=values, ssh_public_key=PLACEHOLDER_SSH_KEY,
                       model_url=f"{host}/{model.filename}", extra_ca_certs=[],
                       hf_endpoint=host if token and model.serve is not None else "",
                       torch_index_url=f"{host}/simple" if wheels else "")
    rendered = render(cfg, HostLayout(https_port=443))
    wheel_names = sorted(p.name for d in wheels for p in d.glob("*.whl"))
    identity = f"{base.folder.name}|{_model_identity(model)}|wheels:{','.join(wheel_names)}"
    return install_digest(rendered, identity)


# ---------------------------------------------------------------------------------------------- choosing for up

def choose(mode: str, digest: str, runtime: str, stack: str, base: image.Image, max_age_days: float,
           say: Callable[[str], None]) -> image.Image:
    """The image `local up` boots: a matching bake young enough (auto, require), else the base image (auto, no).
    Says which, and in one line why a bake was not used; require refuses (UsageError) when none can be."""
    if mode == NO:
        say("baked image: not used (--no-baked)")
        return base
    why = _unusable(digest, runtime, stack, base, max_age_days)
    if why is None:
        bake = find(digest, runtime, base)
        assert bake is not None
        say(f"baked image: {bake.folder} (install {digest}, baked {bake.manifest.get('created')}); only the "
            "per-instance steps do real work")
        return bake
    if mode == REQUIRE:
        raise UsageError(f"--baked: {why}; bake it first: llmdeploy bake --stack {stack} --runtime {runtime}")
    say(f"baked image: none used ({why}); booting the base image")
    return base


def _unusable(digest: str, runtime: str, stack: str, base: image.Image, max_age_days: float) -> str | None:
    bake = find(digest, runtime, base)
    if bake is None:
        stale = others(runtime, stack)
        if stale:
            return (f"the bake of stack '{stack}' holds install {stale[-1].manifest.get('digest')}, this stack's "
                    f"install is {digest} (its steps, pins or base image changed)")
        return f"no bake of install {digest} for {runtime}"
    if bake.manifest.get("base_image") != base.folder.name:
        return f"{bake.folder} was baked on base image {bake.manifest.get('base_image')}, not {base.folder.name}"
    age = bake.age_days()
    if age > max_age_days:
        return (f"{bake.folder} is {age:.0f} days old, older than {max_age_days:g} days (--max-baked-age-days): "
                "bake it again for the security updates since")
    return None
