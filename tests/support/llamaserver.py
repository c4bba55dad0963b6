"""Run a real llama.cpp OpenAI-compatible server on loopback for integration tests.

Why: tests of the deployment (proxy config, auth, streaming) need a real llama.cpp server
answering /health, /v1/models, /v1/chat/completions and /v1/completions, with SSE streams.

How xllamacpp exposes its server (found by inspecting the installed wheel, `pip show -f
xllamacpp`): it ships no `llama-server` binary and no console script, only the extension module
`xllamacpp/xllamacpp.abi3.so`. Its `xllamacpp.Server(params: CommonParams)` class loads the
model and starts llama.cpp's own C++ HTTP server in the creating process (address in
`server.listening_address`; host and port from `params.hostnames` / `params.port`); deleting the
object stops it. The VM's launcher (templates/files/llamacpp-server.py.j2) does that in a process
of its own; `llama_server()` renders and runs that same launcher (1 thread, small context) in its own
process group, waits for GET /health == 200 and stops it by PID.

Note: llama.cpp's SSE responses carry `X-Accel-Buffering: no`, which makes nginx stream even
without `proxy_buffering off`; use `sse_backend.py` to test a proxy's buffering settings.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from .ports import LOOPBACK, free_port
from .procs import start_process, stop_process, wait_until


def launcher_script(dest_dir: Path) -> Path:
    """The VM's own llama.cpp launcher, rendered from templates/, so tests run what the VM runs."""
    from llmdeploy.render import _ENV

    script = Path(dest_dir) / "llamacpp-server.py"
    script.write_text(_ENV.get_template("files/llamacpp-server.py.j2").render(engine={"port": 8080}))  # what the template reads: engine.port
    return script


@dataclass(frozen=True)
class LlamaServer:
    """A running llama.cpp server: base URL (no trailing slash), port, PID, model alias, log."""

    url: str
    port: int
    pid: int
    alias: str
    log_path: Path


def _child_command(script: Path, model_path: Path, port: int, alias: str, n_ctx: int, seed: int,
                   parallel: int = 2, host: str = LOOPBACK) -> list[str]:
    return [
        sys.executable, str(script),
        "--model", str(model_path), "--host", host, "--port", str(port), "--alias", alias,
        "--ctx-size", str(n_ctx), "--parallel", str(parallel), "--threads", "1", "--seed", str(seed),
    ]  # fmt: skip


def health_probe(url: str) -> str | None:
    """None if GET {url}/health answers 200, else a description of what it answered."""
    session = requests.Session()
    session.trust_env = False  # ignore proxy and CA-bundle variables from the environment
    try:
        response = session.get(f"{url}/health", timeout=1.0)
    except requests.RequestException as exc:
        return f"GET /health failed: {exc.__class__.__name__}: {exc}"
    finally:
        session.close()
    if response.status_code == 200:
        return None
    return f"GET /health -> {response.status_code} {response.text[:200]!r}"


@contextmanager
def llama_server(
    model_path: Path,
    port: int | None = None,
    alias: str = "tiny",
    n_ctx: int = 512,
    seed: int = 42,
    timeout: float = 60.0,
    log_dir: Path | None = None,
    parallel: int = 2,
    host: str = LOOPBACK,
) -> Iterator[LlamaServer]:
    """Start llama.cpp on `host` (127.0.0.1; any 127/8 address is loopback too) serving `model_path` as `alias`
    with `parallel` slots (n_ctx shared between them); stop it on exit."""
    port = port or free_port(host)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log_path = Path(log_dir or tmp) / f"llama-server-{port}.log"
        script = launcher_script(Path(tmp))
        proc = start_process(_child_command(script, Path(model_path), port, alias, n_ctx, seed, parallel, host),
                             log_path)
        try:
            url = f"http://{host}:{port}"
            wait_until(lambda: health_probe(url), proc, timeout, f"llama server on port {port}", log_path)
            yield LlamaServer(url=url, port=port, pid=proc.pid, alias=alias, log_path=log_path)
        finally:
            stop_process(proc)
