"""lib.sh's handlers run for real in bash with set -e, as the steps source them: install_file reports a change
without stopping the step, ensure_service reloads and restarts only on a change, venv_install installs once per
requirement, readiness_deadline reads the waiting gate's deadline. systemctl and pip are recorded, not run."""
import os
import subprocess
import time
from pathlib import Path

import pytest

from llmdeploy.config import parse
from llmdeploy.render import render
from llmdeploy.vmpaths import FILES_DIR, GATE_DEADLINE, LIB_SH
from support.project import minimal_raw

READINESS_MINUTES = 7


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    """The rendered lib.sh, its gate file moved under tmp_path (the test writes it)."""
    content = render(parse(minimal_raw(readinessTimeoutMinutes=READINESS_MINUTES), stack="lib")).file(LIB_SH).content
    assert GATE_DEADLINE in content
    path = tmp_path / "lib.sh"
    path.write_text(content.replace(GATE_DEADLINE, str(tmp_path / "gate-deadline")))
    return path


def fake_systemctl(tmp_path: Path) -> dict[str, str]:
    """The environment of a run whose systemctl records its calls in tmp_path/systemctl.calls and answers
    NeedDaemonReload with tmp_path/need-reload."""
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir(exist_ok=True)
    systemctl = fakebin / "systemctl"
    systemctl.write_text(f"#!/bin/sh\necho \"$*\" >>{tmp_path / 'systemctl.calls'}\n"
                         f"case \"$*\" in *NeedDaemonReload*) cat {tmp_path / 'need-reload'} 2>/dev/null ;; esac\n")
    systemctl.chmod(0o755)
    return {"PATH": f"{fakebin}:/usr/bin:/bin"}


def bash(lib: Path, body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """body after sourcing lib.sh (set -euo pipefail), with the recording systemctl."""
    return subprocess.run(["bash", "-c", f". {lib}\n{body}"], capture_output=True, text=True, timeout=60,
                          env=fake_systemctl(tmp_path))


def test_install_file_reports_a_change_and_an_unchanged_file_does_not_stop_the_step(lib: Path, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "etc" / "dest"
    src.write_text("one\n")
    body = (f"install_file {src} {dest} 0640 echo HANDLER; echo first changed=$changed\n"
            f"changed=0; install_file {src} {dest} 0640 echo HANDLER; echo second changed=$changed\n"
            "has_changed || echo went-on")
    result = bash(lib, body, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = result.stdout.split("first changed=1\n")
    assert "HANDLER" in first and f"wrote {dest}" in first  # the copy ran its handler
    assert second == "second changed=0\nwent-on\n"  # no handler, exit 0: set -e did not end the step
    assert dest.read_text() == "one\n" and dest.stat().st_mode & 0o777 == 0o640


def test_ensure_service_reloads_and_restarts_only_when_something_changed(lib: Path, tmp_path: Path) -> None:
    """The unit goes to /etc/systemd/system, so this runs in a private mount namespace over a tmpfs there."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "demo.service").write_text("[Service]\nExecStart=/bin/true\n")
    calls = tmp_path / "systemctl.calls"
    runs = []
    for case in ("new unit", "same unit", "same unit, systemd wants a reload", "another file changed", "reenable"):
        (tmp_path / "need-reload").write_text("yes\n" if "wants a reload" in case else "no\n")
        body = {"another file changed": "mark_changed; ensure_service demo",
                "reenable": "ensure_service demo --reenable"}.get(case, "ensure_service demo")
        script = (f"mount -t tmpfs tmpfs /usr/local/share && mkdir -p {FILES_DIR} && cp {files}/* {FILES_DIR}/ && "
                  f"mkdir -p {tmp_path}/units && mount --bind {tmp_path}/units /etc/systemd/system && "
                  f"bash -c '. {lib}; {body}'")
        calls.write_text("")
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                                capture_output=True, text=True, timeout=60, env=fake_systemctl(tmp_path))
        assert result.returncode == 0, result.stdout + result.stderr
        runs.append([c for c in calls.read_text().splitlines() if "NeedDaemonReload" not in c])
    assert runs[0] == ["daemon-reload", "enable --no-reload demo", "restart demo"]
    assert runs[1] == ["enable --no-reload demo", "start demo"]  # no reload: a running GPU container keeps its GPUs
    assert runs[2] == ["daemon-reload", "enable --no-reload demo", "restart demo"]  # never a reload alone
    assert runs[3] == ["daemon-reload", "enable --no-reload demo", "restart demo"]
    assert runs[4] == ["reenable --no-reload demo", "start demo"]
    assert (tmp_path / "units" / "demo.service").is_file()


def fake_venv(venv: Path, log: Path) -> None:
    """A virtualenv whose python records each pip call (FAIL_UNINSTALL=1: an uninstall fails)."""
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\necho \"$*\" >>{log}\n"
                      "case \"$*\" in *uninstall*) [ \"${FAIL_UNINSTALL:-0}\" = 0 ] ;; esac\n")
    python.chmod(0o755)


def test_venv_install_installs_once_per_requirement_and_stamps_only_a_whole_install(lib: Path, tmp_path: Path) -> None:
    venv, log = tmp_path / "venv", tmp_path / "pip.log"
    fake_venv(venv, log)
    install = f"venv_install {venv} 'pkg==1' --index-url https://pypi.invalid/simple 'pkg==1'"
    for _ in range(2):
        assert bash(lib, install, tmp_path).returncode == 0
    assert log.read_text() == "-m pip install -q --index-url https://pypi.invalid/simple pkg==1\n"  # once
    assert (venv / ".llmdeploy-requirement").read_text() == "pkg==1\n"
    upgrade = install.replace("pkg==1", "pkg==2")
    after = "venv_after_pip() { \"$1/bin/python\" -m pip uninstall -y extra; }\n"
    failed = subprocess.run(["bash", "-c", f". {lib}\n{after}{upgrade}"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "FAIL_UNINSTALL": "1"})
    assert failed.returncode != 0
    assert (venv / ".llmdeploy-requirement").read_text() == "pkg==1\n"  # not stamped: the next run installs again
    assert bash(lib, after + upgrade, tmp_path).returncode == 0
    assert (venv / ".llmdeploy-requirement").read_text() == "pkg==2\n"
    assert log.read_text().splitlines()[-2:] == ["-m pip install -q --index-url https://pypi.invalid/simple pkg==2",
                                                 "-m pip uninstall -y extra"]


def test_readiness_deadline_is_the_waiting_gates_else_the_whole_timeout(lib: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate-deadline"
    whole = READINESS_MINUTES * 60

    def deadline() -> int:
        result = bash(lib, "readiness_deadline", tmp_path)
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    now = int(time.time())
    assert now + whole <= deadline() <= int(time.time()) + whole  # no gate waiting
    waiting = subprocess.Popen(["sleep", "60"])
    try:
        gate.write_text(f"{now + 123} {waiting.pid}\n")
        assert deadline() == now + 123  # the gate gives up then: so does the step
        gate.write_text(f"{now - 5} {waiting.pid}\n")  # its deadline passed
        assert deadline() >= now + whole
    finally:
        waiting.kill()
        waiting.wait()
    gate.write_text(f"{now + 123} {waiting.pid}\n")  # that gate has ended
    assert deadline() >= now + whole
    gate.write_text("garbage\n")
    assert deadline() >= now + whole
    assert os.path.exists(gate)
