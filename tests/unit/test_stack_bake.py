"""Baked OCI images in the Pulumi program, under mocks (tests/support/pulumi_mocks.py answers getImages as OCI and
the provider do, custom images included): bakeImage builds a builder that gets no secret, an image tagged with the
install digest, and VMs that boot from it; bakedImage finds an image baked before by its tags, or falls back to the
bare image, or refuses; a workshop bakes each distinct install once."""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from llmdeploy.bake.install import PER_INSTANCE_STEPS, install_digest, install_steps
from llmdeploy.config import ConfigError, parse
from llmdeploy.render import STEPS_DIR, render
from llmdeploy.stack.bake import INSTALL_TAG
from llmdeploy.stack.baked_image import age_days
from llmdeploy.stack_yaml import read_stack
from support.delivery import bundle_files, secrets_tar, split_payload
from support.project import ROOT
from support.pulumi_mocks import PLATFORM_IMAGES, PlatformImage, Run, is_secret, run_program, unwrap

MAIN = ROOT / "infra" / "__main__.py"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
INSTANCE, IMAGE, REMOTE, LOCAL = ("oci:Core/instance:Instance", "oci:Core/image:Image", "command:remote:Command",
                                  "command:local:Command")
BARE_2204 = next(i.id for i in PLATFORM_IMAGES if i.display_name == "Canonical-Ubuntu-22.04-2025.10.31-0")
BARE_2404 = next(i.id for i in PLATFORM_IMAGES if i.display_name == "Canonical-Ubuntu-24.04-2025.10.31-0")
HF_TOKEN = "hf_bakeTestTokenThatMustNeverReachTheBuilder"
BASIC_PASSWORD = "basic-password-not-for-the-builder"


def values(stack: str, **overrides: Any) -> dict[str, Any]:
    return read_stack(ROOT, stack) | {"sshPrivateKey": KEY} | overrides


def run(stack: str, images: tuple[PlatformImage, ...] = PLATFORM_IMAGES, secret: tuple[str, ...] = (),
        **overrides: Any) -> Run:
    return run_program(MAIN, values(stack, **overrides), stack=stack, secret_keys=("sshPrivateKey", *secret),
                       images=images)


def digest_of(stack: str, base: str, **overrides: Any) -> str:
    """The install digest as bake/install.py computes it, for the stack's config and the base image named by hand."""
    return install_digest(render(parse(values(stack, **overrides), stack=stack)), base)


