"""What `llmdeploy local up` hands the guest and then uses itself: the API keys (given by the caller in
$LLMDEPLOY_LOCAL_API_KEYS, or generated), the provisioning bundle and the secrets, delivered over SSH on standard
input (never on a command line or in user-data), and the wait until nginx accepts them."""
from __future__ import annotations

import json
import os

import requests

from ..bundle import delivery_script, digest, payload
from ..config import StackConfig
from ..errors import UsageError
from ..polling import attempts
from ..private_files import write_private
from ..secret_delivery import INSTALLER_WAIT_S, generate_api_key, random_webui_secret_key, secrets_bundle
from ..smoke.targets import Credentials
from ..sshclient import Session
from . import API_KEYS_ENV, WEBUI_SECRET_KEY_ENV, LocalError, checks
from .progress import Say
from .readiness import ProvisionFailed
from .state import VmState


def deliver_secrets(state: VmState, cfg: StackConfig, session: Session, say: Say, bundle: bytes) -> None:
    """Over SSH, as pulumi up's gate does (bundle.delivery_script): the provisioning bundle, which the guest checks
    against the digest in its user-data, then the API keys (and hfToken, a provided certificate)."""
    keys = api_keys(cfg)
    state.keys_from_caller = bool(os.environ.get(API_KEYS_ENV))
    if keys:
        write_private(state.api_keys_file, json.dumps(keys, indent=2) + "\n")
    webui_key = (os.environ.get(WEBUI_SECRET_KEY_ENV) or random_webui_secret_key()) if cfg.chat.ui == "open-webui" \
        else ""
    secrets = secrets_bundle(cfg, keys, webui_secret_key=webui_key)
    delivered = session.run(delivery_script(), stdin=payload(bundle, secrets), timeout=2 * INSTALLER_WAIT_S + 120)
    if not delivered.ok:
        raise ProvisionFailed(f"delivering the provisioning bundle and the secrets failed (exit "
                              f"{delivered.exit_code}): {(delivered.stderr or delivered.stdout).strip()[-2000:]}")
    say(f"bundle ({len(bundle)} bytes, sha256 {digest(bundle)[:12]}) and secrets delivered over SSH: {len(keys)} API "
        f"key(s){', hfToken' if cfg.hf_token else ''}{', Open WebUI secret key' if webui_key else ''}")
    state.save()


def wait_for_credentials(state: VmState, creds: Credentials, deadline_s: float = 60.0) -> None:
    """Until nginx answers 200 with the delivered credentials (its reload finishes a moment after the
    delivery returns)."""
    last = "no answer"
    names = {state.domain: "127.0.0.1"} if state.host != "127.0.0.1" else {}
    with requests.Session() as session, checks.resolve(names):
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
        for _ in attempts(deadline_s, every=1):
            try:
                resp = session.get(f"{state.endpoint}/v1/models", headers=creds.headers(), verify=str(state.ca_file),
                                   timeout=10)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
    raise LocalError(f"nginx does not accept the delivered credentials after {deadline_s:.0f}s (last: {last})")


def api_keys(cfg: StackConfig) -> dict[str, str]:
    given = os.environ.get(API_KEYS_ENV, "")
    names = [k.name for k in cfg.auth.api_keys]
    if given:
        try:
            keys = json.loads(given)
            if not isinstance(keys, dict):
                raise ValueError
        except ValueError:
            raise UsageError(f"{API_KEYS_ENV} must be a JSON object of API key name to key") from None
        missing = [n for n in names if n not in keys]
        if missing:
            raise UsageError(f"{API_KEYS_ENV} has no key for {', '.join(missing)}")
        return {n: str(keys[n]) for n in names}
    return {n: generate_api_key() for n in names}


def basic_login(cfg: StackConfig) -> tuple[str, str] | None:
    """The first basic-auth user with a password, for the smoke test (None: the stack has none)."""
    for user in cfg.auth.basic_users:
        if user in cfg.auth.basic_passwords:
            return user, cfg.auth.basic_passwords[user].reveal()
    return None
