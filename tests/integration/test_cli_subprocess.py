"""The installed CLI run as a process (`python3 -m llmdeploy.cli`): usage and config errors exit 2 without a
traceback, failures exit 1, and render succeeds. The in-process CLI errors are tests/unit/test_cli_errors.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli_project import PASSWORD, project
from support.project import ROOT


def _subprocess(project: Path, *argv: str, extra_env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMDEPLOY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "infra"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "llmdeploy.cli", *argv], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("stack, expected", [
    ("nope", "llmdeploy: no stack file "),
    ("bad", "llmdeploy: 3 config problem(s) in stack 'bad':"),
    ("secure", "LLMDEPLOY_HF_TOKEN="),
])
def test_subprocess_errors_exit_2_without_traceback(project: Path, stack: str, expected: str) -> None:
    # No --project-dir: the command finds Pulumi.yaml in its working directory.
    proc = _subprocess(project, "render", "--stack", stack, "--out", "out")
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (project / "out").exists()


def test_subprocess_render_succeeds(project: Path) -> None:
    proc = _subprocess(project, "render", "--stack", "good",
                       extra_env={"LLMDEPLOY_BASIC_AUTH_PASSWORDS": f'{{"alice": "{PASSWORD}"}}'})
    assert proc.returncode == 0, proc.stderr
    assert (project / "build" / "good" / "user-data").is_file()  # the default output folder
    assert proc.stderr == ""


@pytest.mark.parametrize("argv, code, message", [
    # A Failure raised deep in llmdeploy.local (no VM state for the stack).
    (["local", "ssh", "--stack", "nope"], 1,
     "llmdeploy local: no local VM for stack 'nope': start one with llmdeploy local up --stack nope\n"),
    # A UsageError from llmdeploy.smoke.targets.
    (["smoke", "https://llm.example.com"], 2,
     "llmdeploy smoke: llm.example.com: no credentials; set $LLMDEPLOY_API_KEY"),
    # A UsageError from the workshop commands.
    (["workshop", "teardown", "--stack", "workshop-a10", "--project-dir", str(ROOT), "--oci-config",
      "/no/such/oci-config"], 2, "llmdeploy workshop teardown: no OCI config file at /no/such/oci-config"),
])
def test_errors_of_each_command_family_exit_with_their_code(tmp_path: Path, argv: list[str], code: int,
                                                             message: str) -> None:
    proc = _subprocess(tmp_path, *argv, extra_env={"LLMDEPLOY_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
