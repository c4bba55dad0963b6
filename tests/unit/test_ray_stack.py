"""The ray target's Pulumi program under Pulumi's mocks (infra/__main__.py, as `pulumi up` runs it) for the
example stack Pulumi.ray-a10.yaml and a larger cluster: one VCN, the head with the only public IP, N workers
with none in a private subnet behind a NAT gateway, the cluster NSG admitting only itself, no Ray or engine port
reachable from the internet, and the Ray token a secret that reaches every node over SSH, never user-data."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmdeploy import addresses, raycluster
from support.delivery import provisioned, secrets_tar
from support.project import ROOT
from llmdeploy.stack import output_names as out
from llmdeploy.stack_yaml import read_stack
from support.pulumi_mocks import PUBLIC_IP, Registered, Run, is_secret, run_program, unwrap
from test_pulumi_program import MAIN, PRIVATE_KEY, run_stack

INSTANCE = "oci:Core/instance:Instance"
RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"
NSG = "oci:Core/networkSecurityGroup:NetworkSecurityGroup"
RAY_PORTS = {p for lo, hi in raycluster.PORTS.cluster_ranges() for p in range(lo, hi + 1)} | {
    raycluster.PORTS.dashboard, raycluster.PORTS.serve}


@pytest.fixture(scope="module", params=[{}, {"rayWorkers": 3, "rayPipelineParallel": 2}],
                ids=["ray-a10", "ray-a10-3-workers-pp2"])
def ray_run(request: pytest.FixtureRequest) -> tuple[Run, dict[str, Any]]:
    return run_stack("ray-a10", **request.param)


def _instances(run: Run) -> tuple[Registered, list[Registered]]:
    instances = run.of_type(INSTANCE)
    head = [i for i in instances if i.name.endswith("-head")]
    assert len(head) == 1
    # Registration order is not creation order: sort the workers by their index.
    return head[0], sorted((i for i in instances if "-worker-" in i.name), key=lambda i: int(i.name.rsplit("-", 1)[1]))


def _bundle(command: Registered) -> dict[str, str]:
    archive = secrets_tar(unwrap(command.inputs["stdin"]))
    return {m.name: archive.extractfile(m).read().decode() for m in archive.getmembers()}  # type: ignore[union-attr]




def test_one_vcn_a_head_and_n_workers_at_their_fixed_addresses(ray_run: tuple[Run, dict[str, Any]]) -> None:
    run, values = ray_run
    workers_wanted = int(values.get("rayWorkers", 1))
    assert len(run.of_type("oci:Core/vcn:Vcn")) == 1
    head, workers = _instances(run)
    assert len(workers) == workers_wanted
    assert unwrap(head.inputs)["createVnicDetails"]["privateIp"] == addresses.head_ip()
    assert [unwrap(w.inputs)["createVnicDetails"]["privateIp"] for w in workers] == addresses.worker_ips(
        workers_wanted)
    assert {unwrap(i.inputs)["shape"] for i in (head, *workers)} == {"VM.GPU.A10.2"}
    # One reserved public IP, on the head: the head's readiness and the smoke test use it.
    assert len(run.of_type("oci:Core/publicIp:PublicIp")) == 1
    assert run.outputs[out.PUBLIC_IP] == PUBLIC_IP


def test_workers_get_no_public_ip_and_leave_through_the_nat_gateway(ray_run: tuple[Run, dict[str, Any]]) -> None:
    run, _ = ray_run
    _, workers = _instances(run)
    subnets = {s.name: unwrap(s.inputs) for s in run.of_type("oci:Core/subnet:Subnet")}
    private = next(s for name, s in subnets.items() if name.endswith("-workers"))
    assert private["prohibitPublicIpOnVnic"] is True and private["cidrBlock"] == addresses.WORKER_SUBNET_CIDR
    routes = {r.name: unwrap(r.inputs) for r in run.of_type("oci:Core/routeTable:RouteTable")}
    nat = run.one("oci:Core/natGateway:NatGateway")
    assert private["routeTableId"] == f"{next(n for n in routes if n.endswith('-private-routes'))}-id"
    assert routes[next(n for n in routes if n.endswith("-private-routes"))]["routeRules"][0]["networkEntityId"] \
        == f"{nat.name}-id"
    for worker in workers:
        vnic = unwrap(worker.inputs)["createVnicDetails"]
        assert vnic["assignPublicIp"] == "false"
        assert vnic["subnetId"] == f"{next(n for n in subnets if n.endswith('-workers'))}-id"


def test_the_cluster_nsg_admits_only_its_own_members(ray_run: tuple[Run, dict[str, Any]]) -> None:
    run, _ = ray_run
    cluster = next(n for n in run.of_type(NSG) if n.name.endswith("-cluster"))
    public = next(n for n in run.of_type(NSG) if n.name.endswith("-nsg"))
    rules = [unwrap(r.inputs) for r in run.of_type(RULE)]
    cluster_ingress = [r for r in rules if r["networkSecurityGroupId"] == f"{cluster.name}-id"
                       and r["direction"] == "INGRESS"]
    assert cluster_ingress and all(r["sourceType"] == "NETWORK_SECURITY_GROUP" and r["source"] == f"{cluster.name}-id"
                                   for r in cluster_ingress)
    assert {r["protocol"] for r in cluster_ingress} == {"6", "1"}
    head, workers = _instances(run)
    assert set(unwrap(head.inputs)["createVnicDetails"]["nsgIds"]) == {f"{public.name}-id", f"{cluster.name}-id"}
    assert all(unwrap(w.inputs)["createVnicDetails"]["nsgIds"] == [f"{cluster.name}-id"] for w in workers)


def test_the_cluster_nsg_admits_every_ray_port_among_its_members(ray_run: tuple[Run, dict[str, Any]]) -> None:
    """Ray's worker ports (10002-19999, one per worker process) and NCCL/Gloo's ephemeral ones: the cluster's TCP
    rule names no port, so widening the worker range needs no rule change."""
    run, _ = ray_run
    cluster = next(n for n in run.of_type(NSG) if n.name.endswith("-cluster"))
    tcp = [unwrap(r.inputs) for r in run.of_type(RULE) if unwrap(r.inputs)["networkSecurityGroupId"] ==
           f"{cluster.name}-id" and unwrap(r.inputs)["direction"] == "INGRESS" and unwrap(r.inputs)["protocol"] == "6"]
    assert len(tcp) == 1 and not tcp[0].get("tcpOptions"), tcp
    assert {raycluster.PORTS.min_worker, raycluster.PORTS.max_worker} <= RAY_PORTS


def test_no_ray_or_engine_port_is_reachable_from_the_internet(ray_run: tuple[Run, dict[str, Any]]) -> None:
    run, values = ray_run
    rules = [unwrap(r.inputs) for r in run.of_type(RULE) if unwrap(r.inputs)["direction"] == "INGRESS"]
    from_cidrs = [r for r in rules if r.get("sourceType") == "CIDR_BLOCK"]
    open_ports = set()
    for rule in from_cidrs:
        assert rule["protocol"] in ("6", "1"), rule  # no "all"
        if rule["protocol"] == "6":
            ports = rule["tcpOptions"]["destinationPortRange"]
            open_ports |= set(range(int(ports["min"]), int(ports["max"]) + 1))
    assert open_ports == {22, 80, 443}
    assert not open_ports & (RAY_PORTS | {8000, 8265})
    # Every rule that is not sourced from a CIDR is the cluster's own.
    assert all(r["sourceType"] == "NETWORK_SECURITY_GROUP" for r in rules if r not in from_cidrs)


def test_the_ray_token_is_a_secret_that_reaches_every_node_over_ssh_never_user_data(
        ray_run: tuple[Run, dict[str, Any]]) -> None:
    run, values = ray_run
    head, workers = _instances(run)
    commands = {c.name: c for c in run.of_type("command:remote:Command")}
    head_ready = commands[head.name.removesuffix("-head") + "-readiness"]
    tokens = set()
    for command in commands.values():
        assert is_secret(command.inputs["stdin"]) and is_secret(command.inputs["connection"])
        tokens.add(_bundle(command)["ray-token"].strip())
    (token,) = tokens  # the same token on every node
    assert len(token) >= 32
    assert "api-keys.map" in _bundle(head_ready)
    for worker in workers:
        bundle = _bundle(commands[f"{worker.name}-readiness"])
        assert "api-keys.map" not in bundle  # nginx and the keys live on the head only
    for instance in (head, *workers):
        assert token not in provisioned(run, instance) and token not in str(unwrap(instance.inputs))
    public = str({k: v for k, v in run.outputs.items() if k != out.API_KEYS})
    assert token not in public and token not in str([unwrap(c.inputs)["create"] for c in commands.values()])


def test_workers_are_reached_through_the_head_and_after_it(ray_run: tuple[Run, dict[str, Any]]) -> None:
    run, _ = ray_run
    head, workers = _instances(run)
    ip = run.one("oci:Core/publicIp:PublicIp")
    for index, worker in enumerate(workers):
        ready = next(c for c in run.of_type("command:remote:Command") if c.name == f"{worker.name}-readiness")
        connection = unwrap(ready.inputs["connection"])
        assert connection["host"] == addresses.worker_ip(index)
        assert connection["proxy"]["host"] == PUBLIC_IP and connection["proxy"]["user"] == connection["user"]
        assert {worker.urn, head.urn, ip.urn} <= set(ready.dependencies)
    smoke = run.one("command:local:Command")
    assert unwrap(smoke.inputs["environment"])["LLMDEPLOY_SMOKE_URL"] == "https://llm.example.org"


def test_each_worker_boots_its_own_user_data(ray_run: tuple[Run, dict[str, Any]]) -> None:
    run, _ = ray_run
    head, workers = _instances(run)
    assert "--head" in provisioned(run, head) and "nginx-site.conf" in provisioned(run, head)
    for index, worker in enumerate(workers):
        text = provisioned(run, worker)
        assert f"--node-ip-address {addresses.worker_ip(index)}" in text
        assert f"--address {addresses.head_ip()}:{raycluster.PORTS.gcs}" in text
        assert "nginx-site.conf" not in text


def test_a_ray_workshop_is_one_cluster_with_a_key_per_attendee(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email\nada,Ada L,ada@example.org\nbob,Bob K,bob@example.org\n")
    values = read_stack(ROOT, "ray-a10") | {"sshPrivateKey": PRIVATE_KEY, "workshopRoster": str(roster),
                                            "workshopLayout": "shared", "workshopEndpoints": 1}
    run = run_program(MAIN, values, stack="ws", secret_keys=("sshPrivateKey",))
    (cluster,) = run.of_type("llmdeploy:ray:RayClusterEndpoint")
    assert len(run.of_type(INSTANCE)) == 2 and len(run.of_type("oci:Core/vcn:Vcn")) == 1
    attendees = run.outputs[out.ATTENDEES]
    assert set(attendees) == {"ada", "bob"} and attendees["ada"]["apiKey"] != attendees["bob"]["apiKey"]
    assert {a["endpointUrl"] for a in attendees.values()} == {"https://llm.example.org"}


def test_chat_on_the_ray_target_gets_its_url_its_dns_its_smoke_and_open_webuis_key() -> None:
    """chatUi open-webui on the head of a ray cluster: the chatUrl output, chat.<domain>'s A record, the smoke gate
    signing in on the chat host, and Open WebUI's secret key delivered with the head's keys (its step waits for it:
    without it the head's readiness times out). Never in user-data or a plain output."""
    run, _ = run_stack("ray-a10", chatUi="open-webui", apiKeys=["ops:admin", "alice"], dnsZone="example.org")
    assert run.outputs[out.CHAT_URL] == "https://chat.llm.example.org/_login"
    records = {unwrap(r.inputs["domain"]) for r in run.of_type("oci:Dns/rrset:Rrset")}
    assert records == {"llm.example.org", "chat.llm.example.org"}
    smoke = run.one("command:local:Command")
    assert unwrap(smoke.inputs["environment"])["LLMDEPLOY_SMOKE_CHAT_URL"] == "https://chat.llm.example.org/_login"
    head, workers = _instances(run)
    commands = {c.name: c for c in run.of_type("command:remote:Command")}
    bundle = _bundle(commands[head.name.removesuffix("-head") + "-readiness"])
    assert "open-webui.env" in bundle, sorted(bundle)
    key = bundle["open-webui.env"].strip().split("=", 1)[1]
    assert len(key) >= 32
    for instance in (head, *workers):
        assert key not in provisioned(run, instance)
    assert all("open-webui.env" not in _bundle(commands[f"{w.name}-readiness"]) for w in workers)
    assert key not in str({k: v for k, v in run.outputs.items() if k != out.API_KEYS})
