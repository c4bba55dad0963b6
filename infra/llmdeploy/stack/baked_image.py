"""Which image a vm stack's VMs boot (bakeImage, bakedImage): the image this program bakes (stack/bake.py), the
newest one baked before for the same install, or the bare image.

An install is named by its digest (bake/install.py) over the base image's OCID, which is looked up here while the
program runs (a plain invoke: the digest names resources and decides what to create, so it must be known before
any resource is). A baked image is found by its freeform tags, project and llmdeploy-install, in the stack's
compartment, on the stack's shape; OCI's timeCreated says how old it is. A workshop bakes each distinct install
once (dedicated VMs of one course share it) and every VM of that install boots from its image."""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import pulumi
from pulumi_oci import core

from ..bake.install import install_digest
from ..config import OSES, StackConfig
from ..endpoints import EndpointPlan
from ..render import Rendered, render
from .bake import INSTALL_TAG, BakedImage, BuilderArgs
from .tags import freeform_tags
from .vm import PLATFORM_IMAGE_PREFIX, VmArgs, plain_image_regex
from .workshop import WorkshopArgs

PROJECT_TAG = "project"  # stack/tags.py's: every resource of the project carries it


@dataclass(frozen=True)
class Install:
    """One stack's install on its base image: what a baked image must hold to be booted in its place."""

    rendered: Rendered
    base_image: str
    digest: str


def base_image_id(args: VmArgs) -> str:
    """The image the stack would boot unbaked: imageId, or the newest plain platform image of the OS that runs on
    the shape (vm.image_id's lookup, done now); "" when the region has none (vm.image_id then stops with the fix)."""
    if args.image_id:
        return str(args.image_id)
    os_name, os_version = OSES[args.os]
    if args.os not in PLATFORM_IMAGE_PREFIX:
        return ""
    found = core.get_images(compartment_id=args.compartment_id, operating_system=os_name,
                            operating_system_version=os_version, shape=args.shape.name, sort_by="TIMECREATED",
                            sort_order="DESC", filters=[core.GetImagesFilterArgs(
                                name="display_name", values=[plain_image_regex(args.os)], regex=True)])
    return found.images[0].id if found.images else ""


def install_of(cfg: StackConfig, args: VmArgs) -> Install | None:
    """The stack's install, or None when there is no base image to name it by."""
    base = base_image_id(args)
    if not base:
        return None
    rendered = render(cfg)
    return Install(rendered, base, install_digest(rendered, base))


def baked_images(args: VmArgs, project: str, digest: str) -> list[core.outputs.GetImagesImageResult]:
    """The available images baked for this install, newest first: tagged with the project and the digest, in the
    stack's compartment, that run on its shape."""
    return list(core.get_images(
        compartment_id=args.compartment_id, shape=args.shape.name, state="AVAILABLE", sort_by="TIMECREATED",
        sort_order="DESC", filters=[core.GetImagesFilterArgs(name=f"freeform_tags.{INSTALL_TAG}", values=[digest]),
                                    core.GetImagesFilterArgs(name=f"freeform_tags.{PROJECT_TAG}", values=[project])]
    ).images)


# The provider hands timeCreated over as Go's time.String() ("2025-11-03 09:40:12.123 +0000 UTC"); RFC 3339 is read too.
_TIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?(?: [A-Z]+)?")


def created_at(time_created: str) -> datetime | None:
    """When an image was created, from the provider's timeCreated; None for a value it cannot read."""
    found = _TIME_RE.fullmatch((time_created or "").strip())
    if not found:
        return None
    day, clock, fraction, zone = found.groups()
    zone = "+00:00" if zone in (None, "Z") else f"{zone[:3]}:{zone[-2:]}"
    return datetime.fromisoformat(f"{day}T{clock}.{(fraction or '0')[:6].ljust(6, '0')}{zone}")


def age_days(time_created: str, now: datetime) -> float:
    """Days since the image was created; infinite (never fresh) when its time cannot be read."""
    created = created_at(time_created)
    return (now - created).total_seconds() / 86400 if created else float("inf")


