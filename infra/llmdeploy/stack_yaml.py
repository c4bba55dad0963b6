"""Reads a stack's config the way the Pulumi CLI passes it to the program, for `llmdeploy` commands.

Pulumi.yaml declares the keys and defaults (the program gets them applied by the CLI); Pulumi.<stack>.yaml
holds the stack's values. `secure:` values are encrypted with the stack's key, which only the Pulumi CLI
can use, so their plaintext comes from an environment variable named after the key. Under `pulumi up` the
local target passes what Pulumi resolved instead (config_environment/from_environment), so the VM boots exactly
the config the program validated.
"""
from __future__ import annotations

import configparser
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from . import config as config_mod
from .conf.deployment import DEPLOYMENTS
from .declared import PROJECT_ROOT, declarations, project_name
from .errors import UsageError
from .textfiles import FileProblem, load_yaml, read_text


class StackFileError(UsageError):
    """The stack file is missing, unreadable, or holds a value llmdeploy cannot use; the message says the fix."""


def secret_env_name(key: str) -> str:
    """basicAuthPasswords -> LLMDEPLOY_BASIC_AUTH_PASSWORDS."""
    return "LLMDEPLOY_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).upper()


def secret_keys(root: Path = PROJECT_ROOT) -> set[str]:
    """The keys Pulumi.yaml declares "(secret)": the one list of them."""
    return {k for k, d in declarations(root).items() if d.secret}


# The non-secret config values `pulumi up` resolved, as JSON, for `llmdeploy local up --config-from-env`.
CONFIG_ENV = "LLMDEPLOY_STACK_CONFIG"


