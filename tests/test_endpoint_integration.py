"""The rendered nginx site, run by a real nginx on loopback in front of a real llama.cpp server.

The site is exactly what the VM gets (same template, same config), moved onto loopback ports and
under a temporary root by render.Layout. TLS uses a test CA; API keys reach nginx the way they
reach the VM: as a tar on the standard input of the rendered llmdeploy-install-secrets script.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

from conftest import minimal_raw
from llmdeploy.config import StackConfig, parse
from llmdeploy.render import FILES_DIR, INSTALL_SECRETS, Layout, Rendered, render
from llmdeploy.secrets import generate_api_key, secrets_bundle
from support.certs import issue_leaf, make_ca
from support.llamaserver import llama_server
from support.nginx import run_nginx
from support.ports import free_port
from support.sse_backend import SSEBackend, sse_backend
from support.tinymodel import write_tiny_gguf

pytestmark = pytest.mark.integration
PASSWORD = "alice-long-passphrase-1"


@dataclass
class Endpoint:
    cfg: StackConfig
    rendered: Rendered
    base: str
    http_base: str
    ca: str
    keys: dict[str, str]
    layout: Layout
    status_before_delivery: int
    nginx_pid: int

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE in this environment would override verify=
        s.verify = self.ca
        return s

    def bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


def endpoint_config(**overrides: object) -> StackConfig:
    raw = minimal_raw(engine="llamacpp", shape="VM.Standard.E4.Flex", modelName="tiny",
                      llamacppModelUrl="https://models.invalid/tiny-q8_0.gguf",
                      apiKeys=["default", "slow:1r/m"], rateLimit="1000r/s", rateLimitBurst=3,
                      basicAuthUsers=["alice"], basicAuthPasswords=json.dumps({"alice": PASSWORD}))
    raw.update(overrides)
    return parse(raw, stack="itest")


def install_tls(layout: Layout, workdir: Path) -> str:
    ca = make_ca(workdir / "ca")
    leaf = issue_leaf(ca, workdir / "leaf", hostnames=["localhost"], ips=["127.0.0.1"])
    tls = Path(layout.paths["tls_dir"])
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "fullchain.pem").write_bytes(Path(leaf.fullchain).read_bytes())
    (tls / "privkey.pem").write_bytes(Path(leaf.key).read_bytes())
    return str(ca.cert)


def install_site(rendered: Rendered, layout: Layout, workdir: Path) -> Path:
    """What the 60-nginx step does on the VM: htpasswd, an empty key map until delivery, the site."""
    paths = layout.paths
    Path(paths["secrets_dir"]).mkdir(parents=True, exist_ok=True)
    Path(paths["api_keys_map"]).touch()
    Path(paths["htpasswd"]).write_text(rendered.file(f"{FILES_DIR}/htpasswd").content)
    Path(paths["acme_webroot"]).mkdir(parents=True, exist_ok=True)
    site = workdir / "llmdeploy.conf"
    site.write_text(rendered.nginx_site)
    return site


def deliver_secrets(rendered: Rendered, bundle: bytes, workdir: Path) -> str:
    script = workdir / "llmdeploy-install-secrets"
    script.write_text(rendered.file(INSTALL_SECRETS).content)
    script.chmod(0o755)
    result = subprocess.run([str(script)], input=bundle, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def loopback_layout(root: Path, engine_port: int) -> Layout:
    https = free_port()
    return Layout(root=str(root), http_listen=f"127.0.0.1:{free_port()}", https_listen=f"127.0.0.1:{https}",
                  https_port=https, engine_port=engine_port)


def wait_for_status(session: requests.Session, url: str, headers: dict[str, str], want: int) -> int:
    deadline, got = time.monotonic() + 10, 0
    while time.monotonic() < deadline:
        got = session.get(url, headers=headers, timeout=5).status_code
        if got == want:
            break
        time.sleep(0.1)
    return got


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    work = tmp_path_factory.mktemp("endpoint")
    model = write_tiny_gguf(work / "tiny.gguf")
    cfg = endpoint_config()
    with llama_server(model, alias="tiny") as llama:
        layout = loopback_layout(work / "root", llama.port)
        rendered = render(cfg, layout)
        ca = install_tls(layout, work)
        site = install_site(rendered, layout, work)
        ports = [int(layout.http_listen.rsplit(":", 1)[1]), layout.https_port]
        with run_nginx(site, work / "nginx", wait_ports=ports) as nginx:
            keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
            ep = Endpoint(cfg, rendered, f"https://localhost:{layout.https_port}",
                          f"http://localhost:{ports[0]}", ca, keys, layout, 0, nginx.pid)
            with ep.session() as s:
                ep.status_before_delivery = s.get(f"{ep.base}/v1/models", headers=ep.bearer("default"),
                                                  timeout=5).status_code
                deliver_secrets(rendered, secrets_bundle(cfg, keys), work)
                os.kill(nginx.pid, signal.SIGHUP)  # what `systemctl reload nginx` does on the VM
                wait_for_status(s, f"{ep.base}/v1/models", ep.bearer("default"), 200)
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
    challenge = Path(endpoint.layout.paths["acme_webroot"]) / ".well-known" / "acme-challenge" / "tok123"
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
    secrets_file = Path(endpoint.layout.paths["api_keys_map"])
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
        layout = loopback_layout(work / "root", backend.port)
        rendered = render(cfg, layout)
        ca = install_tls(layout, work)
        site = install_site(rendered, layout, work)
        keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
        deliver_secrets(rendered, secrets_bundle(cfg, keys), work)
        with run_nginx(site, work / "nginx", wait_ports=[layout.https_port]) as nginx:
            yield Endpoint(cfg, rendered, f"https://localhost:{layout.https_port}", "", ca, keys, layout, 0,
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
