"""How big the model is (parameters and bits per weight, from config or guessed from its name) and whether the
machine holds it: GPU memory on a GPU shape, RAM on a Flex shape."""
from __future__ import annotations

import math

from ..engines import Model
from ..shapes import Shape, required_memory_gb, smallest_gpu_shape_for
from .reader import Problem, Reader


def model_size(r: Reader, model: Model) -> tuple[float, int]:
    """Parameters (billions) and bits per weight, from explicit keys or the model's own name."""
    text = r.str("modelParamsBillions")
    params = 0.0
    if text:
        try:
            params = float(text)
            if not math.isfinite(params) or params <= 0:
                raise ValueError
        except ValueError:
            r.bad("modelParamsBillions", text, "a positive number of billions such as 8 or 0.5", "8")
    else:
        params = model.params_from_name()
    bits = r.int("modelQuantBits", 0, 32)
    if bits not in (0, 2, 3, 4, 5, 6, 8, 16, 32):
        r.bad("modelQuantBits", bits, "0 (derive from the model name), 2, 3, 4, 5, 6, 8, 16 or 32", "16")
    return params, bits or model.bits_from_name()


def check_fit(r: Reader, shape: Shape, params: float, bits: int, memory_gbs: int) -> None:
    need = required_memory_gb(params, bits)
    have = shape.total_gpu_memory_gb if shape.is_gpu else memory_gbs
    if need <= have:
        return
    what = f"{shape.gpus} x {shape.gpu_memory_gb} GB GPU" if shape.is_gpu else f"{memory_gbs} GB RAM"
    accepted = (f"a shape with at least {need:.0f} GB of {'GPU ' if shape.is_gpu else ''}memory for a {params:g}B "
                f"model at {bits}-bit (about 2 GB per billion at 16-bit, plus 20% KV cache); {shape.name} has {what}")
    if not shape.is_gpu and need <= 1760:
        fix = f"give the Flex shape more memory: pulumi config set shapeMemoryGbs {math.ceil(need)}"
    elif best := smallest_gpu_shape_for(need):
        fix = (f"the smallest shape that fits is {best.name} ({best.gpus} x {best.gpu_memory_gb} GB): "
               f"pulumi config set shape {best.name}")
    else:
        fix = "no known shape fits it: pick a smaller model, or a quantized one (pulumi config set modelQuantBits 4)"
    r.problems.append(Problem("shape", shape.name, accepted, fix))
