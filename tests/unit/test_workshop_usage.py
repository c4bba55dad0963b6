"""`llmdeploy workshop usage` and the cloud stacks' login: which VM each attendee's usage is on and under which key
name, rows for idle and unreachable attendees, where the outputs put a VM, and the known_hosts file's lines
(tests/integration/test_cloud_stack_operate.py runs them against real sshd)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.errors import Failure, UsageError
from llmdeploy.operate.cloud_access import SshTarget, ssh_target
from llmdeploy.operate.known_hosts import host_name, pinned_key
from llmdeploy.workshop.usage import EndpointVm, report, table

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def line(name: str, status: int, minutes_ago: int = 5) -> str:
    when = (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="seconds")
    return json.dumps({"time": when, "name": name, "status": status, "request_bytes": 100, "response_bytes": 1000,
                       "request_time": 0.5, "upstream_time": "0.4"})


SHARED = EndpointVm("ep0", SshTarget("llmadmin", "ep0.example.org"),
                    (("ann", "Ann", "ann"), ("bea", "Bea", "bea"), ("cid", "Cid", "cid")))
OWN = EndpointVm("dan", SshTarget("llmadmin", "dan.example.org"), (("dan", "Dan", "default"),))


def test_each_attendee_is_summed_under_their_key_and_one_without_requests_is_idle() -> None:
    log = "\n".join([line("ann", 200), line("ann", 200), line("cid", 429), line("cid", 500), line("bea", 200, 600),
                     line("-", 401), line("admin", 200)])
    found = report([SHARED], {"ep0": log}, timedelta(hours=1), NOW)
    rows = {a.id: a for a in found.attendees}
    assert (rows["ann"].state, rows["ann"].usage.requests, rows["ann"].usage.ok) == ("active", 2, 2)
    assert (rows["bea"].state, rows["bea"].usage.requests) == ("idle", 0)  # her request is 10 h old
    assert (rows["cid"].usage.throttled, rows["cid"].usage.server_errors) == (1, 1)
    assert {k.name: k.requests for k in found.others["ep0"]} == {"(no valid key)": 1, "admin": 1}
    shown = table(found)
    assert "1 idle" in shown and "ep0: requests by no attendee's key: admin 1, (no valid key) 1" in shown


def test_a_vm_that_cannot_be_read_is_a_row_per_attendee_saying_why() -> None:
    found = report([SHARED, OWN], {"ep0": "", "dan": Failure("cannot connect to dan.example.org:22: timed out")},
                   timedelta(hours=1), NOW)
    rows = {a.id: a for a in found.attendees}
    assert rows["dan"].state == "unreachable" and "timed out" in rows["dan"].problem
    assert [a.id for a in found.attendees] == ["ann", "bea", "cid", "dan"]
    shown = table(found)
    assert "0 active, 3 idle, 1 unreachable" in shown and "unreachable: dan: cannot connect" in shown
    assert json.loads(found.as_json())["attendees"][3]["state"] == "unreachable"


def test_every_vm_unreachable_still_reports_the_window() -> None:
    found = report([OWN], {"dan": Failure("x")}, timedelta(hours=2), NOW)
    assert found.since == "2026-12-07T10:00:00+00:00"


@pytest.mark.parametrize("outputs,expected", [
    ({"sshCommand": "ssh llmadmin@203.0.113.7"}, SshTarget("llmadmin", "203.0.113.7")),
    ({"sshCommand": "ssh -p 2222 ops@vm.example.org"}, SshTarget("ops", "vm.example.org", 2222)),
    ({"publicIp": "203.0.113.8"}, SshTarget("admin", "203.0.113.8")),
])
def test_the_vm_is_where_the_outputs_say(outputs: dict[str, str], expected: SshTarget) -> None:
    assert ssh_target(outputs, "admin", "stack 's'") == expected


@pytest.mark.parametrize("outputs,message", [
    ({}, "has no sshCommand or publicIp output: has `pulumi up` finished"),
    ({"sshCommand": "ssh -p 99999 a@b"}, "is not 'ssh [-p PORT] USER@HOST'"),
    ({"sshCommand": "ssh a@b;reboot"}, "is not 'ssh [-p PORT] USER@HOST'"),
])
def test_outputs_that_name_no_vm_are_refused(outputs: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ssh_target(outputs, "admin", "stack 's'")


def test_known_hosts_lines_are_openssh_s(tmp_path: Path) -> None:
    assert host_name("203.0.113.7", 22) == "203.0.113.7" and host_name("127.0.0.1", 2222) == "[127.0.0.1]:2222"
    known = tmp_path / "known_hosts"
    known.write_text("# a comment\nother.example ssh-rsa AAAAB3\nvm.example,203.0.113.7 ssh-ed25519 AAAAC3 note\n")
    assert pinned_key(known, "203.0.113.7", 22) == "ssh-ed25519 AAAAC3"
    assert pinned_key(known, "203.0.113.7", 2222) == "" and pinned_key(tmp_path / "none", "x", 22) == ""


@pytest.mark.parametrize("argv,message", [
    (["--since", "soon"], "--since 'soon': expected"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--ssh-port", "70000"], "--ssh-port 70000: expected a number from 1 to 65535"),
])
def test_bad_input_is_refused_before_any_login(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workshop", "usage", "--stack", "ws", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_local_stack_keeps_its_own_login(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from llmdeploy.local.state import VmState

    monkeypatch.setattr(VmState, "load", classmethod(lambda cls, stack: VmState(stack, "/nonexistent")))
    assert main(["status", "--stack", "local", "--ssh-key", "/dev/null"]) == 2
    assert "is a local VM: `llmdeploy local` keeps its own key and host key" in capsys.readouterr().err


def test_a_stack_with_no_local_vm_and_no_project_says_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMDEPLOY_STATE_DIR", str(tmp_path / "vms"))
    monkeypatch.chdir(tmp_path)
    assert main(["logs", "--stack", "foo"]) == 2
    err = capsys.readouterr().err
    assert "stack 'foo' has no local VM on this machine" in err and "or pass --project-dir DIR" in err


def test_a_connection_dropped_while_reading_is_that_vm_s_row_not_the_end() -> None:
    from paramiko import SSHException

    from llmdeploy.workshop.usage import read_logs

    class Session:
        def close(self) -> None:
            pass

    def read(session: object, where: str) -> str:
        if where.startswith("llmadmin@dan"):
            raise SSHException("Unable to open channel.")
        return line("ann", 200)

    logs = read_logs([SHARED, OWN], lambda target: Session(), read, 2)  # type: ignore[arg-type, return-value]
    assert isinstance(logs["dan"], Failure) and "Unable to open channel" in str(logs["dan"])
    assert logs["ep0"] == line("ann", 200)


@pytest.mark.parametrize("stack,message", [
    ("local", "stack 'local' has no local VM on this machine (llmdeploy local up --stack local starts one)"),
    ("datascience-a10", "has target datascience: there is no VM to log in to"),
    ("workshop-a10", "is a workshop: its VMs are one per attendee or endpoint; `llmdeploy workshop usage"),
])
def test_a_stack_without_a_vm_of_its_own_says_where_to_look(stack: str, message: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMDEPLOY_STATE_DIR", str(tmp_path / "vms"))  # no local VM: the checkout's example stacks
    assert main(["status", "--stack", stack, "--project-dir", str(Path(__file__).resolve().parents[2])]) == 2
    assert message in capsys.readouterr().err


def test_the_stack_s_private_key_is_a_0600_file_only_while_it_logs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmdeploy.operate.cloud_access import private_key_file

    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    monkeypatch.setenv("LLMDEPLOY_SSH_PRIVATE_KEY", key)
    with private_key_file(Path("/nonexistent"), "s", None) as name:
        path = Path(name)
        assert path.read_text() == key + "\n" and path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
    assert not path.exists() and not path.parent.exists()
    monkeypatch.setenv("LLMDEPLOY_SSH_PRIVATE_KEY", "ssh-ed25519 AAAA a public key")
    with pytest.raises(UsageError, match="sshPrivateKey is not an OpenSSH or PEM private key"):
        with private_key_file(Path("/nonexistent"), "s", None):
            pass
