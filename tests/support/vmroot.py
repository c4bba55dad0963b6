"""Run rendered provisioning scripts for real, with the VM's absolute paths redirected to a temp dir.

Why: the steps use fixed paths (/usr/local/lib/llmdeploy, /etc/llmdeploy, /var/lib/llmdeploy, ...).
Inside a private mount namespace (`unshare --mount`, root only) each of those paths is bind-mounted
from a temporary directory, so a step runs unchanged without touching this machine's real files.
Mount points that do not exist yet are created empty and removed again afterwards.
"""
from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VM_DIRS = ("/usr/local/lib/llmdeploy", "/usr/local/share/llmdeploy", "/etc/llmdeploy", "/var/lib/llmdeploy",
           "/var/log/llmdeploy", "/var/lib/cloud", "/etc/iptables")


def bind_mounts(pairs: list[tuple[Path | str, str]]) -> str:
    """Shell lines that bind-mount each (source, VM path), exiting 97 on the first that fails. Why not one
    `a && b` chain before `; command`: bash's -e ignores a failure inside such a chain, and the command then
    runs against this machine's real folders (a mount point removed by a concurrent run is enough)."""
    return "".join(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)} || exit 97\n" for src, dst in pairs)


class VmRoot:
    def __init__(self, base: Path) -> None:
        self.base = base

    def path(self, vm_path: str) -> Path:
        """Where a path on the 'VM' lives on this machine."""
        for d in VM_DIRS:
            if vm_path == d or vm_path.startswith(d + "/"):
                return self.base / d.strip("/").replace("/", "_") / vm_path[len(d):].lstrip("/")
        raise ValueError(f"{vm_path} is not under one of {VM_DIRS}")

    def install(self, vm_path: str, content: str, mode: int = 0o644) -> None:
        dest = self.path(vm_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
        dest.chmod(mode)

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a bash command with every VM directory bind-mounted from this root."""
        mounts = bind_mounts([(self.path(d), d) for d in VM_DIRS])
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                               f"set -e\n{mounts}{command}"], capture_output=True, text=True, timeout=timeout)


@contextmanager
def vm_root(base: Path) -> Iterator[VmRoot]:
    created = [Path(d) for d in VM_DIRS if not Path(d).exists()]
    for d in created:
        d.mkdir(parents=True)
    root = VmRoot(base)
    for d in VM_DIRS:
        root.path(d).mkdir(parents=True, exist_ok=True)
    try:
        yield root
    finally:
        for d in reversed(created):
            d.rmdir()  # empty mount points only: anything written went to the temp root
