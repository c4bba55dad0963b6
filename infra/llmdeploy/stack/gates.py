"""The two gates of `pulumi up`: readiness (over SSH: secrets delivered, then provisioning finished) and
smoke (the project's smoke test run from this machine). Either failing fails `pulumi up`.

Secrets travel as stdin (readiness) or secret environment (smoke), never on a command line.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_command import local, remote

from .. import acme_roots
from ..config import Secret, StackConfig
from ..bundle import delivery_script, payload
from ..pem import first_certificate
from ..secret_delivery import DeliveredSecrets
from ..vmpaths import WAIT_READY

def readiness_script(timeout_s: int) -> str:
    """The remote side: as soon as SSH logs in, the provisioning bundle (checked against the digest in the
    metadata) and then the secrets, both from stdin (bundle.delivery_script; the engine step may be waiting for
    hfToken); then wait for provisioning and the engine (stdin untouched). The timeout is in the command itself:
    sshd drops environment variables it does not AcceptEnv."""
    return f"{delivery_script()} && sudo -n {WAIT_READY} {int(timeout_s)} </dev/null"

# The local side: the key arrives as LLMDEPLOY_API_KEY (or a basic-auth password as
# LLMDEPLOY_BASIC_PASSWORD); the CAs to trust (the VM's own, a test ACME directory's pinned roots, and/or
# the user's bundle, read now so a refreshed file counts) are written to a private temp file that is
# removed afterwards.
SMOKE_SCRIPT = """set -u
ca=""
if [ -n "${LLMDEPLOY_CA_PEM:-}${LLMDEPLOY_ACME_ROOTS_PEM:-}" ] || [ -n "${LLMDEPLOY_SMOKE_CA_BUNDLE:-}" ]; then
  ca=$(mktemp)
  trap 'rm -f "$ca"' EXIT
  printf '%s\\n%s\\n' "${LLMDEPLOY_CA_PEM:-}" "${LLMDEPLOY_ACME_ROOTS_PEM:-}" >"$ca"
  if [ -n "${LLMDEPLOY_SMOKE_CA_BUNDLE:-}" ]; then cat "$LLMDEPLOY_SMOKE_CA_BUNDLE" >>"$ca"; fi
fi
set -- --kind "$LLMDEPLOY_SMOKE_KIND" --model "$LLMDEPLOY_SMOKE_MODEL"
if [ -n "$ca" ]; then set -- "$@" --ca-bundle "$ca"; fi
# Stacks with basic-auth users only: the password stays in LLMDEPLOY_BASIC_PASSWORD.
if [ -n "${LLMDEPLOY_BASIC_USER:-}" ]; then set -- "$@" --basic "$LLMDEPLOY_BASIC_USER"; fi
# chatUi: the chat host's sign-in too, with the same key.
if [ -n "${LLMDEPLOY_SMOKE_CHAT_URL:-}" ]; then set -- "$@" --chat-url "$LLMDEPLOY_SMOKE_CHAT_URL"; fi
llmdeploy smoke "$LLMDEPLOY_SMOKE_URL" "$@"
"""

def ca_from_readiness(stdout: str | None) -> str:
    return first_certificate(stdout or "")


@dataclass(frozen=True)
class SshAuth:
    """How pulumi up logs in to the VM: the configured private key, or else the ssh-agent at agent_socket.
    Resolved where the config is read (stack/pulumi_config.py), never inside a component."""

    private_key: Secret
    agent_socket: str = ""


@dataclass(frozen=True)
class ReadinessArgs:
    user: str  # the VM's admin user
    ssh: SshAuth
    timeout_minutes: int
    secrets: DeliveredSecrets

    @classmethod
    def from_config(cls, cfg: StackConfig, ssh: SshAuth) -> ReadinessArgs:
        return cls(cfg.admin_user, ssh, cfg.readiness_timeout_minutes, DeliveredSecrets.from_config(cfg))


def ssh_connection(user: str, ssh: SshAuth, host: pulumi.Input[str],
                   jump_host: pulumi.Input[str] | None = None) -> remote.ConnectionArgs:
    """Through jump_host when given (a Ray worker has no public IP: the head is its bastion). Keeps retrying
    while the VM boots (sshd comes up a minute or two after launch)."""
    key = pulumi.Output.secret(ssh.private_key.reveal()) if ssh.private_key else None
    agent = None if ssh.private_key else ssh.agent_socket
    proxy = remote.ProxyConnectionArgs(host=jump_host, user=user, private_key=key, agent_socket_path=agent,
                                       dial_error_limit=60, per_dial_timeout=30) if jump_host is not None else None
    return remote.ConnectionArgs(host=host, user=user, private_key=key, agent_socket_path=agent,
                                 dial_error_limit=60, per_dial_timeout=30, proxy=proxy)


def readiness(name: str, args: ReadinessArgs, host: pulumi.Output[str], api_keys: pulumi.Output[dict[str, str]],
              depends_on: list[pulumi.Resource], triggers: list[pulumi.Input[str]],
              parent: pulumi.Resource, bundle: bytes, ray_token: pulumi.Output[str] | None = None,
              webui_secret_key: pulumi.Input[str] = "") -> remote.Command:
    """The VM's gate: its provisioning bundle, then its secrets, then provisioning done and the engine serving."""
    token = ray_token if ray_token is not None else pulumi.Output.from_input("")
    stdin = pulumi.Output.all(api_keys, host, token, webui_secret_key).apply(
        lambda found: payload(bundle, args.secrets.bundle(found[0], found[1], found[2], found[3])).decode())
    return _readiness_command(name, args, ssh_connection(args.user, args.ssh, host), stdin, depends_on, triggers,
                              parent)