def baked(digest: str, days_old: float, name: str = "", project: str = "llmdeploy",
          compartment: str = "ocid1.compartment.oc1..aaaaaaaaexampleexampleexample") -> PlatformImage:
    created = (datetime.now(timezone.utc) - timedelta(days=days_old)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return PlatformImage(name or f"llmdeploy-{digest}-{days_old}", "Canonical Ubuntu", "22.04", created,
                         compartment_id=compartment, freeform_tags=(("project", project), (INSTALL_TAG, digest)))


def booted(result: Run) -> set[str]:
    return {r.inputs["sourceDetails"]["sourceId"] for r in result.of_type(INSTANCE) if "-builder" not in r.name}


def user_data(instance: Any) -> str:
    return gzip.decompress(base64.b64decode(unwrap(instance.inputs)["metadata"]["user_data"])).decode()


# ---- bakeImage: the builder, the image, the VM booting from it --------------------------------------------------

def test_bake_image_builds_a_builder_and_an_image_tagged_with_the_install_and_the_vm_boots_from_it() -> None:
    result = run("vllm-a100", bakeImage=True)
    digest = digest_of("vllm-a100", BARE_2204)
    image = result.one(IMAGE)
    builder = next(r for r in result.of_type(INSTANCE) if r.name.endswith("-builder"))
    assert image.name == f"llmdeploy-vllm-a100-bake-{digest}"
    tags = image.inputs["freeformTags"]
    assert tags[INSTALL_TAG] == digest and tags["project"] == "llmdeploy" and tags["llmdeploy-base-image"] == BARE_2204
    assert tags["llmdeploy-baked-on"] == datetime.now(timezone.utc).strftime("%Y-%m-%d")
    # The image outlives the stack: `workshop teardown` finds a stack's leftovers by its stack tag, the reaper by
    # expires-at. The builder, which must not outlive it, carries both.
    assert "stack" not in tags and tags["llmdeploy-baked-by"] == "vllm-a100" and tags["managed-by"] == "llmdeploy"
    assert image.inputs["displayName"].startswith(f"llmdeploy-{digest}-")
    assert image.inputs["instanceId"] == f"{builder.name}-id"  # taken from the builder
    # The builder boots the bare image on the stack's shape; the endpoint boots the image.
    assert builder.inputs["sourceDetails"]["sourceId"] == BARE_2204 and builder.inputs["shape"] == "BM.GPU.A100-v2.8"
    assert builder.inputs["freeformTags"]["stack"] == "vllm-a100"
    assert booted(result) == {f"{image.name}-id"}
    # The image is taken after the builder powered off, which follows the install and the scrub.
    off = result.one(LOCAL) if len(result.of_type(LOCAL)) == 1 else \
        next(r for r in result.of_type(LOCAL) if r.name.endswith("-powered-off"))
    install = next(r for r in result.of_type(REMOTE) if r.name.endswith("-install"))
    assert off.urn in image.dependencies and install.urn in off.dependencies and builder.urn in install.dependencies


def test_the_builder_runs_the_install_steps_alone_then_the_scrub_and_a_power_off() -> None:
    result = run("vllm-a100", bakeImage=True)
    cfg = parse(values("vllm-a100"), stack="vllm-a100")
    rendered = render(cfg)
    install = next(r for r in result.of_type(REMOTE) if r.name.endswith("-install"))
    files = bundle_files(unwrap(install.inputs["stdin"]))
    steps = {p.rsplit("/", 1)[1][:-3] for p in files if p.startswith(STEPS_DIR + "/")}
    assert steps == set(install_steps(rendered)) and not steps & set(PER_INSTANCE_STEPS)
    # The install steps' scripts are the stack's own: the digest names what the builder ran.
    for step in steps:
        assert files[f"{STEPS_DIR}/{step}.sh"] == rendered.file(f"{STEPS_DIR}/{step}.sh").content
    builder = next(r for r in result.of_type(INSTANCE) if r.name.endswith("-builder"))
    bundle, _ = split_payload(unwrap(install.inputs["stdin"]))
    assert hashlib.sha256(bundle).hexdigest() in user_data(builder)
    command = install.inputs["create"]
    assert command.index("llmdeploy-install-secrets") < command.index("base64 -d | sudo -n bash -s") \
        < command.index("systemctl poweroff")
    assert install.inputs["triggers"] == [f"{builder.name}-id"]
    assert is_secret(install.inputs["stdin"])  # the payload stays out of the state's plaintext and the logs


def test_the_builder_gets_no_secret_of_the_stack() -> None:
    over = {"bakeImage": True, "basicAuthUsers": ["alice"],
            "basicAuthPasswords": json.dumps({"alice": BASIC_PASSWORD})}
    result = run("chat-webui", secret=("basicAuthPasswords",), **over)
    api_keys = {k: v for k, v in unwrap(result.outputs["apiKeys"]).items()}
    endpoint_gate = next(r for r in result.of_type(REMOTE) if r.name.endswith("-readiness"))
    # The endpoint's own gate delivers them, where this scan finds them: the scan below can fail.
    endpoint_map = secrets_tar(unwrap(endpoint_gate.inputs["stdin"])).extractfile("api-keys.map").read().decode()  # type: ignore[union-attr]
    assert set(api_keys) and all(v in endpoint_map for v in api_keys.values())
    install = next(r for r in result.of_type(REMOTE) if r.name.endswith("-install"))
    builder = next(r for r in result.of_type(INSTANCE) if r.name.endswith("-builder"))
    stdin = unwrap(install.inputs["stdin"])
    reaching = [user_data(builder), install.inputs["create"], stdin, *bundle_files(stdin).values()]
    members = secrets_tar(stdin)
    names = members.getnames()
    reaching += [members.extractfile(m).read().decode() for m in members.getmembers()]  # type: ignore[union-attr]
    htpasswd = render(parse(values("chat-webui", **over), stack="chat-webui")).file(
        "/usr/local/share/llmdeploy/files/htpasswd").content.split(":", 1)[1].strip()  # alice's bcrypt hash
    for secret in [*api_keys.values(), BASIC_PASSWORD, htpasswd, KEY.splitlines()[1]]:
        assert not any(secret in text for text in reaching), secret[:8]
    assert names == ["open-webui.env"]  # Open WebUI's install waits for a key: the builder's own
    webui_key = [r for r in result.resources if r.name.endswith("-builder-open-webui-secret-key")]
    assert len(webui_key) == 1


def test_a_stack_with_hf_token_bakes_only_when_the_builder_may_have_it() -> None:
    with pytest.raises(ConfigError, match="bakeHfToken"):
        parse(values("vllm-a100", bakeImage=True, hfToken=HF_TOKEN), stack="vllm-a100")
    result = run("vllm-a100", secret=("hfToken",), bakeImage=True, bakeHfToken=True, hfToken=HF_TOKEN)
    install = next(r for r in result.of_type(REMOTE) if r.name.endswith("-install"))
    tar = secrets_tar(unwrap(install.inputs["stdin"]))
    assert tar.getnames() == ["hf.env"]
    assert HF_TOKEN in tar.extractfile("hf.env").read().decode()  # type: ignore[union-attr]


# ---- bakedImage: the lookup -------------------------------------------------------------------------------------

def test_a_matching_baked_image_is_booted_and_the_newest_fresh_one_wins() -> None:
    digest = digest_of("ollama-a10", BARE_2204)
    images = (*PLATFORM_IMAGES, baked(digest, 3, "older"), baked(digest, 1, "newer"))
    result = run("ollama-a10", images=images)
    assert booted(result) == {next(i.id for i in images if i.display_name == "newer")}
    assert not result.of_type(IMAGE) and not any(r.name.endswith("-builder") for r in result.of_type(INSTANCE))
    lookups = [a for t, a in result.invokes if t == "oci:Core/getImages:getImages" and a.get("state")]
    assert {f["name"] for f in lookups[0]["filters"]} == {f"freeform_tags.{INSTALL_TAG}", "freeform_tags.project"}


def test_an_image_of_another_install_project_or_compartment_is_not_booted() -> None:
    digest = digest_of("ollama-a10", BARE_2204)
    others = (baked("0" * 16, 1, "other-install"), baked(digest, 1, "other-project", project="elsewhere"),
              baked(digest, 1, "other-compartment", compartment="ocid1.compartment.oc1..other"))
    assert booted(run("ollama-a10", images=(*PLATFORM_IMAGES, *others))) == {BARE_2204}


def test_a_changed_install_no_longer_matches() -> None:
    digest = digest_of("ollama-a10", BARE_2204)
    images = (*PLATFORM_IMAGES, baked(digest, 1))
    assert booted(run("ollama-a10", images=images)) != {BARE_2204}
    assert booted(run("ollama-a10", images=images, ollamaModel="qwen2.5:7b")) == {BARE_2204}
    # The base image is part of the install: on ubuntu-24.04 the same steps make another install.
    assert booted(run("ollama-a10", images=images, os="ubuntu-24.04")) == {BARE_2404}


def test_require_refuses_without_a_match_and_names_the_fix() -> None:
    with pytest.raises(Exception) as refused:
        run("ollama-a10", bakedImage="require")
    text = str(refused.value)
    assert "bakedImage require: no image is baked for install" in text and "bakeImage true" in text
    from support import pulumi_mocks
    assert pulumi_mocks.LAST_MOCKS is not None  # refused before any resource
    assert not [r for r in pulumi_mocks.LAST_MOCKS.resources if r.type == INSTANCE]


def test_an_image_older_than_bake_max_age_days_is_refused() -> None:
    digest = digest_of("ollama-a10", BARE_2204)
    images = (*PLATFORM_IMAGES, baked(digest, 40, "stale"))
    assert booted(run("ollama-a10", images=images)) == {BARE_2204}  # auto: the bare image
    assert booted(run("ollama-a10", images=images, bakeMaxAgeDays=60)) != {BARE_2204}
    with pytest.raises(Exception) as refused:
        run("ollama-a10", images=images, bakedImage="require")
    assert "40 days old, older than bakeMaxAgeDays 30" in str(refused.value)


def test_off_never_looks() -> None:
    digest = digest_of("ollama-a10", BARE_2204)
    result = run("ollama-a10", images=(*PLATFORM_IMAGES, baked(digest, 1)), bakedImage="off")
    assert booted(result) == {BARE_2204}
    assert not [a for t, a in result.invokes if t == "oci:Core/getImages:getImages" and a.get("state")]


# ---- workshops ---------------------------------------------------------------------------------------------------

def test_a_workshop_bakes_each_distinct_install_once_and_its_vms_boot_from_it() -> None:
    result = run("workshop-a10", bakeImage=True)
    images = result.of_type(IMAGE)
    builders = [r for r in result.of_type(INSTANCE) if r.name.endswith("-builder")]
    vms = [r for r in result.of_type(INSTANCE) if "-builder" not in r.name]
    # rosters/example.csv: chen overrides ollamaModel (another install); dana is revoked.
    assert len(images) == len(builders) == 2 and len(vms) == 4
    by_vm = {r.name: r.inputs["sourceDetails"]["sourceId"] for r in vms}
    default = digest_of("workshop-a10", BARE_2204, workshopRoster="", domain="ana.ws.example.org")
    default_image = next(i for i in images if i.inputs["freeformTags"][INSTALL_TAG] == default)
    assert {v for k, v in by_vm.items() if "-chen-" not in k} == {f"{default_image.name}-id"}
    assert by_vm[next(k for k in by_vm if "-chen-" in k)] in {f"{i.name}-id" for i in images} - {f"{default_image.name}-id"}
    # The course's expiry reaps the builders with it, never the images.
    assert all(b.inputs["freeformTags"]["expires-at"] == "2026-12-31T18:00:00Z" for b in builders)
    assert not [i for i in images if "expires-at" in i.inputs["freeformTags"]]


# ---- config -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("stack", "over", "says"), [
    ("ray-a10", {"bakeImage": True}, "bakeImage: got 'true'; expected false on the ray target"),
    ("datascience-a10", {"bakedImage": "require"}, "bakedImage: got 'require'; expected auto on the datascience"),
    ("ollama-a10", {"bakedImage": "always"}, "bakedImage: got 'always'; expected one of off, auto, require"),
    ("ollama-a10", {"bakeMaxAgeDays": 0}, "bakeMaxAgeDays: got 0; expected a whole number from 1 to 365"),
    ("ollama-a10", {"bakedImage": "require", "imageId": "ocid1.image.oc1..x"}, "auto or off when imageId is set"),
    ("ollama-a10", {"bakeImage": True, "replicas": 2}, "with replicas 2"),
])
def test_bad_bake_config_is_refused_with_the_fix(stack: str, over: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(values(stack, **over), stack=stack)
    assert says in str(refused.value)


def test_auto_is_quiet_on_targets_that_do_not_bake() -> None:
    parse(values("ray-a10"), stack="ray-a10")
    parse(values("datascience-a10"), stack="datascience-a10")


def test_the_age_reads_the_providers_go_time_and_rfc_3339_and_an_unreadable_time_is_never_fresh() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    # The provider sets time_created from the Go SDK's time.String() (terraform-provider-oci's images data source).
    assert age_days("2026-12-06 12:00:00.123456789 +0000 UTC", now) == pytest.approx(1, abs=1e-5)
    assert age_days("2026-12-06 14:00:00 +0200 CEST", now) == pytest.approx(1)
    assert age_days("2026-11-07T12:00:00.000Z", now) == pytest.approx(30)
    assert age_days("yesterday", now) == float("inf") and age_days("", now) == float("inf")
