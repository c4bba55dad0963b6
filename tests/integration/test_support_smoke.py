"""Smoke tests proving each test-support helper works against the real programs it wraps.

Why: the integration tests build on these helpers; if a helper were wrong (a model llama.cpp
cannot load, a config check that passes everything, a backend that bursts instead of streaming)
those tests would prove nothing. Every process started here is stopped by PID.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.certs import CA, Leaf, issue_leaf, make_ca, self_signed
from tests.support.llamaserver import LlamaServer, llama_server
from tests.support.nginx import nginx_test, run_nginx
from tests.support.ports import free_port, port_open
from tests.support.sse_backend import sse_backend
from tests.support.tinymodel import write_tiny_gguf

pytestmark = pytest.mark.integration  # real servers on loopback (marker declared in pyproject.toml)

MAX_TOKENS = 16


@dataclass(frozen=True)
class SSEEvent:
    arrived: float  # time.monotonic() when the line was read
    data: str


def http_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify=
    return session


def read_sse(response: requests.Response) -> list[SSEEvent]:
    """The `data:` events of a streamed response, each stamped with its arrival time."""
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data:"):
            events.append(SSEEvent(time.monotonic(), line[5:].strip().decode()))
    return events


def stream_chat(
    session: requests.Session, url: str, max_tokens: int | None = 8, verify: bool | str = True
) -> tuple[requests.Response, list[SSEEvent]]:
    """POST a streamed chat completion; return the response and its events."""
    body: dict[str, Any] = {"model": "any", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    endpoint = f"{url}/v1/chat/completions"
    with session.post(endpoint, json=body, stream=True, timeout=30, verify=verify) as response:
        response.raise_for_status()
        return response, read_sse(response)


def content_of(events: list[SSEEvent]) -> str:
    chunks = [json.loads(e.data) for e in events if e.data != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- tiny model -----------------------------------------------------------------------------


def test_tiny_gguf_is_small_fast_and_reproducible(tmp_path: Path) -> None:
    start = time.perf_counter()
    first = write_tiny_gguf(tmp_path / "a" / "tiny.gguf")
    elapsed = time.perf_counter() - start
    second = write_tiny_gguf(tmp_path / "b" / "tiny.gguf")
    assert first.read_bytes()[:4] == b"GGUF"
    assert first.stat().st_size < 1_000_000
    assert elapsed < 1.0
    assert first.read_bytes() == second.read_bytes()


# --- llama.cpp server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture(scope="module")
def llama(tiny_model: Path) -> Iterator[LlamaServer]:
    with llama_server(tiny_model, alias="tiny") as server:
        yield server


def chat(session: requests.Session, server: LlamaServer, prompt: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    body = {"model": server.alias, "messages": messages, "max_tokens": MAX_TOKENS}
    response = session.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_llama_server_lists_the_alias(llama: LlamaServer) -> None:
    models = http_session().get(f"{llama.url}/v1/models", timeout=10).json()
    assert llama.alias in [m["id"] for m in models["data"]]


def test_llama_chat_completion_returns_max_tokens_of_text(llama: LlamaServer) -> None:
    answer = chat(http_session(), llama, "Héllo wörld, 日本語 too?")  # non-ASCII: byte fallback
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] == MAX_TOKENS
    assert answer["choices"][0]["finish_reason"] == "length"


def test_llama_generation_is_deterministic(llama: LlamaServer) -> None:
    session = http_session()
    first, second = (chat(session, llama, "same prompt") for _ in range(2))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


def test_llama_chat_stream_yields_many_sse_events(llama: LlamaServer) -> None:
    response, events = stream_chat(http_session(), llama.url, max_tokens=MAX_TOKENS)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers.get("X-Accel-Buffering") == "no"
    assert len(events) > MAX_TOKENS
    assert events[-1].data == "[DONE]"
    assert content_of(events).strip()


def test_llama_text_completion(llama: LlamaServer) -> None:
    body = {"model": llama.alias, "prompt": "the model", "max_tokens": MAX_TOKENS}
    answer = http_session().post(f"{llama.url}/v1/completions", json=body, timeout=30).json()
    assert answer["choices"][0]["text"].strip()
    assert answer["usage"]["completion_tokens"] == MAX_TOKENS


def test_llama_server_is_stopped_on_exit(tiny_model: Path) -> None:
    with llama_server(tiny_model) as server:
        assert pid_alive(server.pid)
    assert not pid_alive(server.pid)
    assert not port_open(server.port)


def test_llama_server_reports_the_child_log_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="model file not found: .*missing.gguf"):
        with llama_server(tmp_path / "missing.gguf", timeout=30):
            pass


# --- nginx ----------------------------------------------------------------------------------


def write_site(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def test_nginx_test_accepts_a_valid_site(tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.conf", f"server {{ listen 127.0.0.1:{free_port()}; return 204; }}\n")
    ok, output = nginx_test(site, tmp_path / "work")
    assert ok, output
    assert "test is successful" in output


def test_nginx_test_rejects_a_broken_site_with_nginx_message(tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.conf", "server { listen 127.0.0.1:1; no_such_directive on; }\n")
    ok, output = nginx_test(site, tmp_path / "work")
    assert not ok
    assert 'unknown directive "no_such_directive"' in output


def test_run_nginx_raises_with_nginx_message(tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.conf", "server { listen 127.0.0.1:1 ssl; }\n")  # no certificate
    with pytest.raises(RuntimeError, match="ssl_certificate"):
        with run_nginx(site, tmp_path / "work", wait_ports=[1]):
            pass


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


def tls_proxy_site(path: Path, port: int, leaf: Leaf, backend_url: str, buffering: bool) -> Path:
    """An nginx 1.22 TLS reverse proxy to `backend_url`, with or without proxy buffering."""
    return write_site(
        path,
        f"""
