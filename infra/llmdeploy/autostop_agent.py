"""The autostop agent: the VM stops (or terminates) itself once idle for idleStopMinutes, or at ttlHours.

It runs on the VM as root from a systemd timer (every 15 s), with Python's standard library and the openssl CLI only
(render.py installs this very file; nothing is pip-installed). Each run:

1. reads what reached the engine since the last run: nginx's usage log lines (vmpaths.USAGE_LOG) with a key's name
   (not "-") and an upstream time (the request reached the engine), and the open streams: established TCP
   connections whose far end is the engine's port (nginx's and any frontend's connections to the engine; nginx's
   idle upstream keep-alive connections count too, for at most a minute, which only delays a stop);
2. keeps the last activity and the deadlines in its state file (under /run: a VM started again starts its idle clock
   afresh), which `llmdeploy status` reads;
3. at the deadline, acts as the instance (an instance principal): the identity certificate and key from the
   instance metadata service, a security token from the auth service's federation endpoint for a session key of its
   own, then a signed InstanceAction SOFTSTOP, or a TerminateInstance, on its own instance id.

Idle time counts from the VM's first readiness (provisioning is never idle); the TTL from that first readiness too,
kept across reboots.
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

IMDS = "http://169.254.169.254/opc/v2"
IMDS_HEADERS = {"Authorization": "Bearer Oracle"}
RESEND_AFTER_S = 600  # a stop already sent is sent again only if the VM still runs this much later


# ---------------------------------------------------------------------------------------------- activity

def new_activity(log_path: str, state: dict[str, Any]) -> bool:
    """Whether the usage log gained a line of a request with a valid key that reached the engine since the offset in
    state (updated). A rotated log (another inode, or shorter) is read from its start."""
    try:
        st = os.stat(log_path)
    except OSError:
        return False
    offset = int(state.get("log_offset", 0))
    if st.st_ino != state.get("log_inode") or st.st_size < offset:
        offset = 0 if "log_inode" in state else st.st_size  # the first run starts at the end: old lines are history
    found = False
    with open(log_path, "rb") as log:
        log.seek(offset)
        for raw in log:
            if not raw.endswith(b"\n"):
                break  # a line nginx is still writing: read it next time
            offset += len(raw)
            found = found or counts_as_activity(raw)
    state["log_inode"], state["log_offset"] = st.st_ino, offset
    return found


def counts_as_activity(raw: bytes) -> bool:
    try:
        line = json.loads(raw)
    except ValueError:
        return False
    upstream = str(line.get("upstream_time", "-")) if isinstance(line, dict) else "-"
    return isinstance(line, dict) and line.get("name", "-") not in ("-", "") and upstream not in ("-", "")


def open_streams(port: int) -> int:
    """Established TCP connections to the engine's port (their far end is it)."""
    done = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                          capture_output=True, text=True, check=False)
    return len([line for line in done.stdout.splitlines() if line.strip()])


# ---------------------------------------------------------------------------------------------- decision

def decide(conf: dict[str, Any], state: dict[str, Any], now: float, ready_since: float | None, active: bool,
           ttl_start: float | None) -> str:
    """Update state's clocks; return "idle" or "ttl" when it is time to act, else "". Nothing counts before the VM
    is first ready."""
    if ready_since is None:
        state.update(phase="provisioning", last_activity=now)
        for key in ("idle_deadline", "ttl_deadline", "deadline", "reason"):
            state.pop(key, None)
        return ""
    state["phase"] = "watching"
    if active or "last_activity" not in state:
        state["last_activity"] = now
    deadlines = {}
    if conf.get("idle_minutes"):
        deadlines["idle"] = state["idle_deadline"] = float(state["last_activity"]) + 60 * int(conf["idle_minutes"])
    if conf.get("ttl_hours") and ttl_start is not None:
        deadlines["ttl"] = state["ttl_deadline"] = ttl_start + 3600 * int(conf["ttl_hours"])
    if not deadlines:
        return ""
    reason = min(deadlines, key=lambda k: deadlines[k])
    state["deadline"], state["reason"] = deadlines[reason], reason
    return reason if now >= deadlines[reason] else ""


# ---------------------------------------------------------------------------------------------- OCI requests

def _openssl(*args: str, data: bytes = b"") -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def pem_body(pem: str) -> str:
    """A PEM's base64 without its armour lines, as the federation request carries certificates and keys."""
    return "".join(line.strip() for line in pem.splitlines() if line.strip() and not line.startswith("-----"))