def choose(cfg: StackConfig, found: list[core.outputs.GetImagesImageResult], install: Install,
           now: datetime) -> tuple[str, str]:
    """(the baked image to boot, or "" for the bare one; what was decided and why). ValueError when bakedImage is
    require and none fits."""
    digest, max_age = install.digest, cfg.bake.max_age_days
    fresh = [i for i in found if age_days(i.time_created, now) <= max_age]
    if fresh:
        image = fresh[0]
        return image.id, (f"booting the baked image {image.display_name} ({image.id}, install {digest}, "
                          f"{_days(image.time_created, now)} old)")
    if found:
        why = (f"the newest image baked for install {digest}, {found[0].display_name}, is "
               f"{_days(found[0].time_created, now)} old, older than bakeMaxAgeDays {max_age}")
        fix = "bake it again (pulumi config set bakeImage true; pulumi up) or raise bakeMaxAgeDays"
    else:
        why = f"no image is baked for install {digest} (base image {install.base_image}) on {cfg.shape.name}"
        fix = "bake one: pulumi config set bakeImage true; pulumi up"
    if cfg.bake.policy == "require":
        raise ValueError(f"bakedImage require: {why}; {fix}, or boot the bare image: pulumi config set bakedImage auto")
    return "", f"booting the bare image {install.base_image}: {why} ({fix})"


def _days(time_created: str, now: datetime) -> str:
    age = age_days(time_created, now)
    return f"{age:.0f} days" if age != float("inf") else f"of unknown age (timeCreated {time_created!r})"


Log = Callable[[str], None]


def boot_image(name: str, cfg: StackConfig, args: VmArgs, project: str, now: datetime | None = None,
               log: Log = pulumi.log.info, chosen: dict[str, pulumi.Input[str]] | None = None) -> VmArgs:
    """args, booting the image this stack bakes (bakeImage) or the one baked before for its install (bakedImage);
    unchanged when baking is off or there is no base image. chosen: the image decided for each install digest so
    far in this program ("" for the bare one), so that a workshop's VMs of one install share one bake or lookup.
    ValueError for bakedImage require without a match."""
    if not (cfg.bake.build or cfg.bake.looks_up) or cfg.replicas > 1:
        return args
    install = install_of(cfg, args)
    if install is None:
        return args
    now = now or datetime.now(timezone.utc)
    chosen = {} if chosen is None else chosen
    if install.digest not in chosen:
        chosen[install.digest] = _decide(name, cfg, args, install, project, now, log)
    image = chosen[install.digest]
    return args if isinstance(image, str) and not image else dataclasses.replace(args, image_id=image)


def _decide(name: str, cfg: StackConfig, args: VmArgs, install: Install, project: str, now: datetime,
            log: Log) -> pulumi.Input[str]:
    if cfg.bake.build:
        builder = BuilderArgs.from_config(cfg, args, install.rendered, install.base_image, install.digest, project,
                                          now.strftime("%Y-%m-%d"))
        log(f"baking install {install.digest} on {install.base_image}: a builder runs its install steps")
        return BakedImage(f"{name}-bake-{install.digest}", builder, freeform_tags(cfg, project)).image_id
    image, note = choose(cfg, baked_images(args, project, install.digest), install, now)
    log(note)
    return image


def workshop_boot_images(name: str, args: WorkshopArgs, plans: list[EndpointPlan], project: str,
                         now: datetime | None = None, log: Log = pulumi.log.info) -> WorkshopArgs:
    """args with each VM endpoint booting its install's baked image: one bake (or one lookup) per distinct install,
    however many VMs share it."""
    chosen: dict[str, pulumi.Input[str]] = {}
    endpoints = []
    for endpoint, plan in zip(args.endpoints, plans):
        if isinstance(endpoint.vm, VmArgs):
            endpoint = dataclasses.replace(endpoint, vm=boot_image(name, plan.cfg, endpoint.vm, project, now, log,
                                                                   chosen))
        endpoints.append(endpoint)
    return dataclasses.replace(args, endpoints=tuple(endpoints))
