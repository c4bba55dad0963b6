"""What every registered engine must do (engines/ REGISTERED), as checks that return the problems they find: the
contract tests (tests/unit/test_engine_contract.py, tests/integration/test_engine_contract_live.py) run them over the
registry, and run them over deliberately broken engines to show that they catch what is wrong.

- its example config selects it, and every machine of that config renders with its step and unit;
- its routes table is complete: everything its smoke dialect sends, and the chat frontends' chat route, is an
  inference route (an ordinary key reaches it), no route is both, and each is proxied;
- its health check answers unhealthy while the engine has no model, and healthy once it has (against the stand-in
  of the engine: support/ollama_stub, openai_stub, xinference_stub);
- its smoke dialect reads what the engine sends: it finds the model in the engine's list and the text of each
  answer.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests

from llmdeploy.config import StackConfig, parse
from llmdeploy.engines import Engine, HealthCheck
from llmdeploy.engines.xinference import XinferenceModel
from llmdeploy.render import FILES_DIR, STEPS_DIR, render
from llmdeploy.smoke.dialects import dialect_for
from llmdeploy.topology import HEAD_NODE, named_nodes
from support.ollama_stub import ollama_stub
from support.openai_stub import openai_stub
from support.project import minimal_raw
from support.xinference_stub import xinference_stub

OTHER_MODEL = "some-other-model"
# Which stand-in answers as each engine's server does, by variant: its native API (the stand-in's module), or
# Xinference's flavour of the OpenAI one. A new engine adds its line (an engine that subclasses another inherits
# its line). Not the engine's `dialect`: that is what is under test.
OLLAMA, OPENAI, XINFERENCE = "ollama", "openai", "xinference"
STAND_INS = {"ollama": OLLAMA, "xinference": XINFERENCE, "vllm": OPENAI, "vllm-cpu": OPENAI, "llamacpp": OPENAI,
             "ray-serve": OPENAI}


def stand_in_kind(engine: Engine) -> str:
    return next(STAND_INS[c.variant] for c in type(engine).__mro__
                if getattr(c, "variant", None) in STAND_INS)
CHAT_ROUTE = ("POST", "/v1/chat/completions")  # what Open WebUI and BioChatter Light call on every engine


def example_config(engine: Engine) -> StackConfig:
    return parse(minimal_raw(**engine.example), stack="contract")


def render_problems(engine: Engine) -> list[str]:
    cfg = example_config(engine)
    if cfg.served_by is not engine:
        return [f"its example config {engine.example} is served by {cfg.served_by}"]
    problems = []
    for name, at in named_nodes(cfg):
        rendered = render(cfg, node=at)
        paths = {f.path for f in rendered.files}
        if f"{FILES_DIR}/{engine.unit(at)}.service" not in paths:
            problems.append(f"{name or 'the machine'}: no unit {engine.unit(at)}.service")
        if f"{STEPS_DIR}/40-engine.sh" not in paths:
            problems.append(f"{name or 'the machine'}: no engine step")
    return problems


def route_problems(engine: Engine) -> list[str]:
    cfg = example_config(engine)
    routes, dialect = engine.routes, dialect_for(engine.dialect)
    problems = [f"{call.method} {call.path} ({call.name}, sent by the {engine.dialect} dialect) is not an inference "
                "route" for call in [*dialect.calls(cfg.model_name), *dialect.auth_probes(cfg.model_name)]
                if not routes.is_inference(call.method, call.path)]
    if not routes.is_inference(*CHAT_ROUTE):
        problems.append(f"{' '.join(CHAT_ROUTE)} (the chat frontends') is not an inference route")
    for route in routes.management:
        if any(routes.is_inference(m, route.example()) for m in route.methods):
            problems.append(f"{route.shown} is listed as management and matches an inference route")
    for route in (*routes.inference, *routes.management):
        if not routes.is_proxied(route.example()):
            problems.append(f"{route.shown} is not proxied to the engine")
    return problems


def ask(base: str, check: HealthCheck) -> int:
    body = check.body.encode() if check.body else None
    headers = {"Content-Type": "application/json"} if body else {}
    return requests.request(check.method, base + check.path, data=body, headers=headers, timeout=10).status_code


@contextmanager
def engine_stand_in(engine: Engine, cfg: StackConfig, with_model: bool) -> Iterator[str]:
    """The stand-in of the engine's server, with the config's model or without one; yields its URL."""
    kind = stand_in_kind(engine)
    if kind == OLLAMA:
        tag = getattr(cfg.model, "tag", cfg.model_name)
        with ollama_stub(model=tag if with_model else OTHER_MODEL) as stub:
            yield stub.url
    elif kind == XINFERENCE:
        with xinference_stub() as stub:
            if with_model:
                assert isinstance(cfg.model, XinferenceModel)
                launched = requests.post(f"{stub.url}/v1/models", json=cfg.model.launch_body(cfg.model_name, None),
                                         timeout=30)
                assert launched.status_code == 200, launched.text
            yield stub.url
    else:
        with openai_stub(model=cfg.model_name if with_model else OTHER_MODEL,
                         health_status=200 if with_model else 503) as stub:
            yield stub.url


def health_problems(engine: Engine) -> list[str]:
    cfg = example_config(engine)
    check = engine.health(cfg)
    problems = []
    with engine_stand_in(engine, cfg, with_model=False) as url:
        if (status := ask(url, check)) < 400:
            problems.append(f"{check.method} {check.path} answers {status} while the engine has no model")
    with engine_stand_in(engine, cfg, with_model=True) as url:
        if (status := ask(url, check)) != 200:
            problems.append(f"{check.method} {check.path} answers {status} once the model is served")
    return problems


@contextmanager
def speaking_stand_in(engine: Engine, cfg: StackConfig) -> Iterator[str]:
    """The stand-in that answers the engine's inference API with the config's model (for Xinference, the OpenAI stub
    in its Xinference flavour: xinference_stub answers model management only)."""
    kind = stand_in_kind(engine)
    if kind == OLLAMA:
        with ollama_stub(model=cfg.model_name) as stub:
            yield stub.url
    else:
        with openai_stub(model=cfg.model_name, xinference=kind == XINFERENCE) as stub:
            yield stub.url


def dialect_problems(engine: Engine) -> list[str]:
    cfg = example_config(engine)
    dialect = dialect_for(engine.dialect)
    problems = []
    with speaking_stand_in(engine, cfg) as url:
        answer = requests.get(url + dialect.models_path, timeout=10)
        try:
            listed = dialect.parse_models(answer.json())
        except ValueError as e:  # not JSON, or not the list the dialect expects
            return [f"GET {dialect.models_path}: {answer.status_code}, which the {engine.dialect} dialect cannot read "
                    f"({e})"]
        if dialect.find_model(listed, cfg.model_name) is None:
            problems.append(f"the {engine.dialect} dialect does not find {cfg.model_name} in {listed}")
        for call in (c for c in dialect.calls(cfg.model_name) if not c.stream):
            answer = requests.request(call.method, url + call.path, json=call.body, timeout=10)
            if answer.status_code != 200 or not call.text_of(answer.json()):
                problems.append(f"{call.name} {call.path}: {answer.status_code}, no text the dialect reads")
    return problems


def first_unit(engine: Engine) -> str:
    """The engine's unit as the machine gets it (for the broken-engine tests)."""
    cfg = example_config(engine)
    return render(cfg).file(f"{FILES_DIR}/{engine.unit(HEAD_NODE)}.service").content

