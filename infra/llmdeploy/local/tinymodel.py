"""Write a tiny random llama-architecture GGUF that llama.cpp loads and serves.

Why: `llmdeploy local up` and the integration tests need a real OpenAI-compatible server with real
weights, and no model hub may be reachable (an air-gapped site, CI). This writes one with the `gguf`
package in a fraction of a second (< 1 MB):
2 layers, hidden size 64, 4 heads, a SentencePiece ("llama") vocab of a few hundred pieces with
all 256 byte-fallback tokens (so any text tokenizes), and a ChatML template in
`tokenizer.chat_template` (so /v1/chat/completions works).

The weights are random (fixed seed, so the file is identical every time) with one deliberate
shape: every token embedding carries a constant in channel 0, and the output rows of control and
byte tokens weigh that channel strongly negative. The model therefore only ever emits plain text
pieces: it never stops early on EOS (a request for N tokens gets N tokens) and never emits half a
UTF-8 sequence (every streamed token is an SSE event with visible text).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
SEED = 20240611

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = (
    "the of and to in is it you that he was for on are as with his they at be this have from"
    " or one had by word but not what all were we when your can said there use an each which she"
    " do how their if will up other about out many then them these so some her would make like him"
    " into time has look two more write go see number no way could people my than first water been"
    " call who oil its now find long down day did get come made may part hello world model test"
    " server token stream deploy cloud answer question small tiny fast local"
).split()

SPACE = "\u2581"  # SentencePiece's visible space


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny model."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 128
    n_ctx_train: int = 2048
    seed: int = SEED


@dataclass(frozen=True)
class Vocab:
    """Token texts, scores and types in id order, plus the ids of the special tokens."""

    tokens: list[str]
    scores: list[float]
    types: list[int]

    def id_of(self, text: str) -> int:
        return self.tokens.index(text)

    def suppressed_ids(self) -> list[int]:
        """Ids the model must never emit: everything that is not a normal text piece."""
        return [i for i, t in enumerate(self.types) if t != gguf.TokenType.NORMAL]


def build_vocab() -> Vocab:
    """A SentencePiece-style vocab: control tokens, 256 byte tokens, then text pieces."""
    control = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    pieces = _text_pieces()
    chatml = ["<|im_start|>", "<|im_end|>"]
    tokens = control + byte_tokens + pieces + chatml
    types = (
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * len(byte_tokens)
        + [gguf.TokenType.NORMAL] * len(pieces)
        + [gguf.TokenType.CONTROL] * len(chatml)
    )
    scores = [0.0] * (len(control) + len(byte_tokens))
    scores += [_piece_score(p) for p in pieces] + [0.0] * len(chatml)
    return Vocab(tokens=tokens, scores=scores, types=[int(t) for t in types])


def _text_pieces() -> list[str]:
    """Single characters, space-prefixed characters and every prefix of each space-prefixed word.

    SentencePiece's tokenizer only merges two adjacent pieces into one that is in the vocab, so a
    word is reachable as one token only if its prefixes are tokens too.
    """
    chars = string.ascii_letters + string.digits + string.punctuation
    prefixes = (SPACE + w[:n] for w in WORDS for n in range(1, len(w) + 1))
    candidates = [SPACE, *chars, *(SPACE + c for c in chars), *prefixes]
    return list(dict.fromkeys(candidates))


def _piece_score(piece: str) -> float:
    """SentencePiece merges the highest-scoring pair first: prefer longer pieces."""
    return float(len(piece)) - 10.0


def build_tensors(cfg: TinyConfig, vocab: Vocab) -> dict[str, np.ndarray]:
    """Random weights (fixed seed) shaped as llama.cpp's llama graph expects (rows = outputs)."""
    rng = np.random.default_rng(cfg.seed)
    n_vocab, d, head_dim = len(vocab.tokens), cfg.n_embd, cfg.n_embd // cfg.n_head
    tensors = {
        "token_embd.weight": _embeddings(rng, n_vocab, d),
        "output_norm.weight": np.ones(d, dtype=np.float32),
        "output.weight": _output_weights(rng, n_vocab, d, vocab.suppressed_ids()),
    }
    for layer in range(cfg.n_layer):
        tensors.update(_block(rng, layer, d, cfg.n_head_kv * head_dim, cfg.n_ff))
    return tensors


def _embeddings(rng: np.random.Generator, n_vocab: int, d: int) -> np.ndarray:
    emb = rng.normal(0.0, 0.1, size=(n_vocab, d))
    emb[:, 0] = 1.0  # constant channel that lets the output layer rule tokens out
    return emb.astype(np.float16)


def _output_weights(rng: np.random.Generator, n_vocab: int, d: int, banned: list[int]) -> np.ndarray:
    out = rng.normal(0.0, 1.0, size=(n_vocab, d))
    out[:, 0] = 0.0
    out[banned, 0] = -20.0
    return out.astype(np.float16)


def _block(rng: np.random.Generator, layer: int, d: int, kv_dim: int, n_ff: int) -> dict[str, np.ndarray]:
    def w(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0.0, 0.02, size=(rows, cols)).astype(np.float16)

    p = f"blk.{layer}."
    return {
        p + "attn_norm.weight": np.ones(d, dtype=np.float32),
        p + "attn_q.weight": w(d, d),
        p + "attn_k.weight": w(kv_dim, d),
        p + "attn_v.weight": w(kv_dim, d),
        p + "attn_output.weight": w(d, d),
        p + "ffn_norm.weight": np.ones(d, dtype=np.float32),
        p + "ffn_gate.weight": w(n_ff, d),
        p + "ffn_up.weight": w(n_ff, d),
        p + "ffn_down.weight": w(d, n_ff),
    }


