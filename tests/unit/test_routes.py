"""routes.py, the one table of each engine's routes: what it lets an ordinary key do, what it keeps for admin
keys, and that the smoke test needs nothing more than an ordinary key. (The nginx site built from it is run
for real in tests/integration/test_admin_routes.py.)"""
from __future__ import annotations

import pytest

from llmdeploy.engines import ENGINE_ROUTES
from llmdeploy.engines.ray_serve import RAY_SERVE
from llmdeploy.smoke.dialects import OllamaDialect, OpenAIDialect, XinferenceDialect

ENGINES = sorted(ENGINE_ROUTES)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_inference_route_is_proxied_and_allowed(engine: str) -> None:
    routes = ENGINE_ROUTES[engine]
    for route in routes.inference:
        assert routes.is_proxied(route.example()), route
        assert all(routes.is_inference(m, route.example()) for m in route.methods), route


@pytest.mark.parametrize("engine", ENGINES)
def test_every_management_route_is_proxied_for_admins_and_not_allowed_to_others(engine: str) -> None:
    routes = ENGINE_ROUTES[engine]
    for route in routes.management:
        assert routes.is_proxied(route.example()), f"{route.shown}: no location proxies it, so no admin reaches it"
        assert not any(routes.is_inference(m, route.example()) for m in route.methods), route


def test_a_parameter_is_one_path_segment() -> None:
    ollama = ENGINE_ROUTES["ollama"]
    assert ollama.is_inference("GET", "/v1/models/llama3.1:8b")
    assert not ollama.is_inference("GET", "/v1/models/a/b") and not ollama.is_inference("GET", "/v1/models/")


@pytest.mark.parametrize("engine", ENGINES)
def test_the_smoke_test_needs_only_an_ordinary_key(engine: str) -> None:
    dialects = [OpenAIDialect()] + {"ollama": [OllamaDialect()], "xinference": [XinferenceDialect()]}.get(engine, [])
    routes = ENGINE_ROUTES[engine]
    for dialect in dialects:
        calls = dialect.calls("m") + dialect.auth_probes("m")
        assert calls
        for call in calls:
            assert routes.is_inference(call.method, call.path), f"{engine}: smoke's {call.method} {call.path}"


def test_locations_are_the_prefixes_then_one_for_the_routes_outside_them() -> None:
    assert ENGINE_ROUTES["ollama"].locations == ("/v1/", "/api/")
    llama = ENGINE_ROUTES["llamacpp"]
    assert llama.locations[0] == "/v1/" and llama.locations[1].startswith('~ "^(?:/tokenize|')
    assert all(llama.is_proxied(p) for p in ("/slots", "/slots/0", "/props", "/lora-adapters", "/metrics"))
    assert not any(llama.is_proxied(p) for p in ("/slots/0/x", "/propsx", "/health", "/completion"))
    assert ENGINE_ROUTES["vllm"].is_proxied("/sleep") and not ENGINE_ROUTES["vllm"].is_proxied("/sleepy")


def test_the_ray_target_does_not_proxy_tokenize_which_always_fails_in_the_pinned_pair() -> None:
    ray = RAY_SERVE.routes
    assert not any(ray.is_proxied(p) for p in ("/tokenize", "/detokenize"))
    assert ray.locations == ("/v1/",)
    assert ENGINE_ROUTES["vllm"].is_proxied("/tokenize")  # vLLM's own server answers it


# What xinference-client 4.1.0 (xinference_client/client/restful/restful_client.py) sends for the course's exercise,
# written out here from its source: Client(url, api_key) asks /v1/cluster/auth (answered by nginx), list_models,
# get_model(uid) (describe, then chat) need an ordinary key; launch_model and terminate_model an admin key.
XINFERENCE_CLIENT_INFERENCE = [("GET", "/v1/models"), ("GET", "/v1/models/my-model"),
                               ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")]
XINFERENCE_CLIENT_MANAGEMENT = [("POST", "/v1/models"), ("DELETE", "/v1/models/my-model")]


def test_xinference_clients_exercise_needs_an_ordinary_key_except_launch_and_terminate() -> None:
    routes = ENGINE_ROUTES["xinference"]
    assert [a.path for a in routes.answered] == ["/v1/cluster/auth"]
    assert all(routes.is_inference(m, p) for m, p in XINFERENCE_CLIENT_INFERENCE)
    assert not any(routes.is_inference(m, p) for m, p in XINFERENCE_CLIENT_MANAGEMENT)
    assert all(not r.answered for e, r in ENGINE_ROUTES.items() if e != "xinference")
