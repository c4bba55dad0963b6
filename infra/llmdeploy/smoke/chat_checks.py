"""The chat frontend's side of `llmdeploy smoke --chat-url URL` (chatUi): what a browser meets on the chat host.

- a request without a session is sent to the sign-in page, which answers over TLS (verified as for the API);
- a wrong key is refused (401) and gets no cookie;
- the right key gets an HttpOnly, Secure, SameSite=Strict session cookie, and with it the frontend's page answers.

The key is sent only once the certificate verified, and only in a POST body (never in a URL).
"""
from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import requests

from ..result import FAIL, CheckResult, timed
from ..secret_delivery import generate_api_key
from .http_client import excerpt, make_session
from .targets import Target

SIGN_IN = "/_login"
COOKIE = "llmdeploy_key"
FORM_MARK = 'action="/_login"'


def chat_origin(url: str) -> str:
    """https://HOST[:PORT] of a chat URL (its sign-in page or any page of it)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def sign_in(session: requests.Session, origin: str, key: str, timeout: float) -> requests.Response:
    return session.post(f"{origin}{SIGN_IN}", data={"key": key}, allow_redirects=False, timeout=timeout)


def check_sign_in_page(session: requests.Session, origin: str, timeout: float) -> CheckResult:
    with timed("chat-ui: sign-in page over TLS") as result:
        first = session.get(f"{origin}/", allow_redirects=False, timeout=timeout)
        location = first.headers.get("Location", "")
        if first.status_code == 302 and location.startswith("/") and not location.endswith(SIGN_IN):
            # A frontend under a path (/light/, /biochatter-next): / sends there, and that path to the sign-in.
            first = session.get(f"{origin}{location}", allow_redirects=False, timeout=timeout)
        if first.status_code != 302 or not first.headers.get("Location", "").endswith(SIGN_IN):
            return result.fail(f"{origin}/ without a session answered {first.status_code}, not a redirect to "
                               f"{SIGN_IN}: the chat host lets browsers in unsigned, or is not llmdeploy's",
                               status=first.status_code, location=first.headers.get("Location", ""))
        page = session.get(f"{origin}{SIGN_IN}", timeout=timeout)
        if page.status_code != 200 or FORM_MARK not in page.text:
            return result.fail(f"{SIGN_IN} answered {page.status_code} without the sign-in form",
                               status=page.status_code, body=excerpt(page.text))
        result.summary = f"no session: 302 to {SIGN_IN}; the page answers 200 over verified TLS"
    return result


def check_wrong_key(session: requests.Session, origin: str, timeout: float) -> CheckResult:
    with timed("chat-ui: wrong key refused") as result:
        r = sign_in(session, origin, generate_api_key(), timeout)
        if r.status_code != 401 or COOKIE in r.headers.get("Set-Cookie", ""):
            return result.fail(f"a made-up key got {r.status_code}{' and a session cookie' if COOKIE in r.headers.get('Set-Cookie', '') else ''}, "
                               "not 401", status=r.status_code)
        result.summary = "401, no cookie"
    return result


def _cookie_flaws(set_cookie: str) -> list[str]:
    attributes = {a.strip().lower() for a in set_cookie.split(";")[1:]}
    wanted = {"httponly": "HttpOnly", "secure": "Secure", "samesite=strict": "SameSite=Strict"}
    return [shown for attribute, shown in wanted.items() if attribute not in attributes]


def check_session(session: requests.Session, origin: str, key: str, timeout: float) -> CheckResult:
    with timed("chat-ui: key signs in, frontend answers") as result:
        r = sign_in(session, origin, key, timeout)
        set_cookie = r.headers.get("Set-Cookie", "")
        if r.status_code != 303 or not set_cookie.startswith(f"{COOKIE}="):
            return result.fail(f"the API key got {r.status_code} at {SIGN_IN}, not 303 with a session cookie (is "
                               "the key in the stack's apiKeys?)", status=r.status_code)
        flaws = _cookie_flaws(set_cookie)
        if flaws:
            return result.fail(f"the session cookie lacks {', '.join(flaws)}", missing=flaws)
        landing = urljoin(f"{origin}/", r.headers.get("Location", "/"))
        page = session.get(landing, timeout=timeout)
        if page.status_code != 200 or FORM_MARK in page.text or urlsplit(page.url).path == SIGN_IN:
            return result.fail(f"signed in, {landing} answered {page.status_code}"
                               f"{' with the sign-in page' if FORM_MARK in page.text else ''}: the frontend is not "
                               "serving (on the VM: systemctl status of the chat unit)", status=page.status_code,
                               body=excerpt(page.text))
        result.summary = f"303 with an HttpOnly, Secure, SameSite=Strict cookie; {urlsplit(page.url).path} answers 200"
    return result


def run_chat_checks(target: Target) -> list[CheckResult]:
    """The chat host's checks for target.chat_url, signed in with target's API key."""
    assert target.chat_url and target.credentials.api_key
    origin = chat_origin(target.chat_url)
    with make_session(target) as session:
        results = [check_sign_in_page(session, origin, target.timeout)]
        if results[0].status == FAIL:
            return results + [CheckResult("chat-ui: sign-in", FAIL, "not run: the sign-in page did not answer as it "
                                          "should, and no key is sent to a host that fails that")]
        results.append(check_wrong_key(session, origin, target.timeout))
        results.append(check_session(session, origin, target.credentials.api_key, target.timeout))
    return results
