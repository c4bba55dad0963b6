"""Autostop under Pulumi mocks: a stack with idleStopMinutes gets a dynamic group in the tenancy whose matching rule
names its instance by id, and a policy in its compartment that lets that instance power itself off (or, on a shape
that bills while stopped, terminate itself) and nothing else; a stack without autostop gets neither."""
from __future__ import annotations

from typing import Any

import pytest

from llmdeploy.stack_yaml import read_stack
from support.project import ROOT
from support.pulumi_mocks import Run, unwrap
from support.pulumi_program import example_run, run_stack

TENANCY = "ocid1.tenancy.oc1..aaaatenancy"
GROUP, POLICY = "oci:Identity/dynamicGroup:DynamicGroup", "oci:Identity/policy:Policy"


def autostop_run(stack: str, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Run:
    monkeypatch.setenv("OCI_TENANCY_OCID", TENANCY)
    return run_stack(stack, idleStopMinutes=30, **overrides)[0]


def test_no_autostop_creates_no_identity() -> None:
    run, _ = example_run("ollama-a10")
    assert not run.of_type(GROUP) and not run.of_type(POLICY)


@pytest.mark.parametrize("stack,permission", [("ollama-a10", "INSTANCE_POWER_ACTIONS"),
                                              ("llamacpp-cpu", "INSTANCE_POWER_ACTIONS"),
                                              ("vllm-a100", "INSTANCE_DELETE")])
def test_the_group_names_the_instance_and_the_policy_only_its_own_action(
        stack: str, permission: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run = autostop_run(stack, monkeypatch)
    compartment = read_stack(ROOT, stack)["compartmentId"]
    instance = run.one("oci:Core/instance:Instance")
    group = unwrap(run.one(GROUP).inputs)
    assert group["compartmentId"] == TENANCY
    assert group["matchingRule"] == f"Any {{instance.id = '{instance.name}-id'}}"
    policy = unwrap(run.one(POLICY).inputs)
    assert policy["compartmentId"] == compartment
    assert policy["statements"] == [
        f"Allow dynamic-group id {run.one(GROUP).name}-id to {{{permission}}} in compartment id {compartment} "
        "where request.instance.id = target.instance.id"]
    assert group["freeformTags"]["stack"] == policy["freeformTags"]["stack"] == stack


def test_autostop_without_a_known_tenancy_fails_before_any_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCI_TENANCY_OCID", raising=False)
    with pytest.raises(Exception, match="oci:tenancyOcid"):
        run_stack("ollama-a10", idleStopMinutes=30)
    from support import pulumi_mocks
    assert pulumi_mocks.LAST_MOCKS is not None and pulumi_mocks.LAST_MOCKS.resources == []


def test_a_workshop_gets_one_group_naming_every_attendees_instance_and_one_policy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not one group per VM: a tenancy's dynamic groups are a service limit. Each VM still stops only itself (the condition)."""
    run = autostop_run("workshop-a10", monkeypatch)
    instances = run.of_type("oci:Core/instance:Instance")
    assert len(instances) == 4  # ana, ben, chen, eli (dana is revoked)
    group = unwrap(run.one(GROUP).inputs)
    assert group["compartmentId"] == TENANCY
    rule = group["matchingRule"]
    assert rule.startswith("Any {") and rule.endswith("}")
    # Registration order is the mocks' (asynchronous), so the rule is compared as a set of ids.
    assert sorted(rule[len("Any {"):-1].split(", ")) == sorted(f"instance.id = '{i.name}-id'" for i in instances)
    policy = unwrap(run.one(POLICY).inputs)
    assert policy["statements"] == [
        f"Allow dynamic-group id {run.one(GROUP).name}-id to {{INSTANCE_POWER_ACTIONS}} in compartment id "
        f"{read_stack(ROOT, 'workshop-a10')['compartmentId']} where request.instance.id = target.instance.id"]
    assert "attendee" not in group["freeformTags"]  # the workshop's tags, not one attendee's
