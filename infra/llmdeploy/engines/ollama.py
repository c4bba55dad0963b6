"""Ollama: its model section (ollamaModel, ollamaKeepAlive, ollamaNumParallel), its release archive check, its
unit and GPU check, /api/show as its health check, its native API's routes and smoke dialect. GPU shapes only."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..conf.reader import Reader
from ..routes import OPENAI_LIST, EngineRoutes, route
from ..templating import VmFile, render_template
from ..vmpaths import LIBEXEC
from .base import Engine, HealthCheck, Machine, Model, size_in_name

if TYPE_CHECKING:
    from ..config import Sources, StackConfig

_ARCHIVE_RE = re.compile(r"/v([0-9]+)\.([0-9]+)\.[0-9]+(?:-rc[0-9]+)?/ollama-linux-[a-z0-9-]+"
                         r"(\.tgz|\.tar\.zst)$")
OLLAMA_ZSTD_SINCE = (0, 14)  # v0.14.0 ships its Linux archives as .tar.zst only (ollama#13651); older ones as .tgz


@dataclass(frozen=True)
class OllamaModel(Model):
    tag: str
    keep_alive: str
    num_parallel: int

    def default_name(self) -> str:
        return self.tag

    def params_from_name(self) -> float:
        return size_in_name(self.tag)

    def bits_from_name(self) -> int:
        # Ollama's default tags are 4-bit (Q4_K_M); explicit fp16/q8 tags say otherwise.
        tag = self.tag.lower()
        return 16 if "fp16" in tag or "bf16" in tag else 8 if "q8" in tag else 4


def check_archive(r: Reader, url: str) -> None:
    """A release URL whose suffix does not match its version is a 404 (a mirror without the version in its
    path is not judged)."""
    match = _ARCHIVE_RE.search(url.split("?", 1)[0])
    if not match:
        return
    version, suffix = (int(match.group(1)), int(match.group(2))), match.group(3)
    want = ".tar.zst" if version >= OLLAMA_ZSTD_SINCE else ".tgz"
    if suffix != want:
        since = ".".join(map(str, OLLAMA_ZSTD_SINCE))
        r.bad("ollamaDownloadUrl", url, f"an archive ending in {want} for Ollama {version[0]}.{version[1]} (from "
              f"v{since}.0 Linux releases are .tar.zst only; before, .tgz)",
              url[:match.start(3)] + want + url[match.end(3):])


class Ollama(Engine):
    name = variant = "ollama"
    title = "Ollama"
    port = 11434
    dialect = "ollama"
    example = {"engine": "ollama", "shape": "VM.GPU.A10.1"}
    # BioChatter Light has an Ollama path that takes the model's own name (OLLAMA_MODEL); on other engines it
    # uses its OpenAI path, which offers only OpenAI's model names.
    biochatter_light_native = True
    sections = ("ollamaModel", "ollamaKeepAlive", "ollamaNumParallel", "ollamaDownloadUrl", "ollamaRegistryUrl")
    routes = EngineRoutes(
        prefixes=("/v1/", "/api/"),
        inference=(
            route("POST", "/api/generate", "generate"),
            route("POST", "/api/chat", "chat"),
            route("POST", "/api/embed", "embeddings"),
            route("POST", "/api/embeddings", "embeddings (legacy)"),
            route("GET", "/api/tags", "list models"),
            route("POST", "/api/show", "model details"),
            route("GET", "/api/ps", "loaded models"),
            route("GET", "/api/version", "version"),
            route("POST", "/v1/chat/completions", "chat"),
            route("POST", "/v1/completions", "completions"),
            route("POST", "/v1/embeddings", "embeddings"),
            route("POST", "/v1/responses", "responses"),
            route("POST", "/v1/messages", "Anthropic messages"),
            *OPENAI_LIST,
            route("GET", "/v1/models/{model}", "model details"),
        ),
        management=(
            route("POST", "/api/pull", "download a model"),
            route("POST", "/api/push", "upload a model"),
            route("DELETE", "/api/delete", "delete a model"),
            route("POST", "/api/create", "create a model"),
            route("POST", "/api/copy", "copy a model"),
            route("HEAD/POST", "/api/blobs/{digest}", "upload a blob"),
            route("POST", "/api/me", "ollama.com account"),
            route("POST", "/api/signout", "ollama.com account"),
            route("POST", "/api/experimental/web_search", "ollama.com web search"),
        ),
    )

    def parse_model(self, r: Reader, machine: Machine) -> OllamaModel:
        tag = r.str("ollamaModel")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?", tag):
            r.bad("ollamaModel", tag, "an Ollama tag such as llama3.1:8b", "llama3.1:8b")
        if not re.fullmatch(r"-1|[0-9]+[smh]?", r.str("ollamaKeepAlive")):
            r.bad("ollamaKeepAlive", r.str("ollamaKeepAlive"), "a duration such as 5m, 24h or -1 (forever)", "24h")
        return OllamaModel(tag, r.str("ollamaKeepAlive"), r.int("ollamaNumParallel", 1, 64))

    def check_sources(self, r: Reader, model: Model, machine: Machine, sources: Sources, driver_branch: int) -> None:
        if not r.failed("ollamaDownloadUrl"):
            check_archive(r, sources.ollama_download_url)

    def health(self, cfg: StackConfig) -> HealthCheck:
        # /api/show 404s for a model that is not pulled (routes.go ShowHandler); Ollama loads models on demand.
        assert isinstance(cfg.model, OllamaModel)
        return HealthCheck("/api/show", "POST", json.dumps({"model": cfg.model.tag}))

    def support_files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        if not cfg.gpu:
            return []
        return [VmFile(f"{LIBEXEC}/ollama-gpu-check", render_template("files/ollama-gpu-check.sh.j2", ctx), "0755")]