def _add_metadata(writer: gguf.GGUFWriter, cfg: TinyConfig, vocab: Vocab) -> None:
    writer.add_name("llmdeploy-tiny-test-model")
    writer.add_context_length(cfg.n_ctx_train)
    writer.add_embedding_length(cfg.n_embd)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.n_ff)
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv(cfg.n_head_kv)
    writer.add_rope_dimension_count(cfg.n_embd // cfg.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def _add_tokenizer(writer: gguf.GGUFWriter, vocab: Vocab) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_unk_token_id(vocab.id_of("<unk>"))
    writer.add_bos_token_id(vocab.id_of("<s>"))
    writer.add_eos_token_id(vocab.id_of("</s>"))
    writer.add_eot_token_id(vocab.id_of("<|im_end|>"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def write_tiny_gguf(path: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    """Write the tiny model to `path` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab()
    writer = gguf.GGUFWriter(path, ARCH)
    try:
        _add_metadata(writer, cfg, vocab)
        _add_tokenizer(writer, vocab)
        for name, tensor in build_tensors(cfg, vocab).items():
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


# ---------------------------------------------------------------------------------------------- Hugging Face llama
# The same idea for vLLM, which loads Hugging Face repositories: config.json, model.safetensors and a tokenizer
# (tokenizer.json + tokenizer_config.json, which transformers' PreTrainedTokenizerFast reads). Written with numpy
# and the standard library only (no torch, transformers or safetensors package): safetensors is an 8-byte
# little-endian header length, a JSON header and the raw tensors.

HF_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json")
HF_SPECIAL = ("<s>", "</s>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class TinyHfConfig:
    """vLLM's CPU attention needs a head dimension of at least 32 (it rejects 16): 64 hidden over 2 heads."""

    n_layer: int = 2
    hidden: int = 64
    n_head: int = 2
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 2048
    seed: int = SEED

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_head


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 symbols a byte-level BPE spells every byte with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def build_hf_vocab() -> tuple[dict[str, int], list[list[str]], list[int]]:
    """(vocab, merges, ids the model never emits): 256 byte symbols, then every prefix of each space-led word
    built by one merge each (so each word is one token), then the special tokens. Only printable ASCII and the
    words may be emitted: no special token (the stream never stops early) and no half of a UTF-8 sequence."""
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    merges: list[list[str]] = []
    space = symbols[ord(" ")]
    for word in WORDS:
        piece = space
        for char in word:
            joined = piece + char
            if joined not in vocab:
                vocab[joined] = len(vocab)
                merges.append([piece, char])
            piece = joined
    for token in HF_SPECIAL:
        vocab[token] = len(vocab)
    banned = [i for b, i in enumerate(range(256)) if not 0x20 <= b <= 0x7E] + [vocab[t] for t in HF_SPECIAL]
    return vocab, merges, banned


def _hf_tensors(cfg: TinyHfConfig, n_vocab: int, banned: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    d, kv = cfg.hidden, cfg.n_head_kv * cfg.head_dim

    def w(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0.0, 0.02, size=(rows, cols)).astype(np.float32)

    tensors = {"model.embed_tokens.weight": _embeddings(rng, n_vocab, d).astype(np.float32),
               "model.norm.weight": np.ones(d, dtype=np.float32),
               "lm_head.weight": _output_weights(rng, n_vocab, d, banned).astype(np.float32)}
    for layer in range(cfg.n_layer):
        p = f"model.layers.{layer}."
        tensors.update({
            p + "input_layernorm.weight": np.ones(d, dtype=np.float32),
            p + "self_attn.q_proj.weight": w(d, d), p + "self_attn.k_proj.weight": w(kv, d),
            p + "self_attn.v_proj.weight": w(kv, d), p + "self_attn.o_proj.weight": w(d, d),
            p + "post_attention_layernorm.weight": np.ones(d, dtype=np.float32),
            p + "mlp.gate_proj.weight": w(cfg.n_ff, d), p + "mlp.up_proj.weight": w(cfg.n_ff, d),
            p + "mlp.down_proj.weight": w(d, cfg.n_ff),
        })
    return tensors


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format: u64 header length, JSON header (padded to 8 bytes), the tensors' bytes."""
    import json
    import struct

    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            fh.write(blob)


def _tokenizer_json(vocab: dict[str, int], merges: list[list[str]]) -> dict[str, object]:
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in HF_SPECIAL]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                               "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": merges}}


def write_tiny_hf_llama(folder: Path, cfg: TinyHfConfig = TinyHfConfig()) -> Path:
    """Write a tiny random LlamaForCausalLM repository (about 200 KB) into `folder` and return it."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges, banned = build_hf_vocab()
    eos, bos = vocab["<|im_end|>"], vocab["<s>"]
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.hidden,
              "intermediate_size": cfg.n_ff, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
              "num_key_value_heads": cfg.n_head_kv, "head_dim": cfg.head_dim,
              "max_position_embeddings": cfg.n_ctx_train, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "hidden_act": "silu", "vocab_size": len(vocab), "bos_token_id": bos, "eos_token_id": eos,
              "tie_word_embeddings": False, "torch_dtype": "float32"}
    files = {
        "config.json": config,
        "generation_config.json": {"bos_token_id": bos, "eos_token_id": eos},
        "tokenizer.json": _tokenizer_json(vocab, merges),
        "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                                  "eos_token": "<|im_end|>", "pad_token": "</s>", "add_bos_token": False,
                                  "model_max_length": cfg.n_ctx_train, "chat_template": CHATML_TEMPLATE},
        "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "<|im_end|>", "pad_token": "</s>"},
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_safetensors(folder / "model.safetensors", _hf_tensors(cfg, len(vocab), banned))
    return folder
