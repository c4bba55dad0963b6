"""Open WebUI (chatUi open-webui) on the ray target's head: the rendered site for a ray stack, run by the real nginx
on loopback, in front of a frontend stand-in and a Ray Serve stand-in that record what reaches them. The chat host
behaves as on the vm target: no session -> the sign-in page; the right key -> the frontend, told who signed in by
nginx; the API beside it still proxies to Serve with a key. Under mocks: tests/unit/test_ray_stack.py
(chatUrl, DNS, the smoke sign-in, Open WebUI's secret key)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmdeploy.render import engine_routes
from support.chat import ChatSite, chat_site
from support.route_recorder import route_recorder
from support.stubserver import StubState

pytestmark = pytest.mark.integration

RAY = dict(target="ray", shape="VM.GPU.A10.2", engine="vllm", vllmModel="Qwen/Qwen2.5-14B-Instruct",
           modelName="qwen2.5-14b", rayWorkers=1, rayTensorParallel=2, os="ubuntu-22.04")


@pytest.fixture(scope="module")
def frontend() -> Iterator[StubState]:
    with route_recorder() as state:
        yield state


@pytest.fixture(scope="module")
def serve() -> Iterator[StubState]:
    with route_recorder() as state:
        yield state


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, frontend: StubState, serve: StubState) -> Iterator[ChatSite]:
    with chat_site(tmp_path_factory.mktemp("chat-ray"), frontend.port, engine_port=serve.port, **RAY) as s:
        assert s.ep.cfg.target == "ray" and s.ep.cfg.chat.ui == "open-webui"
        yield s


def test_the_ray_heads_site_with_open_webui_passes_nginx_t_and_names_the_chat_host(site: ChatSite) -> None:
    # chat_site ran `nginx -t` before starting nginx (support/nginx.py run_nginx); the chat server is rendered in.
    assert "server_name localhost;" in site.ep.rendered.nginx_site
    assert f"proxy_pass http://127.0.0.1:{site.ep.host_layout.chat_port}" in site.ep.rendered.nginx_site


def test_without_a_session_the_chat_host_sends_the_browser_to_sign_in(site: ChatSite, frontend: StubState) -> None:
    seen = len(frontend.requests)
    with site.browser() as s:
        r = s.get(f"{site.chat}/", allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"] == "/_login"
    assert len(frontend.requests) == seen


def test_a_signed_in_key_reaches_open_webui_as_its_name_and_the_api_still_reaches_serve(
        site: ChatSite, frontend: StubState, serve: StubState) -> None:
    with site.browser() as s:
        r = site.sign_in(s, site.ep.keys["alice"])
        assert r.status_code == 303 and r.headers["Location"] == "/"
        spoof = {"X-User-Email": "ops@workshop.invalid"}
        assert s.get(f"{site.chat}/c/ray", headers=spoof, timeout=5).status_code == 200
    got = next(r for r in reversed(frontend.requests) if r.path == "/c/ray").headers
    assert got["X-User-Email"] == "alice@workshop.invalid" and got["X-User-Name"] == "alice"
    # The API host of the same site: Ray Serve's OpenAI routes, with the key, never the chat cookie alone.
    route = engine_routes(site.ep.cfg).inference[0]
    method = next(m for m in route.methods if m != "HEAD")
    with site.browser() as s:
        seen = len(serve.requests)
        ok = s.request(method, f"{site.api}{route.example()}", timeout=5,
                       headers={"Authorization": f"Bearer {site.ep.keys['alice']}"},
                       json={} if method == "POST" else None)
        assert ok.status_code == 200 and len(serve.requests) == seen + 1
        assert s.request(method, f"{site.api}{route.example()}", timeout=5).status_code == 401
