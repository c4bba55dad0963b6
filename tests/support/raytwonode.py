"""A 2-node Ray cluster behind the project's nginx, as the ray target builds it, for tests/integration/test_ray_cluster.py and
scripts/bench_ray_cluster.py.

The head and the worker each run in a network namespace of their own (tests/support/netns.py) with the ray
target's `ray start` commands and token env (llmdeploy.raycluster); before the real worker joins, a worker
without the token tries and is refused. The echo app (tests/support/ray_echo_app.py) is deployed with
`serve deploy` at two replicas, one per node at most, autoscaling 1..2 with short delays; the rendered nginx
site runs in the head's namespace in front of Serve's 127.0.0.1:8000, reached from here at the head's front
address. Timings (head up, worker joined, deploy to RUNNING, scale up, scale down, answering again after the
worker is killed) go into `timings`.
"""
from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from llmdeploy import raycluster
from llmdeploy.render import FILES_DIR, RAY_VENV as VM_RAY_VENV, render

from .endpoint import Endpoint, endpoint_config
from .netns import Netns, two_nodes
from .procs import start_process, stop_process, tail
from .raynodes import (ECHO_MODEL, Cluster, RayNode, echo_serve_config, make_token, node_env, ray_bin, running,
                       start_head, start_worker, wait_for)
from .site import site_endpoint

NUM_CPUS = 2  # per node: Serve's controller and proxy (head) plus one echo replica (0.5 CPU) fit
UPSCALE_DELAY_S, DOWNSCALE_DELAY_S = 1.0, 10.0
AUTOSCALING = {"min_replicas": 1, "initial_replicas": 2, "max_replicas": 2, "target_ongoing_requests": 1,
               "upscale_delay_s": UPSCALE_DELAY_S, "downscale_delay_s": DOWNSCALE_DELAY_S,
               "look_back_period_s": 2.0}
HEAD_UP_S, JOIN_S, DEPLOY_S = 90, 90, 120  # deadlines, far above what was measured here (9 s, 6 s, 15 s)
REFUSED_S = 60  # the intruder gives up when the GCS refuses it: measured about 10 s


@dataclass
class Refusal:
    """What a worker without the token got: its exit code, its log's tail and the nodes alive afterwards."""

    returncode: int | None
    log: str
    alive_after: int


