"""The plumbing shared by the stub API servers (openai_stub, ollama_stub): a threaded HTTP/1.1 server on a
free loopback port, JSON and chunked-stream helpers, a record of every request, and a gauge of requests in
flight (shared between servers, so a test can see how many endpoints a client works on at once).

Responses carry `Connection: close`, so stopping never waits on an idle keep-alive socket; streams are
chunked and, like most engines but unlike llama.cpp, carry no `X-Accel-Buffering` header.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar, cast

from .ports import LOOPBACK


class Gauge:
    """Counts requests in flight, and the most there ever were at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = self.peak = 0

    def __enter__(self) -> Gauge:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.current -= 1


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StubState:
    """Settings and records common to the stubs; each stub subclasses it with its own settings."""

    latency: float = 0.0  # seconds every request waits before it is answered
    token_delay: float = 0.0  # seconds between streamed tokens
    gauge: Gauge = field(default_factory=Gauge)
    url: str = ""
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


S = TypeVar("S", bound=StubState)


class StubHandler(BaseHTTPRequestHandler, Generic[S]):
    protocol_version = "HTTP/1.1"
    timeout = 10.0

    @property
    def state(self) -> S:
        return cast(S, cast(_Server, self.server).state)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def arrive(self) -> bytes:
        """Read and record the request, then wait `latency`, counted in the gauge. The gauge is left before
        the answer is written: a client that sends its next request only after an answer is never counted
        twice."""
        with self.state.gauge:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.state.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            self.wait(self.state.latency)
        return body

    def json_body(self, body: bytes) -> dict[str, Any] | None:
        try:
            value = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def wait(self, seconds: float) -> bool:
        """Sleep; True if the server is stopping."""
        return self.state.stop.wait(seconds) if seconds > 0 else self.state.stop.is_set()

    def send_json(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        self.send_body(status, json.dumps(payload).encode(), content_type)

    def send_body(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def stream(self, content_type: str, pieces: Iterator[bytes]) -> None:
        self.start_stream(content_type)
        try:
            for piece in pieces:
                self.send_chunk(piece)
            self.send_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True
    state: StubState


@contextmanager
def running(server: ThreadingHTTPServer) -> Iterator[None]:
    """Run `server` in a thread until the with-block ends; then stop it and close its socket."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def serve(handler: type[StubHandler[S]], state: S) -> Iterator[S]:
    """Serve `handler` on a free 127.0.0.1 port until the with-block ends; `state` gets the URL and port."""
    server = _Server((LOOPBACK, 0), handler)
    server.state = state
    state.port = int(server.server_address[1])
    state.url = f"http://{LOOPBACK}:{state.port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
