"""The servers on this machine that the guest reaches: in the QEMU VM at 10.0.2.2 (QEMU's user-mode network
maps that address to the host's loopback, where they listen); in the systemd container at the host side of
its veth pair (where they listen instead, see nspawn.py):

- the model server: an HTTP server holding the GGUF file the stack's llamacppModelUrl names
  (the guest has no model hub; the tiny model is written here, or `--model-file` serves a real one), and a
  stand-in of the Hugging Face Hub (the stack's hfEndpoint) for the repositories in its folder's <org>/<name>/
  subfolders: the routes huggingface_hub calls (hf_api.py model_info, list_repo_tree, get_paths_info;
  file_download.py's HEAD and GET of /{repo}/resolve/{rev}/{file}, with X-Repo-Commit, ETag and Content-Length).
  When the stack has an hfToken it answers as the Hub does for a gated repository: every file and route needs
  `Authorization: Bearer <token>` (401 with X-Error-Code GatedRepo without it), and it logs each decision,
  never the token;
  and a PEP 503 simple index (/simple/<project>/, files at /wheels/<name>) of the wheels in its wheel folders
  (pip's find-links on this machine, or `--torch-wheels`): the stack's torchIndexUrl, so that the guest gets this
  machine's CPU torch instead of reaching download.pytorch.org;
- pebble, Let's Encrypt's ACME test server, with pebble-challtestsrv as its DNS (every name answers
  127.0.0.1): certbot in the guest talks to pebble at https://10.0.2.2:PORT/dir, and pebble's http-01
  validation reaches the guest's nginx through the loopback port forwarded to the guest's port 80.
  Debian's pebble ships no listener certificate: one is issued here by a CA made for this VM, which the
  guest trusts through extraCaCerts (cloud-init ca_certs). Pebble's issuing root changes on every start,
  so it is saved when pebble starts: the smoke test trusts it.

Each is a detached process stopped by PID (procs.py).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import http.server
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import Failure
from ..private_files import write_private
from . import procs
from .qemu import free_ports

GUEST_HOST_IP = "10.0.2.2"  # the host, as QEMU's user-mode network shows it to the guest
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}


class HostServerError(Failure):
    pass


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ports(ports: list[int], pid: int, what: str, log: Path, timeout: float = 20.0,
               host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            raise HostServerError(f"{what} exited at once; last lines of {log}:\n{procs.tail(log, 15)}")
        if all(port_open(p, host) for p in ports):
            return
        time.sleep(0.1)
    raise HostServerError(f"{what} did not listen on {host} port(s) {ports} within {timeout:.0f}s; last lines of "
                          f"{log}:\n{procs.tail(log, 15)}")


# ---------------------------------------------------------------------------------------------- model server

@dataclass(frozen=True)
class ModelServer:
    pid: int
    port: int
    folder: Path
    guest_host: str = GUEST_HOST_IP  # this machine as the guest reaches it

    @property
    def guest_simple_index(self) -> str:
        """Its PEP 503 index of this machine's wheel folders, as the guest reaches it."""
        return f"{self.guest_endpoint}/simple"

    @property
    def guest_endpoint(self) -> str:
        """Its base URL as the guest reaches it: the stack's hfEndpoint when it stands in for the Hub."""
        return f"http://{self.guest_host}:{self.port}"

    def guest_url(self, filename: str) -> str:
        return f"{self.guest_endpoint}/{filename}"


def start_model_server(folder: Path, log: Path, token: str = "", host: str = "127.0.0.1",
                       port: int = 0, guest_host: str = GUEST_HOST_IP,
                       wheel_dirs: tuple[Path, ...] = ()) -> ModelServer:
    """Serve `folder` over HTTP on a free port of `host` (loopback for QEMU; the guest reaches it as
    `guest_host`): its files by name, and its <org>/<name>/ folders as
    Hugging Face repositories (HubHandler). With a token (the stack's hfToken), every request needs
    `Authorization: Bearer <token>`; the token reaches the server in a private file, never on its command line."""
    port = port or free_ports(1)[0]
    cmd = [sys.executable, "-m", "llmdeploy.local.hostsrv", "--folder", str(folder), "--host", host,
           "--port", str(port)]
    if token:
        token_file = log.with_name(log.name + ".token")
        write_private(token_file, token.encode())
        cmd += ["--token-file", str(token_file)]
    for wheels in wheel_dirs:
        cmd += ["--wheels", str(wheels)]
    package_root = str(Path(__file__).resolve().parents[2])  # llmdeploy's parent: the child imports this module
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    pid = procs.start_daemon(cmd, log, env=env)
    try:
        wait_ports([port], pid, "the model server", log, host=host)
    except BaseException:
        procs.stop(pid, str(folder))
        raise
    return ModelServer(pid, port, folder, guest_host)


