"""`llmdeploy smoke`: prove that an endpoint works (TLS, auth on every route, models, chat, completions,
streams), optionally over SSH too, for one URL or for every endpoint of a targets file.

Exit codes: 0 when every check passed (warnings do not fail), 1 when a check failed, 2 for bad input
(named, with its fix). The API key is best given as $LLMDEPLOY_API_KEY: anything on a command line,
`--api-key` included, can be read by every user of the machine with `ps`.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from .dialects import KINDS
from .redact import Redactor
from .targets import (
    API_KEY_ENV,
    BASIC_PASSWORD_ENV,
    DEFAULT_CONCURRENCY,
    Target,
    TargetError,
    check_file,
    credentials_from,
    finish_target,
    load_targets,
    parse_ssh,
)

if TYPE_CHECKING:  # the checks (requests, paramiko) load when smoke runs, not for `llmdeploy --help`
    from .runner import TargetReport

EPILOG = f"""\
credentials: --api-key KEY, --basic USER:PASS, or ${API_KEY_ENV} (preferred: a command line is visible to
every user of the machine in `ps`; --basic USER takes the password from ${BASIC_PASSWORD_ENV}).
targets file (YAML or JSON): a list of {{url, name, kind, model, api_key | api_key_env | basic, ca_bundle,
http_url, timeout, ssh, ssh_key, ssh_host_key, chat_url}}; paths are relative to the file; command-line options
are the defaults. Exit 0 when every check passed (warnings do not fail), 1 when one failed, 2 for bad input.
A credential is never sent over plain http:// unless --allow-plain-http says so.

examples:
  LLMDEPLOY_API_KEY=... llmdeploy smoke https://llm.example.com
  llmdeploy smoke https://llm.example.com --ca-bundle build/ca.pem --model qwen2.5-0.5b-instruct --junit smoke.xml
  llmdeploy smoke --targets endpoints.yaml --concurrency 16
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `smoke` to the llmdeploy command."""
    p = subparsers.add_parser("smoke", help="prove an endpoint works: TLS, auth, models, chat, streams (and SSH)",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?", metavar="URL", help="the endpoint, e.g. https://llm.example.com")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--api-key", metavar="KEY", help=f"API key (Bearer); prefer ${API_KEY_ENV}, which `ps` cannot show")
    auth.add_argument("--basic", metavar="USER:PASS", help="basic-auth user and password")
    p.add_argument("--kind", choices=KINDS, default="openai", help="API dialect (default: openai)")
    p.add_argument("--model", metavar="NAME", help="model that must be listed and answer (default: the first listed)")
    p.add_argument("--allow-plain-http", action="store_true",
                   help="send the credential to an http:// URL anyway, unencrypted (only for a network you trust)")
    p.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to trust instead of the system store")
    p.add_argument("--http-url", metavar="URL", help="where plain HTTP must redirect from (default: http://HOST)")
    p.add_argument("--chat-url", metavar="URL", help="also check the chat frontend (chatUi): its sign-in page, a "
                   "wrong key refused, the API key's session reaching the frontend (e.g. https://chat.llm.example.com)")
    p.add_argument("--ssh", metavar="USER@HOST[:PORT]", help="also check the VM over SSH")
    p.add_argument("--ssh-key", metavar="FILE", help="private key for --ssh")
    p.add_argument("--ssh-host-key", metavar="KEY", help="pin the VM's host key (e.g. 'ssh-ed25519 AAAA...')")
    p.add_argument("--oci-config", metavar="FILE", help="oci-ds: OCI config file (default: ~/.oci/config)")
    p.add_argument("--oci-profile", metavar="NAME", help="oci-ds: profile in the OCI config file")
    p.add_argument("--instance-principal", action="store_true", help="oci-ds: sign as the instance (no config file)")
    p.add_argument("--targets", metavar="FILE", help="check every endpoint listed in FILE (YAML or JSON)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                   help=f"endpoints checked at once with --targets (default: {DEFAULT_CONCURRENCY})")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds per request (default: 30)")
    p.add_argument("--json", metavar="FILE", help="write every result as JSON")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testsuite per endpoint)")
    p.set_defaults(func=cmd_smoke, command_name="smoke")
    return p


def defaults_from(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    """The command line as a target: the URL's, or the defaults for every entry of a targets file."""
    oci = {"config_file": args.oci_config, "profile": args.oci_profile, "instance_principal": args.instance_principal}
    if args.oci_config:
        check_file(args.oci_config, "OCI config file")
    return Target(url=args.url or "", credentials=credentials_from(args.api_key, args.basic, env), kind=args.kind,
                  model=args.model, ca_bundle=args.ca_bundle, http_url=args.http_url, timeout=args.timeout, oci=oci,
                  chat_url=args.chat_url, allow_plain_http=args.allow_plain_http)


