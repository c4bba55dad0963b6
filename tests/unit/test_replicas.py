"""`replicas: N` on the vm target, without Ray: N engine VMs behind the head's nginx.

- The Pulumi program under mocks (infra/__main__.py): the head with the only public IP, N - 1 engine replicas
  at fixed private IPs in the workers' subnet, head and replicas in the cluster NSG (which admits only its own
  members), and the head's nginx upstream naming every engine.
- Config: replicas is refused where no engine VMs are built (ray, datascience, local, a workshop, hfToken).
The real nginx in front of two real llama.cpp servers: tests/integration/test_replicas_nginx.py.
"""
from __future__ import annotations

from typing import Any

import pytest

from llmdeploy import addresses
from llmdeploy.config import ConfigError
from llmdeploy.render import FIREWALL, UPSTREAM, render, render_nodes
from llmdeploy.topology import REPLICA, node
from support.delivery import provisioned
from support.endpoint import endpoint_config
from support.pulumi_mocks import PUBLIC_IP, Run, is_secret, unwrap
from test_pulumi_program import run_stack

INSTANCE = "oci:Core/instance:Instance"
RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"


# ---------------------------------------------------------------------------------------------- Pulumi

@pytest.fixture(scope="module")
def replicas_run() -> tuple[Run, dict[str, Any]]:
    return run_stack("llamacpp-cpu", replicas=3)




def test_head_and_replicas_at_their_fixed_private_ips(replicas_run: tuple[Run, dict[str, Any]]) -> None:
    run, _ = replicas_run
    instances = run.of_type(INSTANCE)
    heads = [i for i in instances if "-replica-" not in i.name]
    # By name: Pulumi registers resources as their inputs resolve, in no fixed order.
    replicas = sorted((i for i in instances if "-replica-" in i.name), key=lambda i: i.name)
    assert len(heads) == 1 and len(replicas) == 2
    vnics = [unwrap(r.inputs)["createVnicDetails"] for r in replicas]
    assert [v["privateIp"] for v in vnics] == addresses.worker_ips(2)
    assert {v["assignPublicIp"] for v in vnics} == {"false"}
    assert len(run.of_type("oci:Core/publicIp:PublicIp")) == 1  # the head's, only
    subnets = {s.name: s for s in run.of_type("oci:Core/subnet:Subnet")}
    private = next(s for s in subnets.values() if unwrap(s.inputs)["cidrBlock"] == addresses.WORKER_SUBNET_CIDR)
    assert unwrap(private.inputs)["prohibitPublicIpOnVnic"] is True
    assert {v["subnetId"] for v in vnics} == {f"{private.name}-id"}
    cluster = next(n for n in run.of_type("oci:Core/networkSecurityGroup:NetworkSecurityGroup")
                   if n.name.endswith("-cluster"))
    assert f"{cluster.name}-id" in unwrap(heads[0].inputs)["createVnicDetails"]["nsgIds"]
    assert {tuple(v["nsgIds"]) for v in vnics} == {(f"{cluster.name}-id",)}


def test_no_engine_port_is_open_to_the_internet(replicas_run: tuple[Run, dict[str, Any]]) -> None:
    run, _ = replicas_run
    open_ports = set()
    for rule in run.of_type(RULE):
        inputs = unwrap(rule.inputs)
        if inputs.get("direction") == "INGRESS" and inputs.get("source") == "0.0.0.0/0" and inputs.get("tcpOptions"):
            r = inputs["tcpOptions"]["destinationPortRange"]
            open_ports |= set(range(int(r["min"]), int(r["max"]) + 1))
    assert {80, 443} <= open_ports <= {22, 80, 443}  # nginx, and SSH as sshAllowedCidrs says: no engine port
    cluster_rules = [unwrap(r.inputs) for r in run.of_type(RULE) if "-cluster-members" in r.name]
    assert [r["sourceType"] for r in cluster_rules] == ["NETWORK_SECURITY_GROUP"]


def test_head_nginx_names_every_engine_and_replicas_run_the_engine_alone(
        replicas_run: tuple[Run, dict[str, Any]]) -> None:
    run, _ = replicas_run
    instances = {i.name: provisioned(run, i) for i in run.of_type(INSTANCE)}
    head = next(text for name, text in instances.items() if "-replica-" not in name)
    port = 8080
    for server in [f"127.0.0.1:{port}", *(f"{ip}:{port}" for ip in addresses.worker_ips(2))]:
        assert f"server {server} max_fails=2 fail_timeout=10s;" in head
    assert f"proxy_pass http://{UPSTREAM};" in head
    for name, text in instances.items():
        if "-replica-" in name:
            assert "nginx-site.conf" not in text and "60-nginx" not in text
            assert f"--host 0.0.0.0 --port {port}" in text  # for the head's nginx, through the cluster NSG


