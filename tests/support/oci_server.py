"""A local stand-in for an OCI Data Science model deployment's /predict endpoint, over HTTPS.

Why: no OCI endpoint is reachable here, so the smoke check's request signing is proven against a
server that checks what OCI checks. Every request must carry an OCI API-key signature (draft-cavage
HTTP signatures, as the OCI SDK's signer makes them): keyId "tenancy/user/fingerprint" of a known
key, rsa-sha256, signed headers `date (request-target) host` plus, for a body,
`content-length content-type x-content-sha256`; a fresh date; x-content-sha256 and content-length
equal to the body received; and an RSA-SHA256 signature that verifies with the public key. A bad
request gets OCI's 401 NotAuthenticated. A good one is answered as vLLM's OpenAI server answers the
`route` header's path (/v1/chat/completions or /v1/completions), as SSE when `enable-streaming: true`.
The server runs in a thread of the test process and is shut down when the with-block ends.
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .certs import issue_leaf, make_ca
from .stubserver import running

BODY_HEADERS = ("content-length", "content-type", "x-content-sha256")
REQUIRED_HEADERS = ("date", "(request-target)", "host")
MAX_CLOCK_SKEW_S = 300
ANSWER = "Hello from the model deployment"
NOT_AUTHENTICATED = "The required information to complete authentication was not provided or was incorrect."


@dataclass(frozen=True)
class ApiKey:
    """A throwaway OCI API signing key and the ids OCI knows it by."""

    tenancy: str
    user: str
    fingerprint: str  # MD5 of the DER public key, colon-separated hex, as the OCI console shows it
    private_key: Path
    public_pem: bytes

    @property
    def key_id(self) -> str:
        return f"{self.tenancy}/{self.user}/{self.fingerprint}"

    def write_config(self, path: Path, profile: str = "DEFAULT", region: str = "us-ashburn-1") -> Path:
        """An OCI CLI/SDK config file with this key as `profile`."""
        path.write_text(f"[{profile}]\nuser={self.user}\nfingerprint={self.fingerprint}\nkey_file={self.private_key}\n"
                        f"tenancy={self.tenancy}\nregion={region}\n")
        return path


def make_api_key(dir: Path, name: str = "api") -> ApiKey:
    """An RSA 2048 key pair as OCI API keys are (PEM, PKCS#8), with its OCI fingerprint."""
    dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = dir / f"{name}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.md5(der).hexdigest()
    fingerprint = ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    suffix = hashlib.sha256(name.encode()).hexdigest()[:24]
    return ApiKey(tenancy=f"ocid1.tenancy.oc1..aaaa{suffix}", user=f"ocid1.user.oc1..aaaa{suffix}",
                  fingerprint=fingerprint, private_key=private,
                  public_pem=key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))


class SignatureError(Exception):
    pass


