"""The rendered nginx site, run by a real nginx on loopback in front of a real llama.cpp server.

The site is exactly what the VM gets (same template, same config), moved onto loopback ports and
under a temporary root by render.HostLayout. TLS uses a test CA; API keys reach nginx the way they
reach the VM: as a tar on the standard input of the rendered llmdeploy-install-secrets script.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from llmdeploy.render import render
from llmdeploy.secret_delivery import generate_api_key, secrets_bundle
from support.endpoint import (PASSWORD, Endpoint, deliver_secrets, endpoint_config, install_site, install_tls,
                              llama_endpoint, loopback_host_layout)
from support.nginx import run_nginx
from support.sse_backend import SSEBackend, sse_backend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with llama_endpoint(tmp_path_factory.mktemp("endpoint")) as ep:
        yield ep


def test_healthz_is_open_and_reports_the_engine(endpoint: Endpoint) -> None:
    with endpoint.session() as s:
        r = s.get(f"{endpoint.base}/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_http_is_redirected_to_https(endpoint: Endpoint) -> None:
    with endpoint.session() as s:
        r = s.get(f"{endpoint.http_base}/v1/models?x=1", allow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["Location"] == f"{endpoint.base}/v1/models?x=1"


def test_acme_challenges_are_served_over_plain_http(endpoint: Endpoint) -> None:
    challenge = Path(endpoint.host_layout.paths.acme_webroot) / ".well-known" / "acme-challenge" / "tok123"
    challenge.parent.mkdir(parents=True, exist_ok=True)
    challenge.write_text("tok123.thumbprint")
    with endpoint.session() as s:
        r = s.get(f"{endpoint.http_base}/.well-known/acme-challenge/tok123", allow_redirects=False, timeout=5)
    assert r.status_code == 200 and r.text == "tok123.thumbprint"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/v1/completions", "/", "/nope"])
def test_requests_without_a_key_or_with_a_wrong_key_are_refused(endpoint: Endpoint, path: str) -> None:
    with endpoint.session() as s:
        assert s.get(f"{endpoint.base}{path}", timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer sk-llm-" + "x" * 43}
        assert s.get(f"{endpoint.base}{path}", headers=wrong, timeout=5).status_code == 401
        assert s.get(f"{endpoint.base}{path}", auth=("alice", "wrong-password-123"), timeout=5).status_code == 401


def test_keys_work_only_once_delivered(endpoint: Endpoint) -> None:
    assert endpoint.status_before_delivery == 401
    secrets_file = Path(endpoint.host_layout.paths.api_keys_map)
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    with endpoint.session() as s:
        r = s.get(f"{endpoint.base}/v1/models", headers=endpoint.bearer("default"), timeout=5)
    assert r.status_code == 200
    assert "tiny" in [m["id"] for m in r.json()["data"]]
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")


def test_basic_auth_user_is_accepted(endpoint: Endpoint) -> None:
    with endpoint.session() as s:
        r = s.get(f"{endpoint.base}/v1/models", auth=("alice", PASSWORD), timeout=5)
    assert r.status_code == 200


def test_chat_and_completions_are_answered_through_the_proxy(endpoint: Endpoint) -> None:
    with endpoint.session() as s:
        chat = s.post(f"{endpoint.base}/v1/chat/completions", headers=endpoint.bearer("default"), timeout=30,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8})
        text = s.post(f"{endpoint.base}/v1/completions", headers=endpoint.bearer("default"), timeout=30,
                      json={"model": "tiny", "prompt": "hello", "max_tokens": 8})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    assert text.status_code == 200 and text.json()["choices"][0]["text"]


def test_llama_stream_passes_through_as_sse_events(endpoint: Endpoint) -> None:
    with endpoint.session() as s:
        r = s.post(f"{endpoint.base}/v1/chat/completions", headers=endpoint.bearer("default"), stream=True,
                   timeout=30, json={"model": "tiny", "stream": True, "max_tokens": 12,
                                     "messages": [{"role": "user", "content": "hello"}]})
        events = [line for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert len(events) >= 12 and events[-1] == "data: [DONE]"


def test_a_slow_key_hits_its_own_rate_limit_and_no_one_else_does(endpoint: Endpoint) -> None:
    with endpoint.session() as s:
        slow = [s.get(f"{endpoint.base}/v1/models", headers=endpoint.bearer("slow"), timeout=5).status_code
                for _ in range(6)]
        fast = [s.get(f"{endpoint.base}/v1/models", headers=endpoint.bearer("default"), timeout=5).status_code
                for _ in range(6)]
    assert slow[0] == 200 and 429 in slow  # 1r/m with a burst of 3
    assert fast == [200] * 6


@pytest.fixture(scope="module")
def stub_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, SSEBackend]]:
    """The same site in front of a backend that streams slowly and sends no X-Accel-Buffering
    (llama.cpp sends it, which would hide a missing `proxy_buffering off`)."""
    work = tmp_path_factory.mktemp("stub")
    cfg = endpoint_config()
    with sse_backend(tokens=10, delay=0.15) as backend:
        host_layout = loopback_host_layout(work / "root", backend.port)
        rendered = render(cfg, host_layout)
        ca = install_tls(host_layout, work)
        site = install_site(rendered, host_layout, work)
        keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
        deliver_secrets(rendered, secrets_bundle(cfg, keys), work)
        with run_nginx(site, work / "nginx", wait_ports=[host_layout.https_port]) as nginx:
            yield Endpoint(cfg, rendered, f"https://localhost:{host_layout.https_port}", "", ca, keys, host_layout, 0,
                           nginx.pid), backend


def test_stream_arrives_token_by_token_not_in_one_burst(stub_endpoint: tuple[Endpoint, SSEBackend]) -> None:
    endpoint, backend = stub_endpoint
    arrivals: list[float] = []
    with endpoint.session() as s:
        start = time.monotonic()
        r = s.post(f"{endpoint.base}/v1/chat/completions", headers=endpoint.bearer("default"), stream=True,
                   timeout=30, json={"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - start)
    assert r.status_code == 200 and len(arrivals) >= 10
    # Ten tokens 0.15 s apart: unbuffered, the first arrives long before the last.
    assert arrivals[-1] - arrivals[0] >= 0.5 * 9 * 0.15, arrivals
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    assert gaps[len(gaps) // 2] >= 0.05, arrivals


def test_client_credentials_never_reach_the_engine(stub_endpoint: tuple[Endpoint, SSEBackend]) -> None:
    endpoint, backend = stub_endpoint
    with endpoint.session() as s:
        assert s.get(f"{endpoint.base}/v1/models", headers=endpoint.bearer("default"), timeout=5).status_code == 200
    seen = [req for req in backend.requests if req.path == "/v1/models"]
    assert seen and all("authorization" not in {k.lower() for k in req.headers} for req in seen)
