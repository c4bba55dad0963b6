"""What a fuzzer found (about 1,000 hostile configs through validate and render), each fixed at its cause.

Why: `llmdeploy` must answer bad input with a message naming the key or file, what is accepted and the fix (exit
code 2), never a traceback, and must never accept a value whose output then fails on the VM: a systemd unit that
systemd refuses, a directive smuggled into the nginx map, a rate nginx cannot hold.
"""
import json
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.cli import main
from llmdeploy.errors import EXIT_USAGE
from llmdeploy.config import ConfigError, StackConfig, parse
from llmdeploy.render import render
from llmdeploy.textfiles import MAX_YAML_DEPTH, FileProblem, load_yaml
from support.bad_input import LLAMACPP, problem
from support.project import empty_project, minimal_raw
from support.workshop_stack import workshop_project


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_an_expiry_beyond_datetimes_range_in_utc_is_a_config_problem(when: str) -> None:
    assert "between years 1 and 9999 in UTC" in problem("expiresAt", expiresAt=when)


def test_an_expiry_in_range_is_still_normalised_to_utc() -> None:
    assert parse(minimal_raw(expiresAt="9999-12-31T22:59:59-01:00")).expires_at == "9999-12-31T23:59:59Z"


@pytest.mark.parametrize("depth", [100_000, 33])
def test_a_custom_model_nested_too_deep_is_a_config_problem(depth: int) -> None:
    deep = '{"model_name": "m", "x": ' + "[" * depth + "]" * depth + "}"
    line = problem("xinferenceCustomModel", engine="xinference", xinferenceModelName="m", xinferenceCustomModel=deep)
    assert "nested at most 32 levels deep" in line


def test_a_list_key_given_as_json_nested_too_deep_is_a_config_problem() -> None:
    assert "a list of strings" in problem("apiKeys", apiKeys="[" * 100_000)


def test_an_integer_beyond_floats_range_is_a_config_problem() -> None:
    assert "a whole number" in problem("shapeOcpus", shapeOcpus=10 ** 400)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = empty_project(tmp_path, monkeypatch)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


NESTED_BLOCK = "config:\n  llmdeploy:tags:\n" + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(4000))
HOSTILE_FILES = {
    "utf-16 with a BOM": ("config:\n  llmdeploy:engine: ollama\n".encode("utf-16"), "is UTF-16 text"),
    "bytes ff fe": (b"\xff\xfe\x00config", "is UTF-16 text"),
    "latin-1": ("config:\n  llmdeploy:acmeEmail: caf\xe9@example.org\n".encode("latin-1"), "is not UTF-8 (byte 0xe9"),
    "YAML nested 4,000 deep": (NESTED_BLOCK.encode(), "nests lists or mappings too deeply"),
    "YAML flow nested 5,000 deep": (("config: " + "[" * 5000 + "]" * 5000).encode(), "too deeply"),
    "an integer of 5,000 digits": (("config:\n  llmdeploy:shapeOcpus: " + "9" * 5000).encode(), "cannot convert"),
}


@pytest.mark.parametrize("block", [False, True])
def test_yaml_nesting_stops_at_a_fixed_depth_not_at_pythons_recursion_limit(block: bool) -> None:
    def nested(depth: int) -> str:
        if block:
            return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "leaf\n"
        return "[" * depth + "]" * depth
    load_yaml(nested(MAX_YAML_DEPTH), "f.yaml")
    with pytest.raises(FileProblem, match=f"f.yaml nests lists or mappings too deeply .*more than {MAX_YAML_DEPTH}"):
        load_yaml(nested(MAX_YAML_DEPTH + 1), "f.yaml")


@pytest.mark.parametrize("command", ["render", "validate"])
@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_a_hostile_stack_file_is_a_message_naming_it(project: Path, capsys: pytest.CaptureFixture[str],
                                                     command: str, case: str) -> None:
    data, expected = HOSTILE_FILES[case]
    (project / "Pulumi.bad.yaml").write_bytes(data)
    out = project / "out"
    code, err = run(capsys, command, "--stack", "bad", "--project-dir", str(project),
                    *(["--out", str(out)] if command == "render" else []))
    assert code == EXIT_USAGE and "Pulumi.bad.yaml" in err and expected in err, err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_a_hostile_roster_is_a_message_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 case: str) -> None:
    root = workshop_project(tmp_path, [{"id": "u1", "name": "U", "email": "u1@example.org"}])
    (root / "roster.csv").write_bytes(HOSTILE_FILES[case][0] if "YAML" not in case else b"id,name,email\n" +
                                      b"u1,U,u1@example.org," + b"x" * 200_000 + b"\n")
    code, err = run(capsys, "validate", "--stack", "ws", "--project-dir", str(root))
    assert code == EXIT_USAGE and "roster.csv" in err and "Traceback" not in err, err


# Short ids: pytest would otherwise spell out the whole content, and a 100,000-character id costs seconds.
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("content", [b"\xff\xfe\x00x", b"[" * 100_000, ("x: " + "9" * 5000).encode()],
                         ids=["not UTF-8", "100,000 brackets", "a 5,000-digit number"])
def test_a_hostile_targets_file_is_a_message_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       suffix: str, content: bytes) -> None:
    path = tmp_path / f"targets{suffix}"
    path.write_bytes(content)
    code, err = run(capsys, "smoke", "--targets", str(path))
    assert code == EXIT_USAGE and str(path) in err and "Traceback" not in err, err


@pytest.mark.parametrize("content", [b"\xff\xfe\x00x", b"[" * 100_000, b'{"x": ' + b"9" * 5000 + b"}"],
                         ids=["not UTF-8", "100,000 brackets", "a 5,000-digit number"])
