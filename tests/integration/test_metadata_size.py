"""OCI refuses an instance whose metadata is over 32,000 bytes. The metadata now carries only the bootstrap (the
admin user with its SSH keys, the bootstrap script and the bundle's digest): every machine of every example stack,
and each of a 300-attendee workshop's, stays under 8,000 bytes with five RSA-4096 keys. One over the limit is
refused before anything is created, with the numbers and the fix. Pure Python, but ~300 renders: not the unit tier."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmdeploy.bundle import OCI_METADATA_LIMIT
from llmdeploy.config import parse
from llmdeploy.endpoints import load_plans
from llmdeploy.render import render_nodes
from llmdeploy.stack_yaml import load_stack_config, read_stack
from llmdeploy.validate import check_size
from support.project import EXAMPLE_STACKS, ROOT
from support.pulumi_program import run_stack
from support.sshkeys import rsa_4096_public_keys
from support.workshop_stack import workshop_project

BUDGET = 8_000
FIVE_RSA = rsa_4096_public_keys(5)


def with_keys(stack: str, keys: list[str]) -> dict[str, Any]:
    values = read_stack(ROOT, stack)
    return {**values, "sshPublicKeys": [*values.get("sshPublicKeys", []), *keys]}


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_every_machine_of_every_example_stack_fits_8000_bytes_with_five_rsa_4096_keys(stack: str) -> None:
    cfg = parse(with_keys(stack, FIVE_RSA), stack=stack)
    assert len(cfg.ssh_public_keys) >= 5
    for node, rendered in render_nodes(cfg):
        size = rendered.provisioning.metadata_bytes()
        assert size < BUDGET, f"{stack} {node or 'vm'}: {size} bytes of metadata"
        admin = yaml.safe_load(rendered.user_data)["users"][0]
        assert set(FIVE_RSA) <= set(admin["ssh_authorized_keys"])
        assert len(rendered.bundle) > 3 * BUDGET // 2  # what no longer rides in the metadata


def test_each_of_300_workshop_attendees_fits_8000_bytes(tmp_path: Path) -> None:
    rows = [{"id": f"u{i:03d}", "name": f"Attendee {i}", "email": f"u{i:03d}@example.org", "status": "active"}
            for i in range(300)]
    root = workshop_project(tmp_path, rows, tlsMode="letsencrypt", workshopDomain="ws.example.org",
                            acmeEmail="ops@example.org", sshPublicKeys=FIVE_RSA)
    plans = load_plans(load_stack_config(root, "ws"), root)
    assert len(plans) == 300
    sizes = [rendered.provisioning.metadata_bytes() for plan in plans for _, rendered in render_nodes(plan.cfg)]
    assert len(sizes) == 300 and max(sizes) < BUDGET, max(sizes)


def test_a_stack_over_oci_s_limit_is_refused_with_the_numbers_and_the_fix() -> None:
    keys = rsa_4096_public_keys(45)  # about 33 KB of keys
    cfg = parse(with_keys("llamacpp-cpu", keys), stack="llamacpp-cpu")
    ok, message = check_size(render_nodes(cfg)[0][1])
    assert not ok and f"over OCI's limit of {OCI_METADATA_LIMIT}" in message and "fewer or shorter keys" in message
    with pytest.raises(Exception, match=f"over OCI's limit of {OCI_METADATA_LIMIT}"):
        run_stack("llamacpp-cpu", sshPublicKeys=[*read_stack(ROOT, "llamacpp-cpu")["sshPublicKeys"], *keys])
    from support import pulumi_mocks
    assert pulumi_mocks.LAST_MOCKS is not None and pulumi_mocks.LAST_MOCKS.resources == []
