"""A stand-in for the Pulumi CLI binary (which cannot be installed here), first on PATH: it records every
invocation (arguments, working folder, whether the passphrase variable was inherited) and answers canned JSON.

Why: the workshop commands run `pulumi` through one wrapper (llmdeploy.workshop.pulumi_cli); these tests prove
what that wrapper runs (`up --yes --replace URN`, `destroy --yes`, `--cwd`, `--stack`), that no secret is ever
on its command line, and how the commands react to Pulumi's answers and failures. It stands in only for the
CLI; everything behind it (OCI, the endpoints) is real or a signature-checking stand-in.

Answers, from files in the answers folder:
    outputs.json  -> `pulumi stack output --json --show-secrets`  (missing: exit 255, "no stack named")
    export.json   -> `pulumi stack export`
    config-KEY    -> `pulumi config get KEY` (missing: exit 255, "not found")
    up.exit, destroy.exit -> the exit code of `up` / `destroy` (default 0)
On `destroy` (and `up`), when FAKE_PULUMI_HOOK is set, it calls that URL with ?cmd=destroy (the OCI stand-in's
test control then deletes what the stack's state knows).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT = """#!{python}
import json, os, sys, urllib.request
args = sys.argv[1:]
record = {{"argv": args, "cwd": os.getcwd(),
          "passphrase_inherited": "PULUMI_CONFIG_PASSPHRASE" in os.environ}}
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
answers = os.environ["FAKE_PULUMI_ANSWERS"]
def answer(name):
    path = os.path.join(answers, name)
    return open(path).read() if os.path.exists(path) else None
def code(name):
    text = answer(name)
    return int(text) if text else 0
def hook(cmd):
    url = os.environ.get("FAKE_PULUMI_HOOK")
    if url:
        stack = args[args.index("--stack") + 1]
        urllib.request.urlopen(url + "?cmd=" + cmd + "&stack=" + stack, timeout=10).read()
if args[:2] == ["stack", "output"]:
    text = answer("outputs.json")
    if text is None:
        print("error: no stack named 'x' found", file=sys.stderr); sys.exit(255)
    sys.stdout.write(text); sys.exit(0)
if args[:2] == ["stack", "export"]:
    text = answer("export.json")
    if text is None:
        print("error: no stack named 'x' found", file=sys.stderr); sys.exit(255)
    sys.stdout.write(text); sys.exit(0)
if args[:2] == ["config", "get"]:
    text = answer("config-" + args[2])
    if text is None:
        print("error: configuration key '" + args[2] + "' not found for stack 'x'", file=sys.stderr); sys.exit(255)
    sys.stdout.write(text + "\\n"); sys.exit(0)
if args[:1] in (["up"], ["destroy"]):
    print("Previewing " + args[0] + " (fake pulumi)")
    exit_code = code(args[0] + ".exit")
    if exit_code == 0:
        hook(args[0])
        print("Resources: done")
    else:
        print("error: update failed", file=sys.stderr)
    sys.exit(exit_code)
print("fake pulumi: unsupported command " + " ".join(args), file=sys.stderr)
sys.exit(2)
"""


@dataclass
class FakePulumi:
    bin_dir: Path
    answers: Path
    log: Path

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def answer(self, name: str, content: Any) -> None:
        (self.answers / name).write_text(content if isinstance(content, str) else json.dumps(content))


@contextmanager
def fake_pulumi(tmp: Path, monkeypatch: pytest.MonkeyPatch, hook: str | None = None) -> Iterator[FakePulumi]:
    """Put the fake `pulumi` first on PATH (and its settings in the environment) for the with-block."""
    bin_dir = tmp / "fake-bin"
    answers = tmp / "fake-answers"
    bin_dir.mkdir(parents=True, exist_ok=True)
    answers.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "pulumi"
    script.write_text(SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    fake = FakePulumi(bin_dir, answers, tmp / "fake-pulumi.log")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_PULUMI_ANSWERS", str(answers))
    if hook:
        monkeypatch.setenv("FAKE_PULUMI_HOOK", hook)
    yield fake
