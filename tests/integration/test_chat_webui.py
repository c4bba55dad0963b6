"""Chat in the browser with chatUi open-webui, in a real browser (Debian's chromium, headless, driven by Playwright):
the rendered nginx site (its chat host, sign-in page, key cookie and trusted identity header) in a real nginx, in
front of the real Open WebUI (pinned, from scripts/install_engines.py's venv) run as its rendered unit runs it,
talking to a real llama.cpp server on a tiny model. The WEBUI_SECRET_KEY reaches Open WebUI as on the VM: in the
secrets bundle, through the rendered llmdeploy-install-secrets, into the unit's EnvironmentFile. The rendered
open-webui-admin script signs the admin key's user in before nginx starts, as step 45-chat does before
60-nginx.

Why on this machine as well as in `llmdeploy local up --runtime nspawn` (tests/e2e/test_local_chat.py, the same
browser steps from tests/support/chat_browser.py on a booted stack): here the engine's wire is tapped, and the
spoofing, admin and secret-key checks need no boot.

Each step saves a screenshot under the test's tmp dir and build/artifacts/chat/ (ignored by git).
Heavy: run under `flock /tmp/llmdeploy-heavy.lock`; README "Chat in the browser" has its figures.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from llmdeploy.render import FILES_DIR, HostLayout, Rendered, render, web_user_email
from llmdeploy.vmpaths import OPEN_WEBUI_ADMIN
from llmdeploy.secret_delivery import generate_api_key, random_webui_secret_key, secrets_bundle

from support.certs import issue_leaf, make_ca
from support.chat_browser import (Person, assert_cannot_see_chats_of, assert_login_page_refuses_a_wrong_key,
                                  assert_signed_in_as, chromium, shown_as_markdown)
from support.endpoint import deliver_secrets, endpoint_config, install_site, loopback_host_layout
from support.llamaserver import llama_server
from support.nginx import run_nginx
from support.openwebui import VENV, OpenWebui, open_webui
from support.ports import free_port
from support.tap import Tap, tap
from support.tinymodel import write_tiny_gguf

pytestmark = pytest.mark.integration

DOMAIN = "llm.test"
CHAT_HOST = f"chat.{DOMAIN}"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts" / "chat"
# Who opens the chat: two attendees and the instructor's admin key.
KEYS = ["ops:admin", "alice", "bob"]


@dataclass
class ChatStack:
    url: str  # https://chat.llm.test:PORT
    keys: dict[str, str]
    webui_secret_key: str
    rendered: Rendered
    webui: OpenWebui
    admin_signin: str  # what the rendered open-webui-admin printed
    engine: Tap  # what went between Open WebUI and llama.cpp
    shots: Path
    access_log: Path


def _install_tls(host_layout: HostLayout, work: Path) -> None:
    ca = make_ca(work / "ca")
    leaf = issue_leaf(ca, work / "leaf", hostnames=[DOMAIN, CHAT_HOST, "localhost"], ips=["127.0.0.1"])
    tls = Path(host_layout.paths.tls_dir)
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "fullchain.pem").write_bytes(Path(leaf.fullchain).read_bytes())
    (tls / "privkey.pem").write_bytes(Path(leaf.key).read_bytes())


def _run_admin_signin(rendered: Rendered, work: Path) -> str:
    script = work / "open-webui-admin"
    script.write_text(rendered.file(OPEN_WEBUI_ADMIN).content)
    script.chmod(0o755)
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatStack]:
    assert (VENV / "bin" / "open-webui").exists(), f"no Open WebUI in {VENV}: python3 scripts/install_engines.py open-webui"
    work = tmp_path_factory.mktemp("chat")
    shots = work / "screenshots"
    shots.mkdir()
    cfg = endpoint_config(chatUi="open-webui", domain=DOMAIN, apiKeys=KEYS, basicAuthUsers=[], basicAuthPasswords="")
    with llama_server(write_tiny_gguf(work / "tiny.gguf"), alias=cfg.model_name, n_ctx=2048, log_dir=work) as llama, \
            tap(llama.port) as engine:
        host_layout = loopback_host_layout(work / "root", engine.port, chat_port=free_port())
        rendered = render(cfg, host_layout)
        _install_tls(host_layout, work)
        site = install_site(rendered, host_layout, work)  # with the chat sign-in pages, as 60-nginx installs them
        keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
        secret_key = random_webui_secret_key()
        deliver_secrets(rendered, secrets_bundle(cfg, keys, webui_secret_key=secret_key), work)
        with open_webui(rendered, work) as webui:
            admin_signin = _run_admin_signin(rendered, work)  # before nginx lets anyone else in
            ports = [int(host_layout.http_listen.rsplit(":", 1)[1]), host_layout.https_port]
            with run_nginx(site, work / "nginx", wait_ports=ports) as nginx:
                yield ChatStack(f"https://{CHAT_HOST}:{host_layout.https_port}", keys, secret_key, rendered, webui,
                                admin_signin, engine, shots, Path(host_layout.paths.usage_log))
    if shots.exists():
        shutil.copytree(shots, ARTIFACTS, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def browser(chat: ChatStack) -> Iterator[object]:
    with chromium([CHAT_HOST, DOMAIN]) as launched:
        yield launched


def person(browser: object, chat: ChatStack, name: str) -> Person:
    return Person(browser, chat.url, chat.shots, name)


def test_the_secret_key_reaches_the_unit_through_install_secrets(tmp_path: Path) -> None:
    cfg = endpoint_config(chatUi="open-webui", domain=DOMAIN, apiKeys=KEYS, basicAuthUsers=[], basicAuthPasswords="")
    rendered = render(cfg, HostLayout(root=str(tmp_path / "root")))
    secret_key = random_webui_secret_key()
    keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
    said = deliver_secrets(rendered, secrets_bundle(cfg, keys, webui_secret_key=secret_key), tmp_path)
    env_file = tmp_path / "root/etc/llmdeploy/secrets/open-webui.env"
    assert env_file.read_text() == f"WEBUI_SECRET_KEY={secret_key}\n" and env_file.stat().st_mode & 0o777 == 0o600
    assert f"EnvironmentFile={env_file}" in rendered.file(f"{FILES_DIR}/open-webui.service").content
    assert secret_key not in said and secret_key not in rendered.user_data
    assert all(secret_key not in f.content for f in rendered.files)
    # A later delivery without it (a key rotation from elsewhere) keeps the one the VM has.
    deliver_secrets(rendered, secrets_bundle(cfg, keys), tmp_path)
    assert env_file.read_text() == f"WEBUI_SECRET_KEY={secret_key}\n"


def test_the_admin_key_user_signed_in_first_and_is_the_admin(chat: ChatStack) -> None:
    assert chat.admin_signin.strip() == f"{web_user_email('ops')} is Open WebUI's admin"
    # A second run changes nothing and still finds the admin (the step is run on every provisioning).
    assert _run_admin_signin(chat.rendered, chat.webui.log_path.parent).strip() == chat.admin_signin.strip()


def test_the_secret_key_is_delivered_not_in_user_data(chat: ChatStack) -> None:
    assert chat.webui_secret_key not in chat.rendered.user_data
    unit = chat.rendered.file(f"{FILES_DIR}/open-webui.service").content
    assert "WEBUI_SECRET_KEY" not in unit.replace("# WEBUI_SECRET_KEY", "")
    assert chat.webui_secret_key not in chat.webui.log_path.read_text(errors="replace")
    # Open WebUI signs its session tokens (HS256 JWTs) with it: the delivered key, not a default or a random one.
    header_payload, _, signature = _session_token(chat, "ops").rpartition(".")
    assert signature == _hs256(chat.webui_secret_key, header_payload)
    assert signature != _hs256("t0p-secret", header_payload)  # Open WebUI's own default key


def _hs256(key: str, signed: str) -> str:
    digest = hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _session_token(chat: ChatStack, name: str) -> str:
    got = requests.post(f"{chat.webui.url}/api/v1/auths/signin", json={"email": "", "password": ""}, timeout=30,
                        headers={"X-User-Email": web_user_email(name), "X-User-Name": name})
    assert got.status_code == 200, got.text
    return got.json()["token"]


def test_the_chat_url_lands_on_the_login_page_and_a_wrong_key_is_refused(chat: ChatStack, browser: object) -> None:
    someone = person(browser, chat, "someone")
    assert_login_page_refuses_a_wrong_key(someone)
    someone.context.close()


@pytest.fixture(scope="module")
def alice(chat: ChatStack, browser: object) -> Iterator[Person]:
    alice_ = person(browser, chat, "alice")
    yield alice_
    alice_.context.close()


@pytest.fixture(scope="module")
def bob(chat: ChatStack, browser: object) -> Iterator[Person]:
    bob_ = person(browser, chat, "bob")
    yield bob_
    bob_.context.close()


def test_the_right_key_reaches_the_chat_as_its_user(chat: ChatStack, alice: Person) -> None:
    alice.sign_in(chat.keys["alice"])
    alice.wait_for_chat()
    assert_signed_in_as(alice, chat.keys["alice"], web_user_email("alice"), "user")
    alice.shot("03-signed-in-chat")


ALICE_ASKS = "alice-private-question-7731: say something"
MAX_TOKENS = 40  # Alice's own setting (Settings > Advanced Parameters): a short answer to compare


def test_a_message_sent_gets_the_engines_answer_on_the_page(chat: ChatStack, alice: Person) -> None:
    status, _ = alice.post("/api/v1/users/user/settings/update", {"ui": {"params": {"max_tokens": MAX_TOKENS}}})
    assert status == 200
    alice.page.reload()
    alice.wait_for_chat()
    answered = len(chat.engine.chat_answers())
    shown = alice.send(ALICE_ASKS)
    alice.shot("04-answer-from-the-engine")
    assert ALICE_ASKS in alice.page.inner_text("#messages-container")
    # The engine's answer, read from the wire between Open WebUI and llama.cpp.
    answers = chat.engine.chat_answers()[answered:]
    assert len(answers) == 1, answers
    sent = json.loads(chat.engine.exchanges[-1].request)
    assert sent["messages"][-1]["content"] == ALICE_ASKS and sent["max_tokens"] == MAX_TOKENS, sent
    assert shown_as_markdown(answers[0], shown), (answers[0], shown)
    # ... and in Alice's chat as Open WebUI keeps it.
    assert alice.kept_answers() == [answers[0].strip()], answers  # it trims the reply's leading space


def test_attendee_b_cannot_see_attendee_a_chats(chat: ChatStack, alice: Person, bob: Person) -> None:
    bob.sign_in(chat.keys["bob"])
    bob.wait_for_chat()
    assert_cannot_see_chats_of(bob, alice, ALICE_ASKS)


def test_a_spoofed_identity_header_from_the_client_is_overwritten(chat: ChatStack, bob: Person) -> None:
    # Bob's browser claims to be the admin on every request; nginx replaces the header with Bob's key's name.
    spoofed = {"X-User-Email": web_user_email("ops"), "X-User-Name": "ops"}
    bob.context.set_extra_http_headers(spoofed)
    bob.page.goto(chat.url + "/")
    bob.wait_for_chat()
    status, me = bob.api("/api/v1/auths/", spoofed)
    assert status == 200 and isinstance(me, dict), (status, me)
    assert (me["email"], me["role"]) == (web_user_email("bob"), "user")
    status, users = bob.api("/api/v1/users/", spoofed)  # an admin route
    assert status in (401, 403), (status, users)
    # A fresh sign-in with the spoofed header makes Bob no one else either.
    fresh = bob.page.evaluate("""async (extra) => {
        const r = await fetch('/api/v1/auths/signin', {method: 'POST', headers: {'Content-Type': 'application/json',
            ...extra}, body: JSON.stringify({email: '', password: ''})});
        return [r.status, await r.json()]; }""", spoofed)
    assert fresh[0] == 200 and (fresh[1]["email"], fresh[1]["role"]) == (web_user_email("bob"), "user"), fresh
    bob.shot("07-spoofed-header-still-bob")


def test_a_spoofed_identity_header_without_a_key_gets_the_sign_in_page(chat: ChatStack, browser: object) -> None:
    stranger = person(browser, chat, "stranger")
    stranger.context.set_extra_http_headers({"X-User-Email": web_user_email("ops"), "X-User-Name": "ops"})
    stranger.page.goto(chat.url + "/")
    stranger.page.wait_for_url("**/_login")
    # Open WebUI's own API too: a 302 to the sign-in page, never Open WebUI's answer.
    answer = stranger.page.goto(chat.url + "/api/v1/auths/")
    assert answer is not None and answer.request.redirected_from is not None
    assert answer.request.redirected_from.response().status == 302  # type: ignore[union-attr]
    stranger.page.wait_for_url("**/_login")
    stranger.shot("08-spoofed-header-without-key")
    stranger.context.close()


def test_the_admin_key_reaches_the_chat_as_admin(chat: ChatStack, browser: object) -> None:
    ops = person(browser, chat, "ops")
    ops.sign_in(chat.keys["ops"])
    ops.wait_for_chat()
    status, me = ops.api("/api/v1/auths/")
    assert status == 200 and isinstance(me, dict) and me["role"] == "admin", (status, me)
    status, users = ops.api("/api/v1/users/all")
    assert status == 200, (status, users)
    assert isinstance(users, dict), users
    roles = {u["email"]: u["role"] for u in users["users"]}
    assert roles == {web_user_email("ops"): "admin", web_user_email("alice"): "user", web_user_email("bob"): "user"}
    ops.shot("09-admin-key-is-admin")
    ops.context.close()
