"""`llmdeploy local up | status | ssh | logs | down | image`: the whole stack on this machine, in a QEMU VM or a
systemd container, chosen for the machine (QEMU with KVM where KVM works; else the container as root; else QEMU
under TCG, slow) unless --runtime says which; `up` prints which one ran and why.

Exit codes: 0 done, 1 failed (the message says where and why; nothing is left half-created), 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK
from ..projectdir import find_project_dir, stack_arg
from ..operate.logs import add_which
from . import RUNTIMES, LocalError
from .choice import AUTO

DEFAULT_MAX_AGE_DAYS = 30  # bake/store.py's, not imported here: the parser loads no heavy module

# lifecycle and image (QEMU, SSH, the host servers: paramiko, requests, cryptography) load when a command runs.

DEFAULT_STACK = "local"

EPILOG = """\
examples:
  llmdeploy local up                      # the example stack Pulumi.local.yaml: llama.cpp, tiny model, pebble TLS
  sudo llmdeploy local up --runtime nspawn  # the same in a systemd container: native speed, no own kernel
  llmdeploy local up --runtime qemu       # a VM with its own kernel, whatever the machine (TCG without KVM: slow)
  llmdeploy local up --model-file ~/models/qwen2.5-0.5b-instruct-q4_k_m.gguf
  llmdeploy local status; llmdeploy local ssh -- sudo systemctl status llamacpp
  llmdeploy local logs --step 40-engine; llmdeploy local logs --serial
  llmdeploy local down
state, keys and the disk overlay live under ~/.cache/llmdeploy (XDG_CACHE_HOME; LLMDEPLOY_CACHE_DIR overrides).
"""


UP_EPILOG = """\
secrets never go on a command line or into user-data. A stack's secret config values come from the
environment as LLMDEPLOY_<KEY> (hfToken: LLMDEPLOY_HF_TOKEN; basicAuthPasswords: LLMDEPLOY_BASIC_AUTH_PASSWORDS;
`pulumi up` on a local stack passes them so), the API keys are generated or given as JSON {name: key} in
LLMDEPLOY_LOCAL_API_KEYS. All are delivered over SSH as soon as the VM's sshd lets the admin user in, while
the VM provisions. With an hfToken and a model this machine serves, the model server stands in for Hugging
Face: the stack's hfEndpoint points at it, and it refuses downloads without that bearer token:
  read -rs LLMDEPLOY_HF_TOKEN && export LLMDEPLOY_HF_TOKEN && llmdeploy local up

example:
  llmdeploy local up --stack local --model-file ~/models/qwen2.5-0.5b-instruct-q4_k_m.gguf
"""


def _example(text: str) -> dict[str, Any]:
    """A subcommand's --help ending in an example."""
    return {"epilog": f"example:\n  {text}", "formatter_class": argparse.RawDescriptionHelpFormatter}


