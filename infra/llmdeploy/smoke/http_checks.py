"""The HTTP side of `llmdeploy smoke`: TLS, auth and API checks against one endpoint.

TLS: the chain verifies against the system's CA store (or --ca-bundle), the certificate names the host,
it is not about to expire (a warning under 14 days), plain HTTP is redirected to HTTPS, and HSTS is set.
Auth: every API route of the dialect refuses a request without credentials and one with a wrong secret
(401/403), and accepts the right one. API: the models are listed (the expected one among them), chat and
text completions are answered, and streams arrive event by event (stream_checks.py).

No credential is sent to a server whose certificate failed verification: anyone could be presenting it.
Each check is a function returning a CheckResult and never raises (see result.timed).
"""
from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from ..pem import certificate_names, certificate_not_after, hostname_matches
from ..result import FAIL, CheckResult, timed
from .dialects import ApiCall, Dialect, dialect_for
from .http_client import describe_call, excerpt, fail_with_status, json_of, make_session, send
from .stream_checks import stream_check
from .targets import Target

EXPIRY_WARN_DAYS = 14
HSTS_MIN_AGE = 180 * 24 * 3600  # Mozilla's guidance: at least six months (the rendered site sends two years)
REFUSED = (401, 403)
Emit = Callable[[CheckResult], None]


# --- TLS ----------------------------------------------------------------------------------------------------


@dataclass
class TlsProbe:
    """What three handshakes showed: chain verified? hostname matched? and the leaf certificate."""

    chain_error: str | None = None
    hostname_error: str | None = None
    leaf_der: bytes | None = None
    version: str | None = None


def _tls_context(target: Target, check_hostname: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=target.ca_bundle)  # system store when no bundle
    context.check_hostname = check_hostname
    return context


def _handshake(target: Target, context: ssl.SSLContext) -> tuple[bytes | None, str | None]:
    with socket.create_connection((target.host, target.port), timeout=target.timeout) as sock:
        with context.wrap_socket(sock, server_hostname=target.host) as tls:
            return tls.getpeercert(binary_form=True), tls.version()


def probe_tls(target: Target) -> TlsProbe:
    """Verify the chain, then the hostname, then fetch the leaf unverified (to read expiry and names)."""
    probe = TlsProbe()
    try:
        _handshake(target, _tls_context(target, check_hostname=False))
    except ssl.SSLCertVerificationError as exc:
        probe.chain_error = exc.verify_message or str(exc)
    if probe.chain_error is None:
        try:
            _handshake(target, _tls_context(target, check_hostname=True))
        except ssl.SSLCertVerificationError as exc:
            probe.hostname_error = exc.verify_message or str(exc)
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    probe.leaf_der, probe.version = _handshake(target, unverified)
    return probe


def check_chain(target: Target, probe: TlsProbe) -> CheckResult:
    with timed("tls: chain") as result:
        store = f"CA bundle {target.ca_bundle}" if target.ca_bundle else "the system CA store"
        result.evidence.update(trust=store, tls_version=probe.version)
        if probe.chain_error:
            hint = "" if target.ca_bundle else (
                "; if the endpoint uses its own CA (tlsMode self-signed), pass --ca-bundle with its ca.pem; "
                "for a test ACME directory, its roots (Let's Encrypt staging: llmdeploy/letsencrypt-staging-roots.pem)")
            return result.fail(f"does not verify against {store}: {probe.chain_error}{hint}")
        result.summary = f"verified against {store} ({probe.version})"
    return result


def check_hostname(target: Target, probe: TlsProbe) -> CheckResult:
    with timed("tls: hostname") as result:
        dns, ips = certificate_names(probe.leaf_der) if probe.leaf_der else ([], [])
        result.evidence.update(host=target.host, dns_names=dns, ip_addresses=ips)
        matched = probe.hostname_error is None if probe.chain_error is None else hostname_matches(target.host, dns, ips)
        if not matched:
            names = ", ".join(dns + ips) or "no subjectAltName"
            return result.fail(f"the certificate is for {names}, not {target.host}")
        result.summary = f"the certificate names {target.host}"
    return result