def targets_from(args: argparse.Namespace, env: Mapping[str, str]) -> list[Target]:
    """Every target to check, validated; TargetError on bad input."""
    if args.url and args.targets:
        raise TargetError("give either a URL or --targets FILE, not both")
    if not args.url and not args.targets:
        raise TargetError("no endpoint given: llmdeploy smoke URL (or --targets FILE); see llmdeploy smoke --help")
    if args.concurrency < 1:
        raise TargetError("--concurrency must be at least 1")
    for option, path in (("--json", args.json), ("--junit", args.junit)):
        if path and not Path(path).resolve().parent.is_dir():
            raise TargetError(f"{option} {path}: the folder {Path(path).resolve().parent} does not exist; create it")
    defaults = defaults_from(args, env)
    if args.targets:
        if args.ssh:
            raise TargetError("--ssh applies to one URL; in a targets file give each entry ssh: and ssh_key:")
        if args.chat_url:
            raise TargetError("--chat-url applies to one URL; in a targets file give each entry chat_url:")
        return load_targets(args.targets, defaults, env)
    ssh = parse_ssh(args.ssh, args.ssh_key, args.ssh_host_key) if args.ssh else None
    if args.ssh_key and not args.ssh:
        raise TargetError("--ssh-key is only used with --ssh USER@HOST")
    return [finish_target(replace(defaults, ssh=ssh))]


def redactor_for(targets: list[Target]) -> Redactor:
    return Redactor(secret for t in targets for secret in t.credentials.secrets())


def run_one(target: Target, redactor: Redactor) -> list[TargetReport]:
    from .report import check_line
    from .runner import run_target

    how = "OCI request signing" if target.kind == "oci-ds" else target.credentials.describe()
    print(redactor.text(f"smoke {target.url} ({target.kind}, {how})"), flush=True)
    return [run_target(target, emit=lambda result: print(check_line(result, redactor), flush=True))]


def run_many(targets: list[Target], concurrency: int, redactor: Redactor) -> list[TargetReport]:
    from .report import SmokeProgress, check_line, summary_table
    from .runner import run_targets

    progress = SmokeProgress(len(targets), sys.stderr, redactor)
    progress.start()
    reports = run_targets(targets, concurrency, on_done=progress.advance)
    progress.finish()
    for report in reports:
        print(redactor.text(f"\n== {report.target.name}  {report.target.url} ({report.target.kind})"))
        for result in report.results:
            print(check_line(result, redactor))
    print("\n" + summary_table(reports, redactor))
    return reports


def cmd_smoke(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    from .report import to_json, to_junit, totals_line, write_text

    env = os.environ if env is None else env
    targets = targets_from(args, env)
    redactor = redactor_for(targets)
    reports = run_many(targets, args.concurrency, redactor) if args.targets else run_one(targets[0], redactor)
    print("\n" + totals_line(reports))
    try:
        if args.json:
            write_text(args.json, to_json(reports, redactor))
        if args.junit:
            write_text(args.junit, to_junit(reports, redactor))
    except OSError as exc:
        raise UsageError(f"cannot write results: {exc}") from None
    return EXIT_OK if all(r.passed for r in reports) else EXIT_FAILED
