"""The model server itself, a process of its own (hostsrv.start_model_server starts it with
`python -m llmdeploy.local.modelserver`): the files of its folder by name (the GGUF file llamacppModelUrl names),
a stand-in of the Hugging Face Hub for its <org>/<name>/ subfolders (the routes huggingface_hub calls; with a token,
every request needs it, as for a gated repository), and a PEP 503 simple index of its wheel folders (the
stack's torchIndexUrl). See hostsrv.py for how the guest reaches it."""
from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import http.server
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import Failure

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


if __name__ == "__main__":
    main()
