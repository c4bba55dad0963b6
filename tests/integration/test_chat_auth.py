"""Chat sign-in (chatUi) through the rendered nginx site, run by the real nginx on loopback with TLS, in front of a
frontend stand-in that records every request it gets (the headers nginx sets, the cookies it passes on).

What a browser meets: no session -> the sign-in page; a wrong key refused; the right key -> an HttpOnly, Secure,
SameSite=Strict cookie -> the frontend, told who signed in by nginx (never by the client). A key removed from the
key table ends its sessions at the next reload; the key never reaches a log or the frontend; the chat host counts
against the key's own rate, as the API does.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from llmdeploy.render import CHAT_PAGE_BURST
from llmdeploy.secret_delivery import generate_api_key, secrets_bundle
from support.chat import ChatSite, chat_site
from support.endpoint import deliver_secrets, wait_for_status
from support.route_recorder import route_recorder
from support.stubserver import StubState
from support.usage_log import usage_records

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frontend() -> Iterator[StubState]:
    with route_recorder() as state:
        yield state


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, frontend: StubState) -> Iterator[ChatSite]:
    with chat_site(tmp_path_factory.mktemp("chat"), frontend.port) as s:
        yield s


def signed_in(site: ChatSite, name: str) -> requests.Session:
    s = site.browser()
    r = site.sign_in(s, site.ep.keys[name])
    assert r.status_code == 303, r.text
    return s


def wait_for_sign_in(s: requests.Session, url: str) -> int:
    """Ask until the session is sent to the sign-in page (a reload takes a moment), for at most 10 s."""
    deadline, got = time.monotonic() + 10, 0
    while time.monotonic() < deadline and got != 302:
        try:
            got = s.get(url, allow_redirects=False, timeout=5).status_code
        except requests.ConnectionError:  # a reload closes kept-alive connections
            got = 0
        time.sleep(0.1)
    return got


def last_request(frontend: StubState, path: str):  # type: ignore[no-untyped-def]
    return next(r for r in reversed(frontend.requests) if r.path == path)


@pytest.mark.parametrize("path", ["/", "/c/some-chat", "/api/v1/chats"])
def test_a_browser_without_a_session_is_sent_to_the_sign_in_page(site: ChatSite, frontend: StubState,
                                                                 path: str) -> None:
    seen = len(frontend.requests)
    with site.browser() as s:
        r = s.get(f"{site.chat}{path}", allow_redirects=False, timeout=5)
    # A path alone: behind a forwarded port or a load balancer, an absolute URL would name nginx's own port.
    assert r.status_code == 302 and r.headers["Location"] == "/_login"
    assert len(frontend.requests) == seen


def test_the_sign_in_page_is_a_form_that_posts_the_key(site: ChatSite) -> None:
    with site.browser() as s:
        r = s.get(f"{site.chat}/_login", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert '<form method="post" action="/_login">' in r.text and 'type="password"' in r.text
    assert "form-action 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize("key", ["sk-llm-" + "x" * 43, "", "short", "sk-llm-ok&key=sk-llm-" + "y" * 43])
def test_a_wrong_key_is_refused_and_sets_no_cookie(site: ChatSite, frontend: StubState, key: str) -> None:
    seen = len(frontend.requests)
    with site.browser() as s:
        r = site.sign_in(s, key)
        assert r.status_code == 401 and "Set-Cookie" not in r.headers
        assert "was not accepted" in r.text  # the page again, saying why
        assert s.get(f"{site.chat}/", allow_redirects=False, timeout=5).status_code == 302
    assert len(frontend.requests) == seen


def test_the_right_key_gets_a_strict_cookie_and_reaches_the_frontend_as_its_name(site: ChatSite,
                                                                                  frontend: StubState) -> None:
    with site.browser() as s:
        r = site.sign_in(s, site.ep.keys["alice"])
        assert r.status_code == 303 and r.headers["Location"] == "/"
        cookie = r.headers["Set-Cookie"]
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert cookie.startswith(f"llmdeploy_key={site.ep.keys['alice']};")
        assert {"httponly", "secure", "path"} <= attributes and "samesite=strict" in cookie.lower()
        r = s.get(f"{site.chat}/c/first", timeout=5)
    assert r.status_code == 200
    got = last_request(frontend, "/c/first").headers
    assert got["X-User-Email"] == "alice@workshop.invalid" and got["X-User-Name"] == "alice"


def test_a_pasted_key_with_whitespace_around_it_signs_in(site: ChatSite) -> None:
    with site.browser() as s:
        assert site.sign_in(s, f"  {site.ep.keys['bob']}\n").status_code == 303


def test_a_spoofed_identity_from_the_client_is_overwritten(site: ChatSite, frontend: StubState) -> None:
    with signed_in(site, "bob") as s:
        spoof = {"X-User-Email": "ops@workshop.invalid", "X-User-Name": "ops"}
        assert s.get(f"{site.chat}/spoof", headers=spoof, timeout=5).status_code == 200
    got = last_request(frontend, "/spoof").headers
    assert got["X-User-Email"] == "bob@workshop.invalid" and got["X-User-Name"] == "bob"


def test_a_forged_cookie_is_sent_to_the_sign_in_page(site: ChatSite) -> None:
    with site.browser() as s:
        r = s.get(f"{site.chat}/", headers={"Cookie": "llmdeploy_key=sk-llm-" + "z" * 43}, allow_redirects=False,
                  timeout=5)
    assert r.status_code == 302


def test_the_frontend_gets_its_own_cookies_but_never_the_key(site: ChatSite, frontend: StubState) -> None:
    with signed_in(site, "alice") as s:
        key = site.ep.keys["alice"]
        for path, cookie in (("/k1", f"token=jwt1; llmdeploy_key={key}; theme=dark"),
                             ("/k2", f"llmdeploy_key={key}; token=jwt2"), ("/k3", f"token=jwt3; llmdeploy_key={key}")):
            assert s.get(f"{site.chat}{path}", headers={"Cookie": cookie}, timeout=5).status_code == 200
    assert last_request(frontend, "/k1").headers["Cookie"] == "token=jwt1; theme=dark"
    assert last_request(frontend, "/k2").headers["Cookie"] == "token=jwt2"
    assert last_request(frontend, "/k3").headers["Cookie"] == "token=jwt3"
    assert not any(key in str(r.headers) for r in frontend.requests)


def test_websocket_upgrades_reach_the_frontend(site: ChatSite, frontend: StubState) -> None:
    with signed_in(site, "alice") as s:
        s.get(f"{site.chat}/ws/socket.io", headers={"Upgrade": "websocket", "Connection": "Upgrade"}, timeout=5)
    got = last_request(frontend, "/ws/socket.io").headers
    assert got["Upgrade"] == "websocket" and got["Connection"].lower() == "upgrade"


def test_the_session_cookie_does_not_open_the_api(site: ChatSite) -> None:
    """The API reads only Authorization: a browser's cookie (sent to the chat host only) is no API key."""
    with site.browser() as s:
        cookie = {"Cookie": f"llmdeploy_key={site.ep.keys['alice']}"}
        assert s.get(f"{site.api}/v1/models", headers=cookie, timeout=5).status_code == 401
        assert s.get(f"{site.api}/v1/models", headers=site.ep.bearer("alice"), timeout=5).status_code == 200


