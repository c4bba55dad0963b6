"""A real Ray cluster on this machine: a head and a worker, each `ray start --block` in its own network namespace,
with token auth, stopped by PID; the dashboard and `serve deploy` reached from inside the head's namespace.

Why: the ray target's VMs run Ray with fixed ports and a cluster token; this runs the same commands, with the
Ray venv scripts/install_engines.py installs (`ray`), so the test proves what the VMs do. The token is in a file
(RAY_AUTH_TOKEN_PATH) and in curl's header file, never on a command line.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdeploy.local.paths import cache_root

from llmdeploy import raycluster

from .netns import Netns
from .procs import start_process, stop_process, tail

RAY_VENV = Path(os.environ.get("LLMDEPLOY_ENGINES_DIR") or cache_root() / "engines") / "ray"
SUPPORT = Path(__file__).resolve().parent  # holds ray_echo_app.py, on the nodes' PYTHONPATH
ECHO_APP = ECHO_MODEL = "echo"  # the Serve app's name, and the model name ray_echo_app.py answers to


def ray_bin(name: str, venv: Path = RAY_VENV) -> str:
    return str(venv / "bin" / name)


def node_env(token_path: Path | None) -> dict[str, str]:
    """The environment of a node's unit (raycluster.environment: token auth from a file, no usage stats), with
    the echo app importable. Without a token path: a node that knows nothing of the cluster's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(SUPPORT))
    if token_path is not None:
        env.update(raycluster.environment(str(token_path)))
    else:
        env.update(RAY_USAGE_STATS_ENABLED="0")
    return env


def echo_serve_config(autoscaling: dict[str, Any]) -> dict[str, Any]:
    """The ray target's `serve deploy` config (proxy on the head, bound to 127.0.0.1) with the echo app in place
    of the LLM app: one replica per node at most, so that two replicas must use both nodes."""
    shell = raycluster.serve_config(raycluster.LlmApp(model_id="echo", model_source="echo"))
    # max_ongoing_requests 2: Serve's proxy prefers the replica on its own node (the head) until that one is full.
    deployment = {"name": "echo", "max_replicas_per_node": 1, "max_ongoing_requests": 2,
                  "ray_actor_options": {"num_cpus": 0.5},
                  "autoscaling_config": autoscaling}
    app = {"name": ECHO_APP, "route_prefix": "/", "import_path": "ray_echo_app:app", "deployments": [deployment]}
    return {**{k: v for k, v in shell.items() if k != "applications"}, "applications": [app]}


@dataclass
class RayNode:
    ns: Netns
    proc: subprocess.Popen[bytes]
    log: Path
    temp_dir: Path
    argv: list[str] = field(default_factory=list)  # what started it: a restart runs it again
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> int:
        return stop_process(self.proc, grace=10.0)

    def crash_and_clean_up(self, grace: float = 10.0) -> None:
        """SIGKILL the node's `ray start --block` alone, as a crash would, then end every process it had started
        (GCS, raylet, dashboard, workers), as systemd's KillMode=control-group does: SIGTERM, a grace period,
        SIGKILL. The processes are the ones descended from it before the kill (its cgroup, on the VM)."""
        unit = descendants(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in unit:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in unit):
                time.sleep(0.2)

    def restart(self) -> None:
        """Start the node again with the same command, environment and temp dir (systemd's Restart=always)."""
        self.proc = start_process(self.argv, self.log, env=self.env)


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (children first found through /proc's children lists)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found += children
            queue += children
    return found


@dataclass
class Cluster:
    head_ns: Netns
    token_path: Path
    work: Path
    nodes: dict[str, RayNode] = field(default_factory=dict)
    header_file: Path = Path()

    def __post_init__(self) -> None:
        self.header_file = self.work / "auth-header"
        self.header_file.write_text(f"Authorization: Bearer {self.token_path.read_text().strip()}\n")
        self.header_file.chmod(0o600)

    def dashboard(self, path: str, token: bool = True) -> tuple[int, str]:
        """GET the dashboard (127.0.0.1 in the head's namespace) with curl; (status, body)."""
        auth = ["-H", f"@{self.header_file}"] if token else []
        result = subprocess.run(self.head_ns.command(
            ["curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}", *auth,
             f"{raycluster.dashboard_url()}{path}"]), capture_output=True, text=True, timeout=30)
        body, _, status = result.stdout.rpartition("\n")
        return int(status or 0), body

    def alive_nodes(self) -> list[dict[str, Any]]:
        status, body = self.dashboard("/nodes?view=summary")
        if status != 200:
            return []
        summary = json.loads(body).get("data", {}).get("summary", [])
        return [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]

    def serve_app(self, name: str) -> dict[str, Any]:
        status, body = self.dashboard("/api/serve/applications/")
        if status != 200:
            return {}
        return json.loads(body).get("applications", {}).get(name, {})

    def replicas(self, app: str, deployment: str) -> list[dict[str, Any]]:
        deployments = self.serve_app(app).get("deployments", {})
        return [r for r in deployments.get(deployment, {}).get("replicas", []) if r.get("state") == "RUNNING"]

    def serve_deploy(self, config: Path, venv: Path = RAY_VENV) -> subprocess.CompletedProcess[str]:
        """`serve deploy` as the head's oneshot unit runs it, the token from the node's file."""
        return subprocess.run(self.head_ns.command(raycluster.serve_deploy_command(ray_bin("serve", venv),
                                                                                   str(config))),
                              env=node_env(self.token_path), capture_output=True, text=True, timeout=120)


def start_head(ns: Netns, token_path: Path, log: Path, num_cpus: int, venv: Path = RAY_VENV,
               extra_env: dict[str, str] | None = None) -> RayNode:
    return start_node(ns, raycluster.head_command(ray_bin("ray", venv), ns.ip, num_cpus=num_cpus), token_path, log,
                      extra_env)


def start_worker(ns: Netns, head_ip: str, token_path: Path | None, log: Path, num_cpus: int) -> RayNode:
    return start_node(ns, raycluster.worker_command(ray_bin("ray"), ns.ip, head_ip, num_cpus=num_cpus),
                      token_path, log)


def start_node(ns: Netns, cmd: list[str], token_path: Path | None, log: Path,
               extra_env: dict[str, str] | None = None) -> RayNode:
    temp_dir = Path(tempfile.mkdtemp(prefix=f"ray-{ns.name}-", dir="/tmp"))  # short: Ray's socket paths
    argv, env = ns.command([*cmd, "--temp-dir", str(temp_dir)]), {**node_env(token_path), **(extra_env or {})}
    return RayNode(ns, start_process(argv, log, env=env), log, temp_dir, argv, env)


def wait_for(check: Callable[[], str | None], timeout: float, what: str, node: RayNode,
             interval: float = 0.2) -> float:
    """Poll until `check` returns None; the seconds it took. On timeout: what it last saw and the node's log."""
    started = time.monotonic()
    last = "nothing checked yet"
    while time.monotonic() - started < timeout:
        seen = check()
        if seen is None:
            return time.monotonic() - started
        last = seen
        if node.proc.poll() is not None:
            break
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {time.monotonic() - started:.0f} s; last seen: {last}\n"
                         f"--- {node.log} ---\n{tail(node.log)}")


@contextmanager
def running(node: RayNode) -> Iterator[RayNode]:
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.temp_dir, ignore_errors=True)


def make_token(work: Path) -> Path:
    """The cluster token, as the ray target delivers it: a root-only file."""
    token = secrets.token_hex(32)  # what `ray get-auth-token --generate` makes: 256 bits
    path = work / "ray-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path
