"""The one module that reads pulumi.Config: every declared key, as text, for the program to validate with
config.parse before any resource exists (a ConfigError stops `pulumi up` with the full list of problems). It
also resolves what the components need from the environment (SSH auth), so that they read none of it."""
from __future__ import annotations

import os
from typing import Any, Mapping

import pulumi

from ..config import StackConfig
from ..declared import declarations
from .gates import SshAuth


def load_raw() -> dict[str, Any]:
    """The stack's values of every declared key, as the CLI passes them (strings). Secret values are read as
    text but only ever held in config.Secret; whatever derives from them is wrapped in Output.secret."""
    config = pulumi.Config()
    return {key: value for key in declarations() if (value := config.get(key)) is not None}


def ssh_auth(cfg: StackConfig, environ: Mapping[str, str] | None = None) -> SshAuth:
    """How pulumi up reaches the VM over SSH: sshPrivateKey, or else the running ssh-agent (SSH_AUTH_SOCK).
    A ValueError before any resource when there is neither."""
    if cfg.ssh_private_key:
        return SshAuth(cfg.ssh_private_key)
    socket = (os.environ if environ is None else environ).get("SSH_AUTH_SOCK", "")
    if not socket:
        raise ValueError("sshPrivateKey: got nothing and no ssh-agent is running (SSH_AUTH_SOCK unset); pulumi up "
                         "needs one of them to check readiness (pulumi config set --secret sshPrivateKey -- "
                         "\"$(cat ~/.ssh/id_ed25519)\", or start ssh-agent and ssh-add the key)")
    return SshAuth(cfg.ssh_private_key, socket)


def tenancy_ocid(cfg: StackConfig, environ: Mapping[str, str] | None = None) -> str:
    """The tenancy's OCID, where autostop's dynamic group lives ("" when autostop is off): compartmentId when it is
    the tenancy, else the OCI provider's oci:tenancyOcid, else $OCI_TENANCY_OCID (what the provider reads too)."""
    if not cfg.autostop.enabled:
        return ""
    if cfg.compartment_id.startswith("ocid1.tenancy."):
        return cfg.compartment_id
    return pulumi.Config("oci").get("tenancyOcid") or (os.environ if environ is None else environ).get(
        "OCI_TENANCY_OCID", "")
