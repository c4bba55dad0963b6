#!/usr/bin/env python3
"""lynis's hardening index of the running local VM, with its warnings and suggestions.

It logs in to the VM of `llmdeploy local up` (state under $LLMDEPLOY_STATE_DIR or the default), installs
Debian's `lynis` there if it is missing, runs `lynis audit system --quick --no-colors` as root and reads
/var/log/lynis-report.dat. Exit code 1 when the index is below --min-index (default 80) or the audit fails.

With --boot it runs `llmdeploy local up` first and `llmdeploy local down` at the end (also on failure), so
that nothing is left running.

    python3 scripts/audit_local_vm.py [--stack local] [--min-index 80] [--boot]
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra")]

from llmdeploy.local import LocalError  # noqa: E402
from llmdeploy.local.guestlogin import login  # noqa: E402
from llmdeploy.local.vmstatus import require_state  # noqa: E402
from llmdeploy.sshclient import SshError  # noqa: E402

REPORT = "/var/log/lynis-report.dat"
INSTALL = ("command -v lynis >/dev/null || { export DEBIAN_FRONTEND=noninteractive; "
           "apt-get -o DPkg::Lock::Timeout=600 update -q && "
           "apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends lynis; }")
AUDIT = "lynis audit system --quick --no-colors </dev/null"


def parse_report(text: str) -> tuple[int | None, list[tuple[str, str]], list[tuple[str, str]]]:
    """(hardening index, warnings, suggestions) from lynis-report.dat: `key=value` lines, where warning[] and
    suggestion[] values are `TEST-ID|text|details|solution|`."""
    index: int | None = None
    found: dict[str, list[tuple[str, str]]] = {"warning[]": [], "suggestion[]": []}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "hardening_index" and value.strip().isdigit():
            index = int(value)
        elif key in found:
            test, text_, details, *_ = (value.split("|") + ["", "", ""])
            detail = f" [{details}]" if details and details != "-" else ""
            found[key].append((test, text_ + detail))
    return index, found["warning[]"], found["suggestion[]"]


def audit(stack: str) -> str:
    """Run lynis in the VM; return the report's text."""
    session = login(require_state(stack))
    try:
        for what, command, timeout in (("installing lynis", INSTALL, 900), ("lynis audit system", AUDIT, 1800),
                                       (f"reading {REPORT}", f"cat {REPORT}", 60)):
            result = session.run(f"sudo -n sh -c {shlex.quote(command)}", timeout=timeout)
            if not result.ok:
                raise LocalError(f"{what} exited {result.exit_code}: "
                                 f"{(result.stderr or result.stdout).strip()[-1500:]}")
        return result.stdout
    finally:
        session.close()


def show(index: int | None, warnings: list[tuple[str, str]], suggestions: list[tuple[str, str]]) -> None:
    print(f"hardening index: {index if index is not None else 'missing from the report'}")
    for title, rows in (("warnings", warnings), ("suggestions", suggestions)):
        print(f"\n{title} ({len(rows)}):")
        for test, text in rows:
            print(f"  {test:<11} {text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="local")
    parser.add_argument("--min-index", type=int, default=80, help="exit 1 below this index (default 80)")
    parser.add_argument("--boot", action="store_true", help="llmdeploy local up first, local down at the end")
    args = parser.parse_args()
    cli = ["llmdeploy", "local"]
    try:
        # The QEMU VM, whatever `up` would pick here: a container shares this machine's kernel, which lynis audits too.
        up = ["up", "--stack", args.stack, "--project-dir", str(ROOT), "--runtime", "qemu"]
        if args.boot and subprocess.call(cli + up, stdin=subprocess.DEVNULL) != 0:
            print("llmdeploy local up failed", file=sys.stderr)
            return 1
        index, warnings, suggestions = parse_report(audit(args.stack))
    except (LocalError, SshError) as exc:
        print(f"audit_local_vm: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.boot:
            subprocess.call(cli + ["down", "--stack", args.stack])
    show(index, warnings, suggestions)
    ok = index is not None and index >= args.min_index
    print(f"\n{'PASS' if ok else 'FAIL'}: hardening index {index}, minimum {args.min_index}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
