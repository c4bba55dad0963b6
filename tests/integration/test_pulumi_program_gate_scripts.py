"""The Pulumi program's gate scripts run with real tools: shellcheck passes them, and the readiness command
delivers the secrets before it waits (run in a namespace). The program itself under mocks is
tests/unit/test_pulumi_program.py."""
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.stack.gates import SMOKE_SCRIPT, readiness_script
from support.pulumi_mocks import Run, unwrap
from support.pulumi_program import vm_run


def test_the_readiness_command_delivers_the_secrets_before_it_waits(vm_run: tuple[str, Run, dict[str, Any]],
                                                                    tmp_path: Path) -> None:
    """The command pulumi-command runs over SSH, run for real with its stdin: /usr/local/sbin (in a private
    mount namespace) holds recording stand-ins, the installer only 2 s after the login (cloud-init's
    write_files may still be running). The bundle goes in first; wait-ready must not read it."""
    stack, run, values = vm_run
    ready = run.one("command:remote:Command")
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    log = tmp_path / "order"
    installer = f"#!/bin/sh\ncat >{tmp_path}/bundle.tar\necho install >>{log}\n"
    (sbin / "llmdeploy-wait-ready").write_text(f"#!/bin/sh\necho \"wait $1 stdin=$(cat | wc -c)\" >>{log}\n")
    (tmp_path / "installer").write_text(installer)
    for f in (sbin / "llmdeploy-wait-ready", tmp_path / "installer"):
        f.chmod(0o755)
    command = (f"mount --bind {sbin} /usr/local/sbin && (sleep 2; cp {tmp_path}/installer "
               f"/usr/local/sbin/llmdeploy-install-secrets) & sleep 0.2; bash -c {shlex.quote(ready.inputs['create'])}")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", command],
                            input=unwrap(ready.inputs["stdin"]).encode(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    timeout_s = int(values.get("readinessTimeoutMinutes", 60)) * 60
    assert log.read_text().split("\n")[:2] == ["install", f"wait {timeout_s} stdin=0"]
    with tarfile.open(tmp_path / "bundle.tar") as bundle:
        assert "api-keys.map" in bundle.getnames()


@pytest.mark.parametrize("script", [readiness_script(3600), SMOKE_SCRIPT])
def test_gate_scripts_pass_shellcheck(script: str) -> None:
    result = subprocess.run(["shellcheck", "--shell=bash", "-"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
