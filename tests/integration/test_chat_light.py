"""BioChatter Light's route (chatUi biochatter-light): a real Streamlit, started with the rendered unit's flags,
behind the rendered nginx site, reached through TLS and the sign-in cookie: the page, the health check and the
WebSocket session (upgrade, then the app's own frames) under /light/.

BioChatter Light itself is not on PyPI and cannot be cloned here (no GitHub): its install step and unit are
rendered, shellchecked and snapshot-tested (tests/test_render.py, stack chat-light); Streamlit, which it runs on,
is real here.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import requests

from llmdeploy.config import parse
from llmdeploy.frontends import LIGHT_LAUNCHER
from llmdeploy.render import FILES_DIR, Rendered, render
from support.chat import ChatSite, chat_site
from support.light_app import app_tree
from support.route_recorder import route_recorder
from support.streamlit_server import APP_TEXT, CLIENT, PYTHON, streamlit_from_unit
from support.stubserver import StubState

pytestmark = pytest.mark.integration


def rendered() -> Rendered:
    from support.project import minimal_raw
    cfg = parse(minimal_raw(chatUi="biochatter-light", domain="llm.example.org", engine="llamacpp",
                            shape="VM.Standard.E4.Flex", modelName="gpt-3.5-turbo",
                            llamacppModelUrl="https://models.invalid/m.gguf"))
    return render(cfg)


def rendered_unit() -> str:
    return rendered().file(f"{FILES_DIR}/biochatter-light.service").content


@pytest.fixture(scope="module")
def engine() -> Iterator[StubState]:
    """The engine BioChatter Light's OpenAI path talks to (the unit's OPENAI_BASE_URL, moved to this port)."""
    with route_recorder() as state:
        yield state


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, engine: StubState) -> Iterator[ChatSite]:
    """Streamlit runs the rendered unit's script (llmdeploy's entry point) on a stand-in of BioChatter Light's app
    (support/light_app.py), with the unit's environment."""
    work = tmp_path_factory.mktemp("light")
    files = app_tree(APP_TEXT, LIGHT_LAUNCHER, rendered().file(f"{FILES_DIR}/{LIGHT_LAUNCHER}").content)
    with streamlit_from_unit(rendered_unit(), work / "app", files,
                             {"OPENAI_BASE_URL": f"http://127.0.0.1:{engine.port}/v1"}) as port:
        with chat_site(work / "site", port, ui="biochatter-light") as s:
            yield s


@pytest.fixture(scope="module")
def browser(site: ChatSite) -> Iterator[requests.Session]:
    s = site.browser()
    r = site.sign_in(s, site.ep.keys["alice"])
    assert r.status_code == 303 and r.headers["Location"] == "/light/"
    yield s
    s.close()


def websocket(site: ChatSite, cookie: str) -> dict[str, object]:
    """One Streamlit session through nginx (support/streamlit_client.py): its JSON line, which names the stage it
    reached and any error. The cookie goes on stdin: it holds an API key."""
    url = site.chat.replace("https://", "wss://") + "/light/_stcore/stream"
    done = subprocess.run([str(PYTHON), str(CLIENT), url, site.ep.ca, site.chat, APP_TEXT], input=cookie,
                          capture_output=True, text=True, timeout=90)  # the client gives up by itself at 45 s
    lines = done.stdout.strip().splitlines()
    got = json.loads(lines[0]) if lines else {"error": f"no result (exit {done.returncode}): {done.stderr[-500:]}"}
    if "error" in got:  # what Streamlit and nginx said meanwhile, for the failure message
        app_log = site.nginx_dir.parent.parent / "app" / "streamlit.log"
        got["streamlit log"] = app_log.read_text()[-1500:] if app_log.exists() else "none"
        error_log = site.nginx_dir / "error.log"
        got["nginx error log"] = error_log.read_text()[-1500:] if error_log.exists() else "none"
    return got


def test_without_a_session_light_sends_the_browser_to_sign_in(site: ChatSite) -> None:
    with site.browser() as s:
        for path in ("/", "/light/", "/light/_stcore/health"):
            r = s.get(f"{site.chat}{path}", allow_redirects=False, timeout=5)
            assert r.status_code == 302, path
    refused = websocket(site, "")  # the client follows the 302 to the sign-in page, which is no WebSocket
    assert refused["status"] == 0 and "server rejected WebSocket connection" in str(refused["error"]), refused


def test_the_page_and_its_health_check_answer_through_tls_and_the_cookie(site: ChatSite,
                                                                        browser: requests.Session) -> None:
    page = browser.get(f"{site.chat}/", timeout=10)  # / -> /light/
    assert page.status_code == 200 and page.url.endswith("/light/") and "<div id=\"root\">" in page.text
    health = browser.get(f"{site.chat}/light/_stcore/health", timeout=10)
    assert health.status_code == 200 and health.text.strip() == "ok"


def test_the_websocket_upgrades_and_carries_the_apps_frames(site: ChatSite, browser: requests.Session) -> None:
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    got = websocket(site, cookie)
    assert got.get("status") == 101, got
    assert got["found"] is True and int(str(got["frames"])) >= 1, got


def test_paths_outside_light_are_not_the_frontend(site: ChatSite, browser: requests.Session) -> None:
    assert browser.get(f"{site.chat}/api/v1/chats", allow_redirects=False, timeout=5).status_code == 404


def test_one_message_costs_one_engine_request(site: ChatSite, browser: requests.Session, engine: StubState) -> None:
    """BioChatter Light's OpenAI path with the rendered unit: each new session sends one message (the stand-in's
    one turn) and the engine gets exactly one request for it. Upstream's app started directly (app.py) turns its
    correcting agent on and asks twice."""
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    before = len(engine.requests)  # other tests' sessions asked too
    for sessions in (1, 2):
        got = websocket(site, cookie)
        assert got.get("status") == 101 and got["found"] is True, got  # the script ran to its end
        asked = engine.requests[before:]
        assert [(r.method, r.path) for r in asked] == [("POST", "/v1/chat/completions")] * sessions
    assert "OLLAMA_MODEL" not in rendered_unit() and "XINFERENCE_MODEL" not in rendered_unit()