def test_each_replica_has_its_own_readiness_gate_through_the_head_before_the_smoke_test(
        replicas_run: tuple[Run, dict[str, Any]]) -> None:
    """A broken replica fails `pulumi up` (its gate waits for 90-ready-replica), and the smoke test waits for every
    engine: nginx would otherwise pass over a dead replica quietly."""
    run, _ = replicas_run
    instances = {i.name: i for i in run.of_type(INSTANCE)}
    head = next(i for name, i in instances.items() if "-replica-" not in name)
    ip = run.one("oci:Core/publicIp:PublicIp")
    commands = {c.name: c for c in run.of_type("command:remote:Command")}
    gates = sorted(name for name in commands if "-replica-" in name)
    replicas = sorted(name for name in instances if "-replica-" in name)
    assert gates == [f"{name}-readiness" for name in replicas] and len(gates) == 2
    for index, name in enumerate(replicas):
        ready = commands[f"{name}-readiness"]
        connection = unwrap(ready.inputs["connection"])
        assert connection["host"] == addresses.worker_ip(index)
        assert connection["proxy"]["host"] == PUBLIC_IP  # a replica has no public IP: through the head
        assert {instances[name].urn, head.urn, ip.urn} <= set(ready.dependencies)
        assert "llmdeploy-wait-ready" in unwrap(ready.inputs["create"])
        assert is_secret(ready.inputs["stdin"])
    smoke = run.one("command:local:Command")
    assert {commands[g].urn for g in gates} <= set(smoke.dependencies)


def test_the_head_sits_at_the_address_the_replicas_admit() -> None:
    """The head's private IP is fixed: each replica's host firewall and DOCKER-USER admit its engine's callers from
    there only (tests/integration/test_container_firewall.py runs them)."""
    run, _ = run_stack("llamacpp-cpu", replicas=2)
    head = next(i for i in run.of_type(INSTANCE) if "-replica-" not in i.name)
    assert unwrap(head.inputs)["createVnicDetails"]["privateIp"] == addresses.head_ip()
    one, _ = run_stack("llamacpp-cpu")
    assert unwrap(one.one(INSTANCE).inputs)["createVnicDetails"].get("privateIp") is None  # one VM: OCI picks


def test_replica_firewall_admits_the_head_not_the_web() -> None:
    cfg = endpoint_config(replicas=2)
    replica = render(cfg, node=node(cfg, REPLICA, 0)).file(FIREWALL).content
    assert 'readonly PORTS="22"' in replica and f"readonly CLUSTER_CIDR={addresses.head_ip()}/32" in replica
    head = render(endpoint_config(replicas=2)).file(FIREWALL).content
    assert 'readonly PORTS="22 80 443"' in head and "readonly CLUSTER_CIDR=''" in head
    with pytest.raises(ValueError, match="replica 1: the stack has no such machine"):
        node(cfg, REPLICA, 1)


def test_one_vm_renders_as_before() -> None:
    """replicas 1 (the default): no upstream, nginx proxies to the engine on loopback."""
    site = render(endpoint_config()).nginx_site
    assert "upstream " not in site and "proxy_pass http://127.0.0.1:8080;" in site  # no upstream block
    assert [name for name, _ in render_nodes(endpoint_config())] == [""]


# ---------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("overrides, accepted", [
    ({"target": "ray", "engine": "vllm", "shape": "VM.GPU.A10.2", "vllmModel": "Qwen/Qwen2.5-0.5B-Instruct",
      "os": "ubuntu-24.04"}, "rayMinReplicas and rayMaxReplicas"),
    ({"target": "local"}, "1 on the local target"),
    ({"hfToken": "hf_secret_token_value"}, "1 with hfToken set"),
    ({"workshopRoster": "rosters/example.csv"}, "1 for a workshop"),
])
def test_replicas_refused_where_no_engine_vms_are_built(overrides: dict[str, object], accepted: str) -> None:
    with pytest.raises(ConfigError) as error:
        endpoint_config(replicas=2, **overrides)
    message = str(error.value)
    assert "replicas" in message and accepted in message, message
    assert "hf_secret_token_value" not in message


def test_replicas_out_of_range() -> None:
    with pytest.raises(ConfigError) as error:
        endpoint_config(replicas=0)
    assert "replicas" in str(error.value) and "a whole number from 1" in str(error.value)
