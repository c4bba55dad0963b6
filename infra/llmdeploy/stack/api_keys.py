"""The endpoint's API keys: one random password per key name, kept in Pulumi's state (stable across runs) and
only ever held as a secret Output. The vm and local targets both get theirs here."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from ..secret_delivery import KEY_PREFIX

KEY_LENGTH = 43  # random part of a key: 43 letters and digits, about 256 bits


@dataclass(frozen=True)
class ApiKeys:
    values: pulumi.Output[dict[str, str]]  # secret: {key name: key}
    ids: list[pulumi.Output[str]]  # one per key: a new key (a rotation) must trigger what delivers them


def generate_api_keys(name: str, key_names: list[str], parent: pulumi.Resource) -> ApiKeys:
    """Resources named <name>-key-<key name>, children of parent."""
    passwords = {n: random.RandomPassword(f"{name}-key-{n}", length=KEY_LENGTH, special=False,
                                          opts=pulumi.ResourceOptions(parent=parent)) for n in key_names}
    # Output.all() with no arguments gives a list, not a dict: a basic-auth-only stack has no keys.
    keys: pulumi.Output[dict[str, str]] = pulumi.Output.all(**{n: p.result for n, p in passwords.items()}).apply(
        lambda found: {n: KEY_PREFIX + v for n, v in found.items()}) if passwords else pulumi.Output.from_input({})
    return ApiKeys(pulumi.Output.secret(keys), [p.id for p in passwords.values()])


@dataclass(frozen=True)
class GeneratedSecret:
    value: pulumi.Output[str]  # secret
    id: pulumi.Output[str]  # a new value (a rotation) must trigger what delivers it


def generate_secret(resource_name: str, parent: pulumi.Resource, length: int = KEY_LENGTH) -> GeneratedSecret:
    """A random secret of letters and digits, kept in Pulumi's state (stable across runs), only ever a secret Output."""
    password = random.RandomPassword(resource_name, length=length, special=False,
                                     opts=pulumi.ResourceOptions(parent=parent))
    return GeneratedSecret(pulumi.Output.secret(password.result), password.id)


def pulumi_webui_secret_key(name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    """Open WebUI's WEBUI_SECRET_KEY (chatUi open-webui; it signs the frontend's sessions): <name>-open-webui-secret-key,
    delivered over SSH with the API keys."""
    return generate_secret(f"{name}-open-webui-secret-key", parent).value