def test_a_hostile_outputs_file_is_a_message_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       content: bytes) -> None:
    root = workshop_project(tmp_path, [{"id": "u1", "name": "U", "email": "u1@example.org"}])
    path = tmp_path / "outputs.json"
    path.write_bytes(content)
    code, err = run(capsys, "workshop", "handouts", "--stack", "ws", "--project-dir", str(root), "--outputs",
                    str(path), "--out", str(tmp_path / "handouts"))
    assert code == EXIT_USAGE and str(path) in err and "Traceback" not in err, err
    assert not (tmp_path / "handouts").exists()


@pytest.mark.parametrize("content", [b"\xff\xfe\x00x", NESTED_BLOCK.encode()], ids=["not UTF-8", "YAML nested 4,000 deep"])
def test_a_hostile_limits_file_is_a_message_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      content: bytes) -> None:
    root = workshop_project(tmp_path, [{"id": "u1", "name": "U", "email": "u1@example.org"}])
    path = tmp_path / "limits.yaml"
    path.write_bytes(content)
    code, err = run(capsys, "workshop", "plan", "--stack", "ws", "--project-dir", str(root), "--limits", str(path))
    assert code == EXIT_USAGE and str(path) in err and "Traceback" not in err, err


def test_render_writes_nothing_when_a_later_endpoint_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = workshop_project(tmp_path, [{"id": f"u{i}", "name": "U", "email": f"u{i}@example.org"} for i in range(3)],
                            tlsMode="self-signed")
    import llmdeploy.render as rendering  # cmd_render imports it when it runs (lazy, for a quick --help)
    calls: list[str] = []

    def render_but_the_third(cfg: StackConfig, **where: Any) -> Any:
        calls.append(cfg.stack)
        if len(calls) == 3:
            raise ConfigError([], "ws, the third endpoint")
        return render(cfg, **where)

    monkeypatch.setattr(rendering, "render", render_but_the_third)
    out = tmp_path / "out"
    code, _ = run(capsys, "render", "--stack", "ws", "--project-dir", str(root), "--out", str(out))
    assert code == EXIT_USAGE and not out.exists()


@pytest.mark.parametrize("url", ["https://x/.gguf", "https://x/..?.gguf", "https://x/%2e%2e.gguf", "https://x/a/",
                                 "https://x/_.gguf"])
def test_a_url_without_a_model_file_name_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(minimal_raw(**{**LLAMACPP, "modelName": ""}, llamacppModelUrl=url))
    assert [p.key for p in info.value.problems] == ["llamacppModelUrl"]  # not also the modelName derived from it


@pytest.mark.parametrize("key, value", [
    ("apiKeys", ["ci\n:60r/m"]), ("domain", "llm.example.org\n."), ("workshopDomain", "ws.example.org\n."),
    ("tags", ["team=ml\nx"]), ("sshPublicKeys", ["ssh-ed25519 AAAA c\nssh-rsa BBBB"]),
])
def test_a_final_newline_inside_a_value_is_refused(key: str, value: Any) -> None:
    problem(key, **{key: value})


def test_control_characters_are_refused_in_any_value() -> None:
    assert "control characters (found U+0000)" in problem("acmeEmail", acmeEmail="ops@example.org\0")
    assert "U+001B" in problem("pipIndexUrl", pipIndexUrl="https://pypi.org/\x1b[2Jsimple")


def test_a_percent_sign_is_kept_out_of_the_units() -> None:
    assert "without '%'" in problem("hfEndpoint", hfEndpoint="https://hf.example.org/%n")


def test_user_data_and_bundle_read_back_as_the_files_they_install() -> None:
    """render dumps user-data with libyaml's emitter when PyYAML has it, and packs the rest in a tar.gz; both must
    still hold every file exactly, hostile characters included."""
    import io
    import tarfile

    import yaml
    cfg = parse(minimal_raw(tlsMode="letsencrypt", domain="llm.example.org", acmeEmail="o'\"\\$`é{}#@x.org",
                            tags=["k=v: &a *a !!x"]))
    rendered = render(cfg)
    doc = yaml.safe_load(rendered.user_data)
    in_user_data = {f["path"]: f["content"] for f in doc["write_files"]}
    with tarfile.open(fileobj=io.BytesIO(rendered.bundle), mode="r:gz") as tar:
        in_bundle = {"/" + m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert not set(in_user_data) & set(in_bundle)
    assert {**in_user_data, **in_bundle} == {f.path: f.content for f in rendered.files}
    assert json.loads(rendered.file("/etc/llmdeploy/stack.json").content)["domain"] == "llm.example.org"


@pytest.mark.parametrize("command", [["render", "--stack", "x"], ["validate", "--stack", "x"], ["config-table"],
                                     ["workshop", "plan", "--stack", "x", "--offline"]])
@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfename: llmdeploy", "is UTF-16 text"), (b"name: [", "is not valid YAML"),
    (b"name: llmdeploy\nconfig:\n  engine: 1\n", "is not a Pulumi project file"),
])
def test_a_broken_project_file_is_a_message_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      command: list[str], content: bytes, expected: str) -> None:
    (tmp_path / "Pulumi.yaml").write_bytes(content)
    (tmp_path / "Pulumi.x.yaml").write_text("config:\n  llmdeploy:engine: ollama\n", encoding="utf-8")
    code, err = run(capsys, *command, "--project-dir", str(tmp_path))
    assert code == EXIT_USAGE and "Pulumi.yaml" in err and expected in err and "Traceback" not in err, err