# ---------------------------------------------------------------------------------------------- Hugging Face stand-in

_REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
_HUB_ROUTES = {
    "info": re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"),
    "tree": re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$"),
    "paths": re.compile(rf"^/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)$"),
    "resolve": re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"),
}
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SIMPLE_RE = re.compile(r"^/simple/(?P<project>[A-Za-z0-9._-]+)/?$")


def normalize_project(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_index(dirs: tuple[Path, ...]) -> dict[str, dict[str, Path]]:
    """{normalized project: {wheel file name: path}} of the wheels in `dirs` (the first folder wins a name)."""
    index: dict[str, dict[str, Path]] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
            files = index.setdefault(normalize_project(path.name.split("-", 1)[0]), {})
            files.setdefault(path.name, path)
    return index


class HubError(Failure):
    """An answer the Hub gives as an error: status, X-Error-Code, X-Error-Message (huggingface_hub's
    hf_raise_for_status turns the code into RepositoryNotFoundError, GatedRepoError, EntryNotFoundError ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Repo:
    """A folder served as a Hub repository at one revision (main), whose commit hash derives from its files."""

    repo_id: str
    root: Path

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with open(self.root / path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def commit(self) -> str:
        text = "\n".join(f"{p} {self.sha256(p)}" for p in self.files())
        return hashlib.sha1(text.encode()).hexdigest()

    def entry(self, path: str) -> dict[str, object]:
        """A tree / paths-info entry, as the Hub's API gives it (RepoFile / RepoFolder in hf_api.py)."""
        full = self.root / path
        if full.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}
        size, sha = full.stat().st_size, self.sha256(path)
        return {"type": "file", "oid": hashlib.sha1(sha.encode()).hexdigest(), "size": size, "path": path,
                "lfs": {"oid": sha, "size": size, "pointerSize": 134}}


