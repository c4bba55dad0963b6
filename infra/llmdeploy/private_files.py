"""Files and folders only their owner may read: keys, handouts, a VM's state. One writer for all of them."""
from __future__ import annotations

import os
from pathlib import Path


def secure_folder(path: Path) -> None:
    """Create `path` (0700), or narrow an existing folder's permissions to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_private(path: Path, data: str | bytes) -> Path:
    """Write a file only its owner can read: 0600 from the first byte, never briefly world-readable, and
    replaced whole, so an existing file with wider permissions (or a link in its place) does not survive."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path
