"""Stand-ins for BioChatter Next's two containers (chatUi biochatter-next), which cannot be pulled here, each set up
from the rendered unit's own `docker run` line: its address and port, its -e settings and its --env-file.

What each does is what upstream's does with a request (read in biochatter-next's app/api/common.ts and
app/api/openai/[...path]/route.ts, and biochatter-server's app.py and src/llm_auth.py):
- the client (Next.js, basePath /biochatter-next) answers its page under the basePath, redirects the basePath with a
  "/" added to the one without (308, as Next does), and passes POST <basePath>/api/openai/<allowed path> on to the
  server at BASE_URL with the browser's own Authorization header (none here);
- the server answers /docs, and for POST /v1/chat/completions asks the engine at OPENAI_BASE_URL, with the client's
  Authorization key if one came, else its own OPENAI_API_KEY, and the model OPENAI_MODEL.
Both record every request they get, so a test reads what the real ones would have received.
"""
from __future__ import annotations

import json
import shlex
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

from .stubserver import StubHandler, StubState, running

BASE_PATH = "/biochatter-next"  # upstream's next.config.mjs basePath
ALLOWED = ("v1/chat/completions", "v1/models")  # the OpenaiPath values the client's route passes on
_VALUED = {"--name", "--network", "--env-file", "-e", "-v", "-p"}


@dataclass(frozen=True)
class DockerRun:
    env: dict[str, str]  # -e NAME=VALUE, then the --env-file's lines
    image: str
    command: list[str]


def docker_run(unit: str) -> DockerRun:
    """The unit's ExecStart `docker run ...`, read as Docker reads it (the env file read now, as Docker does)."""
    line = unit.split("\nExecStart=", 1)[1].split("\nExecStop=", 1)[0].replace("\\\n", " ")
    argv = shlex.split(line)
    assert argv[:2] == ["/usr/bin/docker", "run"], argv
    env: dict[str, str] = {}
    i = 2
    while argv[i].startswith("-"):
        option = argv[i]
        value = argv[i + 1] if option in _VALUED else ""
        if option == "-e":
            name, _, setting = value.partition("=")
            env[name] = setting
        elif option == "--env-file":
            for text in Path(value).read_text().splitlines():
                name, _, setting = text.partition("=")
                env[name] = setting
        i += 2 if option in _VALUED else 1
    return DockerRun(env, argv[i], argv[i + 1:])


@dataclass
class NextState(StubState):
    run: DockerRun | None = None
    forwarded: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (url, headers) sent on


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy from the env
    try:
        with opener.open(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as failed:
        return failed.code, failed.read()


class _Client(StubHandler[NextState]):
    def do_GET(self) -> None:
        self.arrive()
        if self.path == BASE_PATH + "/":
            self.send_response(308)
            self.send_header("Location", BASE_PATH)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
        elif self.path == BASE_PATH or self.path.startswith(BASE_PATH + "/"):
            self.send_body(200, b"<!doctype html><title>BioChatter Next</title><div id=\"__next\"></div>", "text/html")
        else:
            self.send_body(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        body = self.arrive()
        prefix = f"{BASE_PATH}/api/openai/"
        sub = self.path[len(prefix):] if self.path.startswith(prefix) else ""
        if sub not in ALLOWED:
            self.send_json(403, {"error": True, "msg": f"you are not allowed to request {sub or self.path}"})
            return
        assert self.state.run is not None
        url = f"{self.state.run.env['BASE_URL'].rstrip('/')}/{sub}"
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store",
                   "Authorization": self.headers.get("Authorization", "")}
        self.state.forwarded.append((url, headers))
        status, answer = _post(url, body, headers)
        self.send_body(status, answer, "application/json")


class _Server(StubHandler[NextState]):
    def do_GET(self) -> None:
        self.arrive()
        if self.path == "/docs":
            self.send_body(200, b"<!doctype html><title>Biochatter server API - Swagger UI</title>", "text/html")
        else:
            self.send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = self.arrive()
        if self.path != "/v1/chat/completions":
            self.send_json(404, {"detail": "Not Found"})
            return
        assert self.state.run is not None
        env = self.state.run.env
        asked = json.loads(body or b"{}")
        client_key = self.headers.get("Authorization", "").strip().replace("Bearer ", "")
        key = client_key or env.get("OPENAI_API_KEY", "")
        url = f"{env['OPENAI_BASE_URL'].rstrip('/')}/chat/completions"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        self.state.forwarded.append((url, headers))
        payload = {"model": env.get("OPENAI_MODEL") or asked.get("model", "gpt-3.5-turbo"),
                   "messages": asked.get("messages", [])}
        status, answer = _post(url, json.dumps(payload).encode(), headers)
        if status != 200:
            self.send_json(200, {"error": f"engine answered {status}", "code": 5000})
            return
        self.send_json(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer.decode()},
                                          "finish_reason": "stop"}], "usage": {}, "contexts": None, "code": 0})


def _bind(run: DockerRun, server: bool) -> tuple[str, int]:
    """Where the container listens: gunicorn's --bind (the server), HOSTNAME and PORT (Next's server.js)."""
    if server:
        host, _, port = run.command[run.command.index("--bind") + 1].rpartition(":")
        return host, int(port)
    return run.env["HOSTNAME"], int(run.env["PORT"])


@contextmanager
def _serve(handler: type[StubHandler[NextState]], run: DockerRun, server: bool) -> Iterator[NextState]:
    address = _bind(run, server)
    try:
        httpd = ThreadingHTTPServer(address, handler)
    except OSError as exc:
        raise AssertionError(f"{address[0]}:{address[1]} is taken on this machine ({exc}): BioChatter Next's "
                             "stand-ins listen where its containers would") from exc
    httpd.daemon_threads = False
    state = NextState(run=run, port=address[1], url=f"http://{address[0]}:{address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    with running(httpd):
        try:
            yield state
        finally:
            state.stop.set()


@contextmanager
def next_standins(server_unit: str, client_unit: str) -> Iterator[tuple[NextState, NextState]]:
    """(client, server), each listening where its rendered unit says, with that unit's settings."""
    with _serve(_Server, docker_run(server_unit), server=True) as server:
        with _serve(_Client, docker_run(client_unit), server=False) as client:
            yield client, server