class HubHandler(http.server.BaseHTTPRequestHandler):
    """Plain files at /<name> (GET, HEAD); the Hub's routes for the <org>/<name>/ folders."""

    folder: Path = Path(".")
    token: str = ""
    wheel_dirs: tuple[Path, ...] = ()
    server_version = "llmdeploy-hub"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(body=False)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(body=True)

    def _dispatch(self, body: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        try:
            for name, pattern in _HUB_ROUTES.items():
                match = pattern.match(path)
                if match and (name == "paths") == (self.command == "POST"):
                    self._authorize(f"model {match['repo']}")
                    repo = self._repo(match["repo"], match.groupdict().get("rev") or "main")
                    getattr(self, f"_hub_{name}")(repo, match, parse_qs(url.query), body)
                    return
            if self.command == "POST":
                raise HubError(404, "", "Not Found")
            if path.startswith(("/simple/", "/wheels/")):
                self._pip_index(path, body)
                return
            self._static(path, body)
        except HubError as err:
            headers = {"X-Error-Code": err.code} if err.code else {}
            if err.code or err.status == 401:  # huggingface_hub reads both (utils/_http.py hf_raise_for_status)
                headers["X-Error-Message"] = err.message
            self._json({"error": err.message}, err.status, body, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- auth and lookup
    def _authorize(self, what: str) -> None:
        """With a token, only a request that carries it gets `what` (a file's path, or a repository); each
        decision is logged, never the token."""
        if not self.token:
            return
        path = self.path.split("?", 1)[0]
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            self._note(f"refused {path}: no bearer token")
            raise HubError(401, "GatedRepo", f"Access to {what} is restricted. You must have access to it "
                                             "and be authenticated to access it. Please log in.")
        if not hmac.compare_digest(given[len("Bearer "):].encode(), self.token.encode()):
            self._note(f"refused {path}: wrong bearer token")
            raise HubError(401, "", "Invalid credentials in Authorization header")
        self._note(f"authorized {path} (bearer token)")

    def _note(self, text: str) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {text}\n")
        sys.stderr.flush()

    def _repo(self, repo_id: str, rev: str) -> Repo:
        root = self.folder / repo_id
        if ".." in repo_id.split("/") or not root.is_dir():
            raise HubError(401, "RepoNotFound", "Repository not found")
        repo = Repo(repo_id, root)
        if rev not in ("main", repo.commit()):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    # -- the Hub's routes
    def _hub_info(self, repo: Repo, match: re.Match[str], query: dict[str, list[str]], body: bool) -> None:
        stamp = datetime.datetime.fromtimestamp(repo.root.stat().st_mtime, datetime.timezone.utc)
        when = stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = [{"rfilename": p, **({"size": repo.entry(p)["size"], "blobId": repo.entry(p)["oid"]}
                                        if blobs else {})} for p in repo.files()]
        self._json({"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                    "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": repo.commit(),
                    "lastModified": when, "createdAt": when, "private": False, "disabled": False,
                    "gated": "manual" if self.token else False, "downloads": 0, "likes": 0, "tags": [],
                    "library_name": "transformers", "siblings": siblings}, 200, body)

    def _hub_tree(self, repo: Repo, match: re.Match[str], query: dict[str, list[str]], body: bool) -> None:
        base = (match["path"] or "").strip("/")
        if base and not (repo.root / base).is_dir():
            raise HubError(404, "EntryNotFound", f"{base} does not exist on main")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        under = repo.root / base
        found = under.rglob("*") if recursive else under.iterdir()
        self._json([repo.entry(p.relative_to(repo.root).as_posix()) for p in sorted(found)], 200, body)

    def _hub_paths(self, repo: Repo, match: re.Match[str], query: dict[str, list[str]], body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        wanted = [p.strip("/") for p in form.get("paths", [])]
        self._json([repo.entry(p) for p in wanted if (repo.root / p).exists()], 200, body)

    def _hub_resolve(self, repo: Repo, match: re.Match[str], query: dict[str, list[str]], body: bool) -> None:
        path = match["path"]
        full = repo.root / path
        if ".." in path.split("/") or not full.is_file():
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}")
        self._file(full, body, {"X-Repo-Commit": repo.commit(), "ETag": f'"{repo.sha256(path)}"'})

    # -- the PEP 503 index of the wheel folders (pip sends no token: these are this machine's public wheels)
    def _pip_index(self, path: str, body: bool) -> None:
        index = wheel_index(self.wheel_dirs)
        if path.startswith("/wheels/"):
            name = path[len("/wheels/"):]
            found = [files[name] for files in index.values() if name in files]
            if not found:
                raise HubError(404, "", "Not Found")
            self._file(found[0], body, {})
            return
        if path.rstrip("/") == "/simple":
            links = [f'<a href="/simple/{p}/">{p}</a>' for p in sorted(index)]
        elif (match := _SIMPLE_RE.match(path)) and normalize_project(match["project"]) in index:
            files = index[normalize_project(match["project"])]
            links = [f'<a href="/wheels/{n}#sha256={_sha256(files[n])}">{n}</a>' for n in sorted(files)]
        else:
            raise HubError(404, "", "Not Found")  # pip then looks in its other indexes
        raw = ("<!DOCTYPE html>\n<html><body>\n" + "<br>\n".join(links) + "\n</body></html>\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if body:
            self.wfile.write(raw)

    # -- answers
    def _static(self, path: str, body: bool) -> None:
        name = path.lstrip("/")
        full = self.folder / name
        if not name or "/" in name or name.startswith(".") or not full.is_file():
            raise HubError(404, "", "Not Found")
        self._authorize(path)
        self._file(full, body, {})

    def _file(self, full: Path, body: bool, headers: dict[str, str]) -> None:
        size = full.stat().st_size
        start, end, status = 0, size - 1, 200
        if range_header := self.headers.get("Range"):
            match = _RANGE_RE.match(range_header.strip())
            if not match or not size:
                raise HubError(416, "", "Range Not Satisfiable")
            first, last = match.groups()
            start, end = (size - int(last), size - 1) if not first else (int(first), min(int(last or size - 1),
                                                                                         size - 1))
            status = 206
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                           "Content-Length": str(end - start + 1)}.items():
            self.send_header(key, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            with open(full, "rb") as fh:
                fh.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = fh.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)

    def _json(self, data: object, status: int, body: bool, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        for key, value in {**(headers or {}), "Content-Type": "application/json",
                           "Content-Length": str(len(raw))}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        # One line per request, never a header (the Authorization header stays out of the log).
        sys.stderr.write(f"{self.log_date_time_string()} {self.command} {self.path.split('?', 1)[0]} "
                         f"{args[1] if len(args) > 1 else ''}\n")


_SHA256: dict[tuple[str, float, int], str] = {}


def _sha256(path: Path) -> str:
    """A wheel's sha256 for pip's hash check, computed once per file version."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def serve(folder: Path, host: str, port: int, token: str = "", wheel_dirs: tuple[Path, ...] = ()) -> None:
    handler = type("Handler", (HubHandler,), {"folder": folder.resolve(), "token": token,
                                              "wheel_dirs": tuple(d.resolve() for d in wheel_dirs)})
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="llmdeploy's model server: files and a Hugging Face Hub stand-in")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--token-file", type=Path, help="the Bearer token the Hub routes require")
    parser.add_argument("--wheels", type=Path, action="append", default=[],
                        help="a folder of wheels served as a PEP 503 index at /simple/")
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else ""
    sys.stderr.write(f"serving {args.folder} on {args.host}:{args.port}{', bearer token required' if token else ''}\n")
    sys.stderr.flush()
    serve(args.folder, args.host, args.port, token, tuple(args.wheels))


# ---------------------------------------------------------------------------------------------- pebble

@dataclass(frozen=True)
class PebbleServer:
    pid: int
    challtestsrv_pid: int
    challtestsrv_marker: str
    directory_url: str  # as the guest reaches it
    listener_ca_pem: str  # the guest trusts this for the ACME API
    root_pem: str  # the root pebble signs this run's certificates with (the smoke test trusts it)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(obj: x509.Certificate) -> str:
    return obj.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def listener_certificate(folder: Path, guest_host: str = GUEST_HOST_IP) -> tuple[Path, Path, str]:
    """A CA and a leaf for pebble's listener naming the guest's address of this machine (10.0.2.2 for QEMU),
    127.0.0.1 and localhost: (cert, key, CA PEM)."""
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmdeploy local ACME listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(guest_host)),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmdeploy local ACME")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = folder / "listener.pem", folder / "listener.key"
    cert_path.write_text(_pem(leaf))
    write_private(key_path, _key_pem(leaf_key))
    (folder / "listener-ca.pem").write_text(_pem(ca))
    return cert_path, key_path, _pem(ca)


def start_pebble(folder: Path, http_port: int, bind: str = "127.0.0.1",
                 guest_host: str = GUEST_HOST_IP) -> PebbleServer:
    """pebble + challtestsrv on free loopback ports, pebble's ACME API on `bind` (where the guest reaches it as
    `guest_host`); http-01 validation goes to 127.0.0.1:http_port."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for tool in ("pebble", "pebble-challtestsrv"):
        if not any((Path(d) / tool).is_file() for d in os.environ.get("PATH", "").split(os.pathsep)):
            raise HostServerError(f"{tool} is not installed: apt-get install pebble (scripts/setup.sh installs it); "
                                  "or use tlsMode self-signed for the local stack")
    cert, key, ca_pem = listener_certificate(folder, guest_host)
    acme, management, dns, dns_management, tls_port = free_ports(5)
    config = folder / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"{bind}:{acme}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}, indent=2))
    dns_marker = f"127.0.0.1:{dns_management}"
    log_dns, log_pebble = folder / "challtestsrv.log", folder / "pebble.log"
    dns_pid = procs.start_daemon(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns}",
         "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", dns_marker], log_dns)
    pebble_pid = 0
    try:
        wait_ports([dns, dns_management], dns_pid, "pebble-challtestsrv", log_dns)
        pebble_pid = procs.start_daemon(["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
                                        log_pebble, env={**os.environ, **PEBBLE_ENV})
        wait_ports([acme], pebble_pid, "pebble", log_pebble, host=bind)
        wait_ports([management], pebble_pid, "pebble", log_pebble)
        with requests.Session() as session:
            session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
            resp = session.get(f"https://127.0.0.1:{management}/roots/0", verify=str(folder / "listener-ca.pem"),
                               timeout=10)
            resp.raise_for_status()
            root = resp.text
    except BaseException:
        procs.stop(pebble_pid, str(config))
        procs.stop(dns_pid, dns_marker)
        raise
    (folder / "acme-root.pem").write_text(root)
    return PebbleServer(pebble_pid, dns_pid, dns_marker, f"https://{guest_host}:{acme}/dir", ca_pem, root)


if __name__ == "__main__":
    main()
