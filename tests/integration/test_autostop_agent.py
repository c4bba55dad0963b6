"""The autostop agent as it runs on the VM: its idle clock over a real usage log (and `ss` for open streams), and its
real instance-principal requests (openssl signatures, urllib over HTTPS) against the stand-in of OCI's metadata,
auth and Compute APIs that `llmdeploy local up` starts, which verifies them as OCI does
(infra/llmdeploy/local/instance_services.py)."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy import autostop_agent as agent
from llmdeploy.local.hostsrv import listener_certificate
from llmdeploy.local.instance_services import Services, serve


def conf_for(tmp_path: Path, **more: object) -> dict[str, object]:
    return {"idle_minutes": 1, "ttl_hours": 0, "action": "SOFTSTOP", "engine_port": 1,
            "usage_log": str(tmp_path / "usage.log"), "ready_marker": str(tmp_path / "ready"),
            "state_file": str(tmp_path / "run" / "autostop.json"), "ttl_file": str(tmp_path / "ttl.json"), **more}


def line(name: str, upstream: str) -> str:
    return json.dumps({"time": "t", "name": name, "status": 200, "upstream_time": upstream}) + "\n"


def test_only_a_valid_keys_request_that_reached_the_engine_resets_the_idle_clock(tmp_path: Path) -> None:
    conf = conf_for(tmp_path)
    log = tmp_path / "usage.log"
    log.write_text(line("alice", "0.1"))
    assert agent.run_once(conf, now=1000)["phase"] == "provisioning"  # not ready: nothing counts
    (tmp_path / "ready").touch()
    state = agent.run_once(conf, now=1010)
    assert state["idle_deadline"] == 1060 and state["reason"] == "idle"
    with log.open("a") as f:
        f.write(line("-", "0.1") + line("bob", "-"))  # no key; a key refused before the engine (no upstream)
    assert agent.run_once(conf, now=1030)["idle_deadline"] == 1060
    with log.open("a") as f:
        f.write(line("bob", "0.002"))
    assert agent.run_once(conf, now=1040)["idle_deadline"] == 1100


def test_the_ttl_counts_from_the_first_readiness_and_is_kept(tmp_path: Path) -> None:
    conf = conf_for(tmp_path, idle_minutes=0, ttl_hours=2)
    (tmp_path / "ready").touch()
    assert agent.run_once(conf, now=5000)["ttl_deadline"] == 5000 + 7200
    (tmp_path / "run" / "autostop.json").unlink()  # a reboot clears /run; the TTL's start stays
    assert agent.run_once(conf, now=6000)["deadline"] == 5000 + 7200


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[tuple[Services, str, str, list[str]]]:
    cert, key, ca_pem = listener_certificate(tmp_path / "tls", "127.0.0.1")
    (tmp_path / "ca.pem").write_text(ca_pem)
    stopped: list[str] = []
    done = threading.Event()

    def on_action(action: str) -> None:
        stopped.append(action)
        done.set()

    svc = Services("ocid1.instance.oc1..mine", on_action, log=lambda _: None)
    server = serve(svc, "127.0.0.1", 0, cert, key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield svc, f"https://127.0.0.1:{server.server_address[1]}", str(tmp_path / "ca.pem"), stopped
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_agent_federates_as_the_instance_and_its_signed_stop_is_verified(
        services: tuple[Services, str, str, list[str]], tmp_path: Path) -> None:
    svc, url, ca, stopped = services
    conf = conf_for(tmp_path, metadata_url=f"{url}/opc/v2", api_base=url, ca_file=ca)
    assert agent.act(conf, "SOFTSTOP") == "STOPPING"
    assert svc.actions == ["SOFTSTOP"] and len(svc.sessions) == 1
    for _ in range(50):
        if stopped:
            break
        threading.Event().wait(0.05)
    assert stopped == ["SOFTSTOP"]


def test_a_bad_signature_and_another_instance_are_refused(services: tuple[Services, str, str, list[str]],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc, url, ca, stopped = services
    conf = conf_for(tmp_path, metadata_url=f"{url}/opc/v2", api_base=url, ca_file=ca)
    real_sign = agent.sign

    def tampered(method: str, u: str, body: bytes, key_id: str, key_file: str, now: float | None = None) -> dict[str, str]:
        headers = real_sign(method, u, body, key_id, key_file, now)
        if key_id.startswith("ST$"):  # the stop itself: sign one path, send another
            headers = real_sign(method, u.replace("action=SOFTSTOP", "action=STOP"), body, key_id, key_file, now)
        return headers

    monkeypatch.setattr(agent, "sign", tampered)
    with pytest.raises(agent.urllib.error.HTTPError) as err:
        agent.act(conf, "SOFTSTOP")
    assert err.value.code == 401 and svc.actions == [] and stopped == []
    monkeypatch.setattr(agent, "sign", real_sign)
    monkeypatch.setattr(svc, "instance_id", "ocid1.instance.oc1..mine")
    monkeypatch.setattr(agent, "imds", lambda base, path: "ocid1.instance.oc1..other" if path == "instance/id"
                        else agent.urllib.request.urlopen(agent.urllib.request.Request(
                            f"{base}/{path}", headers=agent.IMDS_HEADERS),
                            context=agent.ssl.create_default_context(cafile=ca)).read().decode())
    with pytest.raises(agent.urllib.error.HTTPError) as err:
        agent.act(conf, "SOFTSTOP")
    assert err.value.code == 404 and svc.actions == []


def test_the_metadata_service_needs_its_header(services: tuple[Services, str, str, list[str]]) -> None:
    svc = services[0]
    assert svc.handle("GET", "/opc/v2/identity/key.pem", {}, b"")[0] == 401
    assert svc.handle("GET", "/opc/v2/identity/key.pem", {"Authorization": "Bearer Oracle"}, b"")[0] == 200


def test_an_established_connection_to_the_engines_port_counts_as_an_open_stream() -> None:
    import socket
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert agent.open_streams(port) == 0
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                assert agent.open_streams(port) == 1
            del client


def test_a_terminating_shape_sends_a_signed_terminate_keeping_the_boot_volume(
        services: tuple[Services, str, str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc, url, ca, stopped = services
    conf = conf_for(tmp_path, action="TERMINATE", metadata_url=f"{url}/opc/v2", api_base=url, ca_file=ca)
    sent: list[str] = []
    real_request = agent._request
    monkeypatch.setattr(agent, "_request", lambda method, u, headers, body=None: (
        sent.append(f"{method} {u}"), real_request(method, u, headers, body))[1])
    assert agent.act(conf, "TERMINATE") == "TERMINATING"
    assert svc.actions == ["TERMINATE"]
    assert sent[-1] == f"DELETE {url}/20160918/instances/ocid1.instance.oc1..mine?preserveBootVolume=true"
