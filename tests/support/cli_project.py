"""A throwaway project with a stack file, for the CLI error tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from support.project import SSH_KEY, empty_project

PASSWORD = "SECRET-basic-auth-passphrase"
GOOD = f"""\
config:
  oci:region: eu-frankfurt-1
  llmdeploy:compartmentId: ocid1.compartment.oc1..x
  llmdeploy:engine: ollama
  llmdeploy:apiKeys:
    - default
  llmdeploy:basicAuthUsers:
    - alice
  llmdeploy:sshPublicKeys:
    - {SSH_KEY}
"""
# Three problems: a bad engine, a bad e-mail and a tag without '='.
BAD = f"""\
config:
  oci:region: eu-frankfurt-1
  llmdeploy:compartmentId: ocid1.compartment.oc1..x
  llmdeploy:engine: olama
  llmdeploy:acmeEmail: nope
  llmdeploy:tags:
    - noequals
  llmdeploy:sshPublicKeys:
    - {SSH_KEY}
"""
SECURE = GOOD + "  llmdeploy:hfToken:\n    secure: v1:AAAAciphertext==\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = empty_project(tmp_path, monkeypatch)
    for stack, text in (("good", GOOD), ("bad", BAD), ("secure", SECURE)):
        (root / f"Pulumi.{stack}.yaml").write_text(text, encoding="utf-8")
    return root
