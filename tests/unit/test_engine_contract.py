"""The engine contract over the registry (engines.REGISTERED), the in-process part: a new engine gets these tests by
being registered. Each check returns the problems it finds (support/engine_contract.py); deliberately broken
engines (support/broken_engines.py), registered here, show that each check catches what it is for. Health checks,
dialects and the validators run against real servers and tools in tests/integration/test_engine_contract.py."""
from __future__ import annotations

import re

import pytest

from llmdeploy.engines import REGISTERED
from support.broken_engines import Broken, NoCompletionsRoute, NoUnit, registered
from support.engine_contract import render_problems, route_problems
from support.project import ROOT

ENGINES = sorted(REGISTERED)


def test_the_registry_holds_every_engine_and_variant() -> None:
    assert ENGINES == ["llamacpp", "ollama", "ray-serve", "vllm", "vllm-cpu", "xinference"]


@pytest.mark.parametrize("variant", ENGINES)
def test_it_renders_every_machine_with_its_step_and_unit(variant: str) -> None:
    assert render_problems(REGISTERED[variant]) == []


@pytest.mark.parametrize("variant", ENGINES)
def test_its_routes_table_is_complete(variant: str) -> None:
    assert route_problems(REGISTERED[variant]) == []


def test_a_registered_engine_gets_the_contract_tests() -> None:
    """Registering is all it takes: a sound engine under a new name renders and passes."""
    with registered(Broken()) as engine:
        assert "broken" in REGISTERED
        assert render_problems(engine) == route_problems(engine) == []
    assert "broken" not in REGISTERED


def test_a_missing_route_is_caught() -> None:
    with registered(NoCompletionsRoute()) as engine:
        problems = route_problems(engine)
    assert problems and all("/v1/completions" in p and "not an inference route" in p for p in problems)


def test_an_engine_without_its_unit_is_caught() -> None:
    with registered(NoUnit()) as engine:
        assert render_problems(engine) == ["the machine: no unit broken.service"]


ENGINE_NAME = re.compile(r"[\"'](ollama|xinference|vllm|vllm-cpu|llamacpp|ray|ray-serve)[\"']")
TARGET_TEST = re.compile(r"target\b.{0,40}(==|!=|\bin\b) *[\(\[\{\"']")


def test_the_core_asks_the_engine_and_the_deployment_kind_not_their_names() -> None:
    """Issue 20's measure: quoted engine names outside engines/ (the deployment kind `ray` and smoke's dialect kinds
    remain), and `target` compared with a literal (smoke's endpoint kind remains). Was 95 and 63."""
    package = ROOT / "infra" / "llmdeploy"
    sources = {p: p.read_text(encoding="utf-8") for p in package.rglob("*.py") if "engines" not in p.parts}
    names = [f"{p.relative_to(package)}: {m.group(0)}" for p, text in sources.items()
             for m in ENGINE_NAME.finditer(text)]
    targets = [f"{p.relative_to(package)}: {line.strip()}" for p, text in sources.items()
               for line in text.splitlines() if TARGET_TEST.search(line)]
    assert len(names) <= 6, names
    assert len(targets) <= 10, targets
