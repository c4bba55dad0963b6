"""A real Streamlit server on loopback, started with the flags of the rendered biochatter-light.service.

Why: BioChatter Light cannot be fetched here (no GitHub), but the server it runs on can (PyPI, installed by
scripts/install_engines.py). Starting Streamlit with the unit's own ExecStart flags (baseUrlPath light, loopback
address, headless) on a small app proves the unit's command and nginx's /light/ route together.
"""
from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .engines import ENGINES_DIR, missing_engine
from .ports import free_port
from .procs import start_process, stop_process, wait_until

STREAMLIT_VENV = ENGINES_DIR / "streamlit"
PYTHON = STREAMLIT_VENV / "bin" / "python"
CLIENT = Path(__file__).with_name("streamlit_client.py")
APP_TEXT = "hello from llmdeploy's light route"


def unit_command(unit: str) -> list[str]:
    """ExecStart= of a systemd unit as argv (continuation lines joined)."""
    text = unit.replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def _health(port: int) -> str | None:
    import requests
    try:
        r = requests.get(f"http://127.0.0.1:{port}/light/_stcore/health", timeout=2)
    except requests.RequestException as exc:
        return f"no answer yet ({type(exc).__name__})"
    return None if r.status_code == 200 else f"health answered {r.status_code}"


def unit_environment(unit: str) -> dict[str, str]:
    """The unit's Environment= lines (NAME=VALUE each)."""
    return dict(line.removeprefix("Environment=").split("=", 1) for line in unit.splitlines()
                if line.startswith("Environment="))


@contextmanager
def streamlit_from_unit(unit: str, work: Path, files: dict[str, str] | None = None,
                        env: dict[str, str] | None = None) -> Iterator[int]:
    """Streamlit running the unit's script with the unit's flags and Environment= (env overrides some), but this
    machine's venv and a free port; yields the port. `files`: the app folder (default: a one-line app.py, which
    must then be the unit's script). The process is stopped by PID at the end."""
    problem = missing_engine(STREAMLIT_VENV, "Streamlit")
    assert not problem, problem
    argv = unit_command(unit)
    files = files or {"app.py": f"import streamlit as st\nst.write({APP_TEXT!r})\n"}
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] in files, argv
    port = free_port()
    flags = argv[5:]
    flags[flags.index("--server.port") + 1] = str(port)
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    log = work / "streamlit.log"
    variables = [f"{k}={v}" for k, v in {**unit_environment(unit), "HOME": str(work), **(env or {})}.items()]
    proc = start_process(["env", *variables, str(PYTHON), "-m", "streamlit", "run", argv[4], *flags], log,
                         cwd=work)
    try:
        wait_until(lambda: _health(port), proc, 60, "streamlit", log, interval=0.3)
        yield port
    finally:
        stop_process(proc)
