"""SSH facts of the local VM: its key pair (made here, Ed25519), its sshd's banner, and the host keys cloud-init
prints on its console. The logins themselves are llmdeploy.sshclient's (host key pinned, secrets on stdin).

The host key is learnt on the first login over the loopback port forward to the VM this process has just
started, then confirmed against what cloud-init prints on the VM's serial console (which only this machine
sees): the fingerprints ssh-keygen shows as cloud-init generates the keys (its init stage, before any step
runs), or the keys themselves once cloud-init finishes. From then on every login pins it.
"""
from __future__ import annotations

import re
import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..private_files import write_private
from ..sshclient import HOST_KEY_ALGORITHMS, LOOPBACK, Session, connect

CHANNEL_OPEN_S = 30.0  # a busy guest (TCG, provisioning) may answer a command's channel slower than a login
CONSOLE_KEYS = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----\r?\n(.*?)-----END SSH HOST KEY KEYS-----", re.S)
# cloud-init's ssh module writes ssh-keygen's output to the console for each host key it generates, unless
# ssh_quiet_keygen is set (it is not): "The key fingerprint is:" then "SHA256:<43 base64> root@host".
CONSOLE_FINGERPRINT = re.compile(r"The key fingerprint is:\s*(SHA256:[A-Za-z0-9+/]{43})(?![A-Za-z0-9+/])")
# The console shows a service's output line by line behind its name, on the VM's serial console behind a
# timestamp too: "[   55.52] cloud-init[408]: " (a systemd container's console: "cloud-init[408]: ").
CONSOLE_PREFIX = re.compile(r"^(?:\[\s*[0-9]+\.[0-9]+\]\s+)?[\w.@-]+\[[0-9]+\]:\s?", re.M)


def make_key_pair(private_path: Path, comment: str) -> str:
    """Write a new Ed25519 key (0600) and its .pub; return the public key line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    write_private(private_path, private)
    private_path.with_name(private_path.name + ".pub").write_text(line + "\n")
    return line


def ssh_banner(port: int, timeout: float = 5.0) -> str:
    """The SSH server's banner on 127.0.0.1:port, or '' (QEMU accepts on a forwarded port even while
    nothing listens in the guest, then closes the connection)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except OSError:
        return ""
    text = data.decode(errors="replace")
    return text.strip() if text.startswith("SSH-") else ""


def console_host_keys(serial_log: Path) -> set[str]:
    """The host keys cloud-init printed on the serial console ("TYPE BASE64"), empty until it has."""
    try:
        text = serial_log.read_text(errors="replace")
    except OSError:
        return set()
    keys = set()
    for block in CONSOLE_KEYS.findall(text):
        for line in block.splitlines():
            parts = line.strip().split()
            if len(parts) >= 2 and parts[0] in HOST_KEY_ALGORITHMS:
                keys.add(f"{parts[0]} {parts[1]}")
    return keys


def console_host_fingerprints(serial_log: Path) -> set[str]:
    """The SHA256 fingerprints of the host keys cloud-init generated, as printed on the console."""
    try:
        text = serial_log.read_text(errors="replace")
    except OSError:
        return set()
    return set(CONSOLE_FINGERPRINT.findall(CONSOLE_PREFIX.sub("", text)))


def known_hosts_line(port: int, host_key: str) -> str:
    return f"[127.0.0.1]:{port} {host_key}\n"


def loopback_login(port: int, user: str, key_file: Path, host_key: str = "", timeout: float = 20) -> Session:
    """Log in on the VM's SSH port forwarded to this machine; with host_key, only that key is accepted."""
    session = connect(LOOPBACK, port, user, str(key_file), host_key=host_key, timeout=timeout)
    session.timeout = CHANNEL_OPEN_S
    return session