def test_other_methods_and_big_bodies_are_refused_at_sign_in(site: ChatSite) -> None:
    with site.browser() as s:
        assert s.put(f"{site.chat}/_login", data={"key": "x"}, timeout=5).status_code == 405
        assert s.post(f"{site.chat}/_login", data={"key": "x" * 4096}, timeout=5).status_code == 413


def test_the_chat_counts_against_the_keys_own_rate_as_the_api_does(site: ChatSite) -> None:
    """slow:1r/m: a page load's burst, then 429 on the chat host, and the API refuses the same key as well (one
    bucket per key); another key is not affected."""
    with signed_in(site, "slow") as s:
        codes = [s.get(f"{site.chat}/asset", timeout=5).status_code for _ in range(max(site.ep.cfg.auth.burst, CHAT_PAGE_BURST) + 5)]
        assert codes[0] == 200 and codes[-1] == 429 and "Retry-After" in s.get(f"{site.chat}/asset", timeout=5).headers
        assert s.get(f"{site.api}/v1/models", headers=site.ep.bearer("slow"), timeout=5).status_code == 429
    with signed_in(site, "alice") as other:
        assert other.get(f"{site.chat}/asset", timeout=5).status_code == 200


def test_removing_or_rotating_a_key_ends_its_sessions(site: ChatSite, frontend: StubState, tmp_path: Path) -> None:
    """The cookie works only while its key is in the table: a new table (alice's key rotated, bob's removed)
    and a reload end both sessions; the rotated key signs in again."""
    alice, bob = signed_in(site, "alice"), signed_in(site, "bob")
    assert alice.get(f"{site.chat}/", allow_redirects=False, timeout=5).status_code == 200
    rotated = {**site.ep.keys, "alice": generate_api_key()}
    del rotated["bob"]
    cfg = site.ep.cfg
    kept = replace(cfg, auth=replace(cfg.auth, api_keys=tuple(k for k in cfg.auth.api_keys if k.name != "bob")))
    deliver_secrets(site.ep.rendered, secrets_bundle(kept, rotated), tmp_path)
    os.kill(site.ep.nginx_pid, signal.SIGHUP)  # what `systemctl reload nginx` does on the VM
    try:
        assert wait_for_sign_in(alice, f"{site.chat}/") == 302  # once the reload is done
        assert alice.get(f"{site.chat}/", allow_redirects=False, timeout=5).status_code == 302
        assert bob.get(f"{site.chat}/", allow_redirects=False, timeout=5).status_code == 302
        with site.browser() as again:
            assert site.sign_in(again, site.ep.keys["alice"]).status_code == 401
            assert site.sign_in(again, rotated["alice"]).status_code == 303
            assert again.get(f"{site.chat}/", allow_redirects=False, timeout=5).status_code == 200
    finally:  # the other tests' keys back
        deliver_secrets(site.ep.rendered, secrets_bundle(cfg, site.ep.keys), tmp_path)
        os.kill(site.ep.nginx_pid, signal.SIGHUP)
        with site.browser() as s:
            wait_for_status(s, f"{site.api}/v1/models", site.ep.bearer("bob"), 200)


def test_no_key_reaches_a_log(site: ChatSite) -> None:
    """Every sign-in above POSTed a key: none of them is in nginx's logs. The usage log names the chat host's
    requests by the cookie's key name, as the API's by the Authorization key's."""
    with site.browser() as s:
        site.sign_in(s, site.ep.keys["ops"])
        s.get(f"{site.chat}/", timeout=5)
    usage_log = Path(site.ep.host_layout.paths.usage_log)
    entries = usage_records(usage_log, lambda records: any(e["name"] == "ops" and e["method"] == "GET" for e in records))
    # Read after the wait: the last request's line is in the usage log by now.
    logs = {p.name: p.read_text() for p in (site.nginx_dir / "access.log", site.nginx_dir / "error.log", usage_log)}
    chat_host = site.chat.split("//", 1)[1].split(":", 1)[0]
    assert {"name": "-", "method": "POST", "path": "/_login", "host": chat_host}.items() <= entries[-2].items()
    assert {"name": "ops", "method": "GET", "host": chat_host}.items() <= entries[-1].items()
    for name, key in site.ep.keys.items():
        for log, text in logs.items():
            assert key not in text, f"{name}'s key is in {log}"
