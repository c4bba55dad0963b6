"""The local target under `pulumi up`: one `command.local.Command` whose create runs `llmdeploy local up`
(a QEMU VM on the machine that runs Pulumi, provisioned and smoke-tested) and whose delete runs
`llmdeploy local down`. The stack's config reaches `local up` as Pulumi resolved and validated it (whatever its
source: stack file, another config file, ESC), never re-read from disk: the non-secret values as JSON, the
secret ones and the API keys (Pulumi's: random, secret, stable across runs) as secret environment, never on a
command line.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi_command import local

from ..config import StackConfig
from ..declared import PROJECT_ROOT
from ..local import API_KEYS_ENV, WEBUI_SECRET_KEY_ENV
from ..render import render
from ..stack_yaml import config_environment
from .api_keys import generate_api_keys, pulumi_webui_secret_key

ENDPOINT_LINE = re.compile(r"^endpoint:\s+(https://\S+)\s*$", re.M)


def up_command(stack: str, project_dir: str) -> str:
    return (f"llmdeploy local up --stack {shlex.quote(stack)} --project-dir {shlex.quote(project_dir)} "
            "--config-from-env")


def down_command(stack: str) -> str:
    return f"llmdeploy local down --stack {shlex.quote(stack)}"


def endpoint_from(stdout: str | None) -> str:
    """The endpoint `llmdeploy local up` printed ("endpoint: https://127.0.0.1:PORT")."""
    match = ENDPOINT_LINE.search(stdout or "")
    return match.group(1) if match else ""


class LocalVmEndpoint(pulumi.ComponentResource):
    endpoint_url: pulumi.Output[str]
    api_keys: pulumi.Output[dict[str, str]]
    smoke_report: pulumi.Output[str]

    def __init__(self, name: str, cfg: StackConfig, values: Mapping[str, Any], project_dir: str = str(PROJECT_ROOT),
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`values`: the raw config values `cfg` was parsed from, as Pulumi resolved them."""
        super().__init__("llmdeploy:local:LocalVmEndpoint", name, None, opts)
        keys = generate_api_keys(name, [k.name for k in cfg.auth.api_keys], self)
        self.api_keys = keys.values
        environment: dict[str, pulumi.Input[str]] = {API_KEYS_ENV: self.api_keys.apply(json.dumps),
                                                     **config_environment(values)}
        if cfg.chat.ui == "open-webui":
            environment[WEBUI_SECRET_KEY_ENV] = pulumi_webui_secret_key(name, self)
        # A new VM whenever what it would boot changes; the old one goes first (same stack, same state folder).
        user_data_digest = hashlib.sha256(render(cfg).user_data.encode()).hexdigest()
        vm = local.Command(
            f"{name}-vm", create=up_command(cfg.stack, project_dir), delete=down_command(cfg.stack),
            dir=project_dir, environment=pulumi.Output.secret(environment),
            triggers=[user_data_digest, *keys.ids],
            logging=local.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, custom_timeouts=pulumi.CustomTimeouts(
                create=f"{cfg.readiness_timeout_minutes + 30}m")))
        self.endpoint_url = vm.stdout.apply(endpoint_from)
        self.smoke_report = vm.stdout
        self.register_outputs({"endpointUrl": self.endpoint_url, "apiKeys": self.api_keys})
