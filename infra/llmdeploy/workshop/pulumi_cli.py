"""The one place that runs the Pulumi CLI for the workshop commands: `pulumi up`, `destroy`, `stack output`
and `stack export`, always with `--cwd <project>` and `--stack <stack>`.

Secrets never go on a command line: the Pulumi CLI reads its own (the passphrase or access token) from the
environment, which the child inherits, and the only secrets that come back (`stack output --show-secrets`)
are read from its standard output, never printed. `up` and `destroy` write their progress straight to the
terminal, as the user would see them running the CLI by hand.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import Failure, UsageError


INSTALL_HINT = ("install the Pulumi CLI (https://www.pulumi.com/docs/iac/download-install/, e.g. "
                "`curl -fsSL https://get.pulumi.com | sh`) and make sure `pulumi` is on PATH")


def binary() -> str:
    found = shutil.which("pulumi")
    if not found:
        raise UsageError(f"the Pulumi CLI is not installed (no `pulumi` on PATH): {INSTALL_HINT}")
    return found


def command(args: Sequence[str], root: Path, stack: str) -> list[str]:
    """The full command line: pulumi ARGS --cwd ROOT --stack STACK --non-interactive."""
    return [binary(), *args, "--cwd", str(root), "--stack", stack, "--non-interactive"]


def _env() -> dict[str, str]:
    return {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}


def _capture(args: Sequence[str], root: Path, stack: str, what: str, timeout: float = 600) -> str:
    cmd = command(args, root, stack)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), stdin=subprocess.DEVNULL,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"`pulumi {' '.join(args)}` did not finish within {timeout:.0f}s") from None
    except OSError as exc:
        raise UsageError(f"cannot run {cmd[0]}: {exc.strerror or exc}; {INSTALL_HINT}") from None
    if done.returncode != 0:
        # Pulumi's errors name the stack, the backend or the passphrase that is missing: pass them on.
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise UsageError(f"cannot read {what} of stack '{stack}': `pulumi {' '.join(args)}` exited with "
                         f"{done.returncode}:\n  " + "\n  ".join(detail or ["(no output)"]) +
                         f"\n(is `pulumi stack select {stack}` possible in {root}? is PULUMI_CONFIG_PASSPHRASE "
                         "or `pulumi login` set up?)")
    return done.stdout


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise Failure(f"the Pulumi CLI answered {what} with something that is not JSON ({exc.msg}); "
                      "upgrade the Pulumi CLI") from None


def stack_outputs(root: Path, stack: str, show_secrets: bool = True) -> dict[str, Any]:
    """`pulumi stack output --json --show-secrets`: every output, secrets in plaintext (keep them in memory);
    without show_secrets, secret outputs stay "[secret]"."""
    args = ["stack", "output", "--json"] + (["--show-secrets"] if show_secrets else [])
    data = _json(_capture(args, root, stack, "the outputs"), "`stack output`")
    if not isinstance(data, dict):
        raise Failure("`pulumi stack output --json` did not return an object")
    return data


def config_value(root: Path, stack: str, key: str) -> str:
    """`pulumi config get KEY`: one config value, a secret decrypted (keep it in memory)."""
    return _capture(["config", "get", key], root, stack, f"the config value {key}").rstrip("\n")


def stack_export(root: Path, stack: str) -> dict[str, Any]:
    """`pulumi stack export`: the state (URNs, types, IDs); secrets in it stay encrypted."""
    data = _json(_capture(["stack", "export"], root, stack, "the state"), "`stack export`")
    if not isinstance(data, dict):
        raise Failure("`pulumi stack export` did not return an object")
    return data


def resources(export: dict[str, Any]) -> list[dict[str, Any]]:
    deployment = export.get("deployment") or {}
    found = deployment.get("resources") if isinstance(deployment, dict) else None
    return [r for r in found or [] if isinstance(r, dict) and isinstance(r.get("urn"), str)]


def urn_name(urn: str) -> str:
    """urn:pulumi:STACK::PROJECT::TYPE$TYPE::NAME -> NAME."""
    return urn.split("::", 3)[-1] if urn.count("::") >= 3 else ""


def run_visible(args: Sequence[str], root: Path, stack: str) -> int:
    """Run `pulumi ARGS` with its output on our stdout/stderr (long operations the user watches); the exit code."""
    cmd = command(args, root, stack)
    print(f"$ pulumi {' '.join(args)} --cwd {root} --stack {stack}", flush=True)
    sys.stdout.flush()
    try:
        return subprocess.run(cmd, env=_env(), stdin=subprocess.DEVNULL).returncode
    except OSError as exc:
        raise UsageError(f"cannot run {cmd[0]}: {exc.strerror or exc}; {INSTALL_HINT}") from None


def pulumi_up(root: Path, stack: str, replace: Sequence[str] = ()) -> int:
    args = ["up", "--yes"]
    for urn in replace:
        args += ["--replace", urn]
    return run_visible(args, root, stack)


def pulumi_destroy(root: Path, stack: str) -> int:
    return run_visible(["destroy", "--yes"], root, stack)
