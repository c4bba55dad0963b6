"""Checks of an OCI Data Science model deployment serving vLLM's OpenAI API behind `/predict`.

Every request is signed with the `oci` SDK's own signer: an API key from a config file profile
(`oci.signer.Signer`), or the instance principal of the OCI instance the check runs on
(`oci.auth.signers.InstancePrincipalsSecurityTokenSigner`). The `route` header picks vLLM's path and
`enable-streaming: true` asks the deployment to stream, which is read as server-sent events.
OCI answers a refused signature with 401 NotAuthenticated, and a missing policy or deployment with 404
NotAuthorizedOrNotFound: each gets a summary that says which.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import requests

from ..result import CheckResult, timed

ROUTE = "/v1/chat/completions"
PROMPT = "Reply with one short friendly sentence."
MAX_TOKENS = 32
MAX_BODY_CHARS = 2000
METADATA_URL = "http://169.254.169.254/opc/v2"  # OCI's instance metadata service (OCI_METADATA_BASE_URL overrides)
METADATA_PROBE_S = 3.0
HINTS = {  # OCI's error codes (and 429) -> what to do
    "NotAuthenticated": "the signature was refused: wrong key or fingerprint for the user, or this machine's clock "
                        "is off",
    "NotAuthorizedOrNotFound": "no such model deployment, or no policy allows you to predict on it "
                               "(allow ... to {DATA_SCIENCE_MODEL_DEPLOYMENT_PREDICT})",
    "ExternalServerIncorrectState": "the deployment did not stream: its container must answer `\"stream\": true` "
                                    "with server-sent events",
    429: "rate limited: raise the deployment's load balancer bandwidth or the tenancy's limit",
}


def make_signer(config_file: str | None = None, profile: str | None = None,
                instance_principal: bool = False) -> tuple[CheckResult, Any]:
    """The OCI request signer, and a result that says whose key signs (never the key itself)."""
    with timed("oci-ds: signer") as r:
        try:
            import oci  # the SDK is large (~500 MB): an optional extra, imported only when an OCI check runs
        except ImportError:
            r.fail("the OCI SDK is not installed: pip install 'llmdeploy[oci]' (pulumi up's requirements.txt has it)")
            return r, None
        if instance_principal:
            problem = probe_metadata_service()
            if problem:  # the SDK would retry for minutes before saying so
                r.fail(f"instance principal unavailable: {problem}")
                return r, None
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
            r.summary = "instance principal of this OCI instance"
            return r, signer
        location = config_file or oci.config.DEFAULT_LOCATION
        config = oci.config.from_file(location, profile or oci.config.DEFAULT_PROFILE)
        signer = oci.signer.Signer(config["tenancy"], config["user"], config["fingerprint"],
                                   private_key_file_location=config.get("key_file"),
                                   pass_phrase=oci.config.get_config_value_or_default(config, "pass_phrase"),
                                   private_key_content=config.get("key_content"))
        r.summary = (f"API key {config['fingerprint']} of {config['user']} "
                     f"(profile {profile or oci.config.DEFAULT_PROFILE} in {os.path.expanduser(location)})")
        r.evidence.update(user=config["user"], tenancy=config["tenancy"], fingerprint=config["fingerprint"])
        return r, signer
    return r, None


def probe_metadata_service() -> str | None:
    """None if OCI's instance metadata service answers, else why not (quickly: the SDK retries for minutes)."""
    base = os.environ.get("OCI_METADATA_BASE_URL", "").strip() or METADATA_URL
    try:
        with requests.Session() as session:
            session.trust_env = False  # the metadata service is link-local: never through a proxy
            resp = session.get(f"{base.rstrip('/')}/instance/region", headers={"Authorization": "Bearer Oracle"},
                               timeout=METADATA_PROBE_S)
    except requests.RequestException as exc:
        return (f"the instance metadata service at {base} did not answer within {METADATA_PROBE_S:.0f}s "
                f"(not on an OCI instance?): {type(exc).__name__}")
    if resp.status_code != 200:
        return f"the instance metadata service at {base} answered {resp.status_code}"
    return None


def predict_url(url: str) -> str:
    """The deployment URL's /predict endpoint (a URL that already ends in /predict is kept)."""
    url = url.rstrip("/")
    return url if url.endswith("/predict") else f"{url}/predict"


def chat_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": stream}


def _session(url: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=; proxies are taken over below
    session.proxies.update(requests.utils.get_environ_proxies(url))
    return session


def _post(session: requests.Session, url: str, signer: Any, body: dict[str, Any], stream: bool,
          ca_bundle: str | None, timeout: float) -> requests.Response:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json",
               "route": ROUTE, "enable-streaming": "true" if stream else "false"}
    return session.post(url, data=json.dumps(body).encode(), headers=headers, auth=signer, stream=stream,
                        verify=ca_bundle or True, timeout=timeout)


def _request_evidence(resp: requests.Response, body: dict[str, Any]) -> dict[str, Any]:
    """What was sent; of the Authorization header only keyId and the signed header list (not the signature)."""
    sent = {k: v if isinstance(v, str) else v.decode() for k, v in resp.request.headers.items()}
    for name in [k for k in sent if k.lower() == "authorization"]:
        params = [p for p in sent.pop(name).split(",") if not p.startswith("signature=")]
        sent["authorization"] = ",".join(params + ['signature="<redacted>"'])
    return {"method": "POST", "url": resp.request.url, "headers": sent, "body": body}


