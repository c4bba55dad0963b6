"""`llmdeploy workshop revoke` that runs no Pulumi: `--no-up` only edits the roster, and no pulumi on PATH
changes nothing. Rotate and revoke through the fake pulumi are tests/integration/test_workshop_access.py."""
from pathlib import Path

import pytest

from llmdeploy.roster import read_roster
from support.fake_pulumi import FakePulumi
from support.workshop_access import pulumi, run
from support.workshop_stack import STACK, people, workshop_project


def test_revoke_no_up_only_edits_the_roster(tmp_path: Path, pulumi: FakePulumi,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(2))
    code, out, _ = run(capsys, "workshop", "revoke", "u01", "--stack", STACK, "--project-dir", str(root), "--no-up")
    assert code == 0 and "not applied yet: run `pulumi up --stack ws`" in out
    assert read_roster(root / "roster.csv")[0].revoked
    assert pulumi.calls() == []


def test_revoke_without_pulumi_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(2))
    before = (root / "roster.csv").read_text()
    monkeypatch.setenv("PATH", "/nonexistent")
    code, out, err = run(capsys, "workshop", "revoke", "u01", "--stack", STACK, "--project-dir", str(root))
    assert code == 2 and "the Pulumi CLI is not installed" in err and "Traceback" not in out + err
    assert (root / "roster.csv").read_text() == before
