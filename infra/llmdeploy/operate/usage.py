"""`llmdeploy usage`: who used the endpoint. Reads nginx's usage log (rotated files included) from a local stack's
VM, from any VM over SSH, or from a copy, and prints requests, refusals, time and bytes per key name.

The log never holds a key (nginx writes the key's name), so neither does anything printed here.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, Failure, UsageError
from ..vmpaths import USAGE_LOG
from . import access

if TYPE_CHECKING:  # paramiko loads only when a command logs in
    from ..sshclient import Session

EXAMPLES = """\
examples:
  llmdeploy usage --stack local                     # the local stack's VM (llmdeploy local up)
  llmdeploy usage --stack llamacpp-cpu              # a cloud stack's VM: host and user from its outputs
  llmdeploy usage --ssh llmadmin@203.0.113.7 --ssh-key ~/.ssh/id_ed25519 --since 7d
  llmdeploy usage --log llmdeploy-usage.log --json  # a copy of the log
"""
_LOG_DIR, _LOG_NAME = USAGE_LOG.rsplit("/", 1)
# Every file of the log: the live one, logrotate's .1 and its compressed older ones (zcat -f reads both kinds).
READ_LOG = (f"find {shlex.quote(_LOG_DIR)} -maxdepth 1 -name {shlex.quote(_LOG_NAME + '*')} -type f "
            "-exec zcat -f {} +")


def _from_vm(args: argparse.Namespace) -> str:
    session, where = access.login(args)
    try:
        return read_log(session, where)
    finally:
        session.close()


def read_log(session: Session, where: str) -> str:
    """Every file of the usage log on a logged-in VM, as one text (Failure naming the VM when it cannot)."""
    done = session.sudo(["sh", "-c", READ_LOG], timeout=120)
    if not done.ok:
        raise Failure(f"cannot read {USAGE_LOG} on {where}: {done.stderr.strip() or f'exit {done.exit_code}'} "
                      "(the admin user needs passwordless sudo, as the provisioning gives it)")
    return done.stdout


def _from_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            return log.read()
    except FileNotFoundError:
        raise UsageError(f"--log {path}: no such file (copy {USAGE_LOG} from the VM, or use --ssh)") from None


def cmd_usage(args: argparse.Namespace) -> int:
    from .usage_report import parse_window, summarize, table

    window = parse_window(args.since)  # bad input is refused before any login
    if args.log:
        if args.ssh_key or args.ssh_host_key:
            raise UsageError("--ssh-key and --ssh-host-key go with --ssh USER@HOST")
        text = _from_file(args.log)
    elif not args.stack and not args.ssh:
        raise UsageError(f"{access.SOURCE_HELP}, or --log FILE (a copy of the log)")
    else:
        text = _from_vm(args)
    report = summarize(text.splitlines(), window)
    print(report.as_json() if args.json else table(report))
    return EXIT_OK


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `usage` to the llmdeploy command."""
    p = subparsers.add_parser("usage", help="requests, refusals, time and bytes per API key, from nginx's usage log",
                              description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command_name="usage", func=cmd_usage)
    source = p.add_mutually_exclusive_group()
    access.add_arguments(p, source)
    source.add_argument("--log", metavar="FILE", help="a copy of the log ('-': standard input)")
    p.add_argument("--since", default="24h", metavar="WINDOW", help="how far back: 30m, 24h (default), 7d, or all")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p