def _project_dir(arg: str | None) -> Path:
    return find_project_dir(arg)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (pulumi cancel, a test's timeout): clean up as for Ctrl-C


def cmd_up(args: argparse.Namespace) -> int:
    from . import lifecycle

    signal.signal(signal.SIGTERM, _interrupt)
    opts = lifecycle.UpOptions(stack=args.stack, project_dir=_project_dir(args.project_dir), accel=args.accel,
                               runtime=args.runtime, model_file=args.model_file, forward=list(args.forward or []),
                               keep_on_failure=args.keep_on_failure, torch_wheels=list(args.torch_wheels or []),
                               config_from_env=args.config_from_env, baked=args.baked,
                               max_baked_age_days=args.max_baked_age_days)
    lifecycle.local_up(opts)
    return EXIT_OK


def cmd_local_status(args: argparse.Namespace) -> int:
    from . import vmstatus

    return vmstatus.status(args.stack)


def cmd_down(args: argparse.Namespace) -> int:
    from . import lifecycle

    lifecycle.down(args.stack)
    return EXIT_OK


def _ssh_argv(state: Any, command: list[str], tty: bool) -> list[str]:
    if shutil.which("ssh") is None:
        raise LocalError("the ssh client is not installed: apt-get install openssh-client")
    argv = ["ssh", "-i", str(state.ssh_key), "-p", str(state.port(22)), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={state.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR"]
    if tty:
        argv.append("-t")
    return argv + [f"{state.admin_user}@127.0.0.1", *command]


def cmd_ssh(args: argparse.Namespace) -> int:
    from . import vmstatus

    state = vmstatus.require_running(args.stack)
    command = [c for c in args.command if c != "--"] if args.command else []
    argv = _ssh_argv(state, command, tty=False)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return EXIT_FAILED  # not reached


def cmd_logs(args: argparse.Namespace) -> int:
    """The serial console is this machine's; everything else is read inside the guest by the code that reads a
    cloud VM's logs (operate.logs), over the pinned login."""
    from ..operate import logs
    from ..operate.access import read_facts
    from . import guestlogin, vmstatus

    logs.require_lines(args)
    if args.serial:
        state = vmstatus.require_state(args.stack)
        text = state.serial_log.read_text(errors="replace") if state.serial_log.exists() else ""
        print("\n".join(text.splitlines()[-args.lines:]))
        return EXIT_OK
    where = f"the local VM of stack '{args.stack}'"
    session = guestlogin.login(vmstatus.require_running(args.stack))
    try:
        return logs.show(session, logs.log_command(args, read_facts(session, where)), args.follow, where)
    finally:
        session.close()


def cmd_image(args: argparse.Namespace) -> int:
    from . import image

    if args.rebuild:
        found = image.cached_image()
        if found is not None:
            image.remove_tree(found.folder)
    img, built = image.ensure_image()
    manifest = img.manifest
    print(f"{'built' if built else 'cached'}: {img.folder} (Debian {manifest.get('suite')}, kernel "
          f"{manifest.get('kernel')}, built {manifest.get('built')} in {manifest.get('build_seconds')}s)")
    return EXIT_OK


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `local` to the llmdeploy command."""
    p = subparsers.add_parser("local", help="the whole stack in a QEMU VM (or a systemd container) on this machine, smoke-tested",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command_name="local")
    sub = p.add_subparsers(dest="local_command", required=True, metavar="{up,status,ssh,logs,down,image}")
    stack = argparse.ArgumentParser(add_help=False)
    stack.add_argument("--stack", type=stack_arg, default=DEFAULT_STACK, help=f"stack with target local (default: {DEFAULT_STACK})")

    up = sub.add_parser("up", parents=[stack], help="build (once), boot, provision, smoke-test; print endpoint and key",
                        description="Build the image (once), boot, provision, smoke-test; print the endpoint and key.",
                        epilog=UP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--project-dir", help="folder holding Pulumi.yaml (default: the nearest at or above here)")
    up.add_argument("--runtime", choices=(AUTO, *RUNTIMES), default=AUTO,
                    help="auto (default): QEMU with KVM where a probe boot shows KVM works, else the systemd "
                         "container when root with systemd-nspawn, else QEMU under TCG (slow); qemu: a VM with its "
                         "own kernel, firewall and reboot; nspawn: a systemd container booting the same image and "
                         "user-data at native speed (root; no own kernel)")
    up.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="QEMU only: auto (default) uses KVM only if a probe boot works, else TCG; kvm or tcg with "
                         "--runtime auto picks QEMU")
    up.add_argument("--model-file", metavar="PATH", help="a GGUF file on this machine to serve to the VM")
    up.add_argument("--forward", type=int, action="append", metavar="PORT",
                    help="also forward this guest port to a loopback port (22, 80 and 443 always are)")
    up.add_argument("--torch-wheels", action="append", metavar="DIR",
                    help="a folder of CPU torch wheels served to the guest as its torchIndexUrl (default: the "
                         "folders of pip's find-links holding one)")
    baked = up.add_mutually_exclusive_group()
    baked.add_argument("--no-baked", dest="baked", action="store_const", const="no", default="auto",
                       help="boot the base image even if `llmdeploy bake` made one of this stack's install (the "
                            "default boots a matching bake, and says so)")
    baked.add_argument("--baked", dest="baked", action="store_const", const="require",
                       help="boot a bake of this stack's install, or refuse (exit 2) when none matches or it is too "
                            "old")
    up.add_argument("--max-baked-age-days", type=float, default=DEFAULT_MAX_AGE_DAYS, metavar="DAYS",
                    help=f"a bake older than this is not booted (default {DEFAULT_MAX_AGE_DAYS}): its packages lack "
                         "the security updates since; see docs/baking.md")
    up.add_argument("--keep-on-failure", action="store_true", help="leave a failed VM running for inspection")
    up.add_argument("--config-from-env", action="store_true",
                    help="take the stack's config from the environment as `pulumi up` passes it (non-secret values as "
                         "JSON in LLMDEPLOY_STACK_CONFIG, secrets as LLMDEPLOY_<KEY>) instead of Pulumi.<stack>.yaml")
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("status", parents=[stack], help="is the VM up: ports, processes, stages",
                        description="Is the VM up: ports, processes, stages.", **_example("llmdeploy local status"))
    st.set_defaults(func=cmd_local_status)

    sh = sub.add_parser("ssh", parents=[stack], help="log in as the admin user (or run a command)",
                        description="Log in as the admin user (or run a command).",
                        **_example("llmdeploy local ssh -- sudo systemctl status nginx"))
    sh.add_argument("command", nargs=argparse.REMAINDER, help="command to run instead of a shell")
    sh.set_defaults(func=cmd_ssh)

    lg = sub.add_parser("logs", parents=[stack], help="cloud-init's output, a step's log, or the serial console",
                        description="Cloud-init's output, a step's log, or the serial console.",
                        **_example("llmdeploy local logs --step 40-engine -n 50"))
    which = add_which(lg)
    which.add_argument("--serial", action="store_true", help="the VM's serial console, or the container's console (kept on this machine)")
    lg.set_defaults(func=cmd_logs)

    dn = sub.add_parser("down", parents=[stack], help="stop the VM and its servers by PID, remove its disk",
                        description="Stop the VM and its servers by PID, remove its disk.",
                        **_example("llmdeploy local down --stack local"))
    dn.set_defaults(func=cmd_down)

    im = sub.add_parser("image", help="build the cached Debian 12 image now (needs root), or show it",
                        description="Build the cached Debian 12 image now (needs root), or show it.",
                        **_example("sudo llmdeploy local image --rebuild"))
    im.add_argument("--rebuild", action="store_true", help="build it again")
    im.set_defaults(func=cmd_image)
    return p
