"""SSH to the local VM: its key pair (made here, Ed25519), logins with the guest's host key pinned, and
commands with optional standard input (the secrets bundle travels that way, never on a command line).

The host key is learnt on the first login over the loopback port forward to the VM this process has just
started, then confirmed against what cloud-init prints on the VM's serial console (which only this machine
sees): the fingerprints ssh-keygen shows as cloud-init generates the keys (its init stage, before any step
runs), or the keys themselves once cloud-init finishes. From then on every login pins it.
"""
from __future__ import annotations

import base64
import logging
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..private_files import write_private
from ..smoke.ssh_checks import (ALL_HOST_KEY_ALGORITHMS, HOST_KEY_ALGORITHMS, HostKeyMismatch, SshError, exec_command,
                                 fingerprint)

# paramiko's transport thread logs a traceback for every refused login while the VM boots; the caller
# reports what matters.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

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


class _Pin(paramiko.MissingHostKeyPolicy):
    def __init__(self, expected: str) -> None:
        self.expected = expected
        self.seen = ""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.seen = f"{key.get_name()} {key.get_base64()}"
        if self.expected and self.seen != self.expected:
            raise HostKeyMismatch(f"the VM's SSH host key changed: it presented {self.seen[:60]}..., expected "
                                  f"{self.expected[:60]}... (another VM on this port?)")


@dataclass
class Session:
    client: paramiko.SSHClient
    host_key: str

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 120) -> tuple[int, str, str]:
        """Run a shell command; returns (exit code, stdout, stderr); exit code -1 when `timeout` passes."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("the SSH connection to the VM is closed")
        return exec_command(transport, command, timeout, stdin=stdin, poll=0.05)

    def start(self, command: str) -> Running:
        """Start a command and return at once (stdin closed); poll the result while doing other things."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("the SSH connection to the VM is closed")
        try:
            channel = transport.open_session(timeout=30)
            channel.exec_command(command)
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"{type(exc).__name__}: {exc}") from exc
        return Running(channel)

    def close(self) -> None:
        self.client.close()


@dataclass
class Running:
    """A command running on the VM (Session.start)."""

    channel: paramiko.Channel
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def poll(self) -> int | None:
        """None while it runs; then its exit code, or -1 when the connection dropped before it said."""
        while self.channel.recv_ready():
            self.stdout += self.channel.recv(65536)
        while self.channel.recv_stderr_ready():
            self.stderr += self.channel.recv_stderr(65536)
        if self.channel.exit_status_ready() and not self.channel.recv_ready() and not self.channel.recv_stderr_ready():
            return self.channel.recv_exit_status()
        return None

    def output(self) -> tuple[str, str]:
        return self.stdout.decode(errors="replace"), self.stderr.decode(errors="replace")


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


def connect(port: int, user: str, key_file: Path, host_key: str = "", timeout: float = 20) -> Session:
    """Log in as `user` on 127.0.0.1:port; with host_key, only that key is accepted."""
    policy = _Pin(host_key)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(policy)
    kind = host_key.split(" ", 1)[0] if host_key else ""
    disabled = {"keys": [a for a in ALL_HOST_KEY_ALGORITHMS if a not in HOST_KEY_ALGORITHMS[kind]]} \
        if kind in HOST_KEY_ALGORITHMS else None
    try:
        client.connect("127.0.0.1", port=port, username=user, key_filename=str(key_file), timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False, allow_agent=False,
                       disabled_algorithms=disabled)
    except HostKeyMismatch:
        client.close()
        raise
    except (paramiko.SSHException, OSError, EOFError, socket.timeout) as exc:
        client.close()
        raise SshError(f"{type(exc).__name__}: {exc}") from exc
    return Session(client, policy.seen or host_key)


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


def host_key_fingerprint(host_key: str) -> str:
    """"TYPE BASE64" -> "SHA256:..." as ssh-keygen -l prints it."""
    return fingerprint(base64.b64decode(host_key.split()[1]))


def known_hosts_line(port: int, host_key: str) -> str:
    return f"[127.0.0.1]:{port} {host_key}\n"
