"""A stub Ollama server that answers as Ollama's API documentation (docs/api.md in ollama/ollama) specifies.

Why a stub: Ollama's server cannot run here (its binary and models download from ollama.com and GitHub,
which this machine cannot reach), so the smoke test's Ollama dialect is proven against this instead:

- GET /api/version -> {"version": ...};
- GET /api/tags -> {"models": [{"name", "model", "modified_at", "size", "digest", "details": {...}}]};
- POST /api/generate {model, prompt, stream (default true), options.num_predict} -> NDJSON objects
  {"model", "created_at", "response", "done": false}, then a final object with "done": true, "done_reason",
  "context" and the statistics (total_duration, load_duration, prompt_eval_count, prompt_eval_duration,
  eval_count, eval_duration; durations in nanoseconds); with "stream": false, one JSON object;
- POST /api/chat {model, messages, stream, options}: the same, with "message": {"role": "assistant",
  "content": ...} instead of "response";
- an unknown model -> 404 {"error": "model '...' not found"}; a missing model -> 400 {"error": ...};
- POST /api/show {model} -> the model's details, 404 {"error": "model '...' not found"} for a model that is not
  pulled, 400 for a missing body or model (server/routes.go ShowHandler; the rendered site's /healthz target);
- GET /v1/models: Ollama's OpenAI-compatible list;
- POST /api/generate with an empty prompt loads the model and answers {"model", "created_at", "response": "",
  "done": true, "done_reason": "load"} (server/routes.go GenerateHandler);
- GET /api/ps -> {"models": [{"name", "model", "size", "digest", "details", "expires_at", "size_vram",
  "context_length"}]} for the loaded models (api/types.go ProcessModelResponse); size_vram is the part in GPU
  memory (`ollama ps` prints the ratio as "100% GPU"; 0 when Ollama fell back to the CPU).
Streams are `application/x-ndjson`, chunked, one object per line.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .stubserver import StubHandler, StubState, now_iso, serve

MODEL = "llama3.1:8b"
VERSION = "0.12.6"


MODEL_BYTES = 6654289920  # llama3.1:8b Q4_K_M loaded with a 4096-token context


@dataclass
class OllamaStub(StubState):
    model: str = MODEL
    vram_fraction: float = 1.0  # how much of a loaded model is in GPU memory (0: Ollama runs it on the CPU)
    loaded: bool = False


def token_text(index: int) -> str:
    return f"word{index} "


class _Handler(StubHandler[OllamaStub]):
    def do_GET(self) -> None:
        self.arrive()
        if self.path == "/api/version":
            self.send_json(200, {"version": VERSION})
        elif self.path == "/api/tags":
            self.send_json(200, {"models": [self._tag()]})
        elif self.path == "/api/ps":
            self.send_json(200, {"models": [self._running()] if self.state.loaded else []})
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": self.state.model, "object": "model", "created": int(time.time()), "owned_by": "library"}]})
        else:
            self.send_json(404, {"error": "404 page not found"}, "text/plain")

    def _tag(self) -> dict[str, Any]:
        return {"name": self.state.model, "model": self.state.model, "modified_at": now_iso(), "size": 4920753328,
                "digest": "46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e",
                "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                            "parameter_size": "8.0B", "quantization_level": "Q4_K_M"}}

    def _running(self) -> dict[str, Any]:
        tag = self._tag()
        return {"name": tag["name"], "model": tag["model"], "size": MODEL_BYTES, "digest": tag["digest"],
                "details": tag["details"], "expires_at": "2026-12-01T18:05:00.000000000Z",
                "size_vram": int(MODEL_BYTES * self.state.vram_fraction), "context_length": 4096}

    def do_POST(self) -> None:
        body = self.arrive()
        request = self.json_body(body)
        if self.path == "/api/show":
            self._show(body, request)
        elif self.path not in ("/api/generate", "/api/chat"):
            self.send_json(404, {"error": "404 page not found"}, "text/plain")
        elif request is None:
            self.send_json(400, {"error": "invalid JSON body"})
        elif not request.get("model"):
            self.send_json(400, {"error": "model is required"})
        elif request["model"] not in (self.state.model, self.state.model.removesuffix(":latest")):
            self.send_json(404, {"error": f"model '{request['model']}' not found"})
        elif self.path == "/api/generate" and request.get("prompt", "") == "":
            self.state.loaded = True
            self.send_json(200, {"model": request["model"], "created_at": now_iso(), "response": "", "done": True,
                                 "done_reason": "load"})
        else:
            self.state.loaded = True
            self._generate(request, chat=self.path == "/api/chat")

    def _known(self, name: str) -> bool:
        return name in (self.state.model, self.state.model.removesuffix(":latest"), f"{self.state.model}:latest")

    def _show(self, body: bytes, request: dict[str, Any] | None) -> None:
        name = (request or {}).get("model") or (request or {}).get("name")
        if not body:
            self.send_json(400, {"error": "missing request body"})
        elif request is None:
            self.send_json(400, {"error": "invalid JSON body"})
        elif not name:
            self.send_json(400, {"error": "model is required"})
        elif not self._known(name):
            self.send_json(404, {"error": f"model '{name}' not found"})
        else:
            self.send_json(200, {"license": "", "modelfile": f"FROM {name}\n", "parameters": "", "template": "",
                                 "details": self._tag()["details"], "model_info": {"general.architecture": "llama"},
                                 "capabilities": ["completion"], "modified_at": now_iso()})

    def _generate(self, request: dict[str, Any], chat: bool) -> None:
        options = request.get("options") if isinstance(request.get("options"), dict) else {}
        n_tokens = int(options.get("num_predict") or 16)
        if request.get("stream", True):
            self.stream("application/x-ndjson", self._lines(chat, n_tokens))
        else:
            text = "".join(token_text(i) for i in range(n_tokens))
            self.send_json(200, {**self._piece(chat, text, False), **self._final(n_tokens, n_tokens * 0.02)})

    def _piece(self, chat: bool, text: str, done: bool) -> dict[str, Any]:
        piece: dict[str, Any] = {"model": self.state.model, "created_at": now_iso()}
        piece.update({"message": {"role": "assistant", "content": text}} if chat else {"response": text})
        return {**piece, "done": done}

    def _final(self, n_tokens: int, eval_seconds: float) -> dict[str, Any]:
        return {"done": True, "done_reason": "length", "context": [1, 2, 3], "total_duration": int(eval_seconds * 1e9) + 5_000_000,
                "load_duration": 1_000_000, "prompt_eval_count": 8, "prompt_eval_duration": 4_000_000,
                "eval_count": n_tokens, "eval_duration": int(eval_seconds * 1e9)}

    def _lines(self, chat: bool, n_tokens: int) -> Iterator[bytes]:
        start = time.monotonic()
        for i in range(n_tokens):
            if self.wait(self.state.token_delay):
                return
            yield (json.dumps(self._piece(chat, token_text(i), False)) + "\n").encode()
        final = {**self._piece(chat, "", True), **self._final(n_tokens, time.monotonic() - start)}
        yield (json.dumps(final) + "\n").encode()


@contextmanager
def ollama_stub(**settings: Any) -> Iterator[OllamaStub]:
    """Serve the stub on a free loopback port until the with-block ends (settings: see OllamaStub)."""
    with serve(_Handler, OllamaStub(**settings)) as state:
        yield state
