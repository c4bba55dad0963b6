"""Which engine routes the site proxies, and which of them an ordinary API key may use: the one table that
the nginx site (render.py), the tests and the README's route table (docs.py) all read.

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


def _r(methods: str, path: str, what: str) -> Route:
    return Route(READ if methods == "GET" else tuple(methods.split("/")), path, what)


_OPENAI_LIST = (_r("GET", "/v1/models", "list models"),)

ENGINE_ROUTES: dict[str, EngineRoutes] = {
    "ollama": EngineRoutes(
        prefixes=("/v1/", "/api/"),
        inference=(
            _r("POST", "/api/generate", "generate"),
            _r("POST", "/api/chat", "chat"),
            _r("POST", "/api/embed", "embeddings"),
            _r("POST", "/api/embeddings", "embeddings (legacy)"),
            _r("GET", "/api/tags", "list models"),
            _r("POST", "/api/show", "model details"),
            _r("GET", "/api/ps", "loaded models"),
            _r("GET", "/api/version", "version"),
            _r("POST", "/v1/chat/completions", "chat"),
            _r("POST", "/v1/completions", "completions"),
            _r("POST", "/v1/embeddings", "embeddings"),
            _r("POST", "/v1/responses", "responses"),
            _r("POST", "/v1/messages", "Anthropic messages"),
            *_OPENAI_LIST,
            _r("GET", "/v1/models/{model}", "model details"),
        ),
        management=(
            _r("POST", "/api/pull", "download a model"),
            _r("POST", "/api/push", "upload a model"),
            _r("DELETE", "/api/delete", "delete a model"),
            _r("POST", "/api/create", "create a model"),
            _r("POST", "/api/copy", "copy a model"),
            _r("HEAD/POST", "/api/blobs/{digest}", "upload a blob"),
            _r("POST", "/api/me", "ollama.com account"),
            _r("POST", "/api/signout", "ollama.com account"),
            _r("POST", "/api/experimental/web_search", "ollama.com web search"),
        ),
    ),
    "xinference": EngineRoutes(
        prefixes=("/v1/",),
        inference=(
            _r("POST", "/v1/chat/completions", "chat"),
            _r("POST", "/v1/completions", "completions"),
            _r("POST", "/v1/embeddings", "embeddings"),
            _r("POST", "/v1/rerank", "rerank"),
            *_OPENAI_LIST,
            _r("GET", "/v1/models/{model_uid}", "model details"),
        ),
        management=(
            _r("POST", "/v1/models", "launch a model"),
            _r("DELETE", "/v1/models/{model_uid}", "terminate a model"),
            _r("POST", "/v1/models/{model_uid}/cancel", "cancel a launch"),
            _r("POST", "/v1/models/instance", "launch a model version"),
            _r("GET/POST", "/v1/model_registrations/{model_type}", "list or register custom models"),
            _r("DELETE", "/v1/model_registrations/{model_type}/{model_name}", "unregister a model"),
            _r("GET/POST", "/v1/autostart/models", "autostart entries"),
            _r("DELETE", "/v1/autostart/models/{model_uid}", "remove an autostart entry"),
            _r("GET/POST/DELETE", "/v1/cache/models", "model cache"),
            _r("GET", "/v1/cluster/info", "cluster"),
            _r("GET", "/v1/workers", "workers"),
            _r("DELETE", "/v1/clusters", "stop the cluster"),
        ),
        # Xinference's own client (xinference_client Client.__init__, 4.x) asks this first, without credentials,
        # and attaches its api_key to later requests only if the answer says {"auth": true}; any other answer
        # (nginx's 401) crashes it with KeyError: 'detail'. Xinference itself is started without auth (nginx does
        # it), so its own answer would be {"auth": false}: nginx answers for it, and says nothing more.
        answered=(NginxAnswer("/v1/cluster/auth", '{"auth": true}',
                              "Xinference's client sends its key only if this says auth is on"),),
    ),
    "vllm": EngineRoutes(
        prefixes=("/v1/",),
        inference=(
            _r("POST", "/v1/chat/completions", "chat"),
            _r("POST", "/v1/completions", "completions"),
            _r("POST", "/v1/embeddings", "embeddings"),
            _r("POST", "/v1/responses", "responses"),
            _r("POST", "/v1/score", "score"),
            _r("POST", "/v1/rerank", "rerank"),
            _r("POST", "/v1/audio/transcriptions", "transcription"),
            _r("POST", "/v1/audio/translations", "translation"),
            *_OPENAI_LIST,
            _r("POST", "/tokenize", "tokenize"),
            _r("POST", "/detokenize", "detokenize"),
        ),
        management=(
            _r("POST", "/v1/load_lora_adapter", "load a LoRA adapter"),
            _r("POST", "/v1/unload_lora_adapter", "unload a LoRA adapter"),
            _r("GET", "/metrics", "Prometheus metrics"),
            _r("POST", "/start_profile", "profiler"),
            _r("POST", "/stop_profile", "profiler"),
            _r("POST", "/sleep", "free the GPU"),
            _r("POST", "/wake_up", "reload the weights"),
            _r("GET", "/is_sleeping", "sleep state"),
            _r("POST", "/reset_prefix_cache", "drop the prefix cache"),
            _r("POST", "/reset_mm_cache", "drop the multimodal cache"),
            _r("POST", "/collective_rpc", "call a method on every worker"),
            _r("GET", "/server_info", "server configuration"),
            _r("POST", "/pause", "pause generation"),
            _r("POST", "/resume", "resume generation"),
            _r("POST", "/scale_elastic_ep", "rescale expert parallelism"),
        ),
    ),
    "llamacpp": EngineRoutes(
        prefixes=("/v1/",),
        inference=(
            _r("POST", "/v1/chat/completions", "chat"),
            _r("POST", "/v1/completions", "completions"),
            _r("POST", "/v1/embeddings", "embeddings"),
            _r("POST", "/v1/rerank", "rerank"),
            _r("POST", "/v1/responses", "responses"),
            _r("POST", "/v1/messages", "Anthropic messages"),
            _r("POST", "/v1/messages/count_tokens", "count tokens"),
            *_OPENAI_LIST,
            _r("GET", "/v1/health", "health"),
            _r("POST", "/tokenize", "tokenize"),
            _r("POST", "/detokenize", "detokenize"),
            _r("GET", "/props", "server properties"),
        ),
        management=(
            _r("POST", "/props", "change server properties"),
            _r("GET", "/slots", "slot state (prompts of every client)"),
            _r("POST", "/slots/{id_slot}", "save, restore or erase a slot"),
            _r("GET/POST", "/lora-adapters", "LoRA adapters"),
            _r("GET", "/metrics", "Prometheus metrics"),
        ),
    ),
}

# The ray target's API: Ray Serve LLM's OpenAI app (ray/llm/_internal/serve/core/ingress/ingress.py,
# DEFAULT_ENDPOINTS, ray 2.60). It has no management routes; Ray's dashboard stays on the head's loopback.
RAY_SERVE_ROUTES = EngineRoutes(
    prefixes=("/v1/",),
    inference=(
        _r("POST", "/v1/chat/completions", "chat"),
        _r("POST", "/v1/completions", "completions"),
        _r("POST", "/v1/embeddings", "embeddings"),
        _r("POST", "/v1/score", "score"),
        _r("POST", "/v1/audio/transcriptions", "transcription"),
        *_OPENAI_LIST,
        _r("GET", "/v1/models/{model}", "model details"),
        _r("POST", "/tokenize", "tokenize"),
        _r("POST", "/detokenize", "detokenize"),
    ),
    management=(),
)