def config_environment(values: Mapping[str, Any], root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The stack's values as environment: the non-secret ones as JSON in CONFIG_ENV, each secret under its own
    LLMDEPLOY_<KEY> (never in the JSON, never on a command line)."""
    secret = secret_keys(root)
    env = {CONFIG_ENV: json.dumps({k: v for k, v in values.items() if k not in secret}, sort_keys=True)}
    env.update({secret_env_name(k): v if isinstance(v, str) else json.dumps(v)
                for k, v in values.items() if k in secret and v not in ("", None)})
    return env


def from_environment(root: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values config_environment passed (what `pulumi up` resolved: another config file, ESC, secrets)."""
    env = os.environ if env is None else env
    fix = "it is set by `pulumi up` on a local stack; without Pulumi, run llmdeploy local up --stack NAME"
    try:
        values = json.loads(env[CONFIG_ENV])
    except KeyError:
        raise StackFileError(f"--config-from-env: {CONFIG_ENV} is not set ({fix})") from None
    except ValueError as exc:
        raise StackFileError(f"--config-from-env: {CONFIG_ENV} is not JSON ({exc}; {fix})") from None
    if not isinstance(values, dict):
        raise StackFileError(f"--config-from-env: {CONFIG_ENV} must be a JSON object of key to value ({fix})")
    secret = secret_keys(root)
    leaked = sorted(k for k in values if k in secret)
    if leaked:
        raise StackFileError(f"--config-from-env: {CONFIG_ENV} holds the secret(s) {', '.join(leaked)}; pass each "
                             f"as {secret_env_name(leaked[0])} instead")
    values.update({k: env[secret_env_name(k)] for k in sorted(secret) if env.get(secret_env_name(k))})
    return values


# The namespaces a stack file may hold besides the project's: the providers the program uses. Only oci has
# settings (pulumi_oci's config; random and command have none the program sets); `pulumi:` is Pulumi's own.
OCI_SETTINGS = ("auth", "configFileProfile", "disableAutoRetries", "dualStackEndpointEnabled", "fingerprint",
                "ignoreDefinedTags", "privateKey", "privateKeyPassword", "privateKeyPath",
                "realmSpecificServiceEndpointTemplateEnabled", "region", "retriesConfigFile", "retryDurationSeconds",
                "tenancyOcid", "testTimeMaintenanceRebootDue", "tokenExchangeAuth", "tokenExchangeClientId",
                "tokenExchangeClientSecret", "tokenExchangeDomainUrl", "tokenExchangePublicKey",
                "tokenExchangeRequestedTokenType", "tokenExchangeResourceType", "tokenExchangeRpstExp",
                "tokenExchangeSubjectTokenType", "userOcid", "workloadIdentityTokenPath")
OTHER_NAMESPACES = ("oci", "random", "command", "pulumi")
# The keys Pulumi itself writes at the top of a stack file, beside config:.
STACK_FILE_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")
REGION_ENV = "TF_VAR_region"  # the OCI provider's environment variable for oci:region
CLOUD_TARGETS = tuple(name for name, kind in DEPLOYMENTS.items() if kind.on_oci)  # whose provider needs a region


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def stack_file(root: Path, stack: str) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def example_stacks(root: Path) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def read_stack(root: Path, stack: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The project's config values for `stack` (keys without the project prefix), secrets resolved."""
    env = os.environ if env is None else env
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack):
        raise StackFileError(f"stack name '{stack}' may hold only letters, digits, '_', '.' and '-'")
    path = stack_file(root, stack)
    if not path.is_file():
        known = ", ".join(example_stacks(root)) or "none"
        raise StackFileError(f"no stack file {path}: create it with `pulumi stack init {stack}` and "
                             f"`pulumi config set ...`, or copy one of the examples ({known})")
    try:
        data = load_yaml(read_text(path, "stack file"), path.name) or {}
    except FileProblem as exc:
        raise StackFileError(str(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict):
        raise StackFileError(f"{path.name} must be a mapping with a 'config:' mapping, as Pulumi writes it")
    _refuse_unwrapped(data, path.name)
    return _values(data.get("config") or {}, root, stack, path.name, env)


def _refuse_unwrapped(data: Mapping[str, Any], filename: str) -> None:
    """Settings at the top level, outside config:, are not config to Pulumi: it would deploy every default."""
    stray = [str(k) for k in data if k not in STACK_FILE_KEYS]
    if not stray:
        return
    if any(":" in key for key in stray):
        raise StackFileError(f"{filename}: {', '.join(stray[:3])}{' ...' if len(stray) > 3 else ''} stand at the "
                             "top level, where Pulumi does not read them: put a line `config:` first and indent every "
                             "setting under it by two spaces")
    hint = _did_you_mean(stray[0], list(STACK_FILE_KEYS))
    raise StackFileError(f"{filename}: unknown top-level key(s) {', '.join(stray)}; {hint}a stack file holds "
                         f"{', '.join(STACK_FILE_KEYS)}")


def _configured_region(raw: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """Whether the OCI provider finds a region: oci:region, $TF_VAR_region, or the OCI config file's profile."""
    if raw.get("oci:region") or env.get(REGION_ENV):
        return True
    home = env.get("HOME")
    if not home:
        return False
    parser = configparser.ConfigParser(default_section="DEFAULT")
    try:
        parser.read(Path(home) / ".oci" / "config", encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return False
    profile = str(raw.get("oci:configFileProfile") or "DEFAULT")
    section = parser.defaults() if profile == "DEFAULT" else parser[profile] if parser.has_section(profile) else {}
    return bool(section.get("region"))


def _values(raw: Mapping[str, Any], root: Path, stack: str, filename: str, env: Mapping[str, str]) -> dict[str, Any]:
    namespace = project_name(root)
    decls = declarations(root)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for full_key, value in raw.items():
        ns, sep, key = str(full_key).partition(":")
        if not sep:
            problems.append(f"'{full_key}' has no namespace; write it as {namespace}:{full_key}")
            continue
        if value is None:  # `llmdeploy:engine:` with nothing after it: Pulumi would use the default, silently
            default = decls[key].default if ns == namespace and key in decls else None
            problems.append(f"{full_key} has no value: give it one (pulumi config set {full_key} VALUE), or delete "
                            f"the line{f' to use the default ({default})' if default not in (None, '') else ''}")
            continue
        if ns == "oci" and key not in OCI_SETTINGS:
            hint = _did_you_mean(key, list(OCI_SETTINGS)).replace("mean ", "mean oci:")
            problems.append(f"{full_key} is not a setting of the OCI provider; {hint}it takes oci:region, "
                            "oci:configFileProfile, oci:tenancyOcid ...")
            continue
        if ns != namespace and ns not in OTHER_NAMESPACES:
            hint = _did_you_mean(ns, [namespace, *OTHER_NAMESPACES]).replace("?", f":{key}?")
            problems.append(f"{full_key}: unknown namespace '{ns}'; {hint}this project reads {namespace}: keys (and "
                            "oci: for the OCI provider)")
            continue
        if ns != namespace:
            continue  # provider config (oci:region, ...) is the provider's business
        is_secret = key in decls and decls[key].secret
        env_name = secret_env_name(key)
        if isinstance(value, dict) and "secure" in value:
            if env_name not in env:
                problems.append(
                    f"{full_key} is encrypted (secure:), and only the Pulumi CLI holds the stack's key; pass the "
                    f"value in the environment instead: {env_name}=\"$(pulumi config get {key} --stack {stack})\" "
                    f"llmdeploy ... --stack {stack}")
                continue
            value = env[env_name]
        elif is_secret and value not in ("", None):
            problems.append(f"{full_key} is a secret but is stored in plaintext in {filename}; "
                            f"store it encrypted: pulumi config set --secret {key} ...")
            continue
        values[key] = value
    for key, decl in decls.items():
        env_name = secret_env_name(key)
        if decl.secret and not values.get(key) and env.get(env_name):
            values[key] = env[env_name]  # a secret given only in the environment
    target = values.get("target", decls["target"].default if "target" in decls else "")
    if target in CLOUD_TARGETS and not _configured_region(raw, env):
        problems.append(f"no OCI region for the {target} target: pulumi config set oci:region eu-frankfurt-1 --stack "
                        f"{stack} (or export {REGION_ENV}, or set region= in the profile of ~/.oci/config)")
    if problems:
        raise StackFileError(f"{filename}:\n" + "\n".join(f"  - {p}" for p in problems))
    return values


def load_stack_config(root: Path, stack: str, env: Mapping[str, str] | None = None) -> config_mod.StackConfig:
    """read_stack + parse: a validated StackConfig, or StackFileError/ConfigError saying what to fix."""
    return config_mod.parse(read_stack(root, stack, env), stack=stack, decls=declarations(root))
