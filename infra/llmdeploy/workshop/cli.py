"""`llmdeploy workshop ...` (plan, handouts, status, usage, rotate, revoke, teardown) and `llmdeploy reap`.

Exit codes: 0 when everything worked, 1 when something ran and failed (a plan that cannot work, an endpoint
whose smoke test failed, pulumi failing, resources left after teardown, expired resources not deleted), 2 for
bad input or a missing tool, always as a message naming the problem and the fix, never a traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_FAILED, EXIT_OK, Failure, UsageError
from ..projectdir import find_project_dir, stack_arg

# Each command imports what it uses when it runs: the smoke checks, handouts and status pull in requests,
# paramiko and weasyprint, and the config readers yaml and jinja2, none of which `llmdeploy --help` needs.
if TYPE_CHECKING:
    from .attendee_outputs import AttendeeOutput

# Endpoints smoke-tested at once by `workshop status`: scripts/bench_workshop_smoke.py measured 32 as the fastest
# for 200 endpoints on 2 cores (64 was no faster and starved the stream timing checks).
STATUS_CONCURRENCY = 32
# VMs whose usage log is read at once: each is one SSH login and one small read.
USAGE_CONCURRENCY = 16
OFFLINE_HINT = "; or plan without OCI: --limits FILE, or --offline"


def _stack_name(stack: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack):
        raise UsageError(f"stack name '{stack}' may hold only letters, digits, '_', '.' and '-'")
    return stack


def _root(args: argparse.Namespace) -> Path:
    return find_project_dir(args.project_dir)


def _folder_of(option: str, path: str | None) -> None:
    if path and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {Path(path).resolve().parent} does not exist; create it")


# --- plan -------------------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from .access import plans_for
    from .limits import FileLimits, LimitsSource, OciLimits
    from .oci_clients import load_config
    from .plan import build
    from .loaded_stack import load

    if args.le_issued < 0:
        raise UsageError("--le-issued must be 0 or more (certificates already issued this week)")
    ws = load(_root(args), _stack_name(args.stack))
    attendees = ws.attendees()
    endpoints = plans_for(ws, attendees)
    source: LimitsSource | None = None
    reason = ""
    if args.limits:
        source = FileLimits(Path(args.limits))
    elif args.offline:
        reason = "--offline"
    else:
        config = load_config(args.oci_config, args.oci_profile, hint=OFFLINE_HINT)
        source = OciLimits(config, ws.cfg.compartment_id)
    print(f"workshop plan: stack '{ws.stack}', roster {ws.roster_path}, limits from "
          f"{source.description if source else 'nowhere (' + reason + ')'}")
    plan = build(ws.cfg, attendees, endpoints, source, reason, args.le_issued)
    for line in plan.lines():
        print(line)
    print("\n" + plan.summary())
    return EXIT_FAILED if plan.failed else EXIT_OK


# --- outputs: handouts and status ---------------------------------------------------------------------------


def _attendees(args: argparse.Namespace, root: Path) -> list[AttendeeOutput]:
    from .attendee_outputs import attendee_outputs, load_outputs

    outputs, source = load_outputs(root, args.stack, args.outputs)
    return attendee_outputs(outputs, source)


def _status_path(args: argparse.Namespace, root: Path) -> Path:
    from .status import default_status_path

    return Path(args.status_file) if args.status_file else default_status_path(root, args.stack)


def _handed_out(given: list[AttendeeOutput], root: Path, stack: str) -> list[AttendeeOutput]:
    """The attendees to give a handout: every one the roster lists as active. An id the roster does not list is
    refused (an outputs file of another stack, or of a roster since edited); a revoked one is left out, and said."""
    from .loaded_stack import load

    roster = {a.id: a for a in load(root, stack).attendees()}
    strangers = [a.id for a in given if a.id not in roster]
    if strangers:
        raise UsageError(f"the outputs hold attendee(s) the roster does not list: {', '.join(strangers)}; no handout "
                         f"was written. Run `pulumi up --stack {stack}` after editing the roster (it removes their "
                         "keys), or pass the --outputs file of this stack")
    revoked = [a.id for a in given if roster[a.id].revoked]
    if revoked:
        print(f"not handed out: {', '.join(revoked)} (revoked in the roster; `pulumi up --stack {stack}` removes "
              "their key if it still works)", file=sys.stderr)
    return [a for a in given if not roster[a.id].revoked]


def cmd_handouts(args: argparse.Namespace) -> int:
    from .handouts import write_handouts
    from .status import read_status, stack_acme_trust, stack_engine

    root = _root(args)
    _stack_name(args.stack)
    attendees = _handed_out(_attendees(args, root), root, args.stack)
    acme_trust = stack_acme_trust(root, args.stack)
    status_path = _status_path(args, root)
    status = read_status(status_path)
    out = Path(args.out) if args.out else root / "build" / "workshop" / args.stack / "handouts"
    written = write_handouts(attendees, out, args.stack, status, title=args.title or "", acme_trust=acme_trust,
                             engine=stack_engine(root, args.stack))
    checked = sum(1 for a in attendees if (status.get(a.id) or {}).get("lastRun"))
    print(f"wrote {len(attendees)} handout(s) to {written.folder} (folder 0700, files 0600: they hold the keys):")
    print(f"  handouts.pdf      {len(attendees)} page(s), one per attendee, for printing")
    print("  <id>.pdf, <id>.html  one attendee each, to send them" +
          (f"; {len(written.ca_files)} with their endpoint's CA as <id>-ca.pem" if written.ca_files else ""))
    print("  attendees.csv     the instructor's list (no keys)")
    if checked < len(attendees):
        print(f"note: {len(attendees) - checked} attendee(s) have no smoke result in {status_path}; run `llmdeploy "
              f"workshop status --stack {args.stack}` first and the handouts say when each endpoint last passed",
              file=sys.stderr)
    return EXIT_OK


def cmd_workshop_status(args: argparse.Namespace) -> int:
    from ..smoke.report import SmokeProgress, check_line, summary_table, to_json, totals_line, write_text
    from ..smoke.runner import run_targets
    from .status import redactor, stack_acme_trust, targets, update_status_file

    root = _root(args)
    _stack_name(args.stack)
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    _folder_of("--json", args.json)
    attendees = _attendees(args, root)
    acme_trust = stack_acme_trust(root, args.stack)  # a test ACME directory's roots (llmdeploy/acme_roots.py)
    red = redactor(attendees)
    with tempfile.TemporaryDirectory(prefix="llmdeploy-status-") as ca_dir:
        checks = targets(attendees, Path(ca_dir), args.timeout, acme_trust)
        print(f"workshop status: {len(checks)} attendee endpoint(s) of stack '{args.stack}', {args.concurrency} at a "
              "time", flush=True)
        progress = SmokeProgress(len(checks), sys.stderr, red)
        progress.start()
        reports = run_targets(checks, args.concurrency, on_done=progress.advance)
        progress.finish()
    for report in reports:
        if not report.passed:
            print(red.text(f"\n== {report.target.name}  {report.target.url}"))
            for result in report.results:
                if not result.ok:
                    print(check_line(result, red))
    print("\n" + summary_table(reports, red))
    print("\n" + totals_line(reports))
    status_path = _status_path(args, root)
    update_status_file(status_path, args.stack, reports, red)
    passed = sum(1 for r in reports if r.passed)
    print(f"{passed} of {len(reports)} attendee endpoint(s) passed; recorded in {status_path}")
    if args.json:
        write_text(args.json, to_json(reports, red))
    return EXIT_OK if passed == len(reports) else EXIT_FAILED


def cmd_workshop_usage(args: argparse.Namespace) -> int:
    from ..operate import cloud_access, known_hosts
    from ..operate.usage import read_log
    from ..operate.usage_report import parse_window
    from . import pulumi_cli
    from .access import plans_for
    from .attendee_outputs import read_outputs_file
    from .loaded_stack import load
    from .usage import UNREACHABLE, endpoint_vms, read_logs, report, table

    window = parse_window(args.since)  # bad input is refused before any login
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if not 0 < args.ssh_port < 65536:
        raise UsageError(f"--ssh-port {args.ssh_port}: expected a number from 1 to 65535")
    root = _root(args)
    ws = load(root, _stack_name(args.stack))
    plans = plans_for(ws, ws.attendees())
    outputs = read_outputs_file(Path(args.outputs)) if args.outputs else \
        pulumi_cli.stack_outputs(root, ws.stack, show_secrets=False)  # where the VMs are is no secret
    vms = endpoint_vms(plans, outputs, args.ssh_port, f"outputs file {args.outputs}" if args.outputs else
                       f"stack '{ws.stack}'")
    with cloud_access.private_key_file(root, ws.stack, args.ssh_key) as key_file:
        logs = read_logs(vms, lambda t: known_hosts.login(t.host, t.port, t.user, key_file, known_hosts.default_file()),
                         read_log, args.concurrency)
    found = report(vms, logs, window)
    print(found.as_json() if args.json else table(found))
    return EXIT_FAILED if found.count(UNREACHABLE) else EXIT_OK


# --- rotate and revoke --------------------------------------------------------------------------------------


def cmd_rotate(args: argparse.Namespace) -> int:
    from . import pulumi_cli
    from .access import find_urn, key_resource_name
    from .loaded_stack import load

    root = _root(args)
    ws = load(root, _stack_name(args.stack))
    name = key_resource_name(ws, args.attendee)
    urn = find_urn(pulumi_cli.stack_export(root, ws.stack), name, ws.stack)
    print(f"rotating the key of attendee '{args.attendee}': replacing {name}")
    code = pulumi_cli.pulumi_up(root, ws.stack, replace=[urn])
    if code != 0:
        print(f"llmdeploy workshop rotate: pulumi up exited with {code}; the old key may still be in place (see "
              "pulumi's output above), run the same command again once the cause is fixed", file=sys.stderr)
        return EXIT_FAILED
    print(f"attendee '{args.attendee}' has a new key; the old one no longer works. Give them a new handout: "
          f"llmdeploy workshop handouts --stack {ws.stack}")
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    from ..roster import set_status
    from . import pulumi_cli
    from .access import find_attendee
    from .loaded_stack import load

    root = _root(args)
    ws = load(root, _stack_name(args.stack))
    attendee = find_attendee(ws.attendees(), args.attendee, ws)
    if not args.no_up:
        pulumi_cli.binary()  # before the roster changes: a revoke must not stop half-way for a missing tool
    changed = set_status(ws.roster_path, attendee.id, "revoked")
    print(f"attendee '{attendee.id}' {'marked revoked' if changed else 'was already revoked'} in {ws.roster_path} "
          "(the row stays, so nobody else's endpoint moves)")
    if args.no_up:
        print(f"not applied yet: run `pulumi up --stack {ws.stack}` to remove their key (or endpoint)")
        return EXIT_OK
    code = pulumi_cli.pulumi_up(root, ws.stack)
    if code != 0:
        print(f"llmdeploy workshop revoke: pulumi up exited with {code}; the roster says revoked but the key may "
              "still work until `pulumi up` succeeds", file=sys.stderr)
        return EXIT_FAILED
    print(f"attendee '{attendee.id}' is revoked: their key (and, dedicated, their VM) is gone")
    return EXIT_OK


# --- teardown and reap ----------------------------------------------------------------------------------


def _confirm(stack: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(f"teardown destroys every resource of stack '{stack}': pass --yes to confirm (stdin is "
                         "not a terminal, so it cannot ask)")
    answer = input(f"Destroy every resource of stack '{stack}'? Type the stack name to confirm: ").strip()
    if answer != stack:
        raise Failure("not confirmed; nothing was destroyed")


def cmd_teardown(args: argparse.Namespace) -> int:
    from . import pulumi_cli
    from .oci_clients import load_config
    from .loaded_stack import load
    from .teardown import DNS_NOTE, remaining_after_destroy

    root = _root(args)
    ws = load(root, _stack_name(args.stack), require_workshop=False)
    if args.wait < 0:
        raise UsageError("--wait must be 0 or more seconds")
    config = load_config(args.oci_config, args.oci_profile)  # before destroying: the check afterwards needs it
    destroyed = True
    if not args.verify_only:
        pulumi_cli.binary()
        if not args.yes:
            _confirm(ws.stack)
        code = pulumi_cli.pulumi_destroy(root, ws.stack)
        destroyed = code == 0
        if not destroyed:
            print(f"pulumi destroy exited with {code}; checking what is left anyway", file=sys.stderr)
    print(f"searching OCI for resources tagged stack={ws.stack}, project={ws.project}, managed-by=llmdeploy ...",
          flush=True)
    left = remaining_after_destroy(config, ws.project, ws.stack, args.wait, lambda m: print(m, flush=True))
    if left:
        print(f"FAIL  {len(left)} resource(s) of stack '{ws.stack}' are still there:")
        for found in left:
            print(found.line())
        print("Delete them in the OCI console, or run this teardown again (it destroys and checks again); once past "
              "their expires-at tag, `llmdeploy reap --expired --delete` deletes them too.")
        return EXIT_FAILED
    print(f"PASS  OCI Search lists no resource of stack '{ws.stack}' (project {ws.project}) that is not TERMINATED "
          "or DELETED")
    print(f"note: {DNS_NOTE}")
    return EXIT_OK if destroyed else EXIT_FAILED


def cmd_reap(args: argparse.Namespace) -> int:
    from .oci_clients import load_config
    from .teardown import DNS_NOTE, delete_all, expired, managed_query, now_utc, search

    if args.yes:
        raise UsageError("reap --yes: deleting is --delete (elsewhere --yes only skips a confirmation, and reap asks "
                         "none): llmdeploy reap --expired --delete")
    if not args.expired:
        raise UsageError("say what to reap: --expired (resources whose expires-at tag is in the past); add --delete "
                         "to delete them")
    if args.compartment and not re.fullmatch(r"ocid1\.(compartment|tenancy)\.[a-z0-9._-]+", args.compartment):
        raise UsageError(f"--compartment {args.compartment}: expected a compartment OCID "
                         "(ocid1.compartment.oc1..xxxx)")
    if args.wait < 0:
        raise UsageError("--wait must be 0 or more seconds")
    config = load_config(args.oci_config, args.oci_profile)
    now = now_utc()
    where = f" in compartment {args.compartment}" if args.compartment else " in the tenancy (this region)"
    found = search(config, managed_query(args.compartment or ""))
    past, unreadable = expired(found, now)
    print(f"{len(found)} llmdeploy resource(s){where}; {len(past)} past their expires-at tag "
          f"(now {now:%Y-%m-%dT%H:%M:%SZ}):")
    for f in past:
        print(f.line())
    for f in unreadable:
        print(f"WARN  {f.kind} {f.id}: expires-at {f.expires_at!r} is not an ISO 8601 time with a zone; skipped")
    if not past:
        return EXIT_OK
    if not args.delete:
        print("nothing deleted: run again with --delete to delete them")
        return EXIT_FAILED
    outcomes = delete_all(config, past, args.wait, lambda m: print(m, flush=True))
    for outcome in outcomes:
        print(outcome.line())
    done = sum(1 for o in outcomes if o.status in ("DELETED", "TERMINATED"))
    print(f"{done} of {len(outcomes)} deleted")
    print(f"note: {DNS_NOTE}")
    return EXIT_OK if done == len(outcomes) else EXIT_FAILED


# --- registration -----------------------------------------------------------------------------------------


def _parser(sub: Any, name: str, help: str, example: str, description: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help starts with its one-line description and ends with an example."""
    text = textwrap.fill(description or help[0].upper() + help[1:] + ".", width=100)  # the formatter keeps lines
    return sub.add_parser(name, help=help, description=text,
                          epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", type=stack_arg, required=True, help="stack name (Pulumi.STACK.yaml)")
    parser.add_argument("--project-dir", help="folder holding Pulumi.yaml (default: the nearest at or above here)")


def _oci(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--oci-config", metavar="FILE", help="OCI config file (default: ~/.oci/config)")
    parser.add_argument("--oci-profile", metavar="NAME", help="profile in it (default: DEFAULT or $OCI_CLI_PROFILE)")


def _outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outputs", metavar="FILE", help="a saved `pulumi stack output --json --show-secrets` "
                        "(default: ask the Pulumi CLI)")
    parser.add_argument("--status-file", metavar="FILE", help="smoke results (default: "
                        "build/workshop/STACK/status.json)")


def register(subparsers: Any) -> None:
    """Add `workshop` (with its subcommands) and `reap` to the llmdeploy command."""
    ws = subparsers.add_parser("workshop", help="a roster in, an endpoint per attendee, handouts out, teardown",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog="example:\n  llmdeploy workshop plan --stack workshop-a10 --offline")
    sub = ws.add_subparsers(dest="workshop_command", required=True, metavar="COMMAND")

    p = _parser(sub, "plan", "before pulumi up: instances, GPUs, limits, Let's Encrypt budget, cost",
                "llmdeploy workshop plan --stack workshop-a10 --limits limits.yaml")
    _common(p)
    p.add_argument("--limits", metavar="FILE", help="tenancy limits from a YAML file instead of OCI's limits API")
    p.add_argument("--offline", action="store_true", help="do not call OCI (limits unchecked unless --limits)")
    p.add_argument("--le-issued", type=int, default=0, metavar="N",
                   help="certificates already issued for the registered domain in the last 7 days (crt.sh)")
    _oci(p)
    p.set_defaults(func=cmd_plan, command_name="workshop plan")

    p = _parser(sub, "handouts", "one page per active attendee (HTML and PDF) and a CSV for the instructor",
                "llmdeploy workshop handouts --stack workshop-a10 --title 'LLM workshop, 12 May'")
    _common(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: build/workshop/STACK/handouts)")
    p.add_argument("--title", help="heading on every page (default: 'LLM workshop (STACK)')")
    _outputs(p)
    p.set_defaults(func=cmd_handouts, command_name="workshop handouts")

    p = _parser(sub, "status", "smoke-test every attendee's endpoint in parallel; records the last pass",
                "llmdeploy workshop status --stack workshop-a10 --json status.json")
    _common(p)
    _outputs(p)
    p.add_argument("--concurrency", type=int, default=STATUS_CONCURRENCY, metavar="N",
                   help=f"endpoints checked at once (default: {STATUS_CONCURRENCY})")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds per request (default: 30)")
    p.add_argument("--json", metavar="FILE", help="write every result as JSON (keys redacted)")
    p.set_defaults(func=cmd_workshop_status, command_name="workshop status")

    p = _parser(sub, "usage", "per attendee: requests, refusals, time and bytes over a window; idle ones too",
                "llmdeploy workshop usage --stack workshop-a10 --since 2h")
    _common(p)
    p.add_argument("--since", default="24h", metavar="WINDOW", help="how far back: 30m, 24h (default), 7d, or all")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--outputs", metavar="FILE", help="a saved `pulumi stack output --json` (default: ask the "
                   "Pulumi CLI)")
    p.add_argument("--ssh-key", metavar="FILE", help="private key for the VMs (default: the stack's sshPrivateKey)")
    p.add_argument("--ssh-port", type=int, default=22, metavar="N", help="the VMs' SSH port (default: 22)")
    p.add_argument("--concurrency", type=int, default=USAGE_CONCURRENCY, metavar="N",
                   help=f"VMs read at once (default: {USAGE_CONCURRENCY})")
    p.set_defaults(func=cmd_workshop_usage, command_name="workshop usage")

    p = _parser(sub, "rotate", "give one attendee a new key (pulumi up --replace of their key)",
                "llmdeploy workshop rotate alice --stack workshop-a10")
    p.add_argument("attendee", metavar="ID", help="attendee id from the roster")
    _common(p)
    p.set_defaults(func=cmd_rotate, command_name="workshop rotate")

    p = _parser(sub, "revoke", "mark an attendee revoked in the roster, then pulumi up",
                "llmdeploy workshop revoke alice --stack workshop-a10")
    p.add_argument("attendee", metavar="ID", help="attendee id from the roster")
    _common(p)
    p.add_argument("--no-up", action="store_true", help="only edit the roster (run pulumi up yourself)")
    p.set_defaults(func=cmd_revoke, command_name="workshop revoke")

    p = _parser(sub, "teardown", "pulumi destroy, then prove via OCI Search that nothing tagged is left",
                "llmdeploy workshop teardown --stack workshop-a10 --yes")
    _common(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (as for every command)")
    p.add_argument("--verify-only", action="store_true", help="skip pulumi destroy; only search for leftovers")
    p.add_argument("--wait", type=float, default=120.0, metavar="S",
                   help="how long to keep asking Search while it catches up (default: 120)")
    _oci(p)
    p.set_defaults(func=cmd_teardown, command_name="workshop teardown")

    p = _parser(subparsers, "reap", "find (and with --delete, delete) cloud resources past their expires-at tag",
                "llmdeploy reap --expired            # list; then: llmdeploy reap --expired --delete",
                description="Search the tenancy for resources tagged managed-by=llmdeploy whose expires-at tag is "
                "in the past, even ones no Pulumi state knows; list them, and delete them only with --delete. Exit 0 "
                "when nothing expired is left, 1 otherwise.")
    p.add_argument("--expired", action="store_true", help="resources whose expires-at tag is in the past")
    p.add_argument("--delete", action="store_true", help="delete them (default: only list)")
    p.add_argument("--yes", action="store_true", help=argparse.SUPPRESS)  # refused with the fix: it was --delete
    p.add_argument("--compartment", metavar="OCID", help="only this compartment (default: the whole tenancy)")
    p.add_argument("--wait", type=float, default=600.0, metavar="S",
                   help="how long to wait for instances to terminate before deleting their network (default: 600)")
    _oci(p)
    p.set_defaults(func=cmd_reap, command_name="reap")
