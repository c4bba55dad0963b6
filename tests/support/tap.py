"""A transparent HTTP tap between a frontend and the engine: every request is passed on to the engine as it came,
every answer passed back as it streams (chunk by chunk, so SSE stays live), and both are recorded.

Why: "the engine's answer is on the page" is then a comparison with what the engine really sent, read from the
wire, not an inference from the page looking like a model's output.
"""
from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ports import LOOPBACK

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Exchange:
    method: str
    path: str
    request: bytes
    status: int = 0
    response: bytearray = field(default_factory=bytearray)


@dataclass
class Tap:
    url: str
    port: int
    exchanges: list[Exchange] = field(default_factory=list)

    def chat_answers(self) -> list[str]:
        """The assistant text of each /v1/chat/completions answer (streamed or not), in order."""
        return [streamed_content(bytes(e.response)) for e in self.exchanges
                if e.path.endswith("/chat/completions") and e.status == 200]


def streamed_content(body: bytes) -> str:
    """An OpenAI chat completion's content: the deltas of an SSE stream joined, or a plain answer's message."""
    text = body.decode("utf-8", errors="replace")
    if not text.lstrip().startswith("data:"):
        return json.loads(text)["choices"][0]["message"]["content"] or ""
    parts = []
    for line in text.splitlines():
        data = line.removeprefix("data:").strip()
        if line.startswith("data:") and data != "[DONE]":
            for choice in json.loads(data).get("choices", []):
                parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


def _handler(upstream_port: int, tap: Tap) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            exchange = Exchange(self.command, self.path, body)
            tap.exchanges.append(exchange)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
            upstream = http.client.HTTPConnection(LOOPBACK, upstream_port, timeout=600)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                exchange.status = answer.status
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := answer.read1(65536):
                    exchange.response += chunk
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            finally:
                upstream.close()

        do_GET = do_POST = _relay

    return Handler


@contextmanager
def tap(upstream_port: int) -> Iterator[Tap]:
    """A tap on a free loopback port in front of 127.0.0.1:upstream_port, stopped when the block ends."""
    record = Tap("", 0)
    server = ThreadingHTTPServer((LOOPBACK, 0), _handler(upstream_port, record))
    server.daemon_threads = True
    record.port = server.server_address[1]
    record.url = f"http://{LOOPBACK}:{record.port}"
    thread = threading.Thread(target=server.serve_forever, name="tap", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
