"""Validate refuses, with the fix, what vLLM or the NVIDIA driver would refuse on the VM: a tensor-parallel size
that the model's heads do not allow, a --max-model-len beyond its context, a driver branch older than the CUDA
release of vllmImage, and tensor parallel on CPUs."""
from __future__ import annotations

import pytest

from llmdeploy import models, nvidia
from llmdeploy.config import ConfigError, parse
from support.project import minimal_raw

A100 = {"engine": "vllm", "shape": "BM.GPU.A100-v2.8"}


def problems(**overrides: object) -> list[str]:
    try:
        parse(minimal_raw(**overrides))
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_a_tensor_parallel_size_the_heads_do_not_allow_is_refused_with_one_that_works() -> None:
    # Qwen2.5-7B has 28 attention heads and 4 KV heads: the shape's 8 GPUs do not divide them.
    [problem] = problems(**A100)
    assert problem.startswith("vllmTensorParallelSize: got '0 (the GPU count of BM.GPU.A100-v2.8, 8)'")
    assert "Qwen/Qwen2.5-7B-Instruct (28 attention heads, 4 KV heads): one of 1, 2, 4" in problem
    assert problem.endswith("(pulumi config set vllmTensorParallelSize 4)")
    assert problems(**A100, vllmTensorParallelSize=4) == []
    assert problems(**A100, vllmModel="Qwen/Qwen2.5-72B-Instruct") == []  # 64 heads, 8 KV heads: TP 8
    assert problems(**A100, vllmModel="example/unknown-model-7b") == []  # unknown heads: vLLM itself decides


def test_tensor_parallel_on_cpus_is_refused() -> None:
    [problem] = problems(engine="vllm", target="datascience", shape="VM.Standard.E4.Flex",
                         dsContainerImage="iad.ocir.io/ns/vllm-cpu:v1", vllmTensorParallelSize=2,
                         vllmModel="example/unknown-model-1b")
    assert problem.startswith("vllmTensorParallelSize: got 2; expected 0 or 1 on the CPU shape VM.Standard.E4.Flex")
    assert "NUMA" in problem and problem.endswith("(pulumi config set vllmTensorParallelSize 1)")


def test_a_max_model_len_beyond_the_models_context_is_refused() -> None:
    [problem] = problems(engine="vllm", vllmMaxModelLen=65536)
    assert problem == ("vllmMaxModelLen: got 65536; expected at most 32768, the context length of "
                       "Qwen/Qwen2.5-7B-Instruct (max_position_embeddings in its config.json; vLLM refuses to start "
                       "with a longer one) (pulumi config set vllmMaxModelLen 32768)")
    assert problems(engine="vllm", vllmMaxModelLen=32768) == []
    assert problems(engine="vllm", vllmModel="meta-llama/Llama-3.1-8B-Instruct", vllmMaxModelLen=131072) == []


def test_a_driver_branch_older_than_the_images_cuda_is_refused_naming_both() -> None:
    [problem] = problems(engine="vllm", nvidiaDriverBranch=570)
    assert problem.startswith("nvidiaDriverBranch: got 570; expected at least 580: vllmImage "
                              "docker.io/vllm/vllm-openai:v0.33.0 is built for CUDA 13.0, which needs NVIDIA driver "
                              "580.65.06 or newer; branch 570 supports CUDA up to 12.8")
    assert "pulumi config set nvidiaDriverBranch 580" in problem and "CUDA 12.8 or older" in problem
    assert problems(engine="vllm", nvidiaDriverBranch=570, vllmImage="docker.io/vllm/vllm-openai:v0.33.0-cu128") == []
    assert problems(engine="vllm", nvidiaDriverBranch=575, vllmImage="docker.io/vllm/vllm-openai:v0.33.0-cu129") == []
    assert len(problems(engine="vllm", nvidiaDriverBranch=570,
                        vllmImage="docker.io/vllm/vllm-openai:v0.33.0-cu129")) == 1
    assert problems(engine="ollama", nvidiaDriverBranch=570) == []  # Ollama ships its own CUDA runners


RAY = {"target": "ray", "engine": "vllm", "shape": "VM.GPU.A10.2", "vllmModel": "Qwen/Qwen2.5-7B-Instruct",
       "rayTensorParallel": 2}


def test_the_ray_targets_pip_vllm_needs_the_same_driver_as_the_image() -> None:
    """Ray Serve LLM's vLLM comes from PyPI through ray's llm extra (ray 2.60.0 pins vllm 0.29.0, a CUDA 13.0
    build): the driver rule of the vm target holds for it too, whatever vllmImage says."""
    [problem] = problems(**RAY, nvidiaDriverBranch=570)
    assert problem.startswith("nvidiaDriverBranch: got 570; expected at least 580: rayPackage "
                              "ray[serve,llm]==2.60.0 installs a vLLM from PyPI that is built for CUDA 13.0, which "
                              "needs NVIDIA driver 580.65.06 or newer")
    assert problem.endswith("(pulumi config set nvidiaDriverBranch 580)")
    assert problems(**RAY, nvidiaDriverBranch=570, vllmImage="docker.io/vllm/vllm-openai:v0.33.0-cu128") \
        == [problem]  # vllmImage is not what the ray target runs
    assert problems(**RAY) == [] and problems(**RAY, nvidiaDriverBranch=580) == []


def test_the_pinned_image_and_driver_branch_agree() -> None:
    cfg = parse(minimal_raw(engine="vllm"))
    cuda = nvidia.vllm_image_cuda(cfg.sources.vllm_image)
    assert cuda == (13, 0) and cfg.nvidia_driver_branch >= (nvidia.min_branch(cuda) or 999)


@pytest.mark.parametrize(("image", "cuda"), [
    ("docker.io/vllm/vllm-openai:v0.33.0", (13, 0)), ("vllm/vllm-openai:v0.20.1", (13, 0)),
    ("docker.io/vllm/vllm-openai:v0.33.0-cu129", (12, 9)), ("mirror.example.org/vllm-openai:v0.11.0-cu128", (12, 8)),
    ("vllm/vllm-openai:v0.11.0", None), ("vllm/vllm-openai:latest", None),
    ("vllm/vllm-openai@sha256:" + "0" * 64, None),
])
def test_the_cuda_release_is_read_from_the_tag(image: str, cuda: tuple[int, int] | None) -> None:
    assert nvidia.vllm_image_cuda(image) == cuda


def test_the_driver_table_matches_nvidias_release_notes() -> None:
    assert {c: nvidia.min_branch(c) for c in [(13, 0), (12, 9), (12, 8), (12, 4)]} == \
        {(13, 0): 580, (12, 9): 575, (12, 8): 570, (12, 4): 550}
    assert nvidia.newest_cuda(580) == (13, 0) and nvidia.newest_cuda(570) == (12, 8) and nvidia.newest_cuda(450) is None


def test_known_models_offer_power_of_two_sizes_that_fit_the_kv_heads() -> None:
    assert models.tensor_parallel_sizes(models.KNOWN_MODELS["qwen/qwen2.5-0.5b-instruct"], 8) == [1, 2]
    assert models.tensor_parallel_sizes(models.KNOWN_MODELS["meta-llama/llama-3.1-70b-instruct"], 8) == [1, 2, 4, 8]
