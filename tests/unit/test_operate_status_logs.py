"""`llmdeploy status` and `logs`: what status makes of the VM's answers, which command logs runs for each option,
and bad input refused before any login (tests/e2e/test_local_vm.py runs both against a booted guest, locally and
over SSH)."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone

import pytest

from llmdeploy.cli import main
from llmdeploy.errors import UsageError
from llmdeploy.operate.logs import log_command
from llmdeploy.operate.status import healthy, lines, parse_status
from llmdeploy.sshclient import Session

FACTS = {"stack": "s", "engine": "vllm", "engine_unit": "vllm", "model_name": "m",
         "stages": ["10-apt", "40-engine", "60-nginx", "90-ready"], "ready_marker": "/var/lib/llmdeploy/ready"}
NOW = datetime(2026, 12, 7, tzinfo=timezone.utc)
ANSWER = """@@stages
60-nginx.done 2026-12-07T10:00:03Z
00-bundle.done 2026-12-07T10:00:00Z
10-apt.done 2026-12-07T10:00:01Z
40-engine.failed 3
@@units
nginx active
vllm failed
@@certificate
notAfter=Mar  7 10:00:00 2027 GMT
@@disk
 100000000000 40000000000
@@gpus
NVIDIA A10, 1024, 23028
@@ready
"""


def test_status_reads_stages_units_certificate_disk_and_gpus() -> None:
    status = parse_status(ANSWER, FACTS, NOW)
    assert status["stages"] == {"done": ["00-bundle", "10-apt", "60-nginx"], "failed": {"40-engine": "3"}, "pending": ["90-ready"]}
    assert status["units"] == {"nginx": "active", "vllm": "failed"} and status["ready"] is False
    assert status["certificate"]["days_left"] == 90
    assert status["disk"] == {"size_gb": 100.0, "free_gb": 40.0}
    assert status["gpus"] == [{"name": "NVIDIA A10", "memory_used_mib": 1024, "memory_total_mib": 23028}]
    assert not healthy(status)
    shown = "\n".join(lines(status))
    assert "FAILED 40-engine (3)" in shown and "pending: 90-ready" in shown and "vllm failed" in shown
    assert "1024 of 23028 MiB used" in shown and "90 days left" in shown


def test_a_ready_vm_with_active_units_is_healthy_and_one_without_a_gpu_lists_none() -> None:
    answer = "@@stages\n10-apt.done x\n@@units\nnginx active\nvllm active\n@@certificate\n@@disk\n10 5\n@@gpus\n@@ready\nyes\n"
    status = parse_status(answer, FACTS, NOW)
    assert healthy(status) and status["gpus"] == [] and "certificate" not in status
    assert "certificate:  none yet" in lines(status)


def args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"engine": False, "nginx": False, "step": None, "lines": 20, "follow": False, **given})


@pytest.mark.parametrize("given,command", [
    ({}, "tail -n 20 /var/log/cloud-init-output.log"),
    ({"step": "40-engine", "follow": True}, "tail -n 20 -F /var/log/llmdeploy/40-engine.log"),
    ({"engine": True}, "journalctl --no-pager -u vllm -n 20"),
    ({"engine": True, "follow": True}, "journalctl --no-pager -u vllm -n 20 -f"),
    ({"nginx": True}, "tail -n 20 /var/log/nginx/error.log"),
])
def test_each_log_option_reads_its_log(given: dict[str, object], command: str) -> None:
    assert log_command(args(**given), FACTS) == command


def test_a_step_the_vm_does_not_have_is_refused_with_the_ones_it_has() -> None:
    with pytest.raises(UsageError, match="--step 45-x: this VM's steps are 10-apt, 40-engine, 60-nginx, 90-ready"):
        log_command(args(step="45-x"), FACTS)
    with pytest.raises(UsageError, match="no engine of its own"):
        log_command(args(engine=True), {**FACTS, "engine_unit": ""})


@pytest.mark.parametrize("argv,message", [
    (["status"], "say which VM: --stack NAME"),
    (["logs", "--ssh-key", "k"], "--ssh-key and --ssh-host-key go with --ssh"),
    (["logs", "--stack", "nosuch", "-n", "0"], "-n 0: give a number of lines of 1 or more"),
    (["status", "--ssh", "nobody"], "bad --ssh value 'nobody'"),
    (["usage", "--log", "-", "--ssh-key", "k"], "--ssh-key and --ssh-host-key go with --ssh"),
    (["status", "--ssh", "a@192.0.2.1", "--ssh-key", "/dev/null", "--ssh-host-key", "garbage"],
     "--ssh-host-key: host key 'garbage': expected 'SHA256:...', 'ssh-ed25519 AAAA...' or a known_hosts line"),
    (["usage", "--since", "99999999d", "--stack", "x"], "further back than any date"),
    (["logs", "--ssh", "a@192.0.2.1:99999", "--ssh-key", "/dev/null"], "expected a number from 1 to 65535"),
])
def test_bad_input_is_refused_before_any_login(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


class _Running:
    """Session.start's Running: two chunks of output, then the exit code."""

    def __init__(self, chunks: list[bytes], code: int, stderr: str) -> None:
        self.chunks, self.code, self.err = chunks, code, stderr
        self.stdout = bytearray()

    def poll(self) -> int | None:
        if self.chunks:
            self.stdout += self.chunks.pop(0)
            return None
        return self.code

    def output(self) -> tuple[str, str]:
        return "", self.err


class _Session:
    """sshclient.Session's run and start, faked; its own as_root and sudo on top (the admin user, not root)."""

    user, timeout = "llmadmin", 30.0
    as_root = Session.as_root
    sudo = Session.sudo

    def __init__(self, code: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.code, self.out, self.err = code, stdout, stderr
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 0) -> object:
        self.commands.append(command)
        return argparse.Namespace(exit_code=self.code, stdout=self.out, stderr=self.err, ok=self.code == 0)

    def start(self, command: str) -> _Running:
        self.commands.append(command)
        return _Running([self.out[:3].encode(), self.out[3:].encode()], self.code, self.err)


def test_show_prints_the_log_as_root_and_a_failure_names_the_vm_and_why(capfd: pytest.CaptureFixture[str]) -> None:
    from llmdeploy.errors import Failure
    from llmdeploy.operate.logs import show

    session = _Session(stdout="line 1\nline 2\n")
    assert show(session, "tail -n 2 /x.log", False, "vm") == 0  # type: ignore[arg-type]
    assert session.commands == ["sudo -n sh -c 'tail -n 2 /x.log'"] and capfd.readouterr().out == "line 1\nline 2\n"
    followed = _Session(stdout="abcdef\n")
    assert show(followed, "tail -F /x.log", True, "vm") == 0  # type: ignore[arg-type]
    assert capfd.readouterr().out == "abcdef\n"
    for follow in (False, True):
        with pytest.raises(Failure, match="the VM: tail: cannot open '/x.log'"):
            show(_Session(1, stderr="tail: cannot open '/x.log'\n"), "tail /x.log", follow, "the VM")  # type: ignore[arg-type]
