"""The boot image each stack gets from OCI's image list, under a getImages mock that filters and sorts as the
service and the provider do (tests/support/pulumi_mocks.py), over real OCI platform image names.

OCI builds GPU images of Oracle Linux only: no Canonical Ubuntu image is named "...GPU...". Every shape boots
the plain image of its OS, never the Minimal or aarch64 build, and GPU shapes get NVIDIA's driver at boot."""
from __future__ import annotations

import re
from typing import Any

import pytest

from llmdeploy.config import parse
from llmdeploy.stack.vm import plain_image_regex
from llmdeploy.stack_yaml import read_stack
from support.project import EXAMPLE_STACKS, ROOT, WORKSHOP_STACKS
from support.pulumi_mocks import PLATFORM_IMAGES, PlatformImage, list_images, run_program
from support.pulumi_program import example_run

MAIN = ROOT / "infra" / "__main__.py"
INSTANCE = "oci:Core/instance:Instance"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
VM_STACKS = [s for s in EXAMPLE_STACKS + WORKSHOP_STACKS if read_stack(ROOT, s).get("target", "vm") == "vm"]
# What a correct lookup boots, named by hand (not computed by the code under test).
NEWEST_PLAIN = {"ubuntu-22.04": "Canonical-Ubuntu-22.04-2025.10.31-0", "ubuntu-24.04": "Canonical-Ubuntu-24.04-2025.10.31-0"}


def image_named(name: str) -> str:
    return next(i.id for i in PLATFORM_IMAGES if i.display_name == name)


def expected_image(os_key: str, shape: str) -> str:  # noqa: ARG001 - every known shape is x86
    return image_named(NEWEST_PLAIN[os_key])


def booted_images(stack: str, images: tuple[PlatformImage, ...] = PLATFORM_IMAGES, **overrides: Any) -> set[str]:
    values = read_stack(ROOT, stack) | {"sshPrivateKey": PRIVATE_KEY} | overrides
    run = run_program(MAIN, values, stack=stack, secret_keys=("sshPrivateKey",), images=images)
    return {r.inputs["sourceDetails"]["sourceId"] for r in run.of_type(INSTANCE)}


@pytest.mark.parametrize("stack", VM_STACKS)
def test_each_example_stack_boots_the_newest_plain_image_of_its_os(stack: str) -> None:
    cfg = parse(read_stack(ROOT, stack), stack=stack)
    run, _ = example_run(stack)  # the default image list, as booted_images() gives it
    assert {r.inputs["sourceDetails"]["sourceId"] for r in run.of_type(INSTANCE)} == {image_named(NEWEST_PLAIN[cfg.os])}


@pytest.mark.parametrize("shape", ["VM.GPU.A10.1", "BM.GPU.A100-v2.8", "VM.Standard.E4.Flex"])
def test_ubuntu_24_04_boots_its_plain_image_on_gpu_and_cpu_shapes(shape: str) -> None:
    assert booted_images("ollama-a10" if ".GPU" in shape else "llamacpp-cpu", os="ubuntu-24.04", shape=shape) == \
        {image_named("Canonical-Ubuntu-24.04-2025.10.31-0")}


def test_a_region_without_the_image_stops_with_the_fix() -> None:
    only_oracle_linux = tuple(i for i in PLATFORM_IMAGES if i.operating_system == "Oracle Linux")
    with pytest.raises(Exception) as failed:
        booted_images("ollama-a10", images=only_oracle_linux)
    text = str(failed.value)
    assert "no Canonical Ubuntu 22.04 platform image" in text and "VM.GPU.A10.1" in text
    assert "pulumi config set imageId" in text and "pulumi config set os" in text


def test_a_set_image_id_is_booted_without_a_lookup() -> None:
    assert booted_images("vllm-a100", imageId="ocid1.image.oc1..custom") == {"ocid1.image.oc1..custom"}


# ---- the mock itself behaves as the service: otherwise the tests above would prove nothing ----------------------

def lookup(**args: Any) -> list[str]:
    return [i["displayName"] for i in list_images(PLATFORM_IMAGES, {"sortBy": "TIMECREATED", "sortOrder": "DESC", **args})]


def test_the_mock_filters_by_os_version_and_shape_and_sorts_newest_first() -> None:
    on_gpu = lookup(operatingSystem="Canonical Ubuntu", operatingSystemVersion="22.04", shape="VM.GPU.A10.1")
    assert on_gpu == ["Canonical-Ubuntu-22.04-Minimal-2025.11.05-0", "Canonical-Ubuntu-22.04-2025.10.31-0",
                      "Canonical-Ubuntu-22.04-Minimal-2025.07.23-0", "Canonical-Ubuntu-22.04-2025.07.23-0"]
    on_ampere = lookup(operatingSystem="Canonical Ubuntu", operatingSystemVersion="22.04", shape="VM.Standard.A1.Flex")
    assert on_ampere == ["Canonical-Ubuntu-22.04-aarch64-2025.11.06-0"]
    gpu_builds = lookup(operatingSystem="Oracle Linux", operatingSystemVersion="8", shape="VM.Standard.E4.Flex")
    assert gpu_builds == ["Oracle-Linux-8.10-2025.10.31-0"]  # the GPU build runs on GPU shapes only


def test_the_mock_applies_the_providers_regex_filters_unanchored() -> None:
    def names(regex: str, **args: Any) -> list[str]:
        return lookup(filters=[{"name": "display_name", "values": [regex], "regex": True}], **args)
    # The old lookup: no Canonical Ubuntu image is a GPU build, so it found nothing on every GPU stack.
    assert names(".*GPU.*", operatingSystem="Canonical Ubuntu", operatingSystemVersion="22.04", shape="VM.GPU.A10.1") == []
    assert names("GPU", operatingSystem="Oracle Linux", shape="BM.GPU.A100-v2.8")[0] == "Oracle-Linux-8.10-Gen2-GPU-2025.10.31-0"
    assert "Canonical-Ubuntu-22.04-Minimal-2025.11.05-0" in names("Ubuntu-22.04")  # unanchored: matches anywhere
    plain = names(plain_image_regex("ubuntu-22.04"), operatingSystem="Canonical Ubuntu", operatingSystemVersion="22.04",
                  shape="BM.GPU.A100-v2.8")
    assert plain == ["Canonical-Ubuntu-22.04-2025.10.31-0", "Canonical-Ubuntu-22.04-2025.07.23-0"]
    assert lookup(filters=[{"name": "display_name", "values": ["Oracle-Linux-9.6-2025.10.31-0"]}]) == \
        ["Oracle-Linux-9.6-2025.10.31-0"]


def test_the_plain_image_regex_is_anchored_on_the_os_version() -> None:
    regex = plain_image_regex("ubuntu-22.04")
    assert re.search(regex, "Canonical-Ubuntu-22.04-2025.10.31-0")
    for other in ("Canonical-Ubuntu-22.04-Minimal-2025.10.31-0", "Canonical-Ubuntu-22.04-aarch64-2025.10.31-0",
                  "Canonical-Ubuntu-22.04.5-2025.10.31-0", "Canonical-Ubuntu-24.04-2025.10.31-0",
                  "Custom-Canonical-Ubuntu-22.04-2025.10.31-0", "Canonical-Ubuntu-22.04-2025.10.31-0-copy"):
        assert not re.search(regex, other), other