def _refused(r: CheckResult, resp: requests.Response, body: dict[str, Any]) -> CheckResult:
    text = resp.text[:MAX_BODY_CHARS]
    try:
        payload = json.loads(text)
        # OCI's errors carry a string code; vLLM's carry a numeric code and a type
        code = next((v for v in (payload.get("code"), payload.get("type")) if isinstance(v, str) and v), "")
        message = payload.get("message", "")
    except ValueError:
        code, message = "", text[:200]
    hint = HINTS.get(code, HINTS.get(resp.status_code, ""))
    return r.fail(f"{resp.status_code} {code}: {message}".strip() + (f" ({hint})" if hint else ""),
                  request=_request_evidence(resp, body),
                  response={"status": resp.status_code, "opc-request-id": resp.headers.get("opc-request-id", ""),
                            "body": text})


def check_predict(url: str, model: str, signer: Any, ca_bundle: str | None, timeout: float) -> CheckResult:
    """A chat completion through /predict; passes with a non-empty answer."""
    with timed("oci-ds: predict (chat)") as r:
        body = chat_body(model, stream=False)
        with _session(url) as session:
            resp = _post(session, predict_url(url), signer, body, False, ca_bundle, timeout)
        if resp.status_code != 200:
            return _refused(r, resp, body)
        answer = resp.json()["choices"][0]["message"]["content"]
        r.evidence.update(request=_request_evidence(resp, body),
                          response={"status": 200, "opc-request-id": resp.headers.get("opc-request-id", ""),
                                    "body": resp.text[:MAX_BODY_CHARS]})
        usage = resp.json().get("usage") or {}
        if usage.get("completion_tokens"):
            r.metrics["completion_tokens"] = usage["completion_tokens"]
        if not answer or not answer.strip():
            return r.fail("200 but the answer is empty")
        r.summary = f"200 from {model}: {answer.strip()[:80]!r}"
    return r


def _field_value(line: str) -> str:
    value = line[5:]
    return value[1:] if value.startswith(" ") else value  # the spec drops one space after the colon


def sse_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """The data of each server-sent event, from raw chunks; LF or CRLF line ends, multi-line data joined."""
    buffer, data = b"", []
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                data.append(_field_value(line))
    tail = buffer.rstrip(b"\r").decode("utf-8", errors="replace")
    if tail.startswith("data:"):  # a stream that ends without a blank line
        data.append(_field_value(tail))
    if data:
        yield "\n".join(data)


def check_stream(url: str, model: str, signer: Any, ca_bundle: str | None, timeout: float) -> CheckResult:
    """A streamed chat completion (`enable-streaming: true`), read as SSE: time to first token and tokens/s."""
    with timed("oci-ds: predict stream (SSE)") as r:
        body = chat_body(model, stream=True)
        start = time.monotonic()
        tokens, events, done, first, last, text = 0, 0, False, 0.0, 0.0, []
        with _session(url) as session:
            resp = _post(session, predict_url(url), signer, body, True, ca_bundle, timeout)
            with resp:
                if resp.status_code != 200:
                    return _refused(r, resp, body)
                content_type = resp.headers.get("Content-Type", "")
                for data in sse_data(resp.iter_content(chunk_size=None)):
                    events += 1
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    choice = (json.loads(data).get("choices") or [{}])[0]
                    piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                    if piece:
                        tokens += 1
                        last = time.monotonic()
                        first = first or last
                        text.append(piece)
        r.evidence.update(request=_request_evidence(resp, body),
                          response={"status": 200, "content_type": content_type, "events": events,
                                    "opc-request-id": resp.headers.get("opc-request-id", ""),
                                    "text": "".join(text)[:MAX_BODY_CHARS]})
        if "text/event-stream" not in content_type:
            return r.fail(f"200 but Content-Type is {content_type!r}, not text/event-stream")
        if not tokens:
            return r.fail(f"stream ended after {events} event(s) without a token")
        r.metrics.update(ttft_s=round(first - start, 4), tokens=tokens)
        if tokens > 1 and last > first:
            r.metrics["tokens_per_s"] = round((tokens - 1) / (last - first), 2)
        r.summary = (f"{tokens} tokens in {events} events, first after {first - start:.2f}s"
                     + ("" if done else "; no [DONE] at the end"))
    return r


def run_oci_ds_checks(url: str, model: str, stream: bool = True, config_file: str | None = None,
                      profile: str | None = None, instance_principal: bool = False, ca_bundle: str | None = None,
                      timeout: float = 60) -> list[CheckResult]:
    """The signer, a chat completion through /predict and, if stream, a streamed one."""
    signed_by, signer = make_signer(config_file, profile, instance_principal)
    if signer is None:
        return [signed_by]
    results = [signed_by, check_predict(url, model, signer, ca_bundle, timeout)]
    if stream:
        results.append(check_stream(url, model, signer, ca_bundle, timeout))
    return results
