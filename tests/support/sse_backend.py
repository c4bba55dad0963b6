"""A stub OpenAI-compatible backend that streams SSE events slowly, for proxy tests.

Why: llama.cpp marks its streams `X-Accel-Buffering: no`, which makes nginx stream them even
when the proxy config forgets `proxy_buffering off`. This backend does NOT send that header and
spaces its events `delay` seconds apart, so a test can tell an unbuffered proxy (events arrive
spread over time) from a buffering one (events arrive in a burst at the end).

Endpoints: GET /health -> 200, GET /v1/models, POST /v1/chat/completions (stream or not; the
number of tokens is the request's `max_tokens`, else `tokens`). Every request is recorded
(method, path, headers, body) so tests can check what a proxy forwarded. Responses use HTTP/1.1,
chunked streams, and `Connection: close`, so stopping never waits on an idle keep-alive socket.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from .ports import LOOPBACK

MODEL_ID = "sse-stub"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class SSEBackend:
    """A running stub backend: base URL, port, and the requests it has received."""

    url: str
    port: int
    tokens: int
    delay: float
    requests: list[RecordedRequest] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, backend: SSEBackend, stop: threading.Event) -> None:
        super().__init__((LOOPBACK, backend.port), _Handler)
        self.backend = backend
        self.stop = stop


def chat_chunk(completion_id: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    """One OpenAI `chat.completion.chunk` object."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def token_text(index: int) -> str:
    return f"tok{index} "


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10.0  # a client that connects and sends nothing cannot hold a thread for long

    @property
    def stub(self) -> _Server:
        return cast(_Server, self.server)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; requests are recorded instead

    def _record(self, body: bytes) -> None:
        self.stub.backend.requests.append(RecordedRequest(self.command, self.path, dict(self.headers), body))

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def do_GET(self) -> None:
        self._record(b"")
        if self.path == "/health":
            self._send_json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            model = {"id": MODEL_ID, "object": "model", "owned_by": "test"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"no route for GET {self.path}"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._record(body)
        if self.path != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route for POST {self.path}"}})
            return
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            self._send_json(400, {"error": {"message": f"invalid JSON: {exc}"}})
            return
        n_tokens = int(request.get("max_tokens") or self.stub.backend.tokens)
        if request.get("stream"):
            self._stream(n_tokens)
        else:
            self._send_json(200, self._completion(n_tokens))

    def _completion(self, n_tokens: int) -> dict[str, Any]:
        message = {"role": "assistant", "content": "".join(token_text(i) for i in range(n_tokens))}
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": n_tokens, "total_tokens": n_tokens + 1},
        }

    def _stream(self, n_tokens: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for event in self._events(n_tokens):
                self._send_chunk(event)
            self._send_chunk(b"")  # last chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-stream

    def _events(self, n_tokens: int) -> Iterator[bytes]:
        cid, created = f"chatcmpl-stub-{time.monotonic_ns()}", int(time.time())
        yield _sse(chat_chunk(cid, created, {"role": "assistant", "content": ""}, None))
        for i in range(n_tokens):
            if self.stub.stop.wait(self.stub.backend.delay):
                return  # the backend is shutting down
            yield _sse(chat_chunk(cid, created, {"content": token_text(i)}, None))
        yield _sse(chat_chunk(cid, created, {}, "length"))
        yield b"data: [DONE]\n\n"

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


@contextmanager
def sse_backend(tokens: int = 20, delay: float = 0.1) -> Iterator[SSEBackend]:
    """Serve the stub on a free 127.0.0.1 port until the with-block ends."""
    stop = threading.Event()
    backend = SSEBackend(url="", port=0, tokens=tokens, delay=delay)
    server = _Server(backend, stop)
    backend.port = int(server.server_address[1])
    backend.url = f"http://{LOOPBACK}:{backend.port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        stop.set()  # ends streams in progress
        server.shutdown()
        server.server_close()  # joins handler threads
        thread.join(timeout=10)
