"""Chromium (Debian's, headless, driven by Playwright) on the chat host, as an attendee's browser: one Person per
browser profile, and the sign-in, chat and privacy checks that the loopback test (tests/integration/
test_chat_webui.py) and the local stack's test (tests/e2e/test_local_chat.py) both make.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmdeploy.secret_delivery import generate_api_key

CHROMIUM = "/usr/bin/chromium"
ANSWER_WAIT_MS = 120_000  # a tiny model answers in a second; Open WebUI's first chat loads more code


@contextmanager
def chromium(hosts: list[str]) -> Iterator[object]:
    """Headless chromium that resolves each of `hosts` to 127.0.0.1 (where nginx, or the stack's forwarded port,
    listens), as DNS would point it at the VM."""
    from playwright.sync_api import sync_playwright

    rules = ", ".join(f"MAP {host} 127.0.0.1" for host in hosts)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", f"--host-resolver-rules={rules}"])
        try:
            yield launched
        finally:
            launched.close()


class Person:
    """One browser profile (its own cookies) on the chat host `url`, saving screenshots to `shots`."""

    def __init__(self, browser: object, url: str, shots: Path, name: str) -> None:
        # The test CA is not in chromium's store; the certificate itself is tested elsewhere (test_hardening).
        self.context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.url, self.shots, self.name = url, shots, name

    def shot(self, step: str) -> Path:
        """A screenshot, with Open WebUI's sidebar open (the user's chats and name) where there is one."""
        opener = self.page.get_by_role("button", name="Open Sidebar")
        if opener.count() and opener.first.is_visible():
            opener.first.click()
            self.page.wait_for_timeout(500)
        path = self.shots / f"{step}.png"
        self.page.screenshot(path=str(path))
        return path

    def sign_in(self, key: str) -> None:
        self.page.goto(self.url + "/")
        self.page.wait_for_url("**/_login")
        self.page.fill("#key", key)
        self.page.click("button[type=submit]")

    def api(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, object]:
        """A request from this browser's page to Open WebUI's API, with its own session token (localStorage)."""
        return self.page.evaluate("""async ([path, extra]) => {
            const r = await fetch(path, {headers: {Authorization: 'Bearer ' + localStorage.token, ...extra}});
            let body = null; try { body = await r.json(); } catch (e) {}
            return [r.status, body]; }""", [path, headers or {}])

    def post(self, path: str, body: object) -> tuple[int, object]:
        return self.page.evaluate("""async ([path, body]) => {
            const r = await fetch(path, {method: 'POST', body: JSON.stringify(body), headers: {
                Authorization: 'Bearer ' + localStorage.token, 'Content-Type': 'application/json'}});
            let answer = null; try { answer = await r.json(); } catch (e) {}
            return [r.status, answer]; }""", [path, body])

    def wait_for_chat(self) -> None:
        self.page.wait_for_selector("#chat-input", timeout=60_000)
        for label in ("Okay, Let's Go!", "Close"):  # the "what's new" dialog of a first sign-in
            button = self.page.get_by_role("button", name=label)
            if button.count() and button.first.is_visible():
                button.first.click()

    def send(self, text: str) -> str:
        """Type `text` in the chat box and send it; the assistant's reply as the page shows it."""
        self.page.locator("#chat-input").click()
        self.page.keyboard.type(text)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(re.compile(r".*/c/[0-9a-f-]+$"), timeout=60_000)
        return self._answer()

    def _answer(self) -> str:
        """The assistant's reply once it has stopped growing."""
        reply = self.page.locator("#response-content-container").last
        reply.wait_for(timeout=ANSWER_WAIT_MS)
        deadline, last = time.monotonic() + ANSWER_WAIT_MS / 1000, ""
        while time.monotonic() < deadline:
            text = reply.inner_text().strip()
            if text and text == last:
                return text
            last = text
            time.sleep(1.5)
        return last

    def kept_answers(self) -> list[str]:
        """The assistant's messages of the chat on the page, as Open WebUI keeps them."""
        chat_id = self.page.url.rsplit("/", 1)[1]
        status, record = self.api(f"/api/v1/chats/{chat_id}")
        assert status == 200 and isinstance(record, dict), (status, record)
        return [m.get("content") for m in record["chat"]["history"]["messages"].values() if m.get("role") == "assistant"]


def shown_as_markdown(answer: str, shown: str) -> bool:
    """Whether the engine's `answer` is what the page shows: its letters and digits outside `$...$`, in order. The
    tiny model's text has '*' and '$', which Markdown and KaTeX turn into emphasis and math: math shows twice in the
    page's text, and LaTeX drops or changes what it reads as commands and comments (a '%' ends a math line), so
    only the text between math spans is compared."""
    outside_math = "".join(answer.split("$")[0::2])
    rest = iter(_alnum(shown))
    return len(_alnum(answer)) >= 20 and all(char in rest for char in _alnum(outside_math))


def _alnum(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def assert_login_page_refuses_a_wrong_key(someone: Person) -> None:
    """The chat URL lands on the sign-in page; a well-formed key in no key table gets 401 and no cookie."""
    response = someone.page.goto(someone.url + "/")
    assert response is not None
    someone.page.wait_for_url("**/_login")
    assert someone.page.locator("h1").inner_text() == "Sign in to the chat"
    someone.shot("01-login-page")
    someone.page.fill("#key", generate_api_key())
    with someone.page.expect_response(lambda r: r.url.endswith("/_login") and r.request.method == "POST") as posted:
        someone.page.click("button[type=submit]")
    assert posted.value.status == 401
    assert "That key was not accepted" in someone.page.locator("[role=alert]").inner_text()
    assert not [c for c in someone.context.cookies() if c["name"] == "llmdeploy_key"]
    someone.shot("02-wrong-key-refused")
    # Still no way past the sign-in page.
    someone.page.goto(someone.url + "/")
    someone.page.wait_for_url("**/_login")


def assert_signed_in_as(person: Person, key: str, email: str, role: str) -> None:
    """The key's cookie is HttpOnly, Secure, SameSite=Strict, and Open WebUI knows the browser as the key's user."""
    cookie = next(c for c in person.context.cookies() if c["name"] == "llmdeploy_key")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert person.page.evaluate("document.cookie").find(key) == -1  # no script can read the key
    status, me = person.api("/api/v1/auths/")
    assert status == 200 and isinstance(me, dict), (status, me)
    assert (me["email"], me["role"]) == (email, role)


def assert_cannot_see_chats_of(bob: Person, alice: Person, alice_wrote: str) -> None:
    """Bob, signed in, sees none of Alice's chats: not in his list, not by id, not at its URL."""
    status, alices = alice.api("/api/v1/chats/")
    assert status == 200 and isinstance(alices, list) and alices, (status, alices)
    alice_chat = alices[0]["id"]
    status, bobs = bob.api("/api/v1/chats/")
    assert status == 200 and bobs == [], (status, bobs)
    status, body = bob.api(f"/api/v1/chats/{alice_chat}")
    assert status in (401, 404), (status, body)
    assert alice_wrote not in bob.page.inner_text("body")
    bob.shot("05-bob-sees-none-of-alices-chats")
    bob.page.goto(f"{bob.url}/c/{alice_chat}")
    bob.page.wait_for_timeout(3000)
    assert alice_wrote not in bob.page.inner_text("body")
    bob.shot("06-bob-opens-alices-chat-url")
