"""An OpenAI-shaped echo app for Ray Serve on CPU (tests/integration/test_ray_cluster.py, scripts/bench_ray_cluster.py).

Why: the 2-node cluster test proves Ray itself (token auth, replica spread, autoscaling, a lost worker, nginx in
front of Serve) without the GB of an LLM. This module runs inside the Ray venv, imported by Serve on every node
from the import path `ray_echo_app:app` (the nodes' PYTHONPATH holds this folder), so it imports only Ray and
FastAPI. Every answer names the node that served it (header X-Ray-Node), which is how the test sees the spread;
`?sleep=S` on /v1/chat/completions holds the request S seconds, the bounded load that drives the autoscaler.
"""
# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at runtime.

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

MODEL = "echo"
api = FastAPI()


def _text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{"content": body.get("prompt", "")}]
    words = str(messages[-1].get("content", "")).split() or ["echo"]
    n = int(body.get("max_tokens") or 16)
    return " ".join((words * n)[:n])


def _choice(chat: bool, text: str | None, finish: str | None, delta: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if not chat:
        choice["text"] = text or ""
    elif delta:
        choice["delta"] = {} if text is None else {"content": text}
    else:
        choice["message"] = {"role": "assistant", "content": text}
    return choice


@serve.deployment(name="echo")
@serve.ingress(api)
class Echo:
    def __init__(self) -> None:
        self.node = ray.get_runtime_context().get_node_id()

    def _headers(self) -> dict[str, str]:
        return {"X-Ray-Node": self.node}

    @api.get("/v1/models")
    def models(self) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "ray"}]},
                            headers=self._headers())

    @api.get("/v1/models/{model}")
    def model(self, model: str) -> JSONResponse:
        if model != MODEL:
            return JSONResponse({"error": {"message": f"model {model!r} not found"}}, status_code=404)
        return JSONResponse({"id": MODEL, "object": "model", "owned_by": "ray"}, headers=self._headers())

    @api.get("/health")
    def health(self) -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=self._headers())

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request, sleep: float = 0.0) -> Any:
        return await self._complete(await request.json(), True, sleep)

    @api.post("/v1/completions")  # also the ray target's health check (nginx's /healthz): one token of the model
    async def completions(self, request: Request) -> Any:
        return await self._complete(await request.json(), False, 0.0)

    async def _complete(self, body: dict[str, Any], chat: bool, sleep: float) -> Any:
        if body.get("model") != MODEL:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found"}}, status_code=404)
        await asyncio.sleep(min(sleep, 30.0))
        text = _text(body)
        kind = "chat.completion" if chat else "text_completion"
        if body.get("stream"):
            return StreamingResponse(self._events(chat, text, kind), media_type="text/event-stream",
                                     headers=self._headers())
        n = len(text.split())
        return JSONResponse({"id": "cmpl-echo", "object": kind, "created": int(time.time()), "model": MODEL,
                             "choices": [_choice(chat, text, "length", delta=False)],
                             "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}},
                            headers=self._headers())

    async def _events(self, chat: bool, text: str, kind: str) -> AsyncIterator[str]:
        kind = f"{kind}.chunk" if chat else kind
        for word in text.split():
            chunk = {"id": "cmpl-echo", "object": kind, "model": MODEL,
                     "choices": [_choice(chat, word + " ", None, delta=True)]}
            yield f"data: {json.dumps(chunk)}\n\n"
            await asyncio.sleep(0.01)
        yield f"data: {json.dumps({'id': 'cmpl-echo', 'object': kind, 'model': MODEL, 'choices': [_choice(chat, None, 'length', delta=True)]})}\n\n"
        yield "data: [DONE]\n\n"


app = Echo.bind()
