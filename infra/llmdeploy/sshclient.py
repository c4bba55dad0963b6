"""The one SSH client: `llmdeploy smoke`'s checks and `llmdeploy local`'s logins both use it.

Host keys: no known_hosts file is read. With a pinned key (a fingerprint "SHA256:...", a "TYPE BASE64" key or
a known_hosts line) only that key is accepted, and only its own algorithms are offered, so the server cannot
present another of its keys; any other key is refused with HostKeyMismatch before authentication. Without a pin
(first contact) the login goes ahead and the session records the key the server presented: the caller decides
what that is worth (the smoke checks warn; `llmdeploy local` confirms it against the VM's serial console before
it sends a secret, then pins it for every later login).

Private keys are read from their file by paramiko; neither they nor secrets sent on standard input ever appear
on a command line.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import select
import shlex
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from .errors import Failure
from .polling import Deadline

# paramiko's transport thread logs a traceback for every refused login while a VM boots; the caller reports
# what matters.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

LOOPBACK = "127.0.0.1"
MAX_EVIDENCE_CHARS = 8000

# Host key algorithms per key type, so that a pinned key's own type is the one the server presents.
HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
ALL_HOST_KEY_ALGORITHMS = tuple(a for algs in HOST_KEY_ALGORITHMS.values() for a in algs)


# ---------------------------------------------------------------------------------------------- host keys

def ssh_key_fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob, as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def parse_host_key(spec: str) -> tuple[str | None, str]:
    """(key type or None, SHA256 fingerprint) from "SHA256:...", "TYPE BASE64 [comment]" or a known_hosts line."""
    spec = spec.strip()
    if spec.startswith("SHA256:"):
        return None, spec
    parts = spec.split()
    for i, part in enumerate(parts[:-1]):
        if part in HOST_KEY_ALGORITHMS or part.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                blob = base64.b64decode(parts[i + 1], validate=True)
            except ValueError as exc:
                raise ValueError(f"host key {spec!r}: the key after {part} is not base64") from exc
            return part, ssh_key_fingerprint(blob)
    raise ValueError(f"host key {spec!r}: expected 'SHA256:...', 'ssh-ed25519 AAAA...' or a known_hosts line")


def host_key_fingerprint(host_key: str) -> str:
    """"TYPE BASE64" -> "SHA256:..." as ssh-keygen -l prints it."""
    return ssh_key_fingerprint(base64.b64decode(host_key.split()[1]))


class SshError(Failure):
    """An SSH login or command that did not work; the message says why. `host_key_seen` is the key the server
    presented ("TYPE SHA256:..."), when it got that far."""

    host_key_seen: str = ""


class HostKeyMismatch(SshError):
    """The server presented another host key than the pinned one: a re-created VM, another VM on the port, or
    someone in between. Every login refuses it."""


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called for every server key (no known_hosts is loaded): records it, refuses one that is not pinned."""

    def __init__(self, pinned_fingerprint: str | None) -> None:
        self.pinned = pinned_fingerprint
        self.key = ""  # "TYPE BASE64", what a later login pins
        self.seen = ""  # "TYPE SHA256:...", what a report shows

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.key = f"{key.get_name()} {key.get_base64()}"
        self.seen = f"{key.get_name()} {ssh_key_fingerprint(key.asbytes())}"
        if self.pinned and ssh_key_fingerprint(key.asbytes()) != self.pinned:
            raise HostKeyMismatch(f"host key mismatch for {hostname}: the server presented {self.seen}, expected "
                                  f"{self.pinned} (a re-created VM, another VM on this port, or someone in between)")


# ---------------------------------------------------------------------------------------------- commands