@dataclass
class TwoNode:
    head_ns: Netns
    worker_ns: Netns
    cluster: Cluster
    head: RayNode
    worker: RayNode
    ep: Endpoint
    refusal: Refusal
    dashboard_without_token: int
    dashboard_with_token: int
    worker_node: str
    timings: dict[str, float] = field(default_factory=dict)

    def session(self) -> requests.Session:
        return self.ep.session()

    def chat(self, session: requests.Session, sleep: float = 0.0, timeout: float = 30.0) -> requests.Response:
        body = {"model": ECHO_MODEL, "messages": [{"role": "user", "content": "hello ray"}], "max_tokens": 4}
        return session.post(f"{self.ep.base}/v1/chat/completions?sleep={sleep}", json=body,
                            headers=self.ep.bearer("default"), timeout=timeout)

    def running_replicas(self) -> list[dict[str, Any]]:
        return self.cluster.replicas(raycluster_echo_app(), "echo")

    def wait_replicas(self, count: int, timeout: float, what: str) -> float:
        def check() -> str | None:
            replicas = self.running_replicas()
            return None if len(replicas) == count else f"{len(replicas)} RUNNING replica(s)"
        return wait_for(check, timeout, what, self.worker, interval=0.25)

    @contextmanager
    def load(self, clients: int, sleep: float) -> Iterator[list[int]]:
        """`clients` concurrent chat requests, each held `sleep` s by the replica, until the with-block ends:
        a bounded load (at most `clients` in flight). Yields the statuses seen so far."""
        stop, statuses = threading.Event(), []

        def client() -> None:
            with self.session() as s:
                while not stop.is_set():
                    try:
                        statuses.append(self.chat(s, sleep=sleep).status_code)
                    except requests.RequestException:
                        statuses.append(0)
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(clients):
                pool.submit(client)
            try:
                yield statuses
            finally:
                stop.set()


    def autoscale_cycle(self, up_s: float, down_s: float) -> list[int]:
        """Idle down to 1 replica, a bounded load (4 clients, 1.5 s each) until 2 replicas run (scale_up_s),
        then idle again down to 1 (scale_down_s). Returns the statuses the load saw."""
        self.wait_replicas(1, down_s + DOWNSCALE_DELAY_S, "idle: down to 1 replica")
        with self.load(clients=4, sleep=1.5) as statuses:
            self.timings["scale_up_s"] = self.wait_replicas(2, up_s, "under load: up to 2 replicas")
            time.sleep(3)  # both replicas serve some of the load
        self.timings["scale_down_s"] = self.wait_replicas(1, down_s, "after load: down to 1 replica")
        return list(statuses)

    def lose_worker(self, up_s: float, deadline_s: float) -> tuple[bool, list[int]]:
        """Under a bounded load, once 2 replicas run (one on the worker), kill the worker (its process group, by
        PID) and ask until 3 answers in a row are 200 or the deadline passes (answering_after_worker_lost_s).
        Returns whether a replica ran on the worker when it was killed, and every status seen after (0: none)."""
        with self.load(clients=4, sleep=1.0):
            self.wait_replicas(2, up_s, "under load before the kill: 2 replicas")
            on_worker = any(r["node_id"] == self.worker_node for r in self.running_replicas())
            self.worker.stop()
            killed = time.monotonic()
            statuses = self.statuses_until_answering(killed, deadline_s)
            self.timings["answering_after_worker_lost_s"] = time.monotonic() - killed
        return on_worker, statuses

    def statuses_until_answering(self, since: float, deadline_s: float) -> list[int]:
        """Chat through nginx every 0.5 s until 3 answers in a row are 200 or deadline_s after `since`; every
        status seen (0: no answer)."""
        statuses: list[int] = []
        with self.session() as s:
            while time.monotonic() - since < deadline_s and statuses[-3:] != [200, 200, 200]:
                try:
                    statuses.append(self.chat(s, timeout=10).status_code)
                except requests.RequestException:
                    statuses.append(0)
                time.sleep(0.5)
        return statuses

    def lose_head(self, deadline_s: float) -> tuple[list[int], int | None]:
        """The head's `ray start` is SIGKILLed; then what the head's two units do under systemd (shown for real in
        tests/integration/test_ray_units_systemd.py): the rest of the node's processes end (KillMode=), the head
        starts again after the rendered RestartSec (Restart=always), and the app's oneshot, restarted with it
        (PartOf=), runs its rendered ExecStart, the retry loop around `serve deploy`. Asks chat through nginx until
        3 answers in a row are 200 or deadline_s after the kill (answering_after_head_lost_s). Returns every
        status seen after the kill (0: none) and the deploy loop's exit code (None: still running)."""
        head_unit, app_unit = rendered_head_units()
        self.head.crash_and_clean_up()
        killed = time.monotonic()
        time.sleep(restart_sec(head_unit))
        self.head.restart()
        argv = app_unit_exec_start(app_unit, self.cluster.work / "serve-app.yaml")
        deploy = start_process(self.head_ns.command(argv), self.cluster.work / "ray-serve-app.log",
                               env=node_env(self.cluster.token_path))
        try:
            statuses = self.statuses_until_answering(killed, deadline_s)
            self.timings["answering_after_head_lost_s"] = time.monotonic() - killed
            try:
                deployed: int | None = deploy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                deployed = None
        finally:
            stop_process(deploy)
        return statuses, deployed


def rendered_head_units() -> tuple[str, str]:
    """ray-head.service and ray-serve-app.service as the ray target renders them for the test's site."""
    head = render(endpoint_config(**ray_site(ECHO_MODEL)))
    return head.file(f"{FILES_DIR}/ray-head.service").content, head.file(f"{FILES_DIR}/ray-serve-app.service").content


def restart_sec(unit: str) -> float:
    (value,) = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("RestartSec=")]
    return float(value)


def app_unit_exec_start(unit: str, config: Path) -> list[str]:
    """The app unit's ExecStart (systemd's $$ is a $), with the VM's serve and config path replaced by this
    cluster's: the unit's own retry loop around `serve deploy`."""
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart=").replace("$$", "$"))
    on_vm = shlex.join(raycluster.serve_deploy_command(f"{VM_RAY_VENV}/bin/serve"))
    assert on_vm in argv[-1], argv
    argv[-1] = argv[-1].replace(on_vm, shlex.join(raycluster.serve_deploy_command(ray_bin("serve"), str(config))))
    return argv


