"""End to end, in the systemd container runtime: autostop with idleStopMinutes 1. `llmdeploy local up` of the local
example stack (llama.cpp on the tiny model; a self-signed certificate) with idleStopMinutes 1 starts its stand-in of
OCI's metadata service, auth service and Compute API (infra/llmdeploy/local/instance_services.py) and points the
guest's agent at it; the guest trusts its certificate as it trusts pebble's.

What it proves: the agent in the guest (its timer, the usage log, `ss`, openssl, urllib) federates as the
instance with the stand-in's identity certificate, and its signed SOFTSTOP for its own instance id, verified by the
stand-in, stops the guest by PID: after about a minute without requests it is gone. A slow stream through nginx
with a valid key keeps it up past that minute: the engine's port is served for it by the tests' slow SSE backend
(tests/support/sse_backend.py, one event a second) in place of llama.cpp, because the tiny model writes a whole
answer into the socket buffers in milliseconds, after which the VM has nothing left to do however slowly the
client reads (and then it is rightly idle). A request with a bad signature gets 401 and the guest stays up.
`llmdeploy status --json` shows the time left. What it does not prove: OCI's own IAM (the dynamic group and the
policy are checked under Pulumi mocks, tests/unit/test_pulumi_autostop.py) nor OCI's real endpoints and shutdown.

`down` runs when the module ends, also on failure (booted). About 3 minutes to boot, then 3 to 5 of waiting.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from typing import Any

import pytest
import requests

from test_local_vm import Vm, booted
from llmdeploy.local.runtime import of as runtime_of
from llmdeploy.polling import attempts
from support.project import ROOT

pytestmark = pytest.mark.e2e

STACK = "autostop"
STAND_IN = re.compile(r"OCI instance services stand-in: (https://\S+) \(pid (\d+)\)")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local example stack with idleStopMinutes 1 and a self-signed certificate (for 127.0.0.1)."""
    folder = tmp_path_factory.mktemp("autostop-project")
    shutil.copy(ROOT / "Pulumi.yaml", folder / "Pulumi.yaml")
    text = (ROOT / "Pulumi.local.yaml").read_text()
    text = text.replace("llmdeploy:tlsMode: letsencrypt", "llmdeploy:tlsMode: self-signed")
    text = re.sub(r"\n  llmdeploy:domain: .*", "", text)
    (folder / f"Pulumi.{STACK}.yaml").write_text(text.rstrip("\n") + "\n  llmdeploy:idleStopMinutes: 1\n")
    return folder


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory, project: Path, monkeypatch_module: None) -> Iterator[Vm]:
    yield from booted(tmp_path_factory, "nspawn", STACK)


@pytest.fixture(scope="module")
def monkeypatch_module(project: Path) -> Iterator[None]:
    """booted() runs `local up --project-dir ROOT`: point ROOT's stack lookup at the temporary project instead."""
    import test_local_vm
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_local_vm, "ROOT", project)
        # The console script runs this worktree's package (world.md: the installed one is /work/main's).
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parents[2] / "infra"),
                                                               os.environ.get("PYTHONPATH")])))
        yield


def alive(vm: Vm) -> bool:
    return runtime_of(vm.state).alive(vm.state)


def agent_state(vm: Vm) -> dict[str, object]:
    return json.loads(vm.sudo("cat /run/llmdeploy/autostop.json"))


def stand_in(vm: Vm) -> tuple[str, Path]:
    found = STAND_IN.search(vm.up_log)
    assert found, vm.up_log[-3000:]
    return found.group(1), vm.state.dir / "instance-services"


