"""The engine contract over the registry (engines.REGISTERED), against real tools and the engines' stand-ins: every
machine each engine's example config boots passes cloud-init's schema, shellcheck, nginx -t and systemd-analyze
verify (validate.run_all, as `llmdeploy validate` runs them); its health check is unhealthy without the model and
healthy with it; its smoke dialect reads what the engine sends. Deliberately broken engines show each is caught."""
from __future__ import annotations

import pytest

from llmdeploy.engines import REGISTERED
from llmdeploy.render import render_nodes
from llmdeploy.validate import run_all
from support.broken_engines import Broken, HealthyWithoutModel, UnitSystemdRefuses, WrongDialect, registered
from support.engine_contract import dialect_problems, example_config, health_problems

pytestmark = pytest.mark.integration
ENGINES = sorted(REGISTERED)


def validator_failures(variant: str) -> list[str]:
    cfg = example_config(REGISTERED[variant])
    return [f"{name or 'machine'}: {c.name}: {c.detail}" for name, rendered in render_nodes(cfg)
            for c in run_all(cfg, rendered) if not c.ok]


@pytest.mark.parametrize("variant", ENGINES)
def test_every_machine_passes_the_validators(variant: str) -> None:
    assert validator_failures(variant) == []


@pytest.mark.parametrize("variant", ENGINES)
def test_its_health_check_is_unhealthy_without_the_model(variant: str) -> None:
    assert health_problems(REGISTERED[variant]) == []


@pytest.mark.parametrize("variant", ENGINES)
def test_its_smoke_dialect_reads_what_the_engine_sends(variant: str) -> None:
    assert dialect_problems(REGISTERED[variant]) == []


def test_a_sound_engine_registered_under_a_new_name_passes() -> None:
    with registered(Broken()) as engine:
        assert validator_failures(engine.variant) == []
        assert health_problems(engine) == dialect_problems(engine) == []


def test_a_unit_systemd_refuses_is_caught() -> None:
    with registered(UnitSystemdRefuses()) as engine:
        failures = validator_failures(engine.variant)
    assert failures and all("systemd-analyze verify broken.service" in f for f in failures)


def test_a_health_check_that_answers_without_a_model_is_caught() -> None:
    with registered(HealthyWithoutModel()) as engine:
        assert health_problems(engine) == ["GET /v1/models answers 200 while the engine has no model"]


def test_a_dialect_that_does_not_speak_the_engine_api_is_caught() -> None:
    with registered(WrongDialect()) as engine:
        assert dialect_problems(engine) == ["GET /api/tags: 404, which the ollama dialect cannot read (expected "
                                            '{"models": [{"name": ...}, ...]})']
