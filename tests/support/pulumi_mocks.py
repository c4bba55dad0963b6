"""Run the Pulumi program (infra/__main__.py, exactly as `pulumi up` would) under Pulumi's mocks and
record everything: each resource with its type, inputs, parent and dependencies, each invoke, and each
stack output with whether it is secret.

The invoke mocks answer as OCI's API would and refuse what OCI would refuse (a missing compartment).
getImages answers from a catalogue of real OCI platform image names, filtered as the service and the provider
do: by operating system and version, by shape compatibility (aarch64 builds run on Ampere shapes only, the GPU
builds on GPU shapes only), by the provider's `filters` (a regex matches anywhere in the value unless anchored,
as Go's regexp.MatchString does; a dotted name such as freeform_tags.project reads a map's entry), sorted by
TIMECREATED or DISPLAYNAME. A custom (baked) image is listed in its own compartment only.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.resource
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.proto import source_pb2

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


@dataclass(frozen=True)
class PlatformImage:
    display_name: str
    operating_system: str
    operating_system_version: str
    time_created: str
    arch: str = "x86_64"  # aarch64 builds run on Ampere (A1, A2, A4) shapes only
    gpu_only: bool = False  # Oracle Linux's GPU builds run on GPU shapes only
    # A custom image (a baked one): listed only in its compartment, with its freeform tags. "": a platform image,
    # which every compartment's list shows.
    compartment_id: str = ""
    freeform_tags: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return "ocid1.image.oc1.eu-frankfurt-1." + self.display_name.lower().replace(".", "-")

    def runs_on(self, shape: str) -> bool:
        ampere = bool(re.search(r"\.Standard\.A[0-9]+\.", shape))  # VM.Standard.A1.Flex, not BM.GPU.A10.4
        return (self.arch == "aarch64") == ampere and (not self.gpu_only or ".GPU" in shape)

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "displayName": self.display_name, "operatingSystem": self.operating_system,
                "operatingSystemVersion": self.operating_system_version, "timeCreated": go_time(self.time_created),
                "state": "AVAILABLE", "launchMode": "PARAVIRTUALIZED", "compartmentId": self.compartment_id or None,
                "freeformTags": dict(self.freeform_tags)}


def go_time(rfc3339: str) -> str:
    """A time as the provider's data sources give it: Go's time.String() of the SDK's time
    ("2025-11-03 09:40:12.123 +0000 UTC"), not the API's RFC 3339. Its text sorts as RFC 3339 does (all UTC)."""
    day, clock = rfc3339.rstrip("Z").split("T")
    return f"{day} {clock} +0000 UTC"


def _ubuntu(version: str, build: str, created: str, arch: str = "x86_64") -> PlatformImage:
    return PlatformImage(f"Canonical-Ubuntu-{version}-{build}", "Canonical Ubuntu", version, created, arch)


