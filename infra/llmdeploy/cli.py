"""The `llmdeploy` command: render and validate a stack's user-data offline (render, validate), prove an
endpoint works (smoke), run a workshop, run the stack on this machine (local), and find and delete expired
cloud resources (reap: the one command that deletes in the cloud, and only with --delete).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

# Only what building the parser needs is imported here; each command imports its own modules when it runs, so
# `llmdeploy --help` does not load requests, paramiko, invoke or cryptography (test_cli_first_minutes.py).
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LlmdeployError
from .bake import cli as bake_cli
from .local import cli as local_cli
from .projectdir import find_project_dir, stack_arg
from .smoke import cli as smoke_cli
from .operate import logs as logs_cli, status as status_cli, usage as usage_cli
from .workshop import cli as workshop_cli

if TYPE_CHECKING:
    from .config import StackConfig

EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE (`llmdeploy ... | head`)

EPILOG = """\
examples:
  llmdeploy validate --stack ollama-a10          # in the folder of Pulumi.yaml (or below it)
  llmdeploy render --stack ollama-a10 --out /tmp/ud
  LLMDEPLOY_API_KEY=... llmdeploy smoke https://llm.example.com
  llmdeploy local up
  llmdeploy COMMAND --help                       # each command's options and examples
"""


def _project_dir(arg: str | None) -> Path:
    return find_project_dir(arg)


def _endpoints(root: Path, stack: str) -> list[tuple[str, StackConfig]]:
    """The stack's endpoints as (name, config): one unnamed for a plain stack; for a workshop, each attendee's
    VM (dedicated) or each shared endpoint, built by the same code the Pulumi program runs."""
    from .config import parse
    from .declared import declarations
    from .endpoints import plan_endpoints
    from .roster import RosterError, read_roster
    from .stack_yaml import StackFileError, read_stack

    raw = read_stack(root, stack)
    cfg = parse(raw, stack=stack, decls=declarations(root))
    if not cfg.workshop.roster:
        return [("", cfg)]
    try:
        plans = plan_endpoints(cfg, read_roster(root / cfg.workshop.roster))
    except (RosterError, ValueError) as exc:
        raise StackFileError(f"stack '{stack}': {exc}") from None
    return [(plan.key, plan.cfg) for plan in plans]


def cmd_render(args: argparse.Namespace) -> int:
    from . import outfolder, render as rendering

    root = _project_dir(args.project_dir)
    endpoints = _endpoints(root, args.stack)
    # Default: the project's own build/ folder (the project found from here, never the checkout llmdeploy runs
    # from), next to its Pulumi.yaml, where a user looks for it and .gitignore usually covers it.
    out = Path(args.out) if args.out else root / "build" / args.stack
    # Every endpoint renders before the first file is written: a config that fails leaves no output behind.
    rendered = [(rendering.machine_name(name, node_name), cfg, rendering.render(cfg, node=node))
                for name, cfg in endpoints for node_name, node in rendering.named_nodes(cfg)]
    removed = outfolder.clear_previous(out, given=bool(args.out))
    everything: list[Path] = []
    for name, cfg, result in rendered:
        folder = out / name if name else out
        written = result.write(folder)
        everything += written
        print(f"rendered {_title(args.stack, name)} ({cfg.engine}, {cfg.model_name}, {cfg.shape.name}) to "
              f"{folder}: user-data, bundle.tar.gz (sha256 {result.bundle_digest[:12]}) and {len(written) - 2} files")
        _size_note(cfg)
    outfolder.write_manifest(out, everything)
    stale = removed - {str(p.relative_to(out)) for p in everything}
    if stale:
        print(f"removed {len(stale)} file(s) an earlier render had left in {out} that this one does not write; it "
              f"holds this render's {len(everything)} files now (listed in {out / outfolder.MANIFEST})")
    return EXIT_OK


def _size_note(cfg: StackConfig) -> None:
    """A model whose size is unknown passes, but the user must know that its fit was not checked."""
    if not cfg.params_billions and not cfg.deployment.local_vm:
        print(f"note: the size of {cfg.model_name} is unknown (no modelParamsBillions, none in its name): whether it "
              f"fits {cfg.shape.name} was not checked; pulumi config set modelParamsBillions N to check it")


def _title(stack: str, endpoint: str) -> str:
    return f"stack '{stack}'" + (f", endpoint '{endpoint}'" if endpoint else "")


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import NAME_WIDTH, run_endpoints

    root = _project_dir(args.project_dir)
    failures = 0
    for report in run_endpoints(_endpoints(root, args.stack)):
        name, cfg, checks = report.name, report.cfg, report.checks
        print(f"PASS  {'config':<{NAME_WIDTH}} {0:6.2f}s  {_title(args.stack, name)}: {cfg.engine}, "
              f"{cfg.model_name}, {cfg.shape.name}")
        _size_note(cfg)
        for check in checks:
            print(check.line(NAME_WIDTH))
        failed = [c for c in checks if not c.ok]
        for check in failed:
            print(f"\n{check.name}:\n{check.detail}", file=sys.stderr)
        print(f"\n{len(checks) + 1 - len(failed)} passed, {len(failed)} failed\n")
        failures += len(failed)
    return EXIT_FAILED if failures else EXIT_OK


def cmd_config_table(args: argparse.Namespace) -> int:
    from .docs import config_table, update_doc

    root = _project_dir(args.project_dir)
    if args.update_readme:
        path, changed = update_doc(root, "config")
        print(f"{path} {'updated' if changed else 'already up to date'}")
    else:
        print(config_table(root))
    return EXIT_OK


def cmd_route_table(args: argparse.Namespace) -> int:
    from .docs import route_table, update_doc

    if args.update_readme:
        path, changed = update_doc(_project_dir(args.project_dir), "routes")
        print(f"{path} {'updated' if changed else 'already up to date'}")
    else:
        print(route_table())
    return EXIT_OK


class _Version(argparse.Action):
    """--version: the installed package's version, else the checkout's pyproject.toml (PYTHONPATH=infra)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from importlib import metadata

        try:
            version = metadata.version("llmdeploy")
        except metadata.PackageNotFoundError:
            import tomllib

            pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
            version = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
        print(f"llmdeploy {version}")
        parser.exit()


