"""The `llmdeploy` command: render and validate a stack's user-data without touching any cloud."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .config import StackConfig, parse
from .declared import PROJECT_ROOT, declarations
from .docs import config_table, route_table, update_doc
from .endpoints import plan_endpoints
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, LlmdeployError
from .local import cli as local_cli
from .render import machine_name, nodes, render
from .roster import RosterError, read_roster
from .smoke import cli as smoke_cli
from .stackfile import StackFileError, read_stack
from .validate import NAME_WIDTH, run_endpoints
from .workshop import cli as workshop_cli


def _project_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    cwd = Path.cwd()
    return cwd if (cwd / "Pulumi.yaml").is_file() else PROJECT_ROOT


def _endpoints(root: Path, stack: str) -> list[tuple[str, StackConfig]]:
    """The stack's endpoints as (name, config): one unnamed for a plain stack; for a workshop, each attendee's
    VM (dedicated) or each shared endpoint, built by the same code the Pulumi program runs."""
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
    root = _project_dir(args.project_dir)
    endpoints = _endpoints(root, args.stack)
    out = Path(args.out) if args.out else root / "build" / args.stack
    # Every endpoint renders before the first file is written: a config that fails leaves no output behind.
    rendered = [(machine_name(name, node), cfg, render(cfg) if worker is None else render(cfg, worker=worker))
                for name, cfg in endpoints for node, worker in nodes(cfg)]
    for name, cfg, result in rendered:
        folder = out / name if name else out
        written = result.write(folder)
        print(f"rendered {_title(args.stack, name)} ({cfg.engine}, {cfg.model_name}, {cfg.shape.name}) to "
              f"{folder}: user-data and {len(written) - 1} files")
    return EXIT_OK


def _title(stack: str, endpoint: str) -> str:
    return f"stack '{stack}'" + (f", endpoint '{endpoint}'" if endpoint else "")


def cmd_validate(args: argparse.Namespace) -> int:
    root = _project_dir(args.project_dir)
    failures = 0
    for report in run_endpoints(_endpoints(root, args.stack)):
        name, cfg, checks = report.name, report.cfg, report.checks
        print(f"PASS  {'config':<{NAME_WIDTH}} {0:6.2f}s  {_title(args.stack, name)}: {cfg.engine}, "
              f"{cfg.model_name}, {cfg.shape.name}")
        for check in checks:
            print(check.line(NAME_WIDTH))
        failed = [c for c in checks if not c.ok]
        for check in failed:
            print(f"\n{check.name}:\n{check.detail}", file=sys.stderr)
        print(f"\n{len(checks) + 1 - len(failed)} passed, {len(failed)} failed\n")
        failures += len(failed)
    return EXIT_FAILED if failures else EXIT_OK


def cmd_config_table(args: argparse.Namespace) -> int:
    root = _project_dir(args.project_dir)
    if args.update_readme:
        path, changed = update_doc(root, "config")
        print(f"{path} {'updated' if changed else 'already up to date'}")
    else:
        print(config_table(root))
    return EXIT_OK


def cmd_route_table(args: argparse.Namespace) -> int:
    if args.update_readme:
        path, changed = update_doc(_project_dir(args.project_dir), "routes")
        print(f"{path} {'updated' if changed else 'already up to date'}")
    else:
        print(route_table())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmdeploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", required=True, help="stack name: reads Pulumi.yaml and Pulumi.STACK.yaml")
    common.add_argument("--project-dir", help="folder holding Pulumi.yaml (default: here, else the checkout)")
    p_render = sub.add_parser("render", parents=[common], help="write user-data and every rendered file")
    p_render.add_argument("--out", help="output folder (default: build/STACK)")
    p_render.set_defaults(func=cmd_render)
    p_validate = sub.add_parser("validate", parents=[common],
                                help="render, then run cloud-init schema, shellcheck, nginx -t and "
                                "systemd-analyze verify")
    p_validate.set_defaults(func=cmd_validate)
    p_table = sub.add_parser("config-table", help="print the configuration table from Pulumi.yaml")
    p_table.add_argument("--project-dir", help="folder holding Pulumi.yaml")
    p_table.add_argument("--update-docs", "--update-readme", dest="update_readme", action="store_true",
                         help="rewrite the table in docs/configuration.md")
    p_table.set_defaults(func=cmd_config_table)
    p_routes = sub.add_parser("route-table", help="print which routes an ordinary and an admin key reach, per engine")
    p_routes.add_argument("--project-dir", help="folder holding docs/security.md")
    p_routes.add_argument("--update-docs", "--update-readme", dest="update_readme", action="store_true",
                          help="rewrite the table in docs/security.md")
    p_routes.set_defaults(func=cmd_route_table)
    smoke_cli.register(sub)
    workshop_cli.register(sub)
    local_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every error llmdeploy raises is caught here, once: its message is printed after the
    command's name (`llmdeploy workshop plan: ...`), never a traceback, and its exit code returned."""
    args = build_parser().parse_args(argv)
    name = getattr(args, "command_name", "")  # set by the sub-CLIs: "smoke", "local", "workshop plan"...
    prog = f"llmdeploy {name}" if name else "llmdeploy"
    try:
        return int(args.func(args))
    except LlmdeployError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"{prog}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM where a command turns it into one (`local up`)
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
