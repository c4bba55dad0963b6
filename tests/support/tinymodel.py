"""The tiny random llama GGUF the tests serve: the product's own writer (`llmdeploy local up` serves the
same file to its VM), re-exported here so the tests keep importing it from support.tinymodel."""
from llmdeploy.local.tinymodel import (ARCH, CHATML_TEMPLATE, SEED, SPACE, WORDS, TinyConfig, Vocab,
                                       build_tensors, build_vocab, write_tiny_gguf)

__all__ = ["ARCH", "CHATML_TEMPLATE", "SEED", "SPACE", "WORDS", "TinyConfig", "Vocab", "build_tensors", "build_vocab",
           "write_tiny_gguf"]
