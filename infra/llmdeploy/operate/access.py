"""How the day-two commands reach a VM: --stack NAME for a local stack's running VM or container (the login
`llmdeploy local` keeps, host key pinned) or a cloud stack's VM (its outputs name host and user, its config the
key: operate/cloud_access.py), or any llmdeploy VM over SSH (--ssh USER@HOST, --ssh-key, --ssh-host-key). All give
the same Session, so every command after the login runs the same code for each."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ..errors import Failure, UsageError
from ..projectdir import find_project_dir, stack_arg
from ..vmpaths import VM_FACTS_FILE

if TYPE_CHECKING:  # paramiko loads only when a command logs in (llmdeploy --help stays light)
    from ..sshclient import Session

SOURCE_HELP = ("say which VM: --stack NAME (a local or cloud stack), or --ssh USER@HOST --ssh-key FILE (any "
               "llmdeploy VM)")


def add_arguments(parser: argparse.ArgumentParser, source: Any | None = None) -> None:
    """--stack | --ssh (in `source`, a mutually exclusive group, when the command has other sources), and the
    SSH login's key and host key."""
    group = source if source is not None else parser.add_mutually_exclusive_group()
    group.add_argument("--stack", type=stack_arg, help="a stack: a local one's VM or container, or a cloud one's "
                       "VM (from its outputs, over SSH)")
    group.add_argument("--ssh", metavar="USER@HOST[:PORT]", help="any llmdeploy VM, over SSH")
    parser.add_argument("--ssh-key", metavar="FILE", help="private key for --ssh or a cloud stack (default for a "
                        "cloud stack: its sshPrivateKey)")
    parser.add_argument("--ssh-host-key", metavar="KEY", help="pin the VM's host key (e.g. 'ssh-ed25519 AAAA...'; "
                        "default for a cloud stack: the key of the first login)")
    parser.add_argument("--project-dir", help="folder holding Pulumi.yaml of a cloud stack (default: the nearest at "
                        "or above here)")


def check_arguments(args: argparse.Namespace) -> None:
    """Bad combinations, refused before any login."""
    if (args.ssh_key or args.ssh_host_key) and not (args.ssh or args.stack):
        raise UsageError("--ssh-key and --ssh-host-key go with --ssh USER@HOST or a cloud --stack NAME")
    if not args.stack and not args.ssh:
        raise UsageError(SOURCE_HELP)
    if args.ssh_host_key:
        from ..sshclient import parse_host_key

        try:
            parse_host_key(args.ssh_host_key)
        except ValueError as exc:
            raise UsageError(f"--ssh-host-key: {exc}") from None


def login(args: argparse.Namespace) -> tuple[Session, str]:
    """A logged-in session to the VM the arguments name, and how to name it in messages."""
    check_arguments(args)
    if args.ssh:
        from ..smoke.targets import parse_ssh
        from ..sshclient import connect

        access = parse_ssh(args.ssh, args.ssh_key, args.ssh_host_key)
        where = f"{access.user}@{access.host}"
        return connect(access.host, access.port, access.user, access.key_file, access.host_key or ""), where
    from ..local import guestlogin, vmstatus
    from ..local.state import VmState

    if VmState.load(args.stack) is None:
        return _cloud_login(args)
    if args.ssh_key or args.ssh_host_key:
        raise UsageError(f"stack '{args.stack}' is a local VM: `llmdeploy local` keeps its own key and host key; "
                         "drop --ssh-key and --ssh-host-key")
    return guestlogin.login(vmstatus.require_running(args.stack)), f"the local VM of stack '{args.stack}'"


def _cloud_login(args: argparse.Namespace) -> tuple[Session, str]:
    from . import cloud_access, known_hosts

    try:
        root = find_project_dir(getattr(args, "project_dir", None))
    except UsageError as exc:
        raise UsageError(f"stack '{args.stack}' has no local VM on this machine (llmdeploy local up --stack "
                         f"{args.stack} starts one), and for a cloud stack: {exc}") from None
    target = cloud_access.stack_target(root, args.stack)
    with cloud_access.private_key_file(root, args.stack, args.ssh_key) as key_file:
        session = known_hosts.login(target.host, target.port, target.user, key_file, known_hosts.default_file(),
                                    host_key=args.ssh_host_key or "")
    return session, f"{target.where} (stack '{args.stack}')"


def read_facts(session: Session, where: str) -> dict[str, Any]:
    """The VM's own description (render.vm_facts: stack, engine unit, stages), which every llmdeploy VM has."""
    done = session.sudo(["cat", VM_FACTS_FILE])
    if not done.ok:
        raise Failure(f"cannot read {VM_FACTS_FILE} on {where}: {done.stderr.strip() or f'exit {done.exit_code}'} "
                      "(not an llmdeploy VM, its provisioning has not unpacked yet, or the admin user has no "
                      "passwordless sudo)")
    return dict(json.loads(done.stdout))
