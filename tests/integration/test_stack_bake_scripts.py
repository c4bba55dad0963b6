"""The builder's shell scripts (stack/bake.py), run for real: shellcheck passes them, and the power-off wait
returns once a real TCP port stops answering and fails while it answers; the install wait, with its paths moved
into a temporary folder, passes, fails with the step's log, or names the step that never finished."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from llmdeploy.stack.bake import install_command, powered_off_script, wait_install_script
from llmdeploy.vmpaths import BOOT_FINISHED, LOG_DIR, STAGES_DIR


def test_the_builders_scripts_pass_shellcheck() -> None:
    scripts = {"wait": wait_install_script(("10-apt", "40-engine"), 600), "off": powered_off_script(),
               "gate": "#!/bin/bash\n" + install_command(("10-apt",), 600) + "\n"}
    for name, text in scripts.items():
        text = text if text.startswith("#!") else "#!/bin/bash\n" + text
        done = subprocess.run(["shellcheck", "-s", "bash", "-"], input=text, text=True, capture_output=True)
        assert done.returncode == 0, (name, done.stdout)


def test_the_power_off_wait_returns_once_ssh_stops_answering_and_fails_while_it_answers() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    env = {"LLMDEPLOY_BUILDER_IP": "127.0.0.1", "PATH": "/usr/bin:/bin"}
    script = powered_off_script(port=port, margin_s=0, tries=2).replace("sleep 5", "sleep 0.1")
    try:
        answering = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        listener.close()
    assert answering.returncode == 1 and "still answers" in answering.stderr
    script = powered_off_script(port=port, margin_s=0, tries=5).replace("sleep 5", "sleep 0.1")
    closed = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert closed.returncode == 0 and "has powered off" in closed.stdout


def _run_wait(tmp: Path, steps: tuple[str, ...], timeout_s: int = 30) -> subprocess.CompletedProcess[str]:
    """wait_install_script, run by bash with its VM paths moved under tmp."""
    script = wait_install_script(steps, timeout_s).replace("sleep 5", "sleep 0.1")
    for path in (BOOT_FINISHED, STAGES_DIR, LOG_DIR):
        script = script.replace(path, str(tmp / path.lstrip("/")))
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_the_install_wait_passes_when_every_install_step_is_done_and_names_what_is_not(tmp_path: Path) -> None:
    stages, logs = tmp_path / STAGES_DIR.lstrip("/"), tmp_path / LOG_DIR.lstrip("/")
    stages.mkdir(parents=True)
    logs.mkdir(parents=True)
    (logs / "40-engine.log").write_text("pulling the image\ndocker: toomanyrequests\n")
    (stages / "10-apt.done").write_text("2026-12-07T10:00:00Z\n")
    (stages / "40-engine.failed").write_text("2026-12-07T10:01:00Z exit=1\n")
    failed = _run_wait(tmp_path, ("10-apt", "40-engine"))
    assert failed.returncode == 1 and "FAILED at 40-engine" in failed.stderr and "toomanyrequests" in failed.stderr
    (stages / "40-engine.failed").unlink()
    finished = tmp_path / BOOT_FINISHED.lstrip("/")
    finished.parent.mkdir(parents=True)
    finished.write_text("")
    missing = _run_wait(tmp_path, ("10-apt", "40-engine"))
    assert missing.returncode == 1 and "step 40-engine never completed" in missing.stderr
    (stages / "40-engine.done").write_text("2026-12-07T10:02:00Z\n")
    done = _run_wait(tmp_path, ("10-apt", "40-engine"))
    assert done.returncode == 0 and "install steps done: 10-apt 40-engine" in done.stdout


def test_the_install_wait_gives_up_at_its_deadline(tmp_path: Path) -> None:
    late = _run_wait(tmp_path, ("10-apt",), timeout_s=1)
    assert late.returncode == 1 and "did not finish within 1 s" in late.stderr