def worker_readiness(name: str, args: ReadinessArgs, worker_ip: str, jump_host: pulumi.Output[str],
                     ray_token: pulumi.Output[str], depends_on: list[pulumi.Resource],
                     triggers: list[pulumi.Input[str]], parent: pulumi.Resource, bundle: bytes) -> remote.Command:
    """A Ray worker's gate, over SSH through the head: its bundle, its token (and hfToken), provisioning done."""
    stdin = ray_token.apply(lambda token: payload(bundle, args.secrets.worker_bundle(token)).decode())
    return _readiness_command(name, args, ssh_connection(args.user, args.ssh, worker_ip, jump_host), stdin,
                              depends_on, triggers, parent)


def replica_readiness(name: str, args: ReadinessArgs, replica_ip: str, jump_host: pulumi.Output[str],
                      depends_on: list[pulumi.Resource], triggers: list[pulumi.Input[str]],
                      parent: pulumi.Resource, bundle: bytes) -> remote.Command:
    """An engine replica's gate, over SSH through the head: its bundle, then provisioning done and its engine
    answering (90-ready-replica). Nothing secret goes there (hfToken is refused with replicas): the archive is
    empty."""
    stdin = pulumi.Output.from_input(payload(bundle, args.secrets.worker_bundle("")).decode())
    return _readiness_command(name, args, ssh_connection(args.user, args.ssh, replica_ip, jump_host), stdin,
                              depends_on, triggers, parent)


def _readiness_command(name: str, args: ReadinessArgs, connection: remote.ConnectionArgs,
                       stdin: pulumi.Output[str], depends_on: list[pulumi.Resource],
                       triggers: list[pulumi.Input[str]], parent: pulumi.Resource) -> remote.Command:
    return remote.Command(
        f"{name}-readiness", connection=connection,
        create=readiness_script(args.timeout_minutes * 60), stdin=pulumi.Output.secret(stdin),
        triggers=triggers, logging=remote.Logging.STDOUT_AND_STDERR,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on, custom_timeouts=pulumi.CustomTimeouts(
            create=f"{args.timeout_minutes + 15}m")))


def smoke_acme_roots(cfg: StackConfig) -> str:
    """The pinned roots of a test ACME directory (Let's Encrypt staging), which the smoke test must trust; ""
    for a public one. A pebble directory without smokeCaBundle is a ValueError before anything is created
    (llmdeploy/acme_roots.py says why pebble's roots cannot be pinned)."""
    if cfg.tls.mode != "letsencrypt":
        return ""
    problem = acme_roots.pebble_problem(cfg.tls.acme_directory_url, cfg.smoke_ca_bundle)
    if problem:
        raise ValueError(problem)
    return acme_roots.pinned_roots_for(cfg.tls.acme_directory_url)


def smoke(name: str, url: pulumi.Input[str], kind: str, model: str, env: dict[str, pulumi.Input[str]],
          depends_on: list[pulumi.CustomResource], parent: pulumi.Resource) -> local.Command:
    environment: dict[str, pulumi.Input[str]] = {"LLMDEPLOY_SMOKE_URL": url, "LLMDEPLOY_SMOKE_KIND": kind,
                                                 "LLMDEPLOY_SMOKE_MODEL": model, **env}
    return local.Command(
        f"{name}-smoke", create=SMOKE_SCRIPT, interpreter=["/bin/bash", "-c"],
        # IDs, not URNs: a replaced VM (new readiness ID) must be smoke-tested again.
        environment=pulumi.Output.secret(environment), triggers=[d.id for d in depends_on],
        logging=local.Logging.STDOUT_AND_STDERR,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on))
