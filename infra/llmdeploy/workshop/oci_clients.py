"""OCI SDK clients for the workshop commands (limits, search, compute, network, identity), signed with an
OCI config profile (`~/.oci/config`, made by `oci setup config`).

The `oci` package is the optional extra `llmdeploy[oci]`; it is imported only here and only when a command
needs OCI, so the other commands work without it. LLMDEPLOY_OCI_ENDPOINT, when set, sends every client to
that base URL instead of the region's service endpoints: a private endpoint, or the local stand-in the tests
run (tests/support/oci_api.py), which serves the paths of every API used here on one port.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UsageError


ENDPOINT_ENV = "LLMDEPLOY_OCI_ENDPOINT"


def sdk() -> Any:
    try:
        import oci
    except ImportError:
        raise UsageError("this command talks to OCI and needs the OCI SDK: pip install 'llmdeploy[oci]' "
                         "(or pip install oci)") from None
    return oci


def load_config(config_file: str | None = None, profile: str | None = None, hint: str = "") -> dict[str, Any]:
    """The profile's settings (user, tenancy, key file, region), validated; UsageError says the fix. `hint`: how
    the calling command does without OCI, when it can (only `workshop plan` can)."""
    oci = sdk()
    path = Path(os.path.expanduser(config_file or oci.config.DEFAULT_LOCATION))
    profile = profile or os.environ.get("OCI_CLI_PROFILE") or oci.config.DEFAULT_PROFILE
    if not path.is_file():
        raise UsageError(f"no OCI config file at {path}: create one with `oci setup config` (or pass "
                         f"--oci-config FILE){hint}")
    try:
        config = oci.config.from_file(str(path), profile)
        oci.config.validate_config(config)
    except oci.exceptions.ProfileNotFound:
        raise UsageError(f"{path} has no profile [{profile}]: pass --oci-profile NAME with one of its "
                         "profiles") from None
    except (oci.exceptions.InvalidConfig, oci.exceptions.InvalidKeyFilePath,
            oci.exceptions.ConfigFileNotFound) as exc:
        raise UsageError(f"the OCI config {path} [{profile}] cannot be used: {exc}; fix it with "
                         "`oci setup repair-file-permissions` / `oci setup config`") from None
    return config


def client(kind: str, config: dict[str, Any]) -> Any:
    """kind: limits | search | compute | network | identity."""
    oci = sdk()
    classes = {"limits": oci.limits.LimitsClient, "search": oci.resource_search.ResourceSearchClient,
               "compute": oci.core.ComputeClient, "network": oci.core.VirtualNetworkClient,
               "identity": oci.identity.IdentityClient}
    endpoint = os.environ.get(ENDPOINT_ENV, "").strip()
    try:
        return classes[kind](config, service_endpoint=endpoint) if endpoint else classes[kind](config)
    except (oci.exceptions.InvalidPrivateKey, oci.exceptions.MissingPrivateKeyPassphrase) as exc:
        raise UsageError(f"the OCI API key cannot be loaded: {exc}; check key_file (and pass_phrase) in the "
                         "OCI config") from None


def describe(exc: BaseException) -> str:
    """An OCI SDK error as one line: status, code and message (ServiceError), or the connection problem."""
    oci = sdk()
    if isinstance(exc, oci.exceptions.ServiceError):
        return f"{getattr(exc, 'status', '?')} {getattr(exc, 'code', '?')}: {getattr(exc, 'message', exc)}"
    return f"{type(exc).__name__}: {exc}"


def service_errors() -> tuple[type[BaseException], ...]:
    """What an OCI call raises when the service refuses or cannot be reached."""
    oci = sdk()
    return (oci.exceptions.ServiceError, oci.exceptions.RequestException, oci.exceptions.ClientError,
            ConnectionError, OSError)
