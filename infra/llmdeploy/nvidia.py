"""The NVIDIA driver a GPU VM installs, and what the engine's CUDA needs of it: one table, read by validate
(config.py) and rendered into the VM's pre-start check (templates/files/cuda-check.sh.j2).

The driver is Ubuntu's packaging of NVIDIA's datacenter ("-server") branch, with the prebuilt kernel modules
Canonical signs for each kernel (no DKMS build, so Secure Boot and a missing compiler do not matter).
"""
from __future__ import annotations

import re

# Minimum Linux x86_64 driver of each CUDA toolkit release (NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit
# and Corresponding Driver Versions", GA releases; the runfile of each release bundles that driver, e.g.
# cuda_12.9.0_575.51.03_linux.run). `nvidia-smi` prints the newest CUDA a driver supports as "CUDA Version".
# A driver older than this may still run the image through CUDA minor-version compatibility or the datacenter
# forward-compatibility package; llmdeploy does not rely on either, so it refuses the combination.
CUDA_MIN_DRIVER: dict[tuple[int, int], str] = {
    (13, 0): "580.65.06",
    (12, 9): "575.51.03",
    (12, 8): "570.26",
    (12, 6): "560.28.03",
    (12, 4): "550.54.14",
    (12, 1): "530.30.02",
}

# vLLM's images: since v0.20.0 the unsuffixed tag is built for CUDA 13.0 (vllm-project/vllm#39878, "CUDA 13.0
# wheels and Docker images are now the unsuffixed default"); `-cu129`, `-cu128`, ... tags name their CUDA.
_VLLM_TAG = re.compile(r":v?(?P<major>\d+)\.(?P<minor>\d+)(?:\.\d+)?(?:-cu(?P<cuda>\d{3}))?$")
_CUDA_13_SINCE = (0, 20)

# Ray Serve LLM runs the vLLM that ray's llm extra installs from PyPI, and PyPI's vllm wheels are CUDA 13.0 builds
# since 0.20.0 too: vllm 0.29.0 requires torch==2.13.0, whose wheel requires cuda-toolkit==13.0.3. Ray 2.57.0 and
# later pin it (ray 2.57.0: vllm==0.25.1, 2.59.0: 0.27.0, 2.60.0: 0.29.0; each wheel's METADATA, Requires-Dist
# `vllm[audio]==...; extra == "llm"`); older ones ask for vllm>=0.11 or >=0.18 and pip takes the newest. So every
# rayPackage that validate accepts gets a CUDA 13.0 vLLM.
RAY_LLM_CUDA = (13, 0)


def min_branch(cuda: tuple[int, int]) -> int | None:
    """The driver branch (its major version) that first supports this CUDA release; None if not in the table."""
    driver = CUDA_MIN_DRIVER.get(cuda)
    return int(driver.split(".", 1)[0]) if driver else None


def newest_cuda(branch: int) -> tuple[int, int] | None:
    """The newest CUDA release in the table that this driver branch supports."""
    fitting = [cuda for cuda, driver in CUDA_MIN_DRIVER.items() if int(driver.split(".", 1)[0]) <= branch]
    return max(fitting, default=None)


def vllm_image_cuda(image: str) -> tuple[int, int] | None:
    """The CUDA release a vllm/vllm-openai tag is built for, or None when the tag does not say (a digest,
    `latest`, a mirror's own name): the VM's pre-start check still compares the real image."""
    match = _VLLM_TAG.search(image)
    if not match:
        return None
    if match["cuda"]:
        return int(match["cuda"][:-1]), int(match["cuda"][-1])
    return (13, 0) if (int(match["major"]), int(match["minor"])) >= _CUDA_13_SINCE else None


def cuda_text(cuda: tuple[int, int]) -> str:
    return f"{cuda[0]}.{cuda[1]}"


def ubuntu_packages(branch: int) -> dict[str, str]:
    """Ubuntu's package names for a datacenter branch (the kernel one takes `uname -r` on the VM)."""
    return {"modules": f"linux-modules-nvidia-{branch}-server", "userspace": f"nvidia-headless-no-dkms-{branch}-server",
            "utils": f"nvidia-utils-{branch}-server"}
