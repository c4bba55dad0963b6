"""`llmdeploy status`: how a VM is, the same for a local stack and a cloud VM (operate.access): its stages, the
engine's and nginx's units, the certificate's expiry, disk, and GPU memory. Exit 0 when it is ready and both units
are active."""
from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_FAILED, EXIT_OK, Failure
from ..vmpaths import AUTOSTOP_CONFIG, AUTOSTOP_STATE, BUNDLE_STAGE, STAGES_DIR, TLS_DIR
from . import access

if TYPE_CHECKING:  # paramiko loads only when a command logs in (llmdeploy --help stays light)
    from ..sshclient import Session

CERTIFICATE = f"{TLS_DIR}/fullchain.pem"
EXAMPLES = """\
examples:
  llmdeploy status --stack local
  llmdeploy status --ssh llmadmin@203.0.113.7 --ssh-key ~/.ssh/id_ed25519 --json
"""


def status_script(facts: dict[str, Any]) -> str:
    """One root shell script whose sections (@@name) hold what status shows."""
    units = ["nginx"] + ([str(facts["engine_unit"])] if facts.get("engine_unit") else [])
    ready = str(facts.get("ready_marker", ""))
    return "; ".join([
        f"echo @@stages; for f in {STAGES_DIR}/*.done {STAGES_DIR}/*.failed; do [ -e \"$f\" ] && "
        "printf '%s %s\\n' \"${f##*/}\" \"$(head -n1 \"$f\")\"; done",
        "echo @@units; for u in " + " ".join(shlex.quote(u) for u in units) + "; do "
        "printf '%s %s\\n' \"$u\" \"$(systemctl is-active \"$u\")\"; done",
        f"echo @@certificate; openssl x509 -noout -enddate -in {CERTIFICATE} 2>/dev/null",
        "echo @@disk; df -B1 --output=size,avail / | tail -n1",
        "echo @@gpus; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total "
        "--format=csv,noheader,nounits",
        f"echo @@ready; test -n {shlex.quote(ready)} && test -e {shlex.quote(ready)} && echo yes",
        f"echo @@autostop; cat {AUTOSTOP_STATE} 2>/dev/null; echo",
        f"echo @@autostop-config; cat {AUTOSTOP_CONFIG} 2>/dev/null; echo",
        "true",
    ])


def _sections(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:]
            found[current] = []
        elif current and line.strip():
            found[current].append(line.strip())
    return found


