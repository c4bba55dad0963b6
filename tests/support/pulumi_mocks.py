"""Run the Pulumi program (infra/__main__.py, exactly as `pulumi up` would) under Pulumi's mocks and
record everything: each resource with its type, inputs, parent and dependencies, each invoke, and each
stack output with whether it is secret.

The invoke mocks answer as OCI's API would and refuse what OCI would refuse (a missing compartment).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

PROJECT = "llmdeploy"
PUBLIC_IP = "203.0.113.10"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBvmockca\n-----END CERTIFICATE-----"
MD_URL = "https://modeldeployment.us-ashburn-1.oci.customer-oci.com/ocid1.datasciencemodeldeployment.oc1..md"
SECRET_SIG = pulumi.runtime.rpc._special_sig_key  # noqa: SLF001 - marks a secret value on the wire


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    urn: str = ""


@dataclass
class Run:
    resources: list[Registered]
    invokes: list[tuple[str, dict[str, Any]]]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, got {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)


def unwrap(value: Any) -> Any:
    """A secret input arrives wrapped in the secret envelope: return what is inside."""
    if isinstance(value, dict) and SECRET_SIG in value:
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


class OciMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Registered] = []
        self.invokes: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        extra = {
            "oci:Core/publicIp:PublicIp": {"ipAddress": PUBLIC_IP},
            # A different "random" value per resource name, the same on every run (as Pulumi keeps it in state).
            "random:index/randomPassword:RandomPassword": {"result": hashlib.sha256(args.name.encode()).hexdigest()[:43]},
            "command:remote:Command": {"stdout": f"ready: every stage done\n{CA_PEM}\n", "stderr": ""},
            "command:local:Command": {"stdout": "PASS  all checks\n", "stderr": ""},
            "oci:DataScience/modelDeployment:ModelDeployment": {"modelDeploymentUrl": MD_URL, "state": "ACTIVE"},
        }.get(args.typ, {})
        state.update(extra)
        self.resources.append(Registered(args.typ, args.name, args.inputs, args.custom))
        return f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> Any:
        self.invokes.append((args.token, dict(args.args)))
        compartment = args.args.get("compartmentId")
        if args.token in ("oci:Identity/getAvailabilityDomains:getAvailabilityDomains", "oci:Core/getImages:getImages",
                          "oci:Core/getVnicAttachments:getVnicAttachments") and not compartment:
            return {}, [("compartmentId", "is required")]
        if args.token == "oci:Identity/getAvailabilityDomains:getAvailabilityDomains":
            return {"availabilityDomains": [{"name": "Uocm:EU-FRANKFURT-1-AD-1", "id": "ad1",
                                             "compartmentId": compartment}]}
        if args.token == "oci:Core/getImages:getImages":
            gpu = any(f.get("name") == "display_name" for f in args.args.get("filters") or [])
            name = f"Canonical-Ubuntu-22.04-{'Gen2-GPU-' if gpu else ''}2026.10.01-0"
            return {"images": [{"id": "ocid1.image.oc1..newest", "displayName": name,
                                "operatingSystem": args.args.get("operatingSystem")}]}
        if args.token == "oci:Core/getVnicAttachments:getVnicAttachments":
            return {"vnicAttachments": [{"vnicId": "ocid1.vnic.oc1..vnic", "instanceId": args.args.get("instanceId")}]}
        if args.token == "oci:Core/getPrivateIps:getPrivateIps":
            if not args.args.get("vnicId"):
                return {}, [("vnicId", "is required")]
            return {"privateIps": [{"id": "ocid1.privateip.oc1..primary", "isPrimary": True}]}
        return {}


class RecordingMonitor(MockMonitor):
    """Adds what MockResourceArgs lacks: each registration's URN, parent and dependencies."""

    def __init__(self, mocks: OciMocks) -> None:
        super().__init__(mocks)
        self.recorder = mocks

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        for r in reversed(self.recorder.resources):
            if r.name == request.name and not r.urn:
                r.urn, r.parent, r.dependencies = response.urn, request.parent, list(request.dependencies)
                break
        else:
            if request.type != "pulumi:pulumi:Stack":
                self.recorder.resources.append(Registered(request.type, request.name, {}, request.custom,
                                                          request.parent, list(request.dependencies), response.urn))
        return response


def config_map(values: dict[str, Any]) -> dict[str, str]:
    """Config as the Pulumi CLI hands it to the program: every value a string, arrays as JSON."""
    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return {f"{PROJECT}:{k}": text(v) for k, v in values.items()}


LAST_MOCKS: OciMocks | None = None  # what the last run registered, also when it raised


def run_program(main: Path, values: dict[str, Any], stack: str = "test", secret_keys: tuple[str, ...] = ()) -> Run:
    global LAST_MOCKS
    mocks = LAST_MOCKS = OciMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config_map(values), secret_keys=[f"{PROJECT}:{k}" for k in secret_keys])
    exported: dict[str, pulumi.Output[Any]] = {}
    real_export = pulumi.export

    def record_export(name: str, value: Any) -> None:
        exported[name] = pulumi.Output.from_input(value)
        real_export(name, value)

    outputs: dict[str, Any] = {}
    secret: set[str] = set()

    async def settle() -> None:
        for key, output in exported.items():
            outputs[key] = await output.future()
            if await output.is_secret():
                secret.add(key)

    @pulumi.runtime.test
    def program() -> Any:
        pulumi.export = record_export  # type: ignore[assignment]
        try:
            runpy.run_path(str(main), run_name="__main__")
        finally:
            pulumi.export = real_export
        return asyncio.ensure_future(settle())

    try:
        program()
    finally:
        pulumi.runtime.set_all_config({})
    return Run(mocks.resources, mocks.invokes, outputs, secret)
