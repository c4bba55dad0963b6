"""`--stack NAME` of a cloud stack (target vm or ray): the day-two commands log in as the gate of `pulumi up` does.

- Host and user: the stack's outputs (`sshCommand`, "ssh USER@HOST", else `publicIp` and adminUser), read through
  the Pulumi CLI (workshop/pulumi_cli.py), secrets left encrypted.
- Private key: --ssh-key FILE, else the stack's sshPrivateKey: $LLMDEPLOY_SSH_PRIVATE_KEY, else `pulumi config
  get` (it is stored encrypted). It is written to a 0600 file in a private temporary folder for the login, and
  removed after. A stack without one logs in with the ssh-agent at `pulumi up`: then --ssh-key is needed.
- Host key: --ssh-host-key, else trusted on first use (operate/known_hosts.py): the outputs hold none.
"""
from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..declared import declarations
from ..errors import UsageError
from ..private_files import write_private
from ..stack.output_names import PUBLIC_IP, SSH_COMMAND
from ..stack_yaml import read_stack, secret_env_name, stack_file
from ..textfiles import FileProblem, load_yaml, read_text

SSH_KEY_SETTING = "sshPrivateKey"
CLOUD_TARGETS = ("vm", "ray")
_HOST = re.compile(r"[A-Za-z0-9.:_-]+")
_USER = re.compile(r"[a-z_][a-z0-9_-]*")


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


def settings(root: Path, stack: str) -> dict[str, Any]:
    """The stack's non-secret config values, defaults filled in (no secret needs to be given to read them)."""
    decls = declarations(root)
    no_secrets = {secret_env_name(k): "" for k, d in decls.items() if d.secret}
    raw = read_stack(root, stack, {**os.environ, **no_secrets})
    return {key: raw.get(key, decl.default) for key, decl in decls.items() if not decl.secret}


def ssh_target(outputs: dict[str, Any], admin_user: str, source: str) -> SshTarget:
    """From `sshCommand` ("ssh [-p PORT] USER@HOST"), else `publicIp` with the stack's adminUser."""
    command = outputs.get(SSH_COMMAND)
    if isinstance(command, str) and command.strip():
        words = shlex.split(command)
        port = words[words.index("-p") + 1] if "-p" in words[:-1] else "22"
        login = next((w for w in reversed(words) if "@" in w), "")
        user, _, host = login.partition("@")
        if _USER.fullmatch(user) and _HOST.fullmatch(host) and port.isdigit() and 0 < int(port) < 65536:
            return SshTarget(user, host, int(port))
        raise UsageError(f"{source}: the {SSH_COMMAND} output {command!r} is not 'ssh [-p PORT] USER@HOST'")
    address = outputs.get(PUBLIC_IP)
    if isinstance(address, str) and _HOST.fullmatch(address):
        return SshTarget(admin_user, address)
    raise UsageError(f"{source} has no {SSH_COMMAND} or {PUBLIC_IP} output: has `pulumi up` finished for it? (outputs "
                     f"present: {', '.join(sorted(outputs)) or 'none'})")


def _stored_encrypted(root: Path, stack: str, key: str) -> bool:
    try:
        data = load_yaml(read_text(stack_file(root, stack), "stack file"), stack) or {}
    except (OSError, FileProblem):
        return False
    config = data.get("config") if isinstance(data, dict) else None
    return any(str(k).partition(":")[2] == key and isinstance(v, dict) and "secure" in v
               for k, v in (config.items() if isinstance(config, dict) else ()))


def _configured_key(root: Path, stack: str) -> str:
    from ..workshop import pulumi_cli

    given = os.environ.get(secret_env_name(SSH_KEY_SETTING), "")
    if given:
        return given
    if _stored_encrypted(root, stack, SSH_KEY_SETTING):
        return pulumi_cli.config_value(root, stack, SSH_KEY_SETTING)
    return ""


@contextmanager
def private_key_file(root: Path, stack: str, given: str | None) -> Iterator[str]:
    """The key to log in with: `given` (--ssh-key), else the stack's sshPrivateKey in a private temporary file
    that is gone when the with-block ends."""
    if given:
        if not Path(given).is_file():
            raise UsageError(f"--ssh-key {given}: no such file")
        yield given
        return
    key = _configured_key(root, stack)
    if not key:
        raise UsageError(f"stack '{stack}' has no {SSH_KEY_SETTING} (pulumi up logs in with the ssh-agent): give the "
                         "key the agent holds with --ssh-key FILE")
    if "PRIVATE KEY-----" not in key:
        raise UsageError(f"stack '{stack}': {SSH_KEY_SETTING} is not an OpenSSH or PEM private key; set it with "
                         f"pulumi config set --secret {SSH_KEY_SETTING} -- \"$(cat ~/.ssh/id_ed25519)\"")
    with tempfile.TemporaryDirectory(prefix="llmdeploy-ssh-") as folder:
        yield str(write_private(Path(folder) / "key", key if key.endswith("\n") else key + "\n"))


def stack_target(root: Path, stack: str) -> SshTarget:
    """Where a cloud stack's VM is, from its outputs; UsageError for a stack that has no VM to log in to."""
    from ..workshop import pulumi_cli

    found = settings(root, stack)
    target = str(found.get("target") or "")
    if found.get("workshopRoster"):
        raise UsageError(f"stack '{stack}' is a workshop: its VMs are one per attendee or endpoint; `llmdeploy "
                         f"workshop usage --stack {stack}` reads them all (or give --ssh USER@HOST for one)")
    if target == "local":
        raise UsageError(f"stack '{stack}' has no local VM on this machine (llmdeploy local up --stack {stack} starts "
                         "one)")
    if target not in CLOUD_TARGETS:
        raise UsageError(f"stack '{stack}' has target {target}: there is no VM to log in to (these commands read a "
                         "vm or ray stack's VM, or a local stack's)")
    outputs = pulumi_cli.stack_outputs(root, stack, show_secrets=False)
    return ssh_target(outputs, str(found.get("adminUser") or ""), f"stack '{stack}'")