def ray_site(model_name: str) -> dict[str, object]:
    """Config of a ray stack (as Pulumi.ray-a10.yaml) whose site fronts the test's Serve app: the ray target's
    nginx (its routes, its health check on /v1/models/NAME, Serve's port)."""
    return {"target": "ray", "engine": "vllm", "shape": "VM.GPU.A10.2", "rayWorkers": 1, "os": "ubuntu-24.04",
            "vllmModel": "Qwen/Qwen2.5-0.5B-Instruct", "modelName": model_name, "llamacppModelUrl": None,
            "rateLimitBurst": 100}


def node_ids(cluster: Cluster) -> set[str]:
    return {n["raylet"]["nodeId"] for n in cluster.alive_nodes()}


def raycluster_echo_app() -> str:
    return echo_serve_config({})["applications"][0]["name"]


def _refused_worker(head: Netns, worker_ns: Netns, cluster: Cluster, work: Path) -> Refusal:
    """A worker started without the token (as an intruder on the cluster subnet would be): it must exit."""
    intruder = start_worker(worker_ns, head.ip, None, work / "intruder.log", NUM_CPUS)
    with running(intruder):
        try:
            code: int | None = intruder.proc.wait(REFUSED_S)
        except Exception:  # still running: the assertion on returncode reports it
            code = None
    return Refusal(code, tail(intruder.log, 60), len(cluster.alive_nodes()))


def _deploy(cluster: Cluster, head_node: RayNode, work: Path) -> float:
    config = work / "serve-app.yaml"
    config.write_text(yaml.safe_dump(echo_serve_config(AUTOSCALING), sort_keys=False))
    started = time.monotonic()
    result = cluster.serve_deploy(config)
    assert result.returncode == 0, f"serve deploy failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    app = raycluster_echo_app()

    def check() -> str | None:
        status = cluster.serve_app(app).get("status")
        replicas = cluster.replicas(app, "echo")
        return None if status == "RUNNING" and len(replicas) == 2 else f"app {status}, {len(replicas)} replicas"
    wait_for(check, DEPLOY_S, "echo app RUNNING with 2 replicas", head_node)
    return time.monotonic() - started


@contextmanager
def two_node_cluster(work: Path) -> Iterator[TwoNode]:
    """The whole cluster, every process and namespace stopped by PID when the with-block ends."""
    timings: dict[str, float] = {}
    with ExitStack() as stack:
        head_ns, worker_ns, front = stack.enter_context(two_nodes(work))
        token = make_token(work)
        cluster = Cluster(head_ns, token, work)
        started = time.monotonic()
        head = stack.enter_context(running(start_head(head_ns, token, work / "head.log", NUM_CPUS)))
        wait_for(lambda: None if len(cluster.alive_nodes()) == 1 else "head not listed yet", HEAD_UP_S,
                 "head up", head)
        timings["head_up_s"] = time.monotonic() - started
        head_node = node_ids(cluster)
        without, with_token = cluster.dashboard("/api/version", token=False)[0], cluster.dashboard("/api/version")[0]
        refusal = _refused_worker(head_ns, worker_ns, cluster, work)
        started = time.monotonic()
        worker = stack.enter_context(running(start_worker(worker_ns, head_ns.ip, token, work / "worker.log",
                                                          NUM_CPUS)))
        wait_for(lambda: None if len(cluster.alive_nodes()) == 2 else f"{len(cluster.alive_nodes())} node(s)",
                 JOIN_S, "worker joined", worker)
        timings["worker_join_s"] = time.monotonic() - started
        (worker_node,) = node_ids(cluster) - head_node
        timings["deploy_to_running_s"] = _deploy(cluster, head, work)
        ep = stack.enter_context(site_endpoint(work / "site", raycluster.PORTS.serve,
                                               netns=(front, head_ns.command([])), **ray_site(ECHO_MODEL)))
        yield TwoNode(head_ns, worker_ns, cluster, head, worker, ep, refusal, without, with_token, worker_node,
                      timings)
