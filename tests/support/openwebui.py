"""Run the real Open WebUI (scripts/install_engines.py's open-webui venv) on loopback as the VM's rendered unit
runs it: the same Environment= lines, the same EnvironmentFile (the WEBUI_SECRET_KEY that the rendered
llmdeploy-install-secrets wrote from the secrets bundle), the same ExecStart arguments, with DATA_DIR/HOME under the
test's folder. Stopped by PID (its process group) when the block ends.
"""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from llmdeploy.local.paths import cache_root
from llmdeploy.render import FILES_DIR, Rendered

from .procs import start_process, stop_process, wait_until

VENV = Path(os.environ.get("LLMDEPLOY_ENGINES_DIR") or cache_root() / "engines") / "open-webui"
VM_VENV = "/opt/llmdeploy/open-webui"
START_TIMEOUT_S = 180.0  # 15-20 s on an idle 2-core machine (OFFLINE_MODE); more when other heavy work runs


@dataclass(frozen=True)
class OpenWebui:
    url: str
    pid: int
    log_path: Path
    data_dir: Path


def unit_environment(unit: str) -> dict[str, str]:
    """The unit's Environment= and EnvironmentFile= values, as systemd gives them to the process."""
    env: dict[str, str] = {}
    for line in unit.splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
        elif line.startswith("EnvironmentFile="):
            path = Path(line.removeprefix("EnvironmentFile=").lstrip("-"))
            for entry in path.read_text().splitlines():
                key, _, value = entry.partition("=")
                env[key] = value
    return env


def exec_start(unit: str) -> list[str]:
    match = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert match, unit
    return [arg.replace(VM_VENV, str(VENV)) for arg in shlex.split(match.group(1))]


def _health(url: str) -> str | None:
    try:
        got = requests.get(f"{url}/health", timeout=2)
    except requests.RequestException as exc:
        return type(exc).__name__
    return None if got.status_code == 200 else f"HTTP {got.status_code}"


@contextmanager
def open_webui(rendered: Rendered, work: Path) -> Iterator[OpenWebui]:
    unit = rendered.file(f"{FILES_DIR}/open-webui.service").content
    env = unit_environment(unit)
    data = work / "open-webui"
    data.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(data), DATA_DIR=str(data), HF_HOME=str(data / "hf"))
    command = exec_start(unit)
    port = command[command.index("--port") + 1]
    log_path = work / "open-webui.log"
    proc = start_process(["env", "-i", f"PATH={os.environ['PATH']}", *(f"{k}={v}" for k, v in env.items()),
                          *command], log_path, cwd=data)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _health(url), proc, START_TIMEOUT_S, "Open WebUI", log_path, interval=0.5)
        yield OpenWebui(url, proc.pid, log_path, data)
    finally:
        stop_process(proc, grace=15)