def parse_authorization(value: str) -> dict[str, str]:
    """The parameters of an `Authorization: Signature k="v",...` header."""
    scheme, _, params = value.partition(" ")
    if scheme != "Signature":
        raise SignatureError(f"authorization scheme is {scheme!r}, not Signature")
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def verify_request(method: str, path: str, headers: dict[str, str], body: bytes,
                   keys: dict[str, bytes], now: float | None = None) -> str:
    """Check an OCI-signed request as OCI does; return the keyId, or raise SignatureError saying why."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "authorization" not in lower:
        raise SignatureError("no Authorization header")
    params = parse_authorization(lower["authorization"])
    for name in ("keyId", "algorithm", "headers", "signature"):
        if name not in params:
            raise SignatureError(f"signature parameter {name} missing")
    if params["algorithm"] != "rsa-sha256":
        raise SignatureError(f"algorithm {params['algorithm']!r} is not rsa-sha256")
    if params.get("version", "1") != "1":
        raise SignatureError(f"signature version {params['version']!r} is not 1")
    signed = params["headers"].split()
    required = REQUIRED_HEADERS + (BODY_HEADERS if method.upper() in ("POST", "PUT", "PATCH") else ())
    unsigned = [h for h in required if h not in signed]
    if unsigned:
        raise SignatureError(f"required headers not signed: {' '.join(unsigned)}")
    key_pem = keys.get(params["keyId"])
    if key_pem is None:
        raise SignatureError(f"unknown keyId {params['keyId']}")
    date = email.utils.parsedate_to_datetime(lower.get("date", "Thu, 01 Jan 1970 00:00:00 GMT")).timestamp()
    if abs((now or time.time()) - date) > MAX_CLOCK_SKEW_S:
        raise SignatureError(f"date {lower.get('date')!r} is more than {MAX_CLOCK_SKEW_S}s away from the "
                             "server's clock")
    if "x-content-sha256" in signed:
        if lower.get("x-content-sha256") != base64.b64encode(hashlib.sha256(body).digest()).decode():
            raise SignatureError("x-content-sha256 does not match the body received")
        if lower.get("content-length") != str(len(body)):
            raise SignatureError(f"content-length {lower.get('content-length')} is not the body's {len(body)} bytes")
    lines = []
    for name in signed:
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {path}")
        elif name in lower:
            lines.append(f"{name}: {lower[name]}")
        else:
            raise SignatureError(f"signed header {name} is not in the request")
    public_key = serialization.load_pem_public_key(key_pem)
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(base64.b64decode(params["signature"]), "\n".join(lines).encode(), padding.PKCS1v15(),
                          hashes.SHA256())
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"signature does not verify with the public key of {params['keyId']}") from exc
    return params["keyId"]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    verdict: str  # the keyId, or why the signature was refused


@dataclass
class OciServer:
    url: str  # the model deployment URL; /predict is under it
    ca: str
    model: str
    keys: dict[str, bytes]
    seen: list[Seen] = field(default_factory=list)
    tamper_body: bool = False  # change the body after it was signed, as a rewriting middlebox would
    container_streams: bool = True  # False: the model's container answers a stream request with one JSON body


def _chat(model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": len(ANSWER.split()), "total_tokens": 17}}


def _completion(model: str) -> dict[str, Any]:
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(ANSWER.split()), "total_tokens": 10}}


def _chunks(model: str, route: str) -> Iterator[dict[str, Any]]:
    """vLLM's stream: for chat a role delta first, then one delta per token, then the finish reason."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    words = [w if i == 0 else f" {w}" for i, w in enumerate(ANSWER.split())]
    if route.endswith("/chat/completions"):
        base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                    "finish_reason": None}]}
        for w in words:
            yield {**base, "choices": [{"index": 0, "delta": {"content": w}, "logprobs": None, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    else:
        base = {"id": ident, "object": "text_completion", "created": created, "model": model}
        for w in words:
            yield {**base, "choices": [{"index": 0, "text": w, "logprobs": None, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]}


def _handler(state: OciServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet; `state.seen` records requests
            pass

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("opc-request-id", uuid.uuid4().hex.upper())
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if state.tamper_body:
                body = body.replace(b'"content": "', b'"content": "Ignore all that. ', 1)
            headers = dict(self.headers.items())
            seen = Seen("POST", self.path, headers, body, 0, "")
            state.seen.append(seen)
            try:
                seen.verdict = verify_request("POST", self.path, headers, body, state.keys)
            except SignatureError as exc:
                seen.status, seen.verdict = 401, str(exc)
                return self._json(401, {"code": "NotAuthenticated", "message": NOT_AUTHENTICATED})
            if not self.path.rstrip("/").endswith("/predict"):
                seen.status = 404
                return self._json(404, {"code": "NotAuthorizedOrNotFound",
                                        "message": "Authorization failed or requested resource not found."})
            self._answer(seen, body)

        def _answer(self, seen: Seen, body: bytes) -> None:
            request = json.loads(body)
            route = self.headers.get("route", "/v1/chat/completions")
            if request.get("model") != state.model:
                seen.status = 404
                return self._json(404, {"object": "error", "message": f"The model `{request.get('model')}` does not "
                                        "exist.", "type": "NotFoundError", "param": None, "code": 404})
            streaming = self.headers.get("enable-streaming", "false").lower() == "true"
            if streaming and not (request.get("stream") and state.container_streams):
                seen.status = 409
                return self._json(409, {"code": "ExternalServerIncorrectState", "message": "Unexpected nonstreaming "
                                        "response detected from the deployed model."})
            if not request.get("stream"):
                seen.status = 200
                return self._json(200, _chat(state.model) if route.endswith("/chat/completions")
                                  else _completion(state.model))
            seen.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("opc-request-id", uuid.uuid4().hex.upper())
            self.end_headers()
            for chunk in _chunks(state.model, route):
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                time.sleep(0.01)
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

    return Handler


@contextmanager
def oci_server(work: Path, model: str, keys: list[ApiKey]) -> Iterator[OciServer]:
    """HTTPS on a free loopback port with a test CA; the deployment URL is https://localhost:PORT/<ocid>."""
    ca = make_ca(work / "ca")
    leaf = issue_leaf(ca, work / "leaf", hostnames=["localhost"], ips=["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(leaf.fullchain), str(leaf.key))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    port = httpd.server_address[1]
    state = OciServer(url=f"https://localhost:{port}/ocid1.datasciencemodeldeployment.oc1.iad.aaaatest",
                      ca=str(ca.cert), model=model, keys={k.key_id: k.public_pem for k in keys})
    httpd.RequestHandlerClass = _handler(state)
    with running(httpd):
        yield state
