"""The tenancy's service limits that a workshop uses up, and where their availability comes from: OCI's limits
API (`LimitsClient.get_resource_availability`, which already subtracts usage and compartment quotas) or, when
offline, a limits file.

Which limit a shape counts against (service "compute", scoped per availability domain):
- GPU shapes count GPUs. gpu-a10-count and gpu4-count are the names Oracle's own tooling and docs use;
  gpu-h100-count, gpu-a100-v2-count and gpu-l40s-count are the names seen in public scripts, not confirmed
  against Oracle's definitions. When OCI answers 404 for a name, the plan says so; list the real names with
  `oci limits definition list --service-name compute --compartment-id <tenancy OCID> --all`.
- Flex CPU shapes count OCPUs (standard-e4-core-count, ...) and memory in GB (standard-e4-memory-count, ...).

Limits file (YAML), what `oci limits resource-availability get ... --query data.available` prints for each
limit and availability domain:

    compute:
      gpu-a10-count:
        Uocm:EU-FRANKFURT-1-AD-1: 4
        Uocm:EU-FRANKFURT-1-AD-2: 24
      standard-e4-core-count:
        Uocm:EU-FRANKFURT-1-AD-1: 200
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import Failure, UsageError
from ..shapes import SHAPES
from ..textfiles import FileProblem, load_yaml, read_text

SERVICE = "compute"
GPU_LIMITS: dict[str, str] = {
    "VM.GPU.A10.1": "gpu-a10-count",
    "VM.GPU.A10.2": "gpu-a10-count",
    "BM.GPU.A10.4": "gpu-a10-count",
    "BM.GPU.L40S.4": "gpu-l40s-count",
    "BM.GPU4.8": "gpu4-count",
    "BM.GPU.A100-v2.8": "gpu-a100-v2-count",
    "BM.GPU.H100.8": "gpu-h100-count",
}
FLEX_LIMITS: dict[str, tuple[str, str]] = {  # (OCPUs, memory GB)
    "VM.Standard.E4.Flex": ("standard-e4-core-count", "standard-e4-memory-count"),
    "VM.Standard.E5.Flex": ("standard-e5-core-count", "standard-e5-memory-count"),
    "VM.Standard3.Flex": ("standard3-core-count", "standard3-memory-count"),
}


@dataclass
class Need:
    """How much of one limit the workshop uses, and which shapes use it."""

    limit: str
    unit: str  # GPUs | OCPUs | GB
    amount: int = 0
    instances: dict[str, int] = field(default_factory=dict)  # shape -> instances

    def describe(self) -> str:
        parts = ", ".join(f"{n} x {s}" for s, n in sorted(self.instances.items()))
        return f"{self.amount} {self.unit} ({parts})"


def needs(instances: Iterable[tuple[str, int, int]]) -> list[Need]:
    """(shape, ocpus, memory GB) per instance -> the limits they use, in a stable order."""
    found: dict[str, Need] = {}

    def add(limit: str, unit: str, amount: int, shape: str) -> None:
        need = found.setdefault(limit, Need(limit, unit))
        need.amount += amount
        need.instances[shape] = need.instances.get(shape, 0) + 1

    for shape, ocpus, memory in instances:
        if shape in GPU_LIMITS:
            add(GPU_LIMITS[shape], "GPUs", SHAPES[shape].gpus, shape)
        elif shape in FLEX_LIMITS:
            cores, mem = FLEX_LIMITS[shape]
            add(cores, "OCPUs", ocpus, shape)
            add(mem, "GB", memory, shape)
    return sorted(found.values(), key=lambda n: (n.unit != "GPUs", n.limit))


@dataclass(frozen=True)
class Availability:
    available: int | None  # None: unknown (the reason says why)
    used: int | None = None
    reason: str = ""


class LimitsSource(Protocol):
    description: str

    def availability_domains(self) -> list[str]: ...

    def availability(self, limit: str, ad: str) -> Availability: ...


def same_ad(a: str, b: str) -> bool:
    """Uocm:EU-FRANKFURT-1-AD-1 matches itself and the short form EU-FRANKFURT-1-AD-1 (or AD-1)."""
    a, b = a.upper(), b.upper()
    return a == b or a.endswith(":" + b) or b.endswith(":" + a) or a.endswith("-" + b) or b.endswith("-" + a)


class FileLimits:
    """A limits file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.description = f"limits file {path}"
        try:
            data = load_yaml(read_text(path, "limits file"), f"the limits file {path}")
        except OSError as exc:
            raise UsageError(f"cannot read the limits file {path}: {exc.strerror}; check the path") from None
        except FileProblem as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
        example = "compute: {gpu-a10-count: {Uocm:EU-FRANKFURT-1-AD-1: 4}}"
        if not isinstance(data, dict) or not isinstance(data.get(SERVICE), dict):
            raise UsageError(f"the limits file {path} must map '{SERVICE}' to limits, each mapping availability "
                             f"domains to the number available, e.g. {example}")
        self.limits: dict[str, dict[str, int]] = {}
        problems = []
        for limit, per_ad in data[SERVICE].items():
            if not isinstance(per_ad, dict) or not per_ad:
                problems.append(f"{limit}: expected a mapping of availability domain -> number available")
                continue
            for ad, value in per_ad.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    problems.append(f"{limit} in {ad}: {value!r} is not a whole number >= 0")
            self.limits[str(limit)] = {str(ad): int(v) for ad, v in per_ad.items()
                                       if isinstance(v, int) and not isinstance(v, bool)}
        if problems:
            raise UsageError(f"the limits file {path}:\n" + "\n".join(f"  - {p}" for p in problems) +
                             f"\n(e.g. {example})")

    def availability_domains(self) -> list[str]:
        return sorted({ad for per_ad in self.limits.values() for ad in per_ad})

    def availability(self, limit: str, ad: str) -> Availability:
        per_ad = self.limits.get(limit)
        if per_ad is None:
            return Availability(None, reason=f"the limits file has no '{limit}'; add it under '{SERVICE}:' "
                                f"(oci limits resource-availability get --service-name {SERVICE} --limit-name "
                                f"{limit} --compartment-id ... --availability-domain {ad})")
        match = [n for a, n in per_ad.items() if same_ad(a, ad)]
        if len(match) != 1:
            return Availability(None, reason=f"the limits file has no '{limit}' value for {ad}")
        return Availability(match[0])


