"""`llmdeploy workshop rotate ID` and `revoke ID`: what they run through the Pulumi CLI (a fake `pulumi` first on
PATH records it, since the CLI cannot be installed here) and what they do to the roster.

Why: rotating must replace exactly one attendee's key resource, found by name in `pulumi stack export` (on the
attendee's own VM or on a shared endpoint), and nothing else; revoking must keep the roster row (the shared
layout assigns endpoints by row position, so deleting a row would move other attendees) and then apply it.
Mistakes (an unknown id, no Pulumi CLI, a failed `pulumi up`) must be a message and an exit code, and a revoke
must not half-happen.
"""
import json
from pathlib import Path

import pytest

from llmdeploy.roster import assign, read_roster
from support.fake_pulumi import FakePulumi
from support.workshop_access import pulumi, run
from support.workshop_stack import STACK, export_with, people, workshop_project


def urn(name: str) -> str:
    return (f"urn:pulumi:{STACK}::llmdeploy::llmdeploy:workshop:Workshop$llmdeploy:vm:VmEndpoint"
            f"$random:index/randomPassword:RandomPassword::{name}")


def no_secret_on_any_command_line(pulumi: FakePulumi) -> None:
    assert all("sk-" not in " ".join(c["argv"]) and "secret" not in " ".join(c["argv"]) for c in pulumi.calls())


def test_rotate_replaces_only_that_attendees_key_on_their_own_vm(tmp_path: Path, pulumi: FakePulumi,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(3))
    names = [f"llmdeploy-ws-u0{i}-key-default" for i in (1, 2, 3)]
    pulumi.answer("export.json", export_with(STACK, names))
    code, out, err = run(capsys, "workshop", "rotate", "u02", "--stack", STACK, "--project-dir", str(root))
    assert code == 0, err
    export, up = pulumi.calls()
    assert export["argv"][:2] == ["stack", "export"]
    assert up["argv"] == ["up", "--yes", "--replace", urn("llmdeploy-ws-u02-key-default"), "--cwd", str(root),
                          "--stack", STACK, "--non-interactive"]
    assert "attendee 'u02' has a new key" in out and "llmdeploy workshop handouts --stack ws" in out
    no_secret_on_any_command_line(pulumi)


def test_rotate_on_a_shared_endpoint_replaces_the_key_named_after_the_attendee(
        tmp_path: Path, pulumi: FakePulumi, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(4), workshopLayout="shared", workshopEndpoints=2)
    # Rows 1..4 go to ep0, ep1, ep0, ep1 (llmdeploy.roster.assign).
    names = ["llmdeploy-ws-ep0-key-u01", "llmdeploy-ws-ep1-key-u02", "llmdeploy-ws-ep0-key-u03",
             "llmdeploy-ws-ep1-key-u04"]
    pulumi.answer("export.json", export_with(STACK, names))
    code, _, err = run(capsys, "workshop", "rotate", "U03", "--stack", STACK, "--project-dir", str(root))
    assert code == 0, err
    up = pulumi.calls()[-1]["argv"]
    assert up[up.index("--replace") + 1] == urn("llmdeploy-ws-ep0-key-u03")
    assert up.count("--replace") == 1


