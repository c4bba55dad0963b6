"""BioChatter Next (chatUi biochatter-next) behind the rendered nginx, run by the real nginx on loopback with TLS and
the cookie sign-in, in front of stand-ins of its two containers (support/next_standins.py) listening where the
rendered units put the real ones (the client on 127.0.0.1:3000, biochatter-server on 127.0.0.1:5001), each set up
from its unit's `docker run` line and the key file the secret delivery wrote, and an engine that records what it
gets.

What this proves: the nginx site, the sign-in, the routing under /biochatter-next, the identity header, and the
units' wiring (ports, BASE_URL, OPENAI_BASE_URL, the server's key from its env file: the first ordinary key, never
an admin key, never a browser's). What it does not: the real images (they cannot be pulled here), so not that
upstream's code still reads these settings as its source does today.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from llmdeploy.render import FILES_DIR
from support.chat import ChatSite, chat_site
from support.next_standins import BASE_PATH, NextState, next_standins
from support.next_config import CLIENT, SERVER
from support.route_recorder import route_recorder
from support.stubserver import StubState

pytestmark = pytest.mark.integration

CLIENT_PORT = 3000  # the client's own port: the stand-ins listen where the containers would


@pytest.fixture(scope="module")
def engine() -> Iterator[StubState]:
    with route_recorder() as state:
        yield state


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          engine: StubState) -> Iterator[tuple[ChatSite, NextState, NextState]]:
    with chat_site(tmp_path_factory.mktemp("next"), CLIENT_PORT, ui="biochatter-next", engine_port=engine.port,
                   biochatterNextServerImage=SERVER, biochatterNextClientImage=CLIENT) as site:
        units = [site.ep.rendered.file(f"{FILES_DIR}/biochatter-next-{part}.service").content
                 for part in ("server", "client")]
        with next_standins(*units) as (client, server):
            yield site, client, server


@pytest.fixture(scope="module")
def site(stack: tuple[ChatSite, NextState, NextState]) -> ChatSite:
    return stack[0]


@pytest.fixture(scope="module")
def client(stack: tuple[ChatSite, NextState, NextState]) -> NextState:
    return stack[1]


@pytest.fixture(scope="module")
def server(stack: tuple[ChatSite, NextState, NextState]) -> NextState:
    return stack[2]


def signed_in(site: ChatSite, name: str) -> requests.Session:
    s = site.browser()
    r = site.sign_in(s, site.ep.keys[name])
    assert r.status_code == 303 and r.headers["Location"] == BASE_PATH, r.text
    return s


CHAT = f"{BASE_PATH}/api/openai/v1/chat/completions"
MESSAGE = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hello"}], "session_id": "s1"}


@pytest.mark.parametrize("cookie", ["", "llmdeploy_key=sk-llm-" + "z" * 43])
def test_no_or_a_forged_cookie_is_sent_to_sign_in_and_reaches_neither_container(
        site: ChatSite, client: NextState, server: NextState, cookie: str) -> None:
    seen = len(client.requests), len(server.requests)
    with site.browser() as s:
        headers = {"Cookie": cookie} if cookie else {}
        root = s.get(f"{site.chat}/", headers=headers, allow_redirects=False, timeout=5)
        assert root.status_code == 302 and root.headers["Location"] == BASE_PATH  # nginx's own, as for Light
        for path in (BASE_PATH, f"{BASE_PATH}/", f"{BASE_PATH}/_next/static/app.js", "/api/openai/v1/models"):
            r = s.get(f"{site.chat}{path}", headers=headers, allow_redirects=False, timeout=5)
            assert r.status_code == 302 and r.headers["Location"] == "/_login", path
        r = s.post(f"{site.chat}{CHAT}", json=MESSAGE, headers=headers, allow_redirects=False, timeout=5)
        assert r.status_code == 302
    assert (len(client.requests), len(server.requests)) == seen


def test_a_wrong_key_is_refused(site: ChatSite) -> None:
    with site.browser() as s:
        r = site.sign_in(s, "sk-llm-" + "x" * 43)
        assert r.status_code == 401 and "Set-Cookie" not in r.headers


def test_the_page_answers_under_its_base_path_told_who_signed_in(site: ChatSite, client: NextState) -> None:
    with signed_in(site, "bob") as s:
        page = s.get(f"{site.chat}/", timeout=5)  # / -> /biochatter-next
        assert page.status_code == 200 and page.url.endswith(BASE_PATH) and "BioChatter Next" in page.text
        # Next sends the basePath with a "/" added to the one without, through nginx (a path, so the host stays).
        slash = s.get(f"{site.chat}{BASE_PATH}/", allow_redirects=False, timeout=5)
        assert slash.status_code == 308 and slash.headers["Location"] == BASE_PATH
        spoofed = s.get(f"{site.chat}{BASE_PATH}/_next/static/app.js", timeout=5,
                        headers={"X-User-Email": "ops@workshop.invalid", "X-User-Name": "ops"})
        assert spoofed.status_code == 200
    got = next(r for r in reversed(client.requests) if r.path == f"{BASE_PATH}/_next/static/app.js").headers
    assert got["X-User-Email"] == "bob@workshop.invalid" and got["X-User-Name"] == "bob"
    assert "llmdeploy_key" not in got.get("Cookie", "")


def test_a_message_goes_client_server_engine_with_the_servers_ordinary_key(
        site: ChatSite, client: NextState, server: NextState, engine: StubState) -> None:
    """bob chats: the client passes the message to biochatter-server with no key (the browser holds none; its
    cookie never becomes one), and the server asks the engine with its own key, the first ordinary key (alice's,
    from its env file), never the admin key (ops's). No key comes back to the browser."""
    seen_engine = len(engine.requests)
    with signed_in(site, "bob") as s:
        r = s.post(f"{site.chat}{CHAT}", json=MESSAGE, timeout=10)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["code"] == 0 and '"path": "/v1/chat/completions"' in answer["choices"][0]["message"]["content"]
    assert client.requests[-1].path == CHAT and client.requests[-1].headers["X-User-Name"] == "bob"
    to_server = server.requests[-1]
    assert (to_server.method, to_server.path) == ("POST", "/v1/chat/completions")
    assert not to_server.headers.get("Authorization")  # the browser's cookie never becomes a key
    asked = engine.requests[seen_engine:]
    assert [(e.method, e.path) for e in asked] == [("POST", "/v1/chat/completions")]
    assert asked[0].headers["Authorization"] == f"Bearer {site.ep.keys['alice']}"
    assert b'"model": "tiny"' in asked[0].body  # OPENAI_MODEL: the engine's model, whatever the page picked
    keys = site.ep.keys.values()
    assert not any(k in r.text or k in str(r.headers) for k in keys)
    for seen in (*client.requests, *server.requests):
        assert not any(k in str(seen.headers) or k.encode() in seen.body for k in keys), seen.path
    assert all(e.headers.get("Authorization") != f"Bearer {site.ep.keys['ops']}" for e in engine.requests)
    # What the server container gets: the ordinary key from its env file, and no other key at all.
    assert server.run is not None and server.run.env["OPENAI_API_KEY"] == site.ep.keys["alice"]
    others = [k for name, k in site.ep.keys.items() if name != "alice"]
    assert not any(k in str(server.run.env) for k in others)
    assert client.run is not None and not any(k in str(client.run.env) for k in keys)


def test_every_path_goes_to_the_client_never_to_the_server(site: ChatSite, client: NextState,
                                                            server: NextState) -> None:
    """The client's pages fetch root paths outside its basePath (upstream's ApiPath.OpenAI is "/api/openai"), so
    nginx passes the whole chat host to the client, signed in; biochatter-server's own paths reach only the client
    (which has none of them), never the server."""
    seen = len(server.requests)
    with signed_in(site, "bob") as s:
        assert s.post(f"{site.chat}{BASE_PATH}/api/openai/dashboard/billing/usage", json={}, timeout=5).status_code == 403
        for path in ("/v1/chat/completions", "/docs", "/api/openai/v1/models"):
            assert s.get(f"{site.chat}{path}", allow_redirects=False, timeout=5).status_code == 404, path
            got = client.requests[-1]
            assert got.path == path and got.headers["X-User-Name"] == "bob"
    assert len(server.requests) == seen  # biochatter-server is reached through the client only


def test_the_smoke_gates_chat_checks_pass(site: ChatSite) -> None:
    """What `pulumi up`'s smoke gate runs with chatUrl (`llmdeploy smoke --chat-url`): sign-in page, wrong key,
    the key's session reaching the page."""
    from llmdeploy.result import PASS
    from llmdeploy.smoke.chat_checks import run_chat_checks
    from llmdeploy.smoke.targets import Credentials, Target

    target = Target(url=site.api, credentials=Credentials(api_key=site.ep.keys["bob"]), ca_bundle=site.ep.ca,
                    timeout=10, chat_url=f"{site.chat}/_login")
    results = run_chat_checks(target)
    assert [r.status for r in results] == [PASS] * 3, [(r.name, r.detail) for r in results]
