"""The baked-image section of Pulumi.yaml (the vm target): whether this stack bakes an image (bakeImage), whether
its VMs boot from one baked before (bakedImage: off, auto, require), how old one may be (bakeMaxAgeDays), and
whether the builder may have hfToken (bakeHfToken). docs/baking.md (its OCI section) says how the two phases run."""
from __future__ import annotations

from dataclasses import dataclass

from .deployment import DeploymentKind
from .reader import Reader

BAKED_IMAGE_POLICIES = ("off", "auto", "require")


@dataclass(frozen=True)
class Bake:
    build: bool  # this stack runs a builder and takes an image from it (bakeImage)
    policy: str  # off | auto | require: whether the VMs look up an image baked for their install
    max_age_days: int  # a baked image older than this is not booted
    hf_token: bool  # the builder gets hfToken (gated weights in the image); never any other secret

    @property
    def looks_up(self) -> bool:
        return self.policy != "off"


NO_BAKE = Bake(False, "off", 30, False)


def parse_bake(r: Reader, kind: DeploymentKind, replicas: int, image_id: str) -> Bake:
    build = r.bool("bakeImage")
    policy = r.choice("bakedImage", BAKED_IMAGE_POLICIES)
    bake = Bake(build, policy, r.int("bakeMaxAgeDays", 1, 365), r.bool("bakeHfToken"))
    # Only the vm target boots an image this project bakes: the ray target's nodes differ, the local target bakes
    # with `llmdeploy bake`, a model deployment boots no image of ours. auto is the default and is ignored there.
    on_vm = kind.boots_user_data and not kind.ray_cluster
    wants = [key for key, asked in (("bakeImage", build), ("bakedImage", policy == "require")) if asked]
    if wants and not on_vm and not r.failed("target"):
        for key in wants:
            r.bad(key, "true" if key == "bakeImage" else policy, f"{'false' if key == 'bakeImage' else 'auto'} on "
                  f"the {kind} target (baked OCI images are for the vm target; the local target bakes with "
                  "`llmdeploy bake --stack X`)", "false" if key == "bakeImage" else "auto")
        return bake
    if wants and replicas > 1 and not r.failed("replicas"):
        for key in wants:  # engine replicas install the engine alone: another install than the head's
            r.bad(key, "true" if key == "bakeImage" else policy, f"{'false' if key == 'bakeImage' else 'auto'} "
                  f"with replicas {replicas} (a baked image holds the head's install, which engine replicas do not "
                  "run); or set replicas 1", "false" if key == "bakeImage" else "auto")
    if policy == "require" and image_id and not r.failed("imageId"):
        r.bad("bakedImage", policy, "auto or off when imageId is set (imageId names the image to boot; require "
              "looks up the one baked for this stack's install)", "auto; or pulumi config rm imageId")
    if build and r.secret("hfToken").reveal() and not bake.hf_token and not r.failed("bakeHfToken"):
        r.bad("bakeImage", "true", "false while hfToken is set and bakeHfToken is false: the builder gets no secret, "
              "and the engine step waits for the token to download gated weights", "false; or let the builder "
              "download them with the token, which the scrub removes before the image is taken: pulumi config "
              "set bakeHfToken true")
    return bake
