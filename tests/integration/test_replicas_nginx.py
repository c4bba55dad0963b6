"""`replicas: N` for real: the rendered site (replicas 2) in a real nginx in front of two real llama.cpp servers,
the head's on 127.0.0.1 and the replica's on 127.0.0.2 (the same port, as on the VMs; the replica's private IP in
the upstream is swapped for that loopback address). Requests spread over both (least_conn); with one killed
(SIGKILL, by PID) every request still answers, nginx tries the dead server at most max_fails times (passive
health checks), and `llmdeploy smoke` passes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
import re
from pathlib import Path

import pytest

from llmdeploy import addresses
from support.endpoint import Endpoint
from support.llamaserver import LlamaServer, llama_server
from support.ports import free_port, port_open
from support.site import site_endpoint
from support.tinymodel import write_tiny_gguf

REPLICA_HOST = "127.0.0.2"  # the replica's stand-in for its private IP: loopback too, and the same port


def _with_upstream_log(site: str, log: Path) -> str:
    """The rendered site plus a log of which server answered each request (what the test observes), written
    beside the site's own usage log (a server's access_log replaces the http level's)."""
    usage_log = re.search(r"\n( +access_log \S+ llmdeploy_usage;\n)", site)
    assert usage_log, "the API server's access_log"
    ours = usage_log.group(1) + usage_log.group(1).replace("llmdeploy_usage", "llmdeploy_upstreams").replace(
        usage_log.group(1).split()[1], str(log))
    return "log_format llmdeploy_upstreams '$upstream_addr $status';\n" + site.replace(usage_log.group(1), ours, 1)


@pytest.fixture
def two_engines(tmp_path: Path) -> Iterator[tuple[Endpoint, LlamaServer, LlamaServer, Path]]:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    port = free_port()
    log = tmp_path / "upstreams.log"
    replica_ip = addresses.worker_ip(0)
    with llama_server(model, port=port, alias="tiny", parallel=1, log_dir=tmp_path) as head, \
            llama_server(model, port=port, alias="tiny", parallel=1, log_dir=tmp_path / "replica",
                         host=REPLICA_HOST) as replica:
        def edit(site: str) -> str:
            assert f"server {replica_ip}:{port} " in site
            return _with_upstream_log(site.replace(f"{replica_ip}:{port}", f"{REPLICA_HOST}:{port}"), log)
        with site_endpoint(tmp_path / "site", port, edit=edit, replicas=2) as ep:
            yield ep, head, replica, log


def _chat(ep: Endpoint, n: int) -> list[int]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with ep.session() as s:
        return [s.post(f"{ep.base}/v1/chat/completions", json=body, headers=ep.bearer("default"),
                       timeout=60).status_code for _ in range(n)]


def wait_closed(host: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while port_open(port, host) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_open(port, host), f"{host}:{port} still accepts connections after SIGKILL"


def _tried(log: Path) -> list[list[str]]:
    """Per request answered 200, the servers nginx tried in order ($upstream_addr: "a:p, b:p"); the last answered."""
    return [line.rsplit(" ", 1)[0].split(", ") for line in log.read_text().splitlines() if line.endswith(" 200")]


def _served(log: Path) -> Counter[str]:
    return Counter(servers[-1] for servers in _tried(log))


def test_requests_spread_over_both_engines(two_engines: tuple[Endpoint, LlamaServer, LlamaServer, Path]) -> None:
    ep, head, replica, log = two_engines
    assert _chat(ep, 20) == [200] * 20
    served = _served(log)
    head_addr, replica_addr = f"127.0.0.1:{head.port}", f"{REPLICA_HOST}:{replica.port}"
    assert set(served) == {head_addr, replica_addr} and min(served.values()) >= 5, served


def test_keeps_answering_when_one_engine_is_killed(
        two_engines: tuple[Endpoint, LlamaServer, LlamaServer, Path], tmp_path: Path) -> None:
    ep, head, replica, log = two_engines
    assert _chat(ep, 4) == [200] * 4
    os.kill(replica.pid, signal.SIGKILL)  # the replica's VM gone: connections to it are refused (reaped at exit)
    wait_closed(REPLICA_HOST, replica.port)
    log.write_text("")
    assert _chat(ep, 20) == [200] * 20
    assert set(_served(log)) == {f"127.0.0.1:{head.port}"}
    # Passive health check: the dead server is tried at most max_fails (2) times, then passed over.
    dead = f"{REPLICA_HOST}:{replica.port}"
    assert sum(servers.count(dead) for servers in _tried(log)) <= 2, log.read_text()
    # smoke, as a user runs it, through TLS, the key and the upstream with one engine down
    env = {**os.environ, "LLMDEPLOY_API_KEY": ep.keys["default"]}
    result = subprocess.run([sys.executable, "-m", "llmdeploy.cli", "smoke", ep.base, "--ca-bundle", ep.ca,
                             "--http-url", ep.http_base, "--model", "tiny", "--timeout", "60"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
