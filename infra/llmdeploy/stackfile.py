"""Reads a stack's config the way the Pulumi CLI passes it to the program, for `llmdeploy` commands.

Pulumi.yaml declares the keys and defaults (the program gets them applied by the CLI); Pulumi.<stack>.yaml
holds the stack's values. `secure:` values are encrypted with the stack's key, which only the Pulumi CLI
can use, so their plaintext comes from an environment variable named after the key.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from . import config as config_mod
from .declared import declarations, project_name
from .errors import UsageError
from .textfiles import FileProblem, load_yaml, read_text


class StackFileError(UsageError):
    """The stack file is missing, unreadable, or holds a value llmdeploy cannot use; the message says the fix."""


def secret_env_name(key: str) -> str:
    """basicAuthPasswords -> LLMDEPLOY_BASIC_AUTH_PASSWORDS."""
    return "LLMDEPLOY_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).upper()


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
    return _values(data.get("config") or {}, root, stack, path.name, env)


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
    if problems:
        raise StackFileError(f"{filename}:\n" + "\n".join(f"  - {p}" for p in problems))
    return values


def load_stack_config(root: Path, stack: str, env: Mapping[str, str] | None = None) -> config_mod.StackConfig:
    """read_stack + parse: a validated StackConfig, or StackFileError/ConfigError saying what to fix."""
    return config_mod.parse(read_stack(root, stack, env), stack=stack, decls=declarations(root))
