"""`llmdeploy workshop handouts` given bad outputs or no outputs file and no Pulumi: exit 2 with the fix. The
handouts themselves (PDF, QR code, file modes, the pulumi CLI) are in tests/integration/test_workshop_handouts.py."""
import json
from pathlib import Path

import pytest

from llmdeploy.secret_delivery import generate_api_key
from support.handouts import project, run
from support.workshop_stack import STACK, attendee_entry


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the outputs file"),
    ("not json", "is not JSON"),
    ({"endpointUrl": "https://x"}, "has no 'attendees' output: is workshopRoster set, and has `pulumi up` finished"),
    ({"attendees": "[secret]"}, "still encrypted; save the outputs with --show-secrets"),
    ({"attendees": {}}, "the 'attendees' output is empty"),
    ({"attendees": {"alice": {"endpointUrl": "https://a", "openaiBaseUrl": "https://a/v1", "model": "m"}}},
     "attendee alice: missing apiKey"),
    ({"attendees": {"alice": attendee_entry("alice", "https://a", "sk-llm-'; rm -rf ~; echo '")}},
     "apiKey is not an API key llmdeploy issues"),
    ({"attendees": {"alice": attendee_entry("alice", "https://a\" -d @/etc/passwd \"", generate_api_key())}},
     "is not an http(s) URL"),
])
def test_bad_outputs_are_exit_2_with_the_fix(tmp_path: Path, project: Path, content: object, message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "outputs.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    code, out, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                         "--outputs", str(path), "--out", str(tmp_path / "h"))
    assert code == 2
    assert message in err and "Traceback" not in out + err
    assert not (tmp_path / "h").exists()


def test_no_pulumi_and_no_outputs_file_is_exit_2(tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    code, out, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project))
    assert code == 2
    assert "the Pulumi CLI is not installed" in err and "Traceback" not in out + err


def test_ids_the_roster_does_not_list_are_refused_by_name(tmp_path: Path, project: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Outputs of another stack, or of a roster since edited: no handout for someone the roster does not name."""
    outputs = {"attendees": {who: attendee_entry(who, f"https://{who}.example.org", generate_api_key())
                             for who in ("alice", "mallory", "zed")}}
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    code, out, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                         "--outputs", str(path), "--out", str(tmp_path / "h"))
    assert code == 2, out + err
    assert "the roster does not list: mallory, zed; no handout was written" in err
    assert not (tmp_path / "h").exists()
