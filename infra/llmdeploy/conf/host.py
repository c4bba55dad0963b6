"""The machine's own keys of Pulumi.yaml: its OS and image, the admin's SSH keys and allowed CIDRs, the secrets that
reach it (hfToken, sshPrivateKey), tags, expiry, extra CA certificates and the conda environment."""
from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone

from ..pem import is_certificate_chain
from .reader import Reader, Secret

OSES = {"ubuntu-22.04": ("Canonical Ubuntu", "22.04"),
        "ubuntu-24.04": ("Canonical Ubuntu", "24.04"),
        "debian-12": ("Debian", "12")}


# OSes OCI publishes no platform image of: on the vm target they boot only from an image the user imports
# (imageId). The local target builds its own Debian image.
BYOI_OSES = ("debian-12",)


_TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}=.{0,256}")


SSH_KEY_RE = re.compile(r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]+( .*)?")


def image_id(r: Reader) -> str:
    image = r.str("imageId")
    if image and not image.startswith("ocid1.image."):
        r.bad("imageId", image, "an image OCID (ocid1.image.oc1...) or empty for the newest platform image",
              "ocid1.image.oc1..xxxx")
    return image


def cidrs(r: Reader) -> tuple[str, ...]:
    cidrs = r.list("sshAllowedCidrs")
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            r.bad("sshAllowedCidrs", cidr, "CIDR blocks such as 203.0.113.0/24 (host bits zero)",
                  "--path 'sshAllowedCidrs[0]' 203.0.113.0/24")
    if not cidrs and not r.failed("sshAllowedCidrs"):
        r.bad("sshAllowedCidrs", [], "at least one CIDR: pulumi up itself needs SSH to check readiness",
              "--path 'sshAllowedCidrs[0]' 203.0.113.0/24")
    return tuple(cidrs)


def hf_token(r: Reader) -> Secret:
    """hf.env holds it for systemd (EnvironmentFile) and the llama.cpp download's bearer header: one word."""
    token = r.secret("hfToken")
    if token and not re.fullmatch(r"[!#-&(-\[\]-~]{1,512}", token.reveal()):
        r.bad("hfToken", token.reveal(), "a Hugging Face access token (hf_...): 1-512 printable characters without "
              "spaces or quotes", "hf_xxxxxxxxxxxxxxxxxxxx")
    return token


def ssh_private_key(r: Reader) -> Secret:
    key = r.secret("sshPrivateKey")
    if key and "PRIVATE KEY-----" not in key.reveal():
        r.bad("sshPrivateKey", key.reveal(), "an OpenSSH or PEM private key, or empty to use the ssh-agent",
              "-- \"$(cat ~/.ssh/id_ed25519)\"")
    return key


def tags(r: Reader) -> dict[str, str]:
    tags: dict[str, str] = {}
    for entry in r.list("tags"):
        if not _TAG_RE.fullmatch(entry):
            r.bad("tags", entry, "KEY=VALUE (key starts with a letter; letters, digits, _ . -)",
                  "--path 'tags[0]' team=ml")
            continue
        key, _, value = entry.partition("=")
        tags[key] = value
    return tags


def expires_at(r: Reader) -> str:
    text = r.str("expiresAt")
    if not text:
        return ""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError
        # The first and last days of year 1 and 9999 leave the range of datetime once moved to UTC.
        utc = when.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        r.bad("expiresAt", text, "an ISO 8601 time with a zone between years 1 and 9999 in UTC, such as "
              "2026-12-01T18:00:00Z", "2026-12-01T18:00:00Z")
        return ""
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def ca_certs(r: Reader) -> tuple[str, ...]:
    certs = r.list("extraCaCerts")
    for index, pem in enumerate(certs):
        if not is_certificate_chain(pem):
            r.bad("extraCaCerts", f"entry {index}: {pem[:30]}...", "PEM certificates (-----BEGIN CERTIFICATE-----)",
                  f"--path 'extraCaCerts[{index}]' -- \"$(cat ca.pem)\"")
    return tuple(certs)


def conda_env(r: Reader) -> str:
    env = r.str("condaEnv")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", env):
        r.bad("condaEnv", env, "a conda environment name (letters, digits, _ . -)",
              str(r.decls["condaEnv"].default))
    return env
