"""What llmdeploy knows of common Hugging Face models without downloading them: the two numbers from each
model's config.json that decide whether vLLM starts at all.

- vLLM refuses a tensor-parallel size that does not divide `num_attention_heads` ("Total number of attention
  heads (28) must be divisible by tensor parallel size (8)"), and one that neither divides nor is a multiple of
  `num_key_value_heads` (its KV heads are split, or replicated, across the ranks).
- vLLM refuses a --max-model-len above `max_position_embeddings` when the config has no rope scaling
  ("User-specified max_model_len (65536) is greater than the derived max_model_len (max_position_embeddings=
  32768 ...)"). The Qwen2.5 Instruct configs say 32768 even though their cards mention 128K with YaRN.

Values are from the models' config.json on the Hugging Face hub. A model not listed here is not checked at
validate; the 40-engine step then names vLLM's own error from its log.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFacts:
    attention_heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    context_length: int  # max_position_embeddings


KNOWN_MODELS: dict[str, ModelFacts] = {name.lower(): facts for name, facts in {
    "Qwen/Qwen2.5-0.5B-Instruct": ModelFacts(14, 2, 32768),
    "Qwen/Qwen2.5-1.5B-Instruct": ModelFacts(12, 2, 32768),
    "Qwen/Qwen2.5-3B-Instruct": ModelFacts(16, 2, 32768),
    "Qwen/Qwen2.5-7B-Instruct": ModelFacts(28, 4, 32768),
    "Qwen/Qwen2.5-14B-Instruct": ModelFacts(40, 8, 32768),
    "Qwen/Qwen2.5-32B-Instruct": ModelFacts(40, 8, 32768),
    "Qwen/Qwen2.5-72B-Instruct": ModelFacts(64, 8, 32768),
    "meta-llama/Llama-3.1-8B-Instruct": ModelFacts(32, 8, 131072),
    "meta-llama/Meta-Llama-3.1-8B-Instruct": ModelFacts(32, 8, 131072),
    "meta-llama/Llama-3.1-70B-Instruct": ModelFacts(64, 8, 131072),
    "meta-llama/Meta-Llama-3.1-70B-Instruct": ModelFacts(64, 8, 131072),
    "mistralai/Mistral-7B-Instruct-v0.3": ModelFacts(32, 8, 32768),
}.items()}


def facts(hf_id: str) -> ModelFacts | None:
    return KNOWN_MODELS.get(hf_id.lower())


def tensor_parallel_sizes(model: ModelFacts, gpus: int) -> list[int]:
    """The tensor-parallel sizes (powers of two, as the weights' other dimensions need) that vLLM accepts for
    this model on this many GPUs."""
    sizes = [2 ** i for i in range(8) if 2 ** i <= max(gpus, 1)]
    return [n for n in sizes if model.attention_heads % n == 0 and (model.kv_heads % n == 0 or n % model.kv_heads == 0)]