server {{
    listen 127.0.0.1:{port} ssl http2;
    server_name llm.example.test;
    ssl_certificate {leaf.fullchain};
    ssl_certificate_key {leaf.key};
    location / {{
        proxy_pass {backend_url};
        proxy_http_version 1.1;
        proxy_buffering {"on" if buffering else "off"};
    }}
}}
""",
    )


def stream_through_nginx(tmp_path: Path, leaf: Leaf, ca: CA, buffering: bool) -> list[SSEEvent]:
    port = free_port()
    with sse_backend(tokens=8, delay=0.1) as backend:
        site = tls_proxy_site(tmp_path / "site.conf", port, leaf, backend.url, buffering)
        with run_nginx(site, tmp_path / "work", wait_ports=[port]) as nginx:
            _, events = stream_chat(http_session(), f"https://127.0.0.1:{port}", verify=str(ca.cert))
            assert pid_alive(nginx.pid)
        assert not pid_alive(nginx.pid)
    return events


def token_span(events: list[SSEEvent]) -> float:
    return events[-1].arrived - events[0].arrived


def test_nginx_tls_proxy_streams_unbuffered_and_buffering_is_detectable(tmp_path: Path, ca: CA) -> None:
    leaf = issue_leaf(ca, tmp_path / "certs", ["llm.example.test"], ["127.0.0.1"])
    unbuffered = stream_through_nginx(tmp_path / "off", leaf, ca, buffering=False)
    buffered = stream_through_nginx(tmp_path / "on", leaf, ca, buffering=True)
    assert len(unbuffered) == len(buffered) == 8 + 3  # role, 8 tokens, finish, [DONE]
    assert token_span(unbuffered) > 0.5  # 8 tokens 0.1 s apart arrived spread out
    assert token_span(buffered) < 0.1  # all arrived together once the backend finished


def test_expired_leaf_is_rejected_by_a_client(tmp_path: Path, ca: CA) -> None:
    leaf = issue_leaf(ca, tmp_path / "certs", ["llm.example.test"], ["127.0.0.1"], expired=True)
    with pytest.raises(requests.exceptions.SSLError, match="certificate has expired"):
        stream_through_nginx(tmp_path, leaf, ca, buffering=False)


def test_self_signed_is_trusted_only_by_itself(tmp_path: Path, ca: CA) -> None:
    leaf = self_signed(tmp_path / "certs", "127.0.0.1")
    port = free_port()
    site = write_site(
        tmp_path / "site.conf",
        f"server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {leaf.fullchain}; "
        f"ssl_certificate_key {leaf.key}; return 200 ok; }}\n",
    )
    with run_nginx(site, tmp_path / "work", wait_ports=[port]):
        session = http_session()
        assert session.get(f"https://127.0.0.1:{port}/", verify=str(leaf.cert), timeout=10).text == "ok"
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"https://127.0.0.1:{port}/", verify=str(ca.cert), timeout=10)


# --- SSE backend ----------------------------------------------------------------------------


def test_sse_backend_streams_events_spaced_in_time() -> None:
    with sse_backend(tokens=5, delay=0.1) as backend:
        session = http_session()
        assert session.get(f"{backend.url}/health", timeout=10).status_code == 200
        assert session.get(f"{backend.url}/v1/models", timeout=10).json()["data"]
        response, events = stream_chat(session, backend.url, max_tokens=None)
    tokens = events[1:-2]  # drop the role chunk, the finish chunk and [DONE]
    gaps = [b.arrived - a.arrived for a, b in zip(tokens, tokens[1:])]
    assert "X-Accel-Buffering" not in response.headers
    assert len(tokens) == backend.tokens
    assert min(gaps) > 0.05
    assert content_of(events).split() == [f"tok{i}" for i in range(backend.tokens)]
    assert not port_open(backend.port)
