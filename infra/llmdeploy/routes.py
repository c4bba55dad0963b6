"""Which engine routes the site proxies, and which of them an ordinary API key may use: the types of the table
each engine declares (engines/<engine>.py `routes`), which the nginx site (render.py), the tests and the README's
route table (docs.py) all read.

An allow-list: every request that reaches a proxied location is management unless its method and path are
on the engine's inference list. Management needs a key marked admin (`apiKeys` entry `NAME:admin`); any
other client gets 403. The management routes named here are the ones upstream has today (for the README and
the tests); a route an engine adds later is management too until it is listed as inference.

Sources (method and path as each server registers them):
- Ollama: server/routes.go GenerateRoutes (ollama/ollama).
- Xinference 4.x: xinference/api/routers/{llm,embeddings,rerank,models,admin}.py (xorbitsai/inference).
- vLLM: vllm/entrypoints/openai/api_server.py and vllm/entrypoints/serve/* (vllm-project/vllm); the dev,
  profiling and LoRA routes exist only when VLLM_SERVER_DEV_MODE, VLLM_TORCH_PROFILER_DIR or
  VLLM_ALLOW_RUNTIME_LORA_UPDATING are set, and stay admin-only if someone sets them.
- llama.cpp: tools/server/server.cpp (ggml-org/llama.cpp), which the xllamacpp wheel embeds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

READ = ("GET", "HEAD")
_PARAM = re.compile(r"\{[a-z_]+\}")


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    path: str  # "{name}" stands for one path segment
    what: str

    def path_regex(self) -> str:
        return "[^/]+".join(re.escape(p) for p in _PARAM.split(self.path))

    def regex(self) -> str:
        """`METHOD PATH` as a PCRE (nginx map) and Python regex, anchored."""
        return f"^(?:{'|'.join(self.methods)}) {self.path_regex()}$"

    def example(self) -> str:
        """A concrete path that the route matches, for tests and docs."""
        return _PARAM.sub("example", self.path)

    @property
    def shown(self) -> str:
        methods = "GET" if self.methods == READ else "/".join(self.methods)
        return f"{methods} {self.path}"


@dataclass(frozen=True)
class NginxAnswer:
    """A GET that nginx answers itself with a fixed JSON body, to anyone: the engine never sees it."""
    path: str
    body: str
    why: str


@dataclass(frozen=True)
class EngineRoutes:
    prefixes: tuple[str, ...]  # proxied as a whole ("/v1/"): what is not inference under them is management
    inference: tuple[Route, ...]  # what an ordinary key may use
    management: tuple[Route, ...]  # named admin routes (any other path under `prefixes` is admin too)
    answered: tuple[NginxAnswer, ...] = ()  # answered by nginx without credentials (before any location above)

    @property
    def locations(self) -> tuple[str, ...]:
        """nginx locations proxied to the engine: the prefixes, then one regex location for the listed routes
        outside them (vLLM's /sleep, llama.cpp's /slots/{id_slot}, ...)."""
        return self.prefixes + ((f'~ "{self.outside_regex()}"',) if self.outside_regex() else ())

    def outside_regex(self) -> str:
        paths = [r.path_regex() for r in self.inference + self.management if not self.under_prefix(r.path)]
        return f"^(?:{'|'.join(dict.fromkeys(paths))})$" if paths else ""

    def under_prefix(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.prefixes)

    def is_proxied(self, path: str) -> bool:
        return self.under_prefix(path) or bool(self.outside_regex() and re.fullmatch(self.outside_regex(), path))

    def is_inference(self, method: str, path: str) -> bool:
        return any(re.fullmatch(r.regex(), f"{method} {path}") for r in self.inference)


def route(methods: str, path: str, what: str) -> Route:
    return Route(READ if methods == "GET" else tuple(methods.split("/")), path, what)


OPENAI_LIST = (route("GET", "/v1/models", "list models"),)
