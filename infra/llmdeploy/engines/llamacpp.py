"""llama.cpp's server (the xllamacpp wheel) serving one GGUF file: its model section (llamacppModelUrl,
llamacppContextSize), the file's name on the VM, its launcher and unit, /health as its health check, its routes.
Runs on CPUs and GPUs."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..conf.reader import Reader
from ..routes import OPENAI_LIST, EngineRoutes, route
from ..templating import VmFile, render_template
from ..vmpaths import FILES_DIR
from .base import Engine, HealthCheck, Machine, Model, size_in_name

if TYPE_CHECKING:
    from ..config import StackConfig

_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# A name that is not a dot file, '.' or '..' (the URL https://x/.gguf or https://x/..?.gguf has none).
_GGUF_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf")


def gguf_filename(url: str) -> str:
    """The model's file name on the VM: the URL path's last segment, percent-decoded, with each run of characters
    outside A-Z a-z 0-9 . _ - made one '_'. It goes unquoted into the unit's ExecStart=, where systemd reads '%'
    as a specifier and quotes as quoting (My%20Model.gguf -> My_Model.gguf)."""
    return _UNSAFE_FILE_CHARS.sub("_", unquote(urlsplit(url).path.rsplit("/", 1)[-1]))


@dataclass(frozen=True)
class LlamacppModel(Model):
    url: str
    context_size: int

    @property
    def filename(self) -> str:
        return gguf_filename(self.url)

    @property
    def download_url(self) -> str:
        return self.url

    def default_name(self) -> str:
        return self.filename.removesuffix(".gguf")

    def params_from_name(self) -> float:
        return size_in_name(self.filename)

    def bits_from_name(self) -> int:
        name = self.filename.lower()
        for bits, marks in ((16, ("f16", "bf16")), (8, ("q8",)), (6, ("q6",)), (5, ("q5",)), (3, ("q3",)),
                            (2, ("q2",))):
            if any(m in name for m in marks):
                return bits
        return 4


class Llamacpp(Engine):
    name = variant = "llamacpp"
    title = "llama.cpp"
    port = 8080
    runs_on_cpus = True
    model_url_key = "llamacppModelUrl"
    example = {"engine": "llamacpp", "shape": "VM.Standard.E4.Flex"}
    sections = ("llamacppModelUrl", "llamacppContextSize", "llamacppPackage")
    routes = EngineRoutes(
        prefixes=("/v1/",),
        inference=(
            route("POST", "/v1/chat/completions", "chat"),
            route("POST", "/v1/completions", "completions"),
            route("POST", "/v1/embeddings", "embeddings"),
            route("POST", "/v1/rerank", "rerank"),
            route("POST", "/v1/responses", "responses"),
            route("POST", "/v1/messages", "Anthropic messages"),
            route("POST", "/v1/messages/count_tokens", "count tokens"),
            *OPENAI_LIST,
            route("GET", "/v1/health", "health"),
            route("POST", "/tokenize", "tokenize"),
            route("POST", "/detokenize", "detokenize"),
            route("GET", "/props", "server properties"),
        ),
        management=(
            route("POST", "/props", "change server properties"),
            route("GET", "/slots", "slot state (prompts of every client)"),
            route("POST", "/slots/{id_slot}", "save, restore or erase a slot"),
            route("GET/POST", "/lora-adapters", "LoRA adapters"),
            route("GET", "/metrics", "Prometheus metrics"),
        ),
    )

    def parse_model(self, r: Reader, machine: Machine) -> LlamacppModel:
        url = r.str("llamacppModelUrl")
        if not re.fullmatch(r"https?://\S+", url) or not _GGUF_NAME_RE.fullmatch(gguf_filename(url)):
            r.bad("llamacppModelUrl", url, "an http(s) URL of a .gguf file, its path ending in the file name "
                  "(such as model-q4_k_m.gguf)", "https://host/path/model-q4_k_m.gguf")
        return LlamacppModel(url, r.int("llamacppContextSize", 256, 1_048_576))

    def health(self, cfg: StackConfig) -> HealthCheck:
        return HealthCheck("/health")  # 503 while the model loads

    def support_files(self, cfg: StackConfig, ctx: dict[str, Any]) -> list[VmFile]:
        return [VmFile(f"{FILES_DIR}/llamacpp-server.py", render_template("files/llamacpp-server.py.j2", ctx), "0755")]