def check_cert_expiry(probe: TlsProbe, now: datetime | None = None) -> CheckResult:
    with timed("tls: expiry") as result:
        if probe.leaf_der is None:
            return result.fail("the server sent no certificate")
        not_after = certificate_not_after(probe.leaf_der)
        days = (not_after - (now or datetime.now(timezone.utc))).total_seconds() / 86400
        result.metrics["days_left"] = round(days, 1)
        result.evidence["not_after"] = not_after.isoformat()
        if days < 0:
            return result.fail(f"expired {-days:.0f} day(s) ago ({not_after:%Y-%m-%d})")
        if days < EXPIRY_WARN_DAYS:
            return result.warn(f"expires in {days:.1f} days ({not_after:%Y-%m-%d}): renew it (certbot renew)")
        result.summary = f"valid for {days:.0f} more days (until {not_after:%Y-%m-%d})"
    return result


def check_redirect(session: requests.Session, target: Target, path: str) -> CheckResult:
    with timed("http: redirect to https") as result:
        url = target.plain_http_url + path
        result.evidence["url"] = url
        try:
            response = session.get(url, allow_redirects=False, timeout=target.timeout)
        except requests.ConnectionError as exc:
            return result.fail(f"nothing answers at {url}: {type(exc).__name__} (is port 80 open? use --http-url "
                               "if plain HTTP listens elsewhere)")
        location = response.headers.get("Location", "")
        result.evidence.update(status=response.status_code, location=location)
        to = urlsplit(location)
        if response.status_code not in (301, 302, 307, 308) or to.scheme != "https":
            return result.fail(f"plain HTTP answered {response.status_code} without redirecting to https "
                               f"(Location: {location or 'none'})")
        if to.hostname != target.host or (to.port or 443) != target.port:
            return result.fail(f"redirects to {to.netloc}, not to {urlsplit(target.url).netloc}")
        result.summary = f"{response.status_code} to {location}"
    return result


def parse_max_age(header: str) -> int | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age":
            try:
                return int(value.strip().strip('"'))
            except ValueError:
                return None
    return None


def check_hsts(session: requests.Session, target: Target, path: str) -> CheckResult:
    with timed("https: HSTS") as result:
        response = session.get(target.base + path, allow_redirects=False, timeout=target.timeout)
        header = response.headers.get("Strict-Transport-Security")
        result.evidence.update(url=target.base + path, status=response.status_code, header=header)
        if not header:
            return result.fail(f"no Strict-Transport-Security header (on a {response.status_code} answer)")
        max_age = parse_max_age(header)
        if max_age is None:
            return result.fail(f"Strict-Transport-Security has no valid max-age: {header!r}")
        result.metrics["max_age_days"] = round(max_age / 86400, 1)
        if max_age < HSTS_MIN_AGE:
            return result.warn(f"max-age is {max_age / 86400:.0f} days; six months or more is advised")
        result.summary = header
    return result


def tls_checks(session: requests.Session, target: Target, path: str) -> tuple[list[CheckResult], str | None]:
    """The TLS checks, and why the server must not get credentials (None: chain and hostname verified)."""
    if not target.is_https:
        result = CheckResult("tls", FAIL, f"{target.url} is plain HTTP: keys and prompts cross the network "
                                          "unencrypted; use the https:// URL")
        return [result], None  # the user chose plain HTTP; still check auth and the API
    with timed("tls: handshake") as handshake:
        probe = probe_tls(target)
    if handshake.status == FAIL:
        handshake.summary = f"no TLS handshake with {target.host}:{target.port}: {handshake.summary}"
        return [handshake], "there is no TLS connection"
    results = [check_chain(target, probe), check_hostname(target, probe), check_cert_expiry(probe)]
    results[0].seconds = round(results[0].seconds + handshake.seconds, 3)  # the handshakes were the chain's work
    untrusted = None if all(r.ok for r in results[:2]) else \
        "credentials are never sent to a server whose certificate failed verification"
    results.append(check_redirect(session, target, path))
    if not untrusted:
        results.append(check_hsts(session, target, path))
    return results, untrusted


# --- auth ---------------------------------------------------------------------------------------------------


