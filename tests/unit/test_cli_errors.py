"""`llmdeploy render/validate` on a bad stack: exit 2, a message that says the fix, no traceback, no output files.

Why: these commands are the first thing an operator runs; a config mistake must read as a
message, not as a Python traceback, and a failed render must not leave half-written files behind.
"""
import gzip
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.errors import EXIT_OK, EXIT_USAGE
from support.cli_project import PASSWORD, project


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["render", "validate"])
def test_unknown_stack(project: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, err = run(capsys, command, "--stack", "nope", "--project-dir", str(project))
    assert code == EXIT_USAGE == 2
    assert err.startswith("llmdeploy: no stack file ")
    assert "pulumi stack init nope" in err
    assert "(bad, good, secure)" in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("command", ["render", "validate"])
def test_invalid_config_lists_each_problem(project: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, err = run(capsys, command, "--stack", "bad", "--project-dir", str(project))
    assert code == 2
    assert "llmdeploy: 3 config problem(s) in stack 'bad':" in err
    assert "  - engine: got 'olama'; expected one of " in err and "pulumi config set engine ollama" in err
    assert "  - acmeEmail: got 'nope'" in err and "pulumi config set acmeEmail ops@example.org" in err
    assert "  - tags: got 'noequals'" in err and "pulumi config set --path 'tags[0]' team=ml" in err
    assert "Traceback" not in err and out == ""


def test_secure_value_without_env(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "render", "--stack", "secure", "--project-dir", str(project),
                         "--out", str(project / "out"))
    assert code == 2
    assert "llmdeploy:hfToken is encrypted (secure:)" in err
    assert "LLMDEPLOY_HF_TOKEN=\"$(pulumi config get hfToken --stack secure)\"" in err
    assert "ciphertext" not in err and "Traceback" not in err
    assert not (project / "out").exists()


def test_render_writes_user_data_and_files(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDEPLOY_BASIC_AUTH_PASSWORDS", f'{{"alice": "{PASSWORD}"}}')
    out_dir = tmp_path / "rendered" / "good"
    code, out, err = run(capsys, "render", "--stack", "good", "--project-dir", str(project), "--out", str(out_dir))
    assert code == EXIT_OK, err
    assert out.startswith("rendered stack 'good' (ollama, llama3.1:8b, VM.GPU.A10.1) to ")
    user_data = (out_dir / "user-data").read_text(encoding="utf-8")
    assert user_data.startswith("#cloud-config")
    files = [p for p in (out_dir / "files").rglob("*") if p.is_file()]
    assert files
    assert f"and {len(files)} files" in out and "bundle.tar.gz (sha256 " in out
    assert (out_dir / "bundle.tar.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip
    # The basic-auth password came from the environment; only its bcrypt hash may reach the output.
    for path in [out_dir / "user-data", *files]:
        assert PASSWORD not in path.read_text(encoding="utf-8"), path
    assert PASSWORD.encode() not in gzip.decompress((out_dir / "bundle.tar.gz").read_bytes())


@pytest.mark.parametrize("stack", ["bad", "nope", "secure"])
def test_failed_render_creates_nothing(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       stack: str) -> None:
    out_dir = tmp_path / "rendered" / stack
    code, _, _ = run(capsys, "render", "--stack", stack, "--project-dir", str(project), "--out", str(out_dir))
    assert code == 2
    assert not out_dir.exists() and not (tmp_path / "rendered").exists()
    assert not (project / "build").exists()


def test_missing_stack_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["render"])
    assert info.value.code == 2
    assert "--stack" in capsys.readouterr().err
