"""How the smoke checks talk HTTP: a session that verifies against --ca-bundle or the system store, one API
call sent as the dialect describes it, and the answer read as JSON or quoted short in a failure."""
from __future__ import annotations

import os
import ssl
from typing import Any

import requests

from ..result import CheckResult
from .dialects import ApiCall
from .targets import Target

USER_AGENT = "llmdeploy-smoke/0.1"


def excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def system_ca_file() -> str | bool:
    """The system's CA store for requests (certifi's list is not the system's), else requests' default."""
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and os.path.isfile(cafile) else True


def verify_setting(target: Target) -> str | bool:
    return target.ca_bundle or system_ca_file()


def make_session(target: Target) -> requests.Session:
    """A session that verifies against --ca-bundle or the system store, whatever REQUESTS_CA_BUNDLE says."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE / proxies in the environment would override verify=
    session.verify = verify_setting(target)
    session.headers["User-Agent"] = USER_AGENT
    return session


def send(session: requests.Session, target: Target, call: ApiCall, headers: dict[str, str],
         stream: bool = False) -> requests.Response:
    return session.request(call.method, target.base + call.path, json=call.body, headers=headers,
                           timeout=target.timeout, stream=stream, allow_redirects=False)


def describe_call(call: ApiCall) -> dict[str, Any]:
    """The request as a result's evidence shows it."""
    return {"method": call.method, "path": call.path, "body": call.body}


def json_of(response: requests.Response) -> Any:
    """The answer's JSON; ValueError quoting the start of the body when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise ValueError(f"answered {response.status_code} with something that is not JSON "
                         f"({response.headers.get('Content-Type', 'no Content-Type')}): "
                         f"{excerpt(response.text, 100)!r}") from None


def fail_with_status(result: CheckResult, response: requests.Response) -> CheckResult:
    """Fail `result` with the answer's status and the start of its body."""
    return result.fail(f"HTTP {response.status_code}: {excerpt(response.text, 120) or '(empty body)'}",
                       status=response.status_code, response=excerpt(response.text, 500))
