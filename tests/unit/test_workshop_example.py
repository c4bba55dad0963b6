"""The example workshop stack in the checkout (Pulumi.workshop-a10.yaml with rosters/example.csv), used as an
instructor would: plan it, render and validate every attendee's user-data with the real tools, and run the
Pulumi program on it under mocks.

Why: the example is what instructors copy. Each of its endpoints must be a valid stack of its own (own
hostname, the roster's model override), the revoked row must get nothing, and `render`/`validate` must see the
attendees' endpoints, not a stack-wide user-data that no VM would boot.
"""
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.outfolder import MANIFEST
from llmdeploy.stack import output_names as out
from llmdeploy.stack_yaml import read_stack
from support.project import ROOT, WORKSHOP_STACKS
from support.pulumi_mocks import run_program, unwrap
from support.workshop_example import STACK, active_ids, roster_rows

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"


def test_the_example_workshop_is_found_and_has_a_revoked_row() -> None:
    assert STACK in WORKSHOP_STACKS
    assert len(active_ids()) == len(roster_rows()) - 1 >= 3


def test_render_writes_one_user_data_per_attendee(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--stack", STACK, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != MANIFEST) == sorted(active_ids())
    for row in roster_rows():
        folder = tmp_path / row["id"]
        if row["status"] == "revoked":
            assert not folder.exists()
            continue
        files = "".join(p.read_text() for p in (folder / "files").rglob("*") if p.is_file())
        assert (folder / "user-data").read_text().startswith("#cloud-config") and (folder / "bundle.tar.gz").is_file()
        assert f"{row['id']}.ws.example.org" in files  # certbot's -d and nginx's server_name
        assert f"model={row['ollamaModel'] or 'llama3.1:8b'}" in files
    assert capsys.readouterr().out.count("rendered stack 'workshop-a10', endpoint ") == len(active_ids())


def test_the_pulumi_program_gives_each_active_attendee_a_vm_and_a_name() -> None:
    run = run_program(ROOT / "infra" / "__main__.py", read_stack(ROOT, STACK) | {"sshPrivateKey": KEY}, stack=STACK,
                      secret_keys=("sshPrivateKey",))
    names = {r.name for r in run.of_type("oci:Core/instance:Instance")}
    assert names == {f"llmdeploy-{STACK}-{i}-instance" for i in active_ids()}
    records = {unwrap(r.inputs)["domain"] for r in run.of_type("oci:Dns/rrset:Rrset")}
    assert records == {f"{i}.ws.example.org" for i in active_ids()}
    assert set(run.outputs[out.ATTENDEES]) == set(active_ids())


@pytest.mark.parametrize("roster, message", [("id,name,email\nAna!,A,a@example.org\n", "line 2: id 'Ana!'"),
                                             (None, "cannot read the roster")])
def test_render_and_validate_name_a_bad_roster(tmp_path: Path, roster: str | None, message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    if roster is not None:
        (tmp_path / "rosters").mkdir()
        (tmp_path / "rosters" / "example.csv").write_text(roster)
    for command in ("render", "validate"):
        assert main([command, "--stack", STACK, "--project-dir", str(tmp_path), "--out", str(tmp_path / "out")]
                    if command == "render" else [command, "--stack", STACK, "--project-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
