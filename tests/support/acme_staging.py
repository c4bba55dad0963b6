"""The Let's Encrypt staging roots and the example stacks that use them, for the ACME trust tests."""
from __future__ import annotations

from typing import Any

from llmdeploy.stack_yaml import read_stack
from support.project import ROOT
from support.pulumi_mocks import Run, run_program, unwrap

MAIN = ROOT / "infra" / "__main__.py"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
STAGING_FILE = ROOT / "infra" / "llmdeploy" / "letsencrypt-staging-roots.pem"

STAGING_ROOTS = {"(STAGING) Pretend Pear X1": "e70570a989f8565aabdf7cae27abd1621872d6a3f811e3fef27e3dba02912198",
                 "(STAGING) Bogus Broccoli X2": "9b2a339fe6a3e85585c4cd75536cb8c1cf7cd603b9a64bec2521858ae48da85d"}


def certificates(pem: str) -> list[str]:
    return ["-----BEGIN CERTIFICATE-----" + part.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
            for part in pem.split("-----BEGIN CERTIFICATE-----")[1:]]


def run_example(stack: str, **overrides: Any) -> Run:
    values = read_stack(ROOT, stack) | {"sshPrivateKey": KEY} | overrides
    if values.get("workshopRoster"):
        values["workshopRoster"] = str(ROOT / values["workshopRoster"])
    return run_program(MAIN, values, stack=stack, secret_keys=("sshPrivateKey",))


def smoke_environments(run: Run) -> list[dict[str, str]]:
    smokes = [r for r in run.of_type("command:local:Command") if r.name.endswith("-smoke")]
    assert smokes
    return [unwrap(s.inputs["environment"]) for s in smokes]