class OciLimits:
    """OCI's limits API in the stack's compartment (quotas included), ADs from the identity API."""

    def __init__(self, config: dict[str, Any], compartment_id: str) -> None:
        from . import oci_clients
        self._oci = oci_clients
        self.config = config
        self.compartment_id = compartment_id
        self.description = f"OCI limits API ({config.get('region', '?')}, compartment {compartment_id})"
        self.limits = oci_clients.client("limits", config)
        self.identity = oci_clients.client("identity", config)
        self._ads: list[str] | None = None

    def availability_domains(self) -> list[str]:
        if self._ads is None:
            try:
                found = self.identity.list_availability_domains(compartment_id=self.config["tenancy"]).data
            except self._oci.service_errors() as exc:
                raise Failure(f"cannot list the availability domains: {self._oci.describe(exc)}") from None
            self._ads = [ad.name for ad in found]
        return self._ads

    def availability(self, limit: str, ad: str) -> Availability:
        try:
            data = self.limits.get_resource_availability(SERVICE, limit, self.compartment_id,
                                                         availability_domain=ad).data
        except self._oci.service_errors() as exc:
            hint = ""
            if getattr(exc, "status", None) == 404:
                hint = (f"; OCI does not know the limit '{limit}' for {SERVICE}: list the names with `oci limits "
                        f"definition list --service-name {SERVICE} --compartment-id <tenancy OCID> --all`")
            return Availability(None, reason=f"OCI answered {self._oci.describe(exc)}{hint}")
        available = data.available
        return Availability(None if available is None else int(available),
                            None if data.used is None else int(data.used),
                            "" if available is not None else "OCI reports no availability for this limit")
