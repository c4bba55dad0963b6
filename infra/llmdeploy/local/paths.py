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
