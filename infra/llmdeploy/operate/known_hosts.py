"""Host keys of cloud VMs, trusted on first use: a stack's outputs name the VM's address but no host key (the VM
makes its own on first boot, and the gate's SSH login, pulumi-command's, checks none), so the first login records
the key the VM presents in a known_hosts file under llmdeploy's state folder, and every later login accepts only
that key. A changed key is refused, as ssh refuses it, with the line to delete when the VM was really re-created.

The file is OpenSSH's format (`[HOST]:PORT TYPE BASE64`, `HOST TYPE BASE64` for port 22), so `ssh -o
UserKnownHostsFile=FILE` can use it too.
"""
from __future__ import annotations

import fcntl
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Failure
from ..local import paths

if TYPE_CHECKING:  # paramiko loads only when a command logs in
    from ..sshclient import Session

_WRITING = threading.Lock()  # workshop usage logs in to many VMs at once


def default_file() -> Path:
    """In llmdeploy's cache folder ($LLMDEPLOY_CACHE_DIR, else ~/.cache/llmdeploy), beside `llmdeploy local`'s
    VM folders: one file for every cloud VM this machine has logged in to."""
    return paths.cache_root() / "cloud-known_hosts"


def host_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def pinned_key(path: Path, host: str, port: int) -> str:
    """"TYPE BASE64" recorded for host:port, or "" when none is."""
    if not path.is_file():
        return ""
    name = host_name(host, port)
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 3 and name in parts[0].split(","):
            return f"{parts[1]} {parts[2]}"
    return ""


def _record(path: Path, host: str, port: int, key: str) -> None:
    with _WRITING:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # other llmdeploy processes
            if not pinned_key(path, host, port):
                fh.write(f"{host_name(host, port)} {key}\n")


def login(host: str, port: int, user: str, key_file: str, path: Path, host_key: str = "",
          timeout: float = 20) -> Session:
    """Log in, accepting only the key recorded for host:port (or `host_key`, when the user gives one); on the
    first login, record the key presented and say so on stderr."""
    from ..sshclient import HostKeyMismatch, connect, host_key_fingerprint

    pin = host_key or pinned_key(path, host, port)
    try:
        session = connect(host, port, user, key_file, host_key=pin, timeout=timeout)
    except HostKeyMismatch as exc:
        if host_key:
            raise
        raise Failure(f"{exc}.\nThe host key of {host_name(host, port)} is not the one recorded on the first login "
                      f"(in {path}); nothing was sent to it. If the VM was re-created (pulumi destroy and up, or a "
                      f"reserved IP given to a new VM), delete the old key and log in again: ssh-keygen -R "
                      f"'{host_name(host, port)}' -f {path}") from None
    if not pin:
        _record(path, host, port, session.host_key)
        print(f"note: first login to {host_name(host, port)}: its host key {host_key_fingerprint(session.host_key)} is "
              f"now trusted for later logins (recorded in {path})", file=sys.stderr)
    return session
