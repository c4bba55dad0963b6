"""nginx's open /healthz, for every engine, through the real nginx running the rendered site: healthy only while
the model answers. Behind it: stand-ins that answer these routes as the engines do (an Xinference that lost its
model still answers /status; Ollama's /api/show 404s for a model that is not pulled; vLLM's and llama.cpp's
/health 503 until the model is loaded). The old site proxied /healthz to /status and /api/version, so an engine
without its model was healthy.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from llmdeploy.render import ENGINE_HEALTH, FILES_DIR, HEALTHZ_LIMIT, render
from support.endpoint import Endpoint, endpoint_config
from support.ollama_stub import ollama_stub
from support.openai_stub import openai_stub
from support.site import site_endpoint
from support.xinference_script import run_models_script
from support.xinference_stub import XinferenceStub, wait_for, xinference_stub

pytestmark = pytest.mark.integration

XINFERENCE = {"engine": "xinference", "shape": "VM.GPU.A10.1", "modelName": "qwen-chat"}


def healthz(ep: Endpoint) -> int:
    """/healthz's status as a monitor sees it: one that polls faster than nginx allows (HEALTHZ_LIMIT; the waits here
    poll every 0.1 s) waits the Retry-After it is given."""
    with ep.session() as s:
        r = s.get(f"{ep.base}/healthz", timeout=15)
        for _ in range(10):
            if r.status_code != 429:
                break
            time.sleep(float(r.headers["Retry-After"]))
            r = s.get(f"{ep.base}/healthz", timeout=15)
    # Only nginx's fixed answer: the engine's own (Ollama's modelfile, Xinference's worker address) stays inside.
    assert r.json()["status"] == ("ok" if r.status_code == 200 else "unhealthy"), r.text
    return r.status_code


def launch_with_the_rendered_script(ep: Endpoint, stub: XinferenceStub, work: Path) -> None:
    """What the 40-engine step does once Xinference answers /status."""
    result = run_models_script(ep.rendered, stub.url, work)
    assert result.returncode == 0, result.stderr


def test_every_engine_has_a_model_aware_health_check() -> None:
    from llmdeploy.config import ENGINES
    assert set(ENGINE_HEALTH) == set(ENGINES)
    checks = {e: ENGINE_HEALTH[e](endpoint_config(**{**XINFERENCE, "engine": e}) if e == "xinference" else
                                  endpoint_config(engine=e, shape="VM.GPU.A10.1")) for e in ("xinference", "ollama")}
    assert checks["xinference"].path == "/v1/models/qwen-chat"
    assert (checks["ollama"].path, checks["ollama"].method) == ("/api/show", "POST")
    assert json.loads(checks["ollama"].body) == {"model": "llama3.1:8b"}


def test_xinference_is_healthy_only_with_its_model_also_after_a_restart(tmp_path: Path) -> None:
    with xinference_stub(launch_seconds=0.5, autostart_delay=1.0) as stub:
        with site_endpoint(tmp_path, stub.port, **XINFERENCE) as ep:
            assert healthz(ep) == 503  # Xinference answers /status, but has no model (400 for its uid)
            launch_with_the_rendered_script(ep, stub, tmp_path)
            assert healthz(ep) == 200
            stub.restart()  # systemctl restart, a crash under Restart=always, or a reboot: the model is gone
            assert healthz(ep) == 503
            assert wait_for(lambda: healthz(ep) == 200, timeout=15), "the autostart entry never relaunched it"
    assert stub.launches == [("qwen-chat", "api"), ("qwen-chat", "autostart")]


def test_xinference_is_not_healthy_while_its_model_launches(tmp_path: Path) -> None:
    with xinference_stub(launch_seconds=3.0) as stub:
        with site_endpoint(tmp_path, stub.port, **XINFERENCE) as ep:
            body = json.loads(ep.rendered.file(f"{FILES_DIR}/xinference-autostart.json").content)
            requests.Session().post(f"{stub.url}/v1/autostart/models", json=body, timeout=5)
            assert wait_for(lambda: "qwen-chat" in stub.launching, timeout=5)
            assert healthz(ep) == 503
            assert wait_for(lambda: healthz(ep) == 200, timeout=15)


@pytest.mark.parametrize("pulled,want", [("llama3.1:8b", 200), ("qwen2.5:7b", 503)])
def test_ollama_is_healthy_only_with_its_model_pulled(tmp_path: Path, pulled: str, want: int) -> None:
    with ollama_stub(model=pulled) as stub:
        with site_endpoint(tmp_path, stub.port, engine="ollama", shape="VM.GPU.A10.1",
                           ollamaModel="llama3.1:8b") as ep:
            assert healthz(ep) == want
    shows = [r for r in stub.requests if r.path == "/api/show"]
    assert shows and all(r.method == "POST" and json.loads(r.body) == {"model": "llama3.1:8b"} for r in shows)


@pytest.mark.parametrize("engine", ["vllm", "llamacpp"])
def test_single_model_servers_are_healthy_only_once_loaded(tmp_path: Path, engine: str) -> None:
    shape = "VM.Standard.E4.Flex" if engine == "llamacpp" else "VM.GPU.A10.1"
    with openai_stub(health_status=503) as stub:
        with site_endpoint(tmp_path, stub.port, engine=engine, shape=shape) as ep:
            assert healthz(ep) == 503
            stub.health_status = 200
            assert healthz(ep) == 200


def test_90_ready_waits_for_the_same_healthz() -> None:
    rendered = render(endpoint_config(**XINFERENCE))
    ready = rendered.file("/usr/local/lib/llmdeploy/steps/90-ready.sh").content
    assert 'wait_for_http "https://$host/healthz" 200' in ready


def test_a_flood_of_healthz_gets_429_before_it_reaches_the_engine(tmp_path: Path) -> None:
    """/healthz is open and asks the engine each time (the ray target's, a one-token completion): past the burst,
    nginx answers 429 itself, in OpenAI's error shape, and the engine sees none of those."""
    with openai_stub() as stub:
        with site_endpoint(tmp_path, stub.port, engine="vllm", shape="VM.GPU.A10.1") as ep:
            with ep.session() as s:
                replies = [s.get(f"{ep.base}/healthz", timeout=15) for _ in range(HEALTHZ_LIMIT.burst + 20)]
            asked = sum(1 for r in stub.requests if r.path == "/health")
            refused = [r for r in replies if r.status_code == 429]
            assert refused and all(r.status_code == 200 for r in replies[:HEALTHZ_LIMIT.burst])
            assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
            assert "/healthz" in refused[0].json()["error"]["message"] and refused[0].headers["Retry-After"] == "1"
            assert asked == len(replies) - len(refused)  # a refused /healthz never reached the engine
            time.sleep(1.1)
            with ep.session() as s:  # the rate refills: a monitor polling once a second is not refused
                assert s.get(f"{ep.base}/healthz", timeout=15).status_code == 200