def sign(method: str, url: str, body: bytes, key_id: str, key_file: str, now: float | None = None) -> dict[str, str]:
    """The headers of an OCI-signed request (draft-cavage HTTP signatures, rsa-sha256, as OCI's SDKs sign)."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"date": email.utils.formatdate(now, usegmt=True), "host": parts.netloc}
    names = ["date", "(request-target)", "host"]
    if method in ("POST", "PUT", "PATCH"):
        headers.update({"content-length": str(len(body)), "content-type": "application/json",
                        "x-content-sha256": base64.b64encode(hashlib.sha256(body).digest()).decode()})
        names += ["content-length", "content-type", "x-content-sha256"]
    signing = "\n".join(f"(request-target): {method.lower()} {target}" if n == "(request-target)"
                        else f"{n}: {headers[n]}" for n in names)
    signature = base64.b64encode(_openssl("dgst", "-sha256", "-sign", key_file, data=signing.encode())).decode()
    headers["authorization"] = (f'Signature version="1",keyId="{key_id}",algorithm="rsa-sha256",'
                                f'headers="{" ".join(names)}",signature="{signature}"')
    return headers


# The CA file the HTTPS endpoints are checked against: the system's store unless the config names one.
CA_FILE: list[str] = []


def _request(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    context = ssl.create_default_context(cafile=CA_FILE[0] if CA_FILE else None)
    with urllib.request.urlopen(req, timeout=30, context=context) as resp:
        return resp.read()


def imds(base: str, path: str) -> str:
    return _request("GET", f"{base}/{path}", IMDS_HEADERS).decode()


def tenancy_of(cert_pem: str) -> str:
    subject = _openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", data=cert_pem.encode()).decode()
    found = re.search(r"opc-(?:tenant|identity):([A-Za-z0-9._-]+)", subject)
    if not found:
        raise RuntimeError("the instance certificate names no tenancy (opc-tenant:...)")
    return found.group(1)


def sha1_fingerprint(cert_pem: str) -> str:
    digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(cert_pem.strip() + "\n")).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def endpoints(conf: dict[str, Any], base: str) -> tuple[str, str]:
    """The auth service and Compute (iaas) endpoints: the region's, from the metadata service, unless api_base
    points both elsewhere (llmdeploy local's stand-in)."""
    if conf.get("api_base"):
        return conf["api_base"], conf["api_base"]
    info = json.loads(imds(base, "instance/regionInfo"))
    region, realm = info["regionIdentifier"], info["realmDomainComponent"]
    return f"https://auth.{region}.{realm}", f"https://iaas.{region}.{realm}"


def act(conf: dict[str, Any], action: str) -> str:
    """Federate as the instance and send `action` (SOFTSTOP, or TERMINATE) for this instance; the response's
    lifecycleState or the HTTP status."""
    base = conf.get("metadata_url") or IMDS
    CA_FILE[:] = [conf["ca_file"]] if conf.get("ca_file") else []
    cert, key, intermediate = (imds(base, f"identity/{name}.pem") for name in ("cert", "key", "intermediate"))
    instance = imds(base, "instance/id").strip()
    auth, iaas = endpoints(conf, base)
    with tempfile.TemporaryDirectory(prefix="llmdeploy-autostop-") as tmp:  # 0700, removed at once
        key_file, session_file = os.path.join(tmp, "instance.pem"), os.path.join(tmp, "session.pem")
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(key)
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", session_file)
        session_public = _openssl("pkey", "-in", session_file, "-pubout").decode()
        body = json.dumps({"certificate": pem_body(cert), "publicKey": pem_body(session_public),
                           "intermediateCertificates": [pem_body(intermediate)]}).encode()
        url = f"{auth}/v1/x509"
        key_id = f"{tenancy_of(cert)}/fed-x509/{sha1_fingerprint(cert)}"
        token = json.loads(_request("POST", url, sign("POST", url, body, key_id, key_file), body))["token"]
        quoted = urllib.parse.quote(instance, safe="")
        if action == "TERMINATE":
            method, url, body = "DELETE", f"{iaas}/20160918/instances/{quoted}?preserveBootVolume=true", b""
        else:
            method, url, body = "POST", f"{iaas}/20160918/instances/{quoted}?action={action}", b""
        answer = _request(method, url, sign(method, url, body, f"ST${token}", session_file), body or None)
    try:
        return str(json.loads(answer).get("lifecycleState", "accepted"))
    except ValueError:
        return "accepted"


# ---------------------------------------------------------------------------------------------- one run

def _load(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(path: str, value: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def ttl_start(conf: dict[str, Any], ready_since: float | None, now: float) -> float | None:
    """When the TTL began: the first time the VM was seen ready, kept across reboots."""
    if ready_since is None:
        return None
    kept = _load(conf["ttl_file"]).get("since")
    if isinstance(kept, (int, float)):
        return float(kept)
    _save(conf["ttl_file"], {"since": now})
    return now


def run_once(conf: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    state = _load(conf["state_file"])
    state.update(idle_minutes=conf.get("idle_minutes", 0), ttl_hours=conf.get("ttl_hours", 0),
                 action=conf["action"], checked=now)
    ready = _mtime(conf["ready_marker"])
    logged = new_activity(conf["usage_log"], state)
    streams = open_streams(int(conf["engine_port"]))
    state["open_streams"] = streams
    reason = decide(conf, state, now, ready, logged or streams > 0, ttl_start(conf, ready, now))
    if reason and now - float(state.get("sent_at", 0)) >= RESEND_AFTER_S:
        try:
            state["result"] = act(conf, conf["action"])
            state["sent_at"] = now
            print(f"autostop: {reason} deadline reached; {conf['action']} sent: {state['result']}", flush=True)
        except (OSError, urllib.error.URLError, subprocess.CalledProcessError, RuntimeError, KeyError,
                ValueError) as exc:
            code = getattr(exc, "code", "")
            state["result"] = f"failed: {type(exc).__name__} {code}".strip()
            print(f"autostop: {reason} deadline reached; {conf['action']} failed: {exc}", file=sys.stderr, flush=True)
    _save(conf["state_file"], state)
    return state


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: llmdeploy-autostop CONFIG.json", file=sys.stderr)
        return 2
    run_once(_load(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