# Names as OCI's image list shows them. The Minimal and aarch64 builds are newer than the plain ones on purpose:
# a lookup that does not filter them out picks them.
PLATFORM_IMAGES: tuple[PlatformImage, ...] = (
    _ubuntu("22.04", "2025.07.23-0", "2025-07-25T10:12:01.000Z"),
    _ubuntu("22.04", "2025.10.31-0", "2025-11-03T09:40:12.000Z"),
    _ubuntu("22.04", "Minimal-2025.11.05-0", "2025-11-06T08:02:44.000Z"),
    _ubuntu("22.04", "Minimal-2025.07.23-0", "2025-07-25T11:00:00.000Z"),
    _ubuntu("22.04", "aarch64-2025.11.06-0", "2025-11-07T07:30:00.000Z", "aarch64"),
    _ubuntu("24.04", "2025.06.30-0", "2025-07-02T12:00:00.000Z"),
    _ubuntu("24.04", "2025.10.31-0", "2025-11-03T09:55:31.000Z"),
    _ubuntu("24.04", "Minimal-2025.11.05-0", "2025-11-06T08:15:00.000Z"),
    _ubuntu("24.04", "Minimal-aarch64-2025.11.05-0", "2025-11-06T08:20:00.000Z", "aarch64"),
    _ubuntu("24.04", "aarch64-2025.11.06-0", "2025-11-07T07:45:00.000Z", "aarch64"),
    PlatformImage("Oracle-Linux-8.10-2025.10.31-0", "Oracle Linux", "8", "2025-11-02T10:00:00.000Z"),
    PlatformImage("Oracle-Linux-8.10-Gen2-GPU-2025.10.31-0", "Oracle Linux", "8", "2025-11-02T11:00:00.000Z",
                  gpu_only=True),
    PlatformImage("Oracle-Linux-8.10-Gen2-GPU-2025.07.21-0", "Oracle Linux", "8", "2025-07-23T11:00:00.000Z",
                  gpu_only=True),
    PlatformImage("Oracle-Linux-9.6-2025.10.31-0", "Oracle Linux", "9", "2025-11-02T10:30:00.000Z"),
    PlatformImage("Oracle-Linux-9.6-aarch64-2025.10.31-0", "Oracle Linux", "9", "2025-11-02T10:45:00.000Z",
                  "aarch64"),
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _passes(image: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    """The provider's data-source filters: every filter must match; a filter matches when the named field equals
    one of its values, or with regex, when one of them matches somewhere in it (Go's MatchString)."""
    for f in filters:
        # A dotted name addresses a nested property or a map's entry (freeform_tags.project); a missing one matches
        # nothing.
        head, *path = f["name"].split(".")
        found: Any = image.get(_camel(head))
        for part in path:
            found = found.get(part) if isinstance(found, dict) else None
        value = "" if found is None else str(found)
        values = [str(v) for v in f.get("values") or []]
        if not any(re.search(v, value) if f.get("regex") else v == value for v in values):
            return False
    return True


def list_images(catalogue: tuple[PlatformImage, ...], args: dict[str, Any]) -> list[dict[str, Any]]:
    """ListImages as the service answers it, then the provider's filters."""
    found = [i for i in catalogue
             if (not args.get("operatingSystem") or i.operating_system == args["operatingSystem"])
             and (not args.get("operatingSystemVersion") or i.operating_system_version == args["operatingSystemVersion"])
             and (not args.get("shape") or i.runs_on(args["shape"]))
             and (not args.get("displayName") or i.display_name == args["displayName"])
             and (not i.compartment_id or i.compartment_id == args.get("compartmentId"))
             and args.get("state", "AVAILABLE") == "AVAILABLE"]
    key = "displayName" if args.get("sortBy") == "DISPLAYNAME" else "timeCreated"
    wired = sorted((i.wire() for i in found), key=lambda w: w[key], reverse=args.get("sortOrder", "DESC") == "DESC")
    return [w for w in wired if _passes(w, args.get("filters") or [])]


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
    def __init__(self, images: tuple[PlatformImage, ...] = PLATFORM_IMAGES) -> None:
        self.resources: list[Registered] = []
        self.invokes: list[tuple[str, dict[str, Any]]] = []
        self.images = images  # the region's platform images

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        extra = {
            "oci:Core/publicIp:PublicIp": {"ipAddress": PUBLIC_IP},
            # A different "random" value per resource name, the same on every run (as Pulumi keeps it in state).
            "random:index/randomPassword:RandomPassword": {"result": hashlib.sha256(args.name.encode()).hexdigest()[:43]},
            "command:remote:Command": {"stdout": f"ready: every stage done\n{CA_PEM}\n", "stderr": ""},
            "command:local:Command": {"stdout": "PASS  all checks\n", "stderr": ""},
            "oci:DataScience/modelDeployment:ModelDeployment": {"modelDeploymentUrl": MD_URL, "state": "ACTIVE"},
            "oci:Core/image:Image": {"state": "AVAILABLE", "timeCreated": "2026-12-07 10:00:00.000 +0000 UTC"},
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
            return {"images": list_images(self.images, dict(args.args))}
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


def run_program(main: Path, values: dict[str, Any], stack: str = "test", secret_keys: tuple[str, ...] = (),
                images: tuple[PlatformImage, ...] = PLATFORM_IMAGES) -> Run:
    global LAST_MOCKS
    mocks = LAST_MOCKS = OciMocks(images)
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

    # Each registration walks the whole Python stack for the source position the engine shows beside a resource
    # (with pytest's frames, a quarter of a mocked run's time); the mocks never read it.
    real_stack_trace = pulumi.runtime.resource._get_stack_trace  # noqa: SLF001
    pulumi.runtime.resource._get_stack_trace = source_pb2.StackTrace  # noqa: SLF001
    try:
        program()
    finally:
        pulumi.runtime.set_all_config({})
        pulumi.runtime.resource._get_stack_trace = real_stack_trace  # noqa: SLF001
    return Run(mocks.resources, mocks.invokes, outputs, secret)
