"""Where `llmdeploy local` keeps things: the image cache and one state folder per stack.

Everything lives under the user's cache folder: $LLMDEPLOY_CACHE_DIR, else $XDG_CACHE_HOME/llmdeploy,
else ~/.cache/llmdeploy. Images are shared by every stack (images/<key>/); a VM's state (PIDs, ports,
its disk overlay, its SSH key and API keys) lives in vms/<stack>/, or under $LLMDEPLOY_STATE_DIR when
that is set (the tests use it to keep their VMs apart from the user's). Secrets are written 0600.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    explicit = os.environ.get("LLMDEPLOY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llmdeploy"


def images_dir() -> Path:
    return cache_root() / "images"


def state_root() -> Path:
    explicit = os.environ.get("LLMDEPLOY_STATE_DIR")
    return Path(explicit).expanduser() if explicit else cache_root() / "vms"


def vm_dir(stack: str) -> Path:
    return state_root() / stack


def write_private(path: Path, data: str | bytes) -> Path:
    """Write a file only its owner can read (0600 from the first byte, never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