@dataclass
class CommandResult:
    """One command run over SSH; exit_code -1 when its timeout passed first."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def evidence(self) -> dict[str, Any]:
        return {"command": self.command, "exit_code": self.exit_code, "stdout": _clip(self.stdout),
                "stderr": _clip(self.stderr), "seconds": round(self.seconds, 3)}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_EVIDENCE_CHARS else "...\n" + text[-MAX_EVIDENCE_CHARS:]


def exec_command(transport: paramiko.Transport, command: str, timeout: float, stdin: bytes | None = None,
                 open_timeout: float = 30, poll: float = 0.02) -> tuple[int, str, str]:
    """Run one command on an open SSH connection: (exit code, stdout, stderr); exit code -1 when `timeout`
    seconds pass first. `stdin`, when given, is sent before standard input is closed (secrets travel that way,
    never on a command line)."""
    chan = transport.open_session(timeout=open_timeout)
    out, err = bytearray(), bytearray()
    deadline = Deadline(timeout)
    try:
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()  # EOF on standard input: nothing waits for input that never comes
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                code = chan.recv_exit_status()
                break
            if deadline.expired:
                code = -1
                break
            select.select([chan], [], [], poll)
    finally:
        chan.close()
    return code, out.decode(errors="replace"), err.decode(errors="replace")


@dataclass
class Session:
    """One logged-in SSH connection. `host_key` is the key the server presented ("TYPE BASE64"), `host_key_seen`
    its fingerprint ("TYPE SHA256:..."); `timeout` bounds opening a channel and is sudo()'s default."""

    client: paramiko.SSHClient
    user: str
    host_key: str
    host_key_seen: str = ""
    timeout: float = 30

    def _transport(self) -> paramiko.Transport:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("the SSH connection is closed")
        return transport

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 120) -> CommandResult:
        """Run a shell command; stops waiting after `timeout` seconds (exit code -1)."""
        start = time.monotonic()
        code, out, err = exec_command(self._transport(), command, timeout, stdin=stdin, open_timeout=self.timeout)
        return CommandResult(command, code, out, err, time.monotonic() - start)

    def as_root(self, argv: list[str]) -> str:
        """argv as a command that runs as root: through `sudo -n` unless the login is root (the admin user has
        passwordless sudo)."""
        return shlex.join((["sudo", "-n"] if self.user != "root" else []) + argv)

    def sudo(self, argv: list[str], timeout: float | None = None) -> CommandResult:
        """Run argv as root (as_root)."""
        return self.run(self.as_root(argv), timeout=timeout or self.timeout)

    def start(self, command: str) -> Running:
        """Start a command and return at once (stdin closed); poll the result while doing other things."""
        transport = self._transport()
        try:
            channel = transport.open_session(timeout=self.timeout)
            channel.exec_command(command)
            channel.shutdown_write()
        except (SshError, paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"{type(exc).__name__}: {exc}") from exc
        return Running(channel)

    def close(self) -> None:
        self.client.close()


@dataclass
class Running:
    """A command running on the other side (Session.start)."""

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


# ---------------------------------------------------------------------------------------------- login

def connect(host: str, port: int, user: str, key_file: str, host_key: str = "", timeout: float = 20) -> Session:
    """Log in as `user` with the private key in `key_file`. With `host_key` (see parse_host_key) only that key is
    accepted (HostKeyMismatch); without it the session records the key presented (first contact). Raises
    SshError saying why a login failed; a bad `host_key` is a ValueError."""
    pin_type, pinned = parse_host_key(host_key) if host_key else (None, None)
    policy = HostKeyPolicy(pinned)
    disabled = {"keys": [a for a in ALL_HOST_KEY_ALGORITHMS if a not in HOST_KEY_ALGORITHMS[pin_type]]} \
        if pin_type in HOST_KEY_ALGORITHMS else None
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(policy)
    try:
        client.connect(host, port=port, username=user, key_filename=str(key_file), timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False, allow_agent=False,
                       disabled_algorithms=disabled)
    except (SshError, paramiko.SSHException, OSError, EOFError) as exc:  # a failed login: an SshError saying why
        client.close()
        error = exc if isinstance(exc, SshError) else SshError(describe_connect_error(exc, host, port, user, key_file))
        error.host_key_seen = policy.seen
        if error is exc:
            raise
        raise error from exc
    except BaseException:
        client.close()
        raise
    return Session(client, user, policy.key, policy.seen, timeout)


def describe_connect_error(exc: BaseException, host: str, port: int, user: str, key_file: str) -> str:
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed for {user}@{host}:{port} with key {key_file} ({exc})"
    if isinstance(exc, NoValidConnectionsError):
        return f"cannot connect to {host}:{port}: connection refused (sshd not up yet, or a firewall)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"cannot connect to {host}:{port}: timed out (security list, firewall or the VM is down)"
    if isinstance(exc, FileNotFoundError):
        return f"SSH key file not found: {key_file}"
    return f"cannot log in to {user}@{host}:{port}: {type(exc).__name__}: {exc}"
