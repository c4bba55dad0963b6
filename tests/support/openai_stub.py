"""A stub OpenAI-compatible engine (GET /v1/models, POST /v1/chat/completions and /v1/completions, SSE
streams), configurable to behave like the servers the smoke test must understand:

- `xinference=True`: Xinference's model list ({"object": "list", "data": [...]} whose entries add
  model_name, model_type, model_ability, ...; the id is the model uid), SSE lines ending in CRLF, and
  completions streams without `data: [DONE]`, as Xinference 4.x sends them;
- `token_delay`: seconds between streamed tokens, without `X-Accel-Buffering` (so a buffering proxy shows);
- `bursts`: the first N streams are generated at `token_delay` a token but sent in one burst at the end, as
  vLLM's server once did right after a restart (no proxy involved);
- `latency`: seconds before every answer (for concurrency tests), with a shared in-flight `gauge`;
- `api_key`: refuse requests without `Authorization: Bearer KEY` (401), as an engine with its own key does;
- `health_status`: what GET /health answers (vLLM and llama.cpp answer 503 until the model is loaded);
- `echo_auth`: answer GET /v1/models with a 500 whose body repeats the Authorization header, as a careless
  server might (to prove the smoke output redacts what servers echo).
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .stubserver import StubHandler, StubState, serve

MODEL_ID = "stub-model"


@dataclass
class OpenAIStub(StubState):
    model: str = MODEL_ID
    xinference: bool = False
    api_key: str | None = None
    echo_auth: bool = False
    health_status: int = 200
    bursts: int = 0

    @property
    def line_end(self) -> str:
        return "\r\n" if self.xinference else "\n"


def token_text(index: int) -> str:
    return f"tok{index} "


class _Handler(StubHandler[OpenAIStub]):
    def _authorized(self) -> bool:
        key = self.state.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self.send_json(401, {"error": {"message": "invalid api key", "type": "authentication_error"}})
        return False

    def do_GET(self) -> None:
        self.arrive()
        if self.path == "/health":
            self.send_json(self.state.health_status, {"status": "ok" if self.state.health_status == 200 else "loading"})
        elif self.path == "/status" and self.state.xinference:
            self.send_json(200, {})
        elif not self._authorized():
            return
        elif self.path == "/v1/models" and self.state.echo_auth:
            self.send_json(500, {"error": f"cannot list models for {self.headers.get('Authorization')}"})
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [self._model_entry()]})
        else:
            self.send_json(404, {"error": {"message": f"no route for GET {self.path}"}})

    def _model_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.state.model, "object": "model", "created": 0,
                                 "owned_by": "xinference" if self.state.xinference else "stub"}
        if self.state.xinference:  # what Xinference's supervisor adds for a launched LLM
            entry.update(model_type="LLM", address="127.0.0.1:0", accelerators=["0"], model_name=self.state.model,
                         model_lang=["en", "zh"], model_ability=["generate", "chat"], model_description="stub",
                         model_format="pytorch", model_size_in_billions=7, model_family="qwen2.5-instruct",
                         quantization="none", model_hub="huggingface", revision=None, context_length=32768,
                         replica=1)
        return entry

    def do_POST(self) -> None:
        body = self.arrive()
        if not self._authorized():
            return
        request = self.json_body(body)
        if request is None or self.path not in ("/v1/chat/completions", "/v1/completions"):
            self.send_json(404 if request is not None else 400, {"error": {"message": f"bad request {self.path}"}})
            return
        if request.get("model") != self.state.model:
            self.send_json(404, {"error": {"message": f"model {request.get('model')!r} not found"}})
            return
        chat = self.path == "/v1/chat/completions"
        n_tokens = int(request.get("max_tokens") or 16)
        if request.get("stream"):
            self.stream("text/event-stream", self._events(chat, n_tokens))
        else:
            self.send_json(200, self._answer(chat, n_tokens))

    def _answer(self, chat: bool, n_tokens: int) -> dict[str, Any]:
        text = "".join(token_text(i) for i in range(n_tokens))
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        return {"id": "cmpl-stub", "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": self.state.model, "choices": [choice],
                "usage": {"prompt_tokens": 3, "completion_tokens": n_tokens, "total_tokens": n_tokens + 3}}

    def _event(self, payload: Any) -> bytes:
        end = self.state.line_end
        data = payload if isinstance(payload, str) else json.dumps(payload)
        return f"data: {data}{end}{end}".encode()

    def _chunk(self, chat: bool, text: str | None, finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        return {"id": "cmpl-stub", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": self.state.model, "choices": [choice]}

    def _events(self, chat: bool, n_tokens: int) -> Iterator[bytes]:
        if self.state.bursts > 0:
            self.state.bursts -= 1
            if not self.wait(self.state.token_delay * n_tokens):
                yield b"".join(self._paced_events(chat, n_tokens, delay=0.0))
            return
        yield from self._paced_events(chat, n_tokens, self.state.token_delay)

    def _paced_events(self, chat: bool, n_tokens: int, delay: float) -> Iterator[bytes]:
        if chat:
            yield self._event({**self._chunk(True, None, None), "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for i in range(n_tokens):
            if self.wait(delay):
                return
            yield self._event(self._chunk(chat, token_text(i), None))
        yield self._event(self._chunk(chat, None, "length"))
        if chat or not self.state.xinference:  # Xinference's completions streams end without [DONE]
            yield self._event("[DONE]")


@contextmanager
def openai_stub(**settings: Any) -> Iterator[OpenAIStub]:
    """Serve the stub on a free loopback port until the with-block ends (settings: see OpenAIStub)."""
    with serve(_Handler, OpenAIStub(**settings)) as state:
        yield state
