"""Autostop: its config keys, what is rendered (nothing when off), and the time left `llmdeploy status` shows
(tests/integration/test_autostop_agent.py runs the agent itself)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from llmdeploy import autostop_agent as agent
from llmdeploy.autostop import action_for
from llmdeploy.config import ConfigError, parse
from llmdeploy.operate.status import lines, parse_status
from llmdeploy.render import render

LOCAL = {"target": "local", "engine": "llamacpp", "os": "debian-12"}


@pytest.mark.parametrize("bad,message", [
    ({"idleStopMinutes": "-1"}, "idleStopMinutes: got '-1'; expected a whole number from 0 to 10080"),
    ({"ttlHours": "soon"}, "ttlHours: got 'soon'; expected a whole number from 0 to 8784"),
    ({"idleStopMinutes": 10081}, "idleStopMinutes: got 10081"),
])
def test_bad_values_are_refused_with_the_key_and_the_fix(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse({**LOCAL, **bad})
    assert message in str(err.value) and "pulumi config set" in str(err.value)


def test_a_stack_of_several_vms_refuses_autostop() -> None:
    with pytest.raises(ConfigError) as err:
        parse({**LOCAL, "target": "datascience", "idleStopMinutes": 5})
    assert "idleStopMinutes: got 5; expected 0 on the datascience target" in str(err.value)


def test_off_by_default_renders_nothing_and_on_renders_the_agent_step_and_timer() -> None:
    off, on = render(parse(LOCAL)), render(parse({**LOCAL, "idleStopMinutes": 1}))
    assert "35-autostop" not in off.steps and not any("autostop" in f.path for f in off.files)
    assert off.user_data == render(parse({**LOCAL, "ttlHours": 0})).user_data
    assert "35-autostop" in on.steps
    conf = json.loads(on.file("/etc/llmdeploy/autostop.json").content)
    assert conf["idle_minutes"] == 1 and conf["action"] == "SOFTSTOP"
    assert conf["metadata_url"] == "http://169.254.169.254/opc/v2" and conf["api_base"] == ""
    assert on.file("/usr/local/lib/llmdeploy/autostop-agent.py").content == Path(agent.__file__).read_text()


def test_shapes_that_bill_while_stopped_terminate_and_the_others_stop() -> None:
    assert action_for("VM.GPU.A10.1") == action_for("VM.Standard.E5.Flex") == "SOFTSTOP"
    assert action_for("BM.GPU.H100.8") == action_for("BM.GPU.A10.4") == "TERMINATE"


def test_status_shows_the_time_left_until_autostop() -> None:
    facts = {"stack": "s", "engine": "llamacpp", "stages": [], "ready_marker": "/r"}
    now = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
    state = {"action": "SOFTSTOP", "phase": "watching", "idle_minutes": 30, "ttl_hours": 0, "open_streams": 1,
             "deadline": now.timestamp() + 754, "reason": "idle"}
    status = parse_status("@@units\n@@autostop\n" + json.dumps(state) + "\n", facts, now)
    assert status["autostop"]["seconds_left"] == 754 and status["autostop"]["reason"] == "idle"
    assert "autostop:     SOFTSTOP in 0h12m34s" in "\n".join(lines(status))
    off = parse_status("@@units\n@@autostop\n\n", facts, now)
    assert off["autostop"] is None and "autostop:     off" in lines(off)
    # Before the agent's first run (30 s after boot) there is no state yet: its config says autostop is on.
    config = {"idle_minutes": 30, "ttl_hours": 0, "action": "SOFTSTOP", "engine_port": 8080}
    early = parse_status("@@units\n@@autostop\n\n@@autostop-config\n" + json.dumps(config, indent=2) + "\n", facts,
                         now)
    assert early["autostop"]["action"] == "SOFTSTOP" and "seconds_left" not in early["autostop"]
    assert "autostop:     SOFTSTOP, not yet checked" in "\n".join(lines(early))


def test_every_vm_of_a_workshop_gets_the_agent() -> None:
    from support.project import ROOT
    from llmdeploy.endpoints import load_plans
    from llmdeploy.render import render
    from llmdeploy.stack_yaml import read_stack
    plans = load_plans(parse({**read_stack(ROOT, "workshop-a10"), "ttlHours": 4}, stack="workshop-a10"))
    assert len(plans) == 4
    assert all("35-autostop" in render(plan.cfg).steps for plan in plans)