def auth_check(session: requests.Session, target: Target, probe: ApiCall) -> CheckResult:
    """One route: refused without credentials and with a wrong secret, accepted with the right one."""
    creds = target.credentials
    secret = "password" if creds.basic else "key"
    with timed(f"auth: {probe.method} {target.shown_path(probe.path)}") as result:
        tries = {"no credentials": {}, f"wrong {secret}": creds.wrong_headers(), f"right {secret}": creds.headers()}
        statuses = {label: send(session, target, probe, headers).status_code for label, headers in tries.items()}
        result.evidence.update(request=describe_call(probe), statuses=statuses)
        said = ", ".join(f"{label} {status}" for label, status in statuses.items())
        for label in ("no credentials", f"wrong {secret}"):
            if statuses[label] not in REFUSED:
                return result.fail(f"ACCEPTED a request with {label} ({statuses[label]}): {said}")
        right = statuses[f"right {secret}"]
        if right in REFUSED:
            return result.fail(f"refused the right {secret} ({right}): {said}; was it delivered to the VM?")
        if not 200 <= right < 300:
            return result.warn(f"the right {secret} got past auth, but the route answered {right}: {said}")
        result.summary = said
    return result


def auth_checks(session: requests.Session, target: Target, dialect: Dialect, model: str) -> list[CheckResult]:
    return [auth_check(session, target, probe) for probe in dialect.auth_probes(model)]


# --- API ----------------------------------------------------------------------------------------------------


def models_check(session: requests.Session, target: Target, dialect: Dialect) -> tuple[CheckResult, str | None]:
    """The model list answers, and holds the expected model; returns the model id the other checks use."""
    chosen: str | None = target.model
    with timed(f"models: GET {target.shown_path(dialect.models_path)}") as result:
        response = session.get(target.base + dialect.models_path, headers=target.credentials.headers(),
                               timeout=target.timeout, allow_redirects=False)
        if response.status_code != 200:
            return fail_with_status(result, response), chosen
        models = dialect.parse_models(json_of(response))
        ids = [m.id for m in models]
        result.evidence["models"] = ids[:50]
        if not models:
            return result.fail("the server lists no model"), chosen
        entry = dialect.find_model(models, target.model) if target.model else models[0]
        if entry is None:
            return result.fail(f"model {target.model!r} is not listed; the server lists: {', '.join(ids[:10])}"), chosen
        chosen = entry.id
        result.evidence["model"] = {"id": entry.id, "aliases": list(entry.aliases), **entry.details}
        problem = dialect.model_problem(entry)
        if problem:
            return result.fail(f"{entry.id!r} is listed, but {problem}"), chosen
        how = "" if target.model else " (no --model given: using the first)"
        result.summary = f"{len(ids)} model(s), {entry.id!r} among them{how}"
    return result, chosen


def _usage_tokens(obj: dict[str, Any]) -> int | None:
    usage = obj.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else obj.get("eval_count")
    return tokens if isinstance(tokens, int) else None


def answer_check(session: requests.Session, target: Target, call: ApiCall) -> CheckResult:
    """A non-streamed request is answered 200 with generated text."""
    with timed(f"{call.name}: {call.method} {target.shown_path(call.path)}") as result:
        result.evidence["request"] = describe_call(call)
        response = send(session, target, call, target.credentials.headers())
        if response.status_code != 200:
            return fail_with_status(result, response)
        obj = json_of(response)
        text, tokens = call.text_of(obj), _usage_tokens(obj)
        result.evidence["text"] = excerpt(text, 300)
        if tokens is not None:
            result.metrics["completion_tokens"] = float(tokens)
        if not text:
            if tokens:
                return result.warn(f"answered 200 with {tokens} token(s) but no text")
            return result.fail(f"answered 200 without any generated text: {excerpt(response.text, 120)}")
        result.summary = f"answered: {excerpt(text, 60)!r}"
    return result


def api_checks(session: requests.Session, target: Target, dialect: Dialect, model: str) -> Iterator[CheckResult]:
    for call in dialect.calls(model):
        yield stream_check(session, target, dialect, call) if call.stream else answer_check(session, target, call)


# --- all of it -----------------------------------------------------------------------------------------------


def run_http_checks(target: Target, emit: Emit | None = None) -> list[CheckResult]:
    """TLS, then the model list, auth on every route, and the API calls; each result also goes to `emit`."""
    results: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        results.append(result)
        if emit:
            emit(result)

    dialect = dialect_for(target.kind)
    with make_session(target) as session:
        tls, untrusted = tls_checks(session, target, dialect.models_path)
        for result in tls:
            add(result)
        if untrusted:
            add(CheckResult("auth and API", FAIL, f"not run: {untrusted}"))
            return results
        models, model = models_check(session, target, dialect)
        add(models)
        model = model or "default"  # no list and no --model: the checks below still show what the routes answer
        for result in auth_checks(session, target, dialect, model):
            add(result)
        for result in api_checks(session, target, dialect, model):
            add(result)
    return results
