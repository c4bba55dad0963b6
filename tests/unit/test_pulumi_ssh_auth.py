"""SSH auth for the readiness gate is resolved where the config is read (stack/pulumi_config.ssh_auth) and
handed to the components, which read no environment of their own."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmdeploy.config import Secret, StackConfig, parse
from llmdeploy.stack.gates import SshAuth
from llmdeploy.stack.pulumi_config import ssh_auth
from llmdeploy.stack_yaml import read_stack
from support.project import ROOT
from support.pulumi_mocks import run_program, unwrap

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
# A program of its own: the VM component built from args with an agent socket that is not the environment's.
PROGRAM = """
from llmdeploy.config import Secret, parse
from llmdeploy.declared import PROJECT_ROOT
from llmdeploy.stack.gates import SshAuth
from llmdeploy.stack.vm import VmArgs, VmEndpoint
from llmdeploy.stack_yaml import read_stack

cfg = parse(read_stack(PROJECT_ROOT, "llamacpp-cpu"), stack="llamacpp-cpu")
VmEndpoint("vm", VmArgs.from_config(cfg, SshAuth(Secret(""), "/resolved/agent.sock")), {})
"""


def cpu_config(**overrides: str) -> StackConfig:
    return parse(read_stack(ROOT, "llamacpp-cpu") | overrides, stack="llamacpp-cpu")


def test_a_configured_key_wins_over_the_agent() -> None:
    auth = ssh_auth(cpu_config(sshPrivateKey=KEY), {"SSH_AUTH_SOCK": "/run/agent.sock"})
    assert auth == SshAuth(Secret(KEY)) and auth.agent_socket == ""


def test_without_a_key_the_agent_of_the_given_environment_serves() -> None:
    assert ssh_auth(cpu_config(), {"SSH_AUTH_SOCK": "/run/agent.sock"}) == SshAuth(Secret(""), "/run/agent.sock")


@pytest.mark.parametrize("environ", [{}, {"SSH_AUTH_SOCK": ""}])
def test_neither_a_key_nor_an_agent_names_both_fixes(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="no ssh-agent is running") as info:
        ssh_auth(cpu_config(), environ)
    assert "pulumi config set --secret sshPrivateKey" in str(info.value) and "ssh-add" in str(info.value)


def test_the_vm_component_uses_the_auth_it_is_given_not_the_environment(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", "/environment/agent.sock")
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    run = run_program(program, {}, stack="llamacpp-cpu")
    connection = unwrap(run.one("command:remote:Command").inputs["connection"])
    assert connection["agentSocketPath"] == "/resolved/agent.sock" and "privateKey" not in connection