def parse_status(text: str, facts: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """What the script printed, as status's JSON."""
    now = now or datetime.now(timezone.utc)
    parts = _sections(text)
    done, failed = [], {}
    for line in parts.get("stages", []):
        marker, _, content = line.partition(" ")
        step, _, kind = marker.rpartition(".")
        if kind == "done":
            done.append(step)
        else:
            failed[step] = content
    steps = [str(s) for s in facts.get("stages", [])]
    order = [BUNDLE_STAGE, *steps]  # the bundle's check and unpacking comes before every step
    done.sort(key=lambda s: order.index(s) if s in order else len(order))
    status: dict[str, Any] = {
        "stack": facts.get("stack"), "engine": facts.get("engine"), "model": facts.get("model_name"),
        "ready": parts.get("ready") == ["yes"],
        "stages": {"done": done, "failed": failed, "pending": [s for s in steps if s not in done and s not in failed]},
        "units": dict(line.split(" ", 1) for line in parts.get("units", []) if " " in line),
    }
    for line in parts.get("certificate", []):
        if line.startswith("notAfter="):
            until = datetime.strptime(line.removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc)
            status["certificate"] = {"not_after": until.isoformat(), "days_left": (until - now).days}
    for line in parts.get("disk", []):
        size, avail = (int(x) for x in line.split())
        status["disk"] = {"size_gb": round(size / 1e9, 1), "free_gb": round(avail / 1e9, 1)}
    status["gpus"] = []
    for line in parts.get("gpus", []):
        name, used, total = (x.strip() for x in line.rsplit(",", 2))
        status["gpus"].append({"name": name, "memory_used_mib": int(used), "memory_total_mib": int(total)})
    status["autostop"] = autostop_left(parts.get("autostop", []), now, parts.get("autostop-config", []))
    return status


def _json_object(lines: Sequence[str]) -> dict[str, Any] | None:
    try:
        found = json.loads("".join(lines))
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def autostop_left(state_lines: list[str], now: datetime, config_lines: Sequence[str] = ()) -> dict[str, Any] | None:
    """The autostop agent's state (autostop_agent.py) as what is left; before the agent's first run (30 s after
    boot) its config says autostop is on; None when the VM has no autostop."""
    state = _json_object(state_lines) or _json_object(config_lines)
    if state is None:
        return None
    out: dict[str, Any] = {"action": state.get("action"), "phase": state.get("phase"),
                           "idle_minutes": state.get("idle_minutes"), "ttl_hours": state.get("ttl_hours"),
                           "open_streams": state.get("open_streams"), "result": state.get("result")}
    if isinstance(state.get("deadline"), (int, float)):
        out["reason"] = state.get("reason")
        out["deadline"] = datetime.fromtimestamp(state["deadline"], timezone.utc).isoformat()
        out["seconds_left"] = max(0, int(state["deadline"] - now.timestamp()))
    return out


def _autostop_line(a: dict[str, Any]) -> str:
    if "seconds_left" not in a:
        return f"autostop:     {a['action']}, {a['phase'] or 'not yet checked'} (the clock starts once ready)"
    left = a["seconds_left"]
    why = f"idle {a['idle_minutes']} min" if a["reason"] == "idle" else f"TTL {a['ttl_hours']} h"
    sent = f"; sent: {a['result']}" if a.get("result") else ""
    return (f"autostop:     {a['action']} in {left // 3600}h{left % 3600 // 60:02d}m{left % 60:02d}s at "
            f"{a['deadline']} ({why}; {a['open_streams']} stream(s) open now){sent}")


def healthy(status: dict[str, Any]) -> bool:
    return bool(status["ready"]) and all(state == "active" for state in status["units"].values())


def lines(status: dict[str, Any]) -> list[str]:
    stages = status["stages"]
    out = [f"stack:        {status['stack']} ({'ready' if status['ready'] else 'NOT ready'})",
           f"engine:       {status['engine']}, model {status['model']}",
           "units:        " + ", ".join(f"{u} {s}" for u, s in status["units"].items()),
           "stages:       " + (" ".join(stages["done"]) or "none done yet")
           + "".join(f"  FAILED {s} ({c})" for s, c in stages["failed"].items())
           + (f"  pending: {' '.join(stages['pending'])}" if stages["pending"] else "")]
    if "certificate" in status:
        cert = status["certificate"]
        out.append(f"certificate:  valid until {cert['not_after']} ({cert['days_left']} days left)")
    else:
        out.append("certificate:  none yet")
    if "disk" in status:
        out.append(f"disk /:       {status['disk']['free_gb']} GB free of {status['disk']['size_gb']} GB")
    for gpu in status["gpus"]:
        out.append(f"gpu:          {gpu['name']}, {gpu['memory_used_mib']} of {gpu['memory_total_mib']} MiB used")
    out.append(_autostop_line(status["autostop"]) if status.get("autostop") else "autostop:     off")
    return out


def read_status(session: Session, where: str) -> dict[str, Any]:
    """The VM's status over a logged-in session (local or cloud alike)."""
    facts = access.read_facts(session, where)
    done = session.sudo(["sh", "-c", status_script(facts)], timeout=60)
    if not done.ok:
        raise Failure(f"cannot read the status of {where}: {done.stderr.strip() or f'exit {done.exit_code}'}")
    return parse_status(done.stdout, facts)


def cmd_status(args: argparse.Namespace) -> int:
    session, where = access.login(args)
    try:
        status = read_status(session, where)
    finally:
        session.close()
    print(json.dumps(status, indent=2) if args.json else "\n".join(lines(status)))
    return EXIT_OK if healthy(status) else EXIT_FAILED


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `status` to the llmdeploy command."""
    p = subparsers.add_parser("status", help="a VM's stages, engine and nginx units, certificate, disk and GPU memory",
                              description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command_name="status", func=cmd_status)
    access.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    return p
