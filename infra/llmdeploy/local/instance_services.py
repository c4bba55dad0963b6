"""A stand-in for the OCI services the autostop agent calls, for `llmdeploy local up` with idleStopMinutes or ttlHours:
the instance metadata service's identity and instance routes, the auth service's X.509 federation, and Compute's
InstanceAction and TerminateInstance. It checks what OCI checks, and on a verified stop of its own instance it stops
the guest by its PID (runtime.stop), as OCI powers off an instance.

- Metadata (/opc/v2/...): only with `Authorization: Bearer Oracle` (401 without, as IMDS v2). It serves an instance
  identity certificate it issued (subject OU opc-instance:<id>, OU opc-tenant:<tenancy>), its RSA key and the
  issuing CA (intermediate.pem), the instance id, and regionInfo.
- POST /v1/x509: the request must be signed (draft-cavage, rsa-sha256, date (request-target) host and the body's
  headers) with the identity key, keyId "<tenancy>/fed-x509/<SHA-1 fingerprint of the certificate>", and carry that
  same certificate; the answer is a token bound to the session public key the request sent.
- POST /20160918/instances/<id>?action=... and DELETE /20160918/instances/<id>: signed with keyId "ST$<token>" by
  the session key. Another instance's id gets OCI's 404 NotAuthorizedOrNotFound (the policy names this one only).

A bad signature, an unknown key or token, a stale date or a body that does not match gets 401 NotAuthenticated, and
the guest is left running. Every decision is one line of its log; never a key or a token.

Run as its own detached process (procs.start_daemon), over HTTPS with a certificate of a CA the guest trusts.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import email.utils
import hashlib
import json
import re
import secrets
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ..errors import Failure

MAX_CLOCK_SKEW_S = 300
REGION = {"realmKey": "oc1", "realmDomainComponent": "oraclecloud.com", "regionKey": "LCL",
          "regionIdentifier": "local-1"}
TENANCY = "ocid1.tenancy.oc1..llmdeploylocal"
ACTIONS = ("STOP", "SOFTSTOP", "RESET", "SOFTRESET", "START")


class SignatureError(Failure):
    """A request OCI would refuse with 401 NotAuthenticated (the server answers it; nothing is raised further)."""


def verify(method: str, target: str, headers: dict[str, str], body: bytes, keys: dict[str, rsa.RSAPublicKey],
           now: float | None = None) -> str:
    """Check an OCI-signed request; the keyId, or SignatureError saying why."""
    lower = {k.lower(): v for k, v in headers.items()}
    scheme, _, params_text = lower.get("authorization", "").partition(" ")
    if scheme != "Signature":
        raise SignatureError("no Signature authorization")
    params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
    if params.get("algorithm") != "rsa-sha256" or not {"keyId", "headers", "signature"} <= params.keys():
        raise SignatureError("signature parameters missing or not rsa-sha256")
    signed = params["headers"].split()
    needed = ["date", "(request-target)", "host"]
    needed += ["content-length", "content-type", "x-content-sha256"] if method in ("POST", "PUT", "PATCH") else []
    if any(h not in signed for h in needed):
        raise SignatureError("required headers not signed")
    key = keys.get(params["keyId"])
    if key is None:
        raise SignatureError("unknown keyId")
    date = email.utils.parsedate_to_datetime(lower.get("date", "Thu, 01 Jan 1970 00:00:00 GMT")).timestamp()
    if abs((now or time.time()) - date) > MAX_CLOCK_SKEW_S:
        raise SignatureError("date too far from the server's clock")
    if "x-content-sha256" in signed and (
            lower.get("x-content-sha256") != base64.b64encode(hashlib.sha256(body).digest()).decode()
            or lower.get("content-length") != str(len(body))):
        raise SignatureError("body does not match x-content-sha256 / content-length")
    try:
        text = "\n".join(f"(request-target): {method.lower()} {target}" if n == "(request-target)"
                         else f"{n}: {lower[n]}" for n in signed)
        key.verify(base64.b64decode(params["signature"]), text.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (KeyError, InvalidSignature, ValueError) as exc:
        raise SignatureError("signature does not verify") from exc
    return params["keyId"]


class Identity:
    """The instance's identity certificate and key, and the CA that issued them."""

    def __init__(self, instance_id: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmdeploy local instance identity CA")])
        self.ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, instance_id),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"opc-instance:{instance_id}"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"opc-tenant:{TENANCY}")])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                     .sign(ca_key, hashes.SHA256()))

    def pem(self, name: str) -> str:
        if name == "key":
            return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()).decode()
        return (self.cert if name == "cert" else self.ca).public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_id(self) -> str:
        digest = self.cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - OCI's keyId names SHA-1
        return f"{TENANCY}/fed-x509/" + ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

    def der_b64(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()


class Services:
    def __init__(self, instance_id: str, on_action: Any, log: Any = print) -> None:
        self.instance_id = instance_id
        self.identity = Identity(instance_id)
        self.sessions: dict[str, rsa.RSAPublicKey] = {}  # "ST$<token>" -> the session key it was issued for
        self.on_action = on_action  # called with "SOFTSTOP"/"STOP"/"TERMINATE" once a verified action is answered
        self.log = log
        self.actions: list[str] = []

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | str]:
        path = urlsplit(target).path
        if path.startswith("/opc/v2/"):
            return self._imds(path.removeprefix("/opc/v2/"), headers)
        try:
            if method == "POST" and path == "/v1/x509":
                return self._federate(target, headers, body)
            found = re.fullmatch(r"/20160918/instances/([^/]+)", path)
            if found:
                return self._instance(method, target, unquote(found.group(1)), headers, body)
        except SignatureError as exc:
            self.log(f"401 {method} {path}: {exc}")
            return 401, {"code": "NotAuthenticated", "message": "The required information to complete "
                         "authentication was not provided or was incorrect."}
        return 404, {"code": "NotFound", "message": f"no route {method} {path}"}

    def _imds(self, route: str, headers: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        if {k.lower(): v for k, v in headers.items()}.get("authorization") != "Bearer Oracle":
            self.log(f"401 metadata {route}: no 'Authorization: Bearer Oracle'")
            return 401, {"code": "NotAuthenticated", "message": "metadata v2 needs Authorization: Bearer Oracle"}
        answers: dict[str, dict[str, Any] | str] = {
            "identity/cert.pem": self.identity.pem("cert"), "identity/key.pem": self.identity.pem("key"),
            "identity/intermediate.pem": self.identity.pem("ca"), "instance/id": self.instance_id,
            "instance/regionInfo": REGION, "instance/region": REGION["regionIdentifier"]}
        if route not in answers:
            return 404, {"code": "NotFound", "message": route}
        self.log(f"200 metadata {route}")
        return 200, answers[route]

    def _federate(self, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | str]:
        public = self.identity.cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        verify("POST", target, headers, body, {self.identity.key_id: public})
        try:
            request = json.loads(body)
            if request["certificate"] != self.identity.der_b64():
                raise SignatureError("the certificate is not this instance's")
            session = serialization.load_der_public_key(base64.b64decode(request["publicKey"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SignatureError(f"bad federation request: {type(exc).__name__}") from exc
        if not isinstance(session, rsa.RSAPublicKey):
            raise SignatureError("the session key is not RSA")
        token = secrets.token_urlsafe(32)
        self.sessions[f"ST${token}"] = session
        self.log("200 federation: a security token for this instance's session key")
        return 200, {"token": token}

    def _instance(self, method: str, target: str, instance: str, headers: dict[str, str],
                  body: bytes) -> tuple[int, dict[str, Any] | str]:
        verify(method, target, headers, body, self.sessions)
        query = parse_qs(urlsplit(target).query)
        action = "TERMINATE" if method == "DELETE" else (query.get("action") or [""])[0]
        if instance != self.instance_id:
            self.log(f"404 {action} {instance}: not this instance (the policy names {self.instance_id} only)")
            return 404, {"code": "NotAuthorizedOrNotFound", "message": "Authorization failed or requested resource "
                         "not found."}
        if method not in ("POST", "DELETE") or (method == "POST" and action not in ACTIONS):
            return 400, {"code": "InvalidParameter", "message": f"action {action!r}"}
        self.actions.append(action)
        self.log(f"200 {action} {instance}: verified; the guest stops")
        return 200, {"id": instance, "lifecycleState": "TERMINATING" if action == "TERMINATE" else "STOPPING"}


def serve(services: Services, host: str, port: int, cert: Path, key: Path) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # the services log their own decisions
            pass

        def _do(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, answer = services.handle(self.command, self.path, dict(self.headers.items()), body)
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain" if isinstance(answer, str) else "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            if status == 200 and services.actions and self.command in ("POST", "DELETE") and "/instances/" in self.path:
                # After the answer, as OCI answers before the instance stops.
                threading.Thread(target=services.on_action, args=(services.actions[-1],), daemon=True).start()

        do_GET = do_POST = do_DELETE = _do  # noqa: N815 - http.server's names

    server = ThreadingHTTPServer((host, port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def _stop_guest(stack: str, action: str) -> None:
    from . import procs, runtime
    from .state import VmState

    state = VmState.load(stack)
    if state is None:
        print(f"{action}: no local VM for stack {stack!r}", flush=True)
        return
    pid = state.pids.get(state.runtime)
    if action == "TERMINATE":  # the guest and its disk (the root copy or the overlay) go
        stopped = runtime.of(state).stop(state)
    else:  # its process only, as OCI powers an instance off: its disk stays until `llmdeploy local down`
        stopped = procs.stop_process(pid, state.markers.get(state.runtime, "\0never"), grace=75)
    print(f"{action}: guest of stack {stack!r} (pid {pid}) {'stopped' if stopped else 'was not running'}", flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stack", required=True)
    p.add_argument("--instance-id", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    args = p.parse_args(argv)
    services = Services(args.instance_id, lambda action: _stop_guest(args.stack, action),
                        log=lambda line: print(line, flush=True))
    server = serve(services, args.host, args.port, args.cert, args.key)
    print(f"instance services for {args.instance_id} on https://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
