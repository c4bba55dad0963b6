"""OCI shapes llmdeploy knows, with their accelerators, and the model-fits-shape arithmetic.

GPU memory is per GPU; the fit check compares against all GPUs of the shape (tensor parallel).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    gpus: int
    gpu_memory_gb: int  # per GPU; 0 for CPU shapes
    gpu_model: str = ""
    flex: bool = False
    # GPUs joined by NVSwitch (HGX baseboards): CUDA initialises only once NVIDIA's Fabric Manager has set up the
    # NVLink fabric, so 25-nvidia installs it on these shapes (on any other it refuses to start).
    nvswitch: bool = False

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def total_gpu_memory_gb(self) -> int:
        return self.gpus * self.gpu_memory_gb


SHAPES: dict[str, Shape] = {s.name: s for s in (
    Shape("VM.GPU.A10.1", 1, 24, "A10"),
    Shape("VM.GPU.A10.2", 2, 24, "A10"),
    Shape("BM.GPU.A10.4", 4, 24, "A10"),
    Shape("BM.GPU.L40S.4", 4, 48, "L40S"),
    Shape("BM.GPU4.8", 8, 40, "A100-40GB", nvswitch=True),  # HGX A100
    Shape("BM.GPU.A100-v2.8", 8, 80, "A100-80GB", nvswitch=True),  # HGX A100
    Shape("BM.GPU.H100.8", 8, 80, "H100", nvswitch=True),  # HGX H100
    Shape("VM.Standard.E4.Flex", 0, 0, flex=True),
    Shape("VM.Standard.E5.Flex", 0, 0, flex=True),
    Shape("VM.Standard3.Flex", 0, 0, flex=True),
)}

# Rough serving footprint: 2 GB per billion parameters at 16 bits, scaled by bits, plus 20% for KV cache.
KV_CACHE_OVERHEAD = 1.2


def required_memory_gb(params_billions: float, bits: int) -> float:
    return params_billions * 2.0 * (bits / 16) * KV_CACHE_OVERHEAD


def smallest_gpu_shape_for(memory_gb: float) -> Shape | None:
    fitting = [s for s in SHAPES.values() if s.is_gpu and s.total_gpu_memory_gb >= memory_gb]
    return min(fitting, key=lambda s: (s.total_gpu_memory_gb, s.gpus), default=None)

# vCPUs (2 per OCPU) of the GPU shapes, as OCI's compute shapes page lists them: Ray's worker port range is sized
# for the largest (raycluster.worker_ports_needed), since the raylet starts about one worker per vCPU.
VCPUS: dict[str, int] = {"VM.GPU.A10.1": 30, "VM.GPU.A10.2": 60, "BM.GPU.A10.4": 128, "BM.GPU.L40S.4": 224,
                         "BM.GPU4.8": 128, "BM.GPU.A100-v2.8": 256, "BM.GPU.H100.8": 224}
