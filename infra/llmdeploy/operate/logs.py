"""`llmdeploy logs`: what a VM logged, the same for a local stack and a cloud VM (operate.access): cloud-init's
output (the default), a provisioning step's log, the engine's journal, or nginx's error log; the last N lines,
or followed."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, Failure, UsageError
from ..vmpaths import CLOUD_INIT_OUTPUT, step_log
from . import access

if TYPE_CHECKING:  # paramiko loads only when a command logs in (llmdeploy --help stays light)
    from ..sshclient import Session

NGINX_ERROR_LOG = "/var/log/nginx/error.log"
EXAMPLES = """\
examples:
  llmdeploy logs --stack local --step 40-engine -n 50
  llmdeploy logs --ssh llmadmin@203.0.113.7 --ssh-key ~/.ssh/id_ed25519 --engine -f
"""


def log_command(args: argparse.Namespace, facts: dict[str, Any]) -> str:
    """The command (run as root) that prints what was asked for."""
    lines = ["-n", str(args.lines)]
    if args.engine:
        unit = str(facts.get("engine_unit") or "")
        if not unit:
            raise UsageError("this VM runs no engine of its own (a Ray worker or a Data Science stack): try --step")
        return shlex.join(["journalctl", "--no-pager", "-u", unit, *lines] + (["-f"] if args.follow else []))
    if args.step:
        stages = [str(s) for s in facts.get("stages", [])]
        if args.step not in stages:
            raise UsageError(f"--step {args.step}: this VM's steps are {', '.join(stages)}")
        path = step_log(args.step)
    else:
        path = NGINX_ERROR_LOG if args.nginx else CLOUD_INIT_OUTPUT
    return shlex.join(["tail", *lines] + (["-F"] if args.follow else []) + [path])


def show(session: Session, command: str, follow: bool, where: str) -> int:
    """Print the command's output (as root); with follow, as it comes, until Ctrl-C or the connection ends.
    A command that fails is a Failure carrying its stderr (a step whose log does not exist yet, no sudo)."""
    as_root = ["sh", "-c", command]
    if not follow:
        done = session.sudo(as_root, timeout=60)
        code, stderr = done.exit_code, done.stderr
        sys.stdout.write(done.stdout)
    else:
        running = session.start(session.as_root(as_root))
        code = None
        while code is None:
            code = running.poll()
            sys.stdout.buffer.write(bytes(running.stdout))
            sys.stdout.flush()
            running.stdout.clear()  # printed: a long follow keeps nothing
            time.sleep(0.2)
        stderr = running.output()[1]
    if code != 0:
        raise Failure(f"{where}: {stderr.strip() or f'exit {code}'}")
    return EXIT_OK


def require_lines(args: argparse.Namespace) -> None:
    """-n: refused before any login (shared with `llmdeploy local logs`, whose --serial never logs in)."""
    if args.lines < 1:
        raise UsageError(f"-n {args.lines}: give a number of lines of 1 or more")


def cmd_logs(args: argparse.Namespace) -> int:
    require_lines(args)
    session, where = access.login(args)
    try:
        return show(session, log_command(args, access.read_facts(session, where)), args.follow, where)
    finally:
        session.close()


def add_which(parser: argparse.ArgumentParser) -> Any:
    """--step | --engine | --nginx, -n, -f: shared with `llmdeploy local logs`."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", metavar="NAME", help="a provisioning step's log (e.g. 40-engine)")
    which.add_argument("--engine", action="store_true", help="the engine's journal (its systemd unit)")
    which.add_argument("--nginx", action="store_true", help=f"nginx's error log ({NGINX_ERROR_LOG})")
    parser.add_argument("-n", "--lines", type=int, default=100, help="last N lines (default 100)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    return which


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `logs` to the llmdeploy command."""
    p = subparsers.add_parser("logs", help="a VM's logs: cloud-init's output, a step's, the engine's or nginx's",
                              description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command_name="logs", func=cmd_logs)
    access.add_arguments(p)
    add_which(p)
    return p
