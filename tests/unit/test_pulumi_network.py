"""The network under Pulumi's mocks: each SSH ingress rule is named after its CIDR, so reordering
sshAllowedCidrs keeps every resource's URN (with names by list position, it replaced the rules)."""
from __future__ import annotations

from typing import Any

import pytest

from llmdeploy.stack.network import ssh_rule_key
from llmdeploy.stack_yaml import read_stack
from support.project import ROOT
from support.pulumi_mocks import Run, run_program, unwrap

MAIN = ROOT / "infra" / "__main__.py"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"
CIDRS = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32", "10.0.0.0/8"]


def run_with(cidrs: list[str]) -> Run:
    values = read_stack(ROOT, "llamacpp-cpu") | {"sshPrivateKey": KEY, "sshAllowedCidrs": cidrs}
    return run_program(MAIN, values, stack="llamacpp-cpu", secret_keys=("sshPrivateKey",))


def ssh_rules(run: Run) -> dict[str, Any]:
    """SSH ingress rule URN -> the CIDR it lets in."""
    rules = [(r.urn, unwrap(r.inputs)) for r in run.of_type(RULE)]
    return {urn: inputs["source"] for urn, inputs in rules
            if inputs["direction"] == "INGRESS" and inputs.get("tcpOptions", {}).get("destinationPortRange",
                                                                                      {}).get("min") == 22}


def test_reordering_the_ssh_cidrs_keeps_every_urn() -> None:
    first, reordered = run_with(CIDRS), run_with(list(reversed(CIDRS)))
    assert sorted(ssh_rules(first).values()) == sorted(CIDRS)
    # The same URN lets in the same CIDR, whatever the order: nothing to replace.
    assert ssh_rules(first) == ssh_rules(reordered)
    assert sorted(r.urn for r in first.resources) == sorted(r.urn for r in reordered.resources)


def test_adding_a_cidr_in_front_adds_one_rule_and_keeps_the_others() -> None:
    before, after = ssh_rules(run_with(CIDRS)), ssh_rules(run_with(["192.0.2.0/24", *CIDRS]))
    assert set(after) - set(before) == {next(u for u, c in after.items() if c == "192.0.2.0/24")}
    assert {u: c for u, c in after.items() if u in before} == before


def test_rule_names_come_from_the_network() -> None:
    rules = ssh_rules(run_with(CIDRS))
    names = {urn.rsplit("::", 1)[1]: cidr for urn, cidr in rules.items()}
    assert names == {"llmdeploy-llamacpp-cpu-net-ssh-203.0.113.0-24": "203.0.113.0/24",
                     "llmdeploy-llamacpp-cpu-net-ssh-198.51.100.7-32": "198.51.100.7/32",
                     "llmdeploy-llamacpp-cpu-net-ssh-2001-db8---32": "2001:db8::/32",
                     "llmdeploy-llamacpp-cpu-net-ssh-10.0.0.0-8": "10.0.0.0/8"}


@pytest.mark.parametrize("spellings", [["10.0.0.0/8", "10.0.0.0/8"], ["2001:DB8::/32", "2001:db8:0::/32"]])
def test_one_network_listed_twice_is_one_rule(spellings: list[str]) -> None:
    assert ssh_rule_key(spellings[0]) == ssh_rule_key(spellings[1])
    assert list(ssh_rules(run_with(spellings)).values()) == [spellings[0]]
