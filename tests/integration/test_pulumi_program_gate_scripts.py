"""The Pulumi program's gate scripts run with real tools: shellcheck passes them, and the readiness command
delivers the secrets before it waits (run in a namespace). The program itself under mocks is
tests/unit/test_pulumi_program.py."""
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.config import parse
from llmdeploy.render import render
from llmdeploy.stack.gates import SMOKE_SCRIPT, readiness_script
from llmdeploy.vmpaths import BUNDLE_STAGE, RECEIVE_BUNDLE, STAGES_DIR, STATE_DIR
from support.pulumi_mocks import Run, unwrap
from support.pulumi_program import vm_run


def test_the_readiness_command_delivers_the_bundle_then_the_secrets_before_it_waits(
        vm_run: tuple[str, Run, dict[str, Any]], tmp_path: Path) -> None:
    """The command pulumi-command runs over SSH, run for real with its stdin: /usr/local/sbin and the VM's state
    folder (in a private mount namespace) hold recording stand-ins, the bundle's receiver only 2 s after the login
    (cloud-init's write_files may still be running), the bootstrap's unpacking a moment after it received. The
    bundle goes in first, then the secrets; wait-ready must not read stdin."""
    stack, run, values = vm_run
    ready = run.one("command:remote:Command")
    sbin, state = tmp_path / "sbin", tmp_path / "state"
    sbin.mkdir()
    (state / "stages").mkdir(parents=True)
    log = tmp_path / "order"
    receiver = f"#!/bin/sh\ncat >{tmp_path}/bundle.tar.gz\necho receive >>{log}\n"
    installer = f"#!/bin/sh\ncat >{tmp_path}/secrets.tar\necho install >>{log}\n"
    (sbin / "llmdeploy-wait-ready").write_text(f"#!/bin/sh\necho \"wait $1 stdin=$(cat | wc -c)\" >>{log}\n")
    (sbin / "llmdeploy-install-secrets").write_text(installer)
    (tmp_path / "receiver").write_text(receiver)
    for f in (sbin / "llmdeploy-wait-ready", sbin / "llmdeploy-install-secrets", tmp_path / "receiver"):
        f.chmod(0o755)
    bootstrap = (f"(until [ -s {tmp_path}/bundle.tar.gz ]; do sleep 0.2; done; sleep 1; "
                 f"touch {STAGES_DIR}/{BUNDLE_STAGE}.done) & ")
    command = (f"mount --bind {sbin} /usr/local/sbin && mount --bind {state} {STATE_DIR} && "
               f"(sleep 2; cp {tmp_path}/receiver {RECEIVE_BUNDLE}) & {bootstrap}sleep 0.2; "
               f"bash -c {shlex.quote(ready.inputs['create'])}")
    made = not Path(STATE_DIR).exists()
    if made:
        Path(STATE_DIR).mkdir(parents=True)
    try:
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", command],
                                input=unwrap(ready.inputs["stdin"]).encode(), capture_output=True, timeout=60)
    finally:
        if made:
            Path(STATE_DIR).rmdir()  # an empty mount point only: everything went to the temp folder
    assert result.returncode == 0, result.stderr
    timeout_s = int(values.get("readinessTimeoutMinutes", 60)) * 60
    assert log.read_text().split("\n")[:3] == ["receive", "install", f"wait {timeout_s} stdin=0"]
    assert (tmp_path / "bundle.tar.gz").read_bytes() == render(parse(values, stack=stack)).bundle
    with tarfile.open(tmp_path / "secrets.tar") as secrets:
        assert "api-keys.map" in secrets.getnames()


@pytest.mark.parametrize("script", [readiness_script(3600), SMOKE_SCRIPT])
def test_gate_scripts_pass_shellcheck(script: str) -> None:
    result = subprocess.run(["shellcheck", "--shell=bash", "-"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