def _command(sub: Any, name: str, help: str, example: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with its one-line description and ends with an example."""
    description = textwrap.fill(help[0].upper() + help[1:] + ".", width=100)  # the formatter keeps lines as given
    return sub.add_parser(name, help=help, description=description,
                          epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter,
                          **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmdeploy", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, nargs=0, help="print llmdeploy's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", type=stack_arg, required=True,
                        help="stack name: reads Pulumi.yaml and Pulumi.STACK.yaml (Pulumi.STACK.yaml itself is "
                        "accepted too)")
    common.add_argument("--project-dir", help="folder holding Pulumi.yaml (default: the nearest at or above here)")
    p_render = _command(sub, "render", "write user-data, the provisioning bundle and every rendered file, offline",
                        "llmdeploy render --stack ollama-a10 --out /tmp/ollama-a10", parents=[common])
    p_render.add_argument("--out", help="output folder (default: build/STACK in the project folder); a folder "
                          "an earlier render wrote is cleared of that render's files first")
    p_render.set_defaults(func=cmd_render)
    p_validate = _command(sub, "validate", "render, then run cloud-init schema, shellcheck, nginx -t and "
                          "systemd-analyze verify, offline", "llmdeploy validate --stack ollama-a10",
                          parents=[common])
    p_validate.set_defaults(func=cmd_validate)
    p_table = _command(sub, "config-table", "print the configuration table from Pulumi.yaml",
                       "llmdeploy config-table --update-docs")
    p_table.add_argument("--project-dir", help="folder holding Pulumi.yaml")
    p_table.add_argument("--update-docs", "--update-readme", dest="update_readme", action="store_true",
                         help="rewrite the table in docs/configuration.md")
    p_table.set_defaults(func=cmd_config_table)
    p_routes = _command(sub, "route-table", "print which routes an ordinary and an admin key reach, per engine",
                        "llmdeploy route-table --update-docs")
    p_routes.add_argument("--project-dir", help="folder holding docs/security.md")
    p_routes.add_argument("--update-docs", "--update-readme", dest="update_readme", action="store_true",
                          help="rewrite the table in docs/security.md")
    p_routes.set_defaults(func=cmd_route_table)
    smoke_cli.register(sub)
    workshop_cli.register(sub)
    local_cli.register(sub)
    bake_cli.register(sub)
    status_cli.register(sub)
    logs_cli.register(sub)
    usage_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every error llmdeploy raises is caught here, once: its message is printed after the
    command's name (`llmdeploy workshop plan: ...`), never a traceback, and its exit code returned."""
    try:
        try:
            args = build_parser().parse_args(argv)
        finally:
            sys.stdout.flush()  # --help's text: here, not at exit, so that a closed pipe is handled below
    except BrokenPipeError:  # `llmdeploy --help | head -1`
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    name = getattr(args, "command_name", "")  # set by the sub-CLIs: "smoke", "local", "workshop plan"...
    prog = f"llmdeploy {name}" if name else "llmdeploy"
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is handled below
        return code
    except LlmdeployError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `llmdeploy ... | head`: the reader has all it wanted; say nothing, as Unix tools do
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:  # a path the user gave is blocked
        print(f"{prog}: {exc.strerror or exc}: {exc.filename or ''}: a file or folder is in the way of one "
              "llmdeploy must create; choose another path, or move it away", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{prog}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM where a command turns it into one (`local up`)
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit does not fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