@pytest.mark.parametrize("case, message", [
    ("unknown", "no attendee 'zed' in the roster"),
    ("revoked", "attendee 'u01' is revoked"),
    ("not-in-state", "has no resource named llmdeploy-ws-u01-key-default in its state (key resources there: "
                     "llmdeploy-ws-u02-key-default)"),
    ("no-stack", "cannot read the state of stack 'ws'"),
])
def test_rotate_mistakes_are_exit_2_and_run_no_update(tmp_path: Path, pulumi: FakePulumi, case: str, message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rows = people(2)
    if case == "revoked":
        rows[0]["status"] = "revoked"
    root = workshop_project(tmp_path, rows)
    if case != "no-stack":
        pulumi.answer("export.json", export_with(STACK, ["llmdeploy-ws-u02-key-default"]))
    code, out, err = run(capsys, "workshop", "rotate", "zed" if case == "unknown" else "u01", "--stack", STACK,
                         "--project-dir", str(root))
    assert code == 2
    assert message in err and "Traceback" not in out + err
    assert all(c["argv"][0] != "up" for c in pulumi.calls())


def test_rotate_when_pulumi_up_fails_is_exit_1(tmp_path: Path, pulumi: FakePulumi,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(1))
    pulumi.answer("export.json", export_with(STACK, ["llmdeploy-ws-u01-key-default"]))
    pulumi.answer("up.exit", "255")
    code, _, err = run(capsys, "workshop", "rotate", "u01", "--stack", STACK, "--project-dir", str(root))
    assert code == 1 and "pulumi up exited with 255" in err


def test_revoke_keeps_the_row_so_nobody_else_moves_then_applies(tmp_path: Path, pulumi: FakePulumi,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(5), columns=("id", "name", "email"), workshopLayout="shared",
                            workshopEndpoints=2)
    roster = root / "roster.csv"
    before = assign(read_roster(roster), 2)
    code, out, err = run(capsys, "workshop", "revoke", "u02", "--stack", STACK, "--project-dir", str(root))
    assert code == 0, err
    lines = roster.read_text().splitlines()
    assert lines[0] == "id,name,email,status"  # the column was added
    assert lines[2] == "u02,Attendee 2,u02@example.org,revoked" and lines[1] == "u01,Attendee 1,u01@example.org,"
    after = assign(read_roster(roster), 2)
    assert "u02" not in after and all(after[a] == before[a] for a in after)  # nobody else moved
    [up] = pulumi.calls()
    assert up["argv"] == ["up", "--yes", "--cwd", str(root), "--stack", STACK, "--non-interactive"]
    assert "marked revoked" in out and "is revoked" in out


def test_revoke_again_says_so_and_still_applies(tmp_path: Path, pulumi: FakePulumi,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rows = people(2)
    rows[1]["status"] = "revoked"
    root = workshop_project(tmp_path, rows)
    before = (root / "roster.csv").read_text()
    code, out, _ = run(capsys, "workshop", "revoke", "u02", "--stack", STACK, "--project-dir", str(root))
    assert code == 0 and "was already revoked" in out
    assert (root / "roster.csv").read_text() == before
    assert [c["argv"][0] for c in pulumi.calls()] == ["up"]


def test_revoke_when_pulumi_up_fails_is_exit_1_and_says_the_key_may_still_work(
        tmp_path: Path, pulumi: FakePulumi, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(2))
    pulumi.answer("up.exit", "1")
    code, _, err = run(capsys, "workshop", "revoke", "u01", "--stack", STACK, "--project-dir", str(root))
    assert code == 1 and "the key may still work until `pulumi up` succeeds" in err


def test_revoke_preserves_crlf_quotes_and_other_columns(tmp_path: Path, pulumi: FakePulumi,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(1))
    (root / "roster.csv").write_bytes(b'\xef\xbb\xbfid,name,email,engine\r\nann,"Doe, Ann",ann@example.org,'
                                      b'ollama\r\nbo,Bo,bo@example.org,\r\n')
    code, _, err = run(capsys, "workshop", "revoke", "bo", "--stack", STACK, "--project-dir", str(root))
    assert code == 0, err
    data = (root / "roster.csv").read_bytes()
    assert data == (b'\xef\xbb\xbfid,name,email,engine,status\r\nann,"Doe, Ann",ann@example.org,ollama,\r\n'
                    b'bo,Bo,bo@example.org,,revoked\r\n')
    assert [a.revoked for a in read_roster(root / "roster.csv")] == [False, True]
    assert json.dumps(pulumi.calls()).count('"up"') == 1