def test_a_bad_signature_is_refused_and_the_guest_stays_up(vm: Vm) -> None:
    url, folder = stand_in(vm)
    host_url = url  # the stand-in listens on the container's host-side address, reachable from here
    with requests.Session() as s:
        s.trust_env = False
        target = f"{host_url}/20160918/instances/{vm.state.instance_id}?action=STOP"
        forged = {"date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
                  "authorization": 'Signature version="1",keyId="ST$forged",algorithm="rsa-sha256",'
                                   'headers="date (request-target) host content-length content-type x-content-sha256",'
                                   'signature="AAAA"', "content-type": "application/json", "x-content-sha256":
                  "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}
        resp = s.post(target, data=b"", headers=forged, verify=str(folder / "listener-ca.pem"), timeout=10)
        assert resp.status_code == 401 and resp.json()["code"] == "NotAuthenticated"
        fed = s.post(f"{host_url}/v1/x509", json={"certificate": "x"}, verify=str(folder / "listener-ca.pem"),
                     timeout=10)
        assert fed.status_code == 401
    time.sleep(2)
    assert alive(vm) and "401 POST /20160918/instances/" in (folder / "instance-services.log").read_text()


def test_status_shows_the_time_left(vm: Vm) -> None:
    env = {**vm.env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    autostop: dict[str, Any] = {}
    for _ in attempts(60, 3):  # the agent first runs 30 s after boot; until then status says "not yet checked"
        done = subprocess.run(["llmdeploy", "status", "--stack", STACK, "--json"], env=env, capture_output=True,
                              text=True, timeout=120)
        autostop = json.loads(done.stdout)["autostop"]
        assert autostop is not None, done.stdout  # the agent's config is there from provisioning on
        if "seconds_left" in autostop:
            break
    assert autostop["action"] == "SOFTSTOP" and autostop.get("reason") == "idle", autostop
    assert 0 <= autostop["seconds_left"] <= 60


SSE_DIR = "/tmp/llmdeploy-test-sse"
SSE_RUN = f"""import sys, threading
sys.path.insert(0, {SSE_DIR!r})
from support.sse_backend import SSEBackend, _Server
_Server(SSEBackend(url="", port={{port}}, tokens=20, delay=1.0), threading.Event()).serve_forever()
"""


def slow_engine(vm: Vm) -> None:
    """The tests' slow SSE backend on the engine's port in the guest, in place of the engine (stopped)."""
    support = Path(__file__).parents[1] / "support"
    files = {"support/__init__.py": "", "support/ports.py": (support / "ports.py").read_text(),
             "support/sse_backend.py": (support / "sse_backend.py").read_text(),
             "run.py": SSE_RUN.replace("{port}", str(vm.state.engine_port))}
    writes = " && ".join(f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {SSE_DIR}/{name}"
                         for name, text in files.items())
    vm.sudo(f"systemctl stop {vm.unit} && mkdir -p {SSE_DIR}/support && {writes} && "
            f"systemd-run --unit llmdeploy-test-sse python3 {SSE_DIR}/run.py")
    for _ in attempts(30, every=0.5):
        if "200" in vm.sudo(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{vm.state.engine_port}/health || true"):
            return
    pytest.fail("the slow SSE backend did not answer in the guest")


class SlowStream:
    """A chat completion streamed through nginx with the stack's key from a backend that sends one event a
    second: the engine's connection stays open while it streams."""

    def __init__(self, vm: Vm, events: int) -> None:
        key = vm.state.api_keys()["default"]
        body = json.dumps({"model": vm.state.model_name, "stream": True, "max_tokens": events,
                           "messages": [{"role": "user", "content": "slowly"}]})
        raw = socket.create_connection(("127.0.0.1", vm.state.port(443)), timeout=30)
        self.sock = ssl.create_default_context(cafile=str(vm.state.ca_file)).wrap_socket(raw, server_hostname="localhost")
        self.sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
        self.first = self.sock.recv(4096)
        self.read = len(self.first)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.read += len(data)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(10)


def test_a_slow_stream_keeps_it_up_then_a_minute_idle_stops_it(vm: Vm) -> None:
    slow_engine(vm)
    stream = SlowStream(vm, events=400)
    try:
        assert b" 200 " in stream.first.split(b"\r\n", 1)[0], stream.first[:200]
        before = stream.read
        time.sleep(100)  # past the idle minute and a few of the agent's 15 s checks
        assert stream.read > before  # still streaming, event by event
        assert alive(vm), ("the guest stopped while a stream was open; stand-in log:\n"
                           + (stand_in(vm)[1] / "instance-services.log").read_text())
        state = agent_state(vm)
        assert int(str(state["open_streams"])) >= 1 and "sent_at" not in state
    finally:
        stream.close()
    closed = time.monotonic()
    for _ in attempts(300, every=2):
        if not alive(vm):
            break
    else:
        pytest.fail("the guest did not stop within 5 minutes of the stream's end")
    took = time.monotonic() - closed
    _, folder = stand_in(vm)
    log = (folder / "instance-services.log").read_text()
    print(f"\nguest stopped {took:.0f}s after the stream closed; stand-in log:\n{log}")
    assert "200 federation" in log and f"200 SOFTSTOP {vm.state.instance_id}: verified" in log
    assert "stopped" in log
    assert took >= 55  # a minute idle, not at once
