"""The CLI as a new user meets it (issue 23, CLI findings 3, 7, 8, 9 and 10), run as a process where the
behaviour is the process's (exit code, stderr, a closed pipe, the working directory): no project folder, a used
--out folder, a file in the way, `| head`, messages that point at the right fix, --version and every subcommand's
help. The smoke findings are in test_smoke_cli_safety.py, the stack-file typos in tests/unit/test_stack_yaml.py.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmdeploy.cli import build_parser, main
from llmdeploy.outfolder import MANIFEST
from support.project import ROOT
from support.workshop_stack import STACK, people, workshop_project

pytestmark = pytest.mark.integration


def llmdeploy(*argv: str, cwd: Path | str = ROOT, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`python3 -m llmdeploy.cli ARGV` with this checkout's code first on the path and no LLMDEPLOY_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMDEPLOY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "infra"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "llmdeploy.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}


def reported_files(stdout: str) -> int:
    """user-data, bundle.tar.gz and the files each `rendered ... user-data, bundle.tar.gz (...) and N files` line
    reports."""
    return sum(int(n) + 2 for n in re.findall(r"user-data, bundle\.tar\.gz \(sha256 [0-9a-f]+\) and (\d+) files", stdout))


# --- 3: outside a project folder --------------------------------------------------------------------------------


def test_outside_a_project_it_refuses_and_writes_nothing(tmp_path: Path) -> None:
    stack = "first-minutes-nowhere"
    result = llmdeploy("render", "--stack", stack, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no Pulumi.yaml in {tmp_path} or any folder above it" in result.stderr
    assert "--project-dir DIR" in result.stderr and "Traceback" not in result.stderr
    assert not (ROOT / "build" / stack).exists() and list(tmp_path.iterdir()) == []


def test_below_a_project_folder_it_finds_the_project_and_renders_into_its_build(tmp_path: Path) -> None:
    root = workshop_project(tmp_path, people(1))
    (root / "notes" / "day1").mkdir(parents=True)
    result = llmdeploy("render", "--stack", STACK, cwd=root / "notes" / "day1")
    assert result.returncode == 0, result.stderr
    assert f"to {root / 'build' / STACK / 'u01'}: user-data, bundle.tar.gz " in result.stdout
    assert (root / "build" / STACK / "u01" / "user-data").is_file()
    again = llmdeploy("render", "--stack", STACK, cwd=root)  # its own earlier render is replaced, not refused
    assert again.returncode == 0, again.stderr


def test_a_project_dir_without_pulumi_yaml_is_bad_input(tmp_path: Path) -> None:
    result = llmdeploy("validate", "--stack", "x", "--project-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"--project-dir {tmp_path}: no Pulumi.yaml there" in result.stderr


# --- 7: render --out into a used folder ---------------------------------------------------------------------


def test_a_second_render_into_the_same_folder_leaves_only_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = llmdeploy("render", "--stack", "workshop-a10", "--out", str(out))
    assert first.returncode == 0, first.stderr
    second = llmdeploy("render", "--stack", "llamacpp-cpu", "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert len(files_in(out)) == reported_files(second.stdout)  # what it says is what the folder holds
    assert not (out / "ana").exists()  # the workshop's per-attendee folders are gone
    stale = reported_files(first.stdout)
    assert f"removed {stale} file(s) an earlier render had left in {out} that this one does not write" in second.stdout


def test_a_folder_llmdeploy_did_not_write_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("my notes\n")
    result = llmdeploy("render", "--stack", "llamacpp-cpu", "--out", str(tmp_path))
    assert result.returncode == 2
    assert f"--out {tmp_path} is not empty and llmdeploy render did not write it" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


# --- 8: bad input exits 2 with a fix; a closed pipe is quiet ------------------------------------------------------


@pytest.mark.parametrize("where", ["", "sub"])
def test_a_file_where_a_folder_must_go_is_bad_input(tmp_path: Path, where: str) -> None:
    (tmp_path / "taken").write_text("x")
    out = tmp_path / "taken" / where if where else tmp_path / "taken"
    result = llmdeploy("render", "--stack", "llamacpp-cpu", "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{tmp_path / 'taken'} is a file, not a folder; choose another --out" in result.stderr


# A long output, a short one (still in Python's buffer when the command returns), and argparse's --help, whose
# write error argparse itself swallows (it then exits 0 as usual).
@pytest.mark.parametrize("argv, code", [(["config-table"], 141), (["route-table"], 141), (["--help"], 0)])
def test_a_reader_that_stops_early_gets_no_broken_pipe_message(argv: list[str], code: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "infra")}
    proc = subprocess.Popen([sys.executable, "-m", "llmdeploy.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # `| head` that has read all it wanted: every write now fails with EPIPE
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == code  # 141: 128 + SIGPIPE, as a shell reports a tool the pipe stopped
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert err == ""  # no "llmdeploy: Broken pipe", no traceback


# --- 9: messages that point at the right fix -----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["workshop", "teardown", "--stack", STACK, "--yes"], ["reap", "--expired"]])
def test_without_an_oci_config_teardown_and_reap_do_not_suggest_offline(tmp_path: Path, argv: list[str]) -> None:
    root = workshop_project(tmp_path, people(1))
    result = llmdeploy(*argv, "--oci-config", str(tmp_path / "missing"), cwd=root)
    assert result.returncode == 2 and "no OCI config file at" in result.stderr
    assert "--offline" not in result.stderr and "--limits" not in result.stderr


def test_plan_without_an_oci_config_still_names_its_offline_way(tmp_path: Path) -> None:
    root = workshop_project(tmp_path, people(1))
    result = llmdeploy("workshop", "plan", "--stack", STACK, "--oci-config", str(tmp_path / "missing"), cwd=root)
    assert result.returncode == 2 and "--offline" in result.stderr


def test_a_bad_shape_in_the_roster_is_fixed_in_the_roster(tmp_path: Path) -> None:
    rows = [{**row, "shape": "VM.GPU.A10.9"} for row in people(1)]
    root = workshop_project(tmp_path, rows, columns=("id", "name", "email", "shape"))
    result = llmdeploy("render", "--stack", STACK, "--out", str(tmp_path / "out"), cwd=root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "fix the shape column of attendee u01 in the roster roster.csv, e.g. VM.GPU.A10." in result.stderr
    assert "pulumi config set shape" not in result.stderr


def test_a_model_of_unknown_size_passes_with_a_note(tmp_path: Path) -> None:
    root = workshop_project(tmp_path, people(1), workshopRoster="", ollamaModel="house-model")
    result = llmdeploy("render", "--stack", STACK, "--out", str(tmp_path / "out"), cwd=root)
    assert result.returncode == 0, result.stderr
    assert "note: the size of house-model is unknown" in result.stdout and "was not checked" in result.stdout


def test_the_stack_file_name_is_taken_for_the_stack(tmp_path: Path) -> None:
    result = llmdeploy("render", "--stack", "Pulumi.llamacpp-cpu.yaml", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "rendered stack 'llamacpp-cpu'" in result.stdout


# --- 10: help and flags ------------------------------------------------------------------------------------------


def test_version() -> None:
    result = llmdeploy("--version")
    assert result.returncode == 0 and re.fullmatch(r"llmdeploy \d+\.\d+\.\d+\n", result.stdout), result.stdout


def test_the_top_level_help_does_not_promise_no_cloud_while_reap_deletes() -> None:
    text = " ".join(llmdeploy("--help").stdout.split())
    assert "without touching any cloud" not in text
    assert "reap: the one command that deletes in the cloud, and only with --delete" in text
    assert "examples:" in text


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((" ".join((*path, name)), sub))
                found += _subcommands(sub, (*path, name))
    return found


def test_every_subcommand_has_a_description_and_an_example() -> None:
    commands = _subcommands(build_parser())
    assert len(commands) >= 20  # render ... reap, workshop's six, local's six
    for name, parser in commands:
        text = parser.format_help()
        assert parser.description, name
        example = re.search(r"^examples?:\n  ([A-Z_]+=\S* |sudo )?llmdeploy ", text, re.MULTILINE)
        assert example, f"{name} has no example:\n{text}"


def test_reap_deletes_with_delete_and_its_old_yes_is_refused_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reap", "--expired", "--yes"]) == 2
    assert "deleting is --delete" in capsys.readouterr().err
    assert build_parser().parse_args(["reap", "--expired", "--delete"]).delete is True


def test_the_cli_module_loads_none_of_the_heavy_libraries() -> None:
    """`llmdeploy --help` must stay quick: building the whole parser imports no HTTP, SSH, task or PDF library
    (each command imports them when it runs). scripts/bench_cli_help.py measures the time."""
    code = ("import sys, llmdeploy.cli as c; c.build_parser(); "
            "print(' '.join(m for m in ('paramiko', 'requests', 'invoke', 'cryptography', 'weasyprint', 'jinja2') "
            "if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "infra")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
