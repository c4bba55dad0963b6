"""Make throwaway TLS certificates with the `openssl` CLI: a test CA, leaves it signs, self-signed.

Why: tests run nginx as a real TLS reverse proxy on loopback and need certificates that look
like real ones (CA:FALSE leaf, serverAuth EKU, DNS/IP SANs, ECDSA P-256 or RSA 2048, chain file),
plus broken ones (expired, self-signed) to check that clients and scanners reject them.

Only file paths go on openssl's command lines: keys are unencrypted files (mode 0600), and no
passphrase is used. Leaves are signed with `openssl ca`, the only openssl 3.0 command that can
set an explicit validity window (`-startdate/-enddate`), which an expired certificate needs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

KeyType = Literal["ec", "rsa"]

CA_CONFIG = """\
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
[ ca_ext ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ ca ]
default_ca = test_ca
[ test_ca ]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
"""

SELF_SIGNED_REQ = """\
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
"""

LEAF_EXTENSIONS = """\
[ leaf_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = {sans}
"""


@dataclass(frozen=True)
class CA:
    """A test certificate authority: its certificate, key and openssl `ca` config."""

    cert: Path
    key: Path
    config: Path


@dataclass(frozen=True)
class Leaf:
    """A server certificate: cert alone, its key, and cert + issuing CA (nginx's fullchain)."""

    cert: Path
    key: Path
    fullchain: Path


def openssl(*args: str | Path) -> str:
    """Run `openssl ARGS`; raise RuntimeError with openssl's output if it fails."""
    cmd = ["openssl", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result.stdout


def make_key(path: Path, key_type: KeyType = "ec") -> Path:
    """Write an unencrypted private key (ECDSA P-256 or RSA 2048) readable by its owner only."""
    opts = ["ec_paramgen_curve:P-256"] if key_type == "ec" else ["rsa_keygen_bits:2048"]
    openssl("genpkey", "-algorithm", key_type.upper(), "-pkeyopt", *opts, "-out", path)
    os.chmod(path, 0o600)
    return path


def make_ca(dir: Path, name: str = "llmdeploy test CA", days: int = 365, key_type: KeyType = "ec") -> CA:
    """Create a CA (CA:TRUE, keyCertSign) in `dir` and the state `openssl ca` needs to sign."""
    dir = Path(dir).resolve()
    (dir / "issued").mkdir(parents=True, exist_ok=True)
    (dir / "index.txt").touch()
    (dir / "serial").write_text(f"{int.from_bytes(os.urandom(8), 'big'):016X}\n")
    config = dir / "ca.cnf"
    config.write_text(CA_CONFIG.format(dir=dir))
    key = make_key(dir / "ca.key", key_type)
    cert = dir / "ca.pem"
    openssl(
        "req", "-x509", "-new", "-config", config, "-extensions", "ca_ext", "-key", key,
        "-subj", f"/CN={name}", "-days", str(days), "-out", cert,
    )  # fmt: skip
    return CA(cert=cert, key=key, config=config)


def subject_alt_names(hostnames: list[str], ips: list[str]) -> str:
    """The subjectAltName value, e.g. 'DNS:example.test, IP:127.0.0.1'."""
    entries = [f"DNS:{h}" for h in hostnames] + [f"IP:{ipaddress.ip_address(ip)}" for ip in ips]
    if not entries:
        raise ValueError("a leaf certificate needs at least one hostname or IP address")
    return ", ".join(entries)


def validity(days: int, expired: bool, now: datetime | None = None) -> tuple[str, str]:
    """(startdate, enddate) for `openssl ca`: valid from an hour ago, or ended yesterday."""
    now = now or datetime.now(timezone.utc)
    if expired:
        start, end = now - timedelta(days=days + 1), now - timedelta(days=1)
    else:
        start, end = now - timedelta(hours=1), now + timedelta(days=days)
    return start.strftime("%Y%m%d%H%M%SZ"), end.strftime("%Y%m%d%H%M%SZ")


def _file_stem(hostnames: list[str], ips: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", (hostnames + ips)[0].lstrip("*."))


def issue_leaf(
    ca: CA,
    dir: Path,
    hostnames: list[str],
    ips: list[str],
    days: int = 30,
    expired: bool = False,
    key_type: KeyType = "ec",
) -> Leaf:
    """Issue a server certificate signed by `ca` for the given DNS names and IP addresses."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(hostnames, ips)
    key, csr, cert = make_key(dir / f"{stem}.key", key_type), dir / f"{stem}.csr", dir / f"{stem}.pem"
    extfile = dir / f"{stem}.ext.cnf"
    extfile.write_text(LEAF_EXTENSIONS.format(sans=subject_alt_names(hostnames, ips)))
    openssl("req", "-new", "-config", ca.config, "-key", key, "-subj", f"/CN={stem}", "-out", csr)
    start, end = validity(days, expired)
    openssl(
        "ca", "-batch", "-notext", "-config", ca.config, "-cert", ca.cert, "-keyfile", ca.key,
        "-in", csr, "-out", cert, "-extfile", extfile, "-extensions", "leaf_ext",
        "-startdate", start, "-enddate", end,
    )  # fmt: skip
    fullchain = dir / f"{stem}.fullchain.pem"
    fullchain.write_text(cert.read_text() + ca.cert.read_text())
    return Leaf(cert=cert, key=key, fullchain=fullchain)


def self_signed(dir: Path, hostname: str, days: int = 30, key_type: KeyType = "ec") -> Leaf:
    """A self-signed server certificate (CA:FALSE, serverAuth, SAN = hostname), like a snakeoil."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    stem = _file_stem([hostname], [])
    is_ip = _is_ip(hostname)
    sans = subject_alt_names([] if is_ip else [hostname], [hostname] if is_ip else [])
    config = dir / f"{stem}.selfsigned.cnf"
    config.write_text(SELF_SIGNED_REQ + _self_signed_ext(sans))
    key, cert = make_key(dir / f"{stem}.key", key_type), dir / f"{stem}.pem"
    openssl(
        "req", "-x509", "-new", "-config", config, "-extensions", "leaf_ext", "-key", key,
        "-subj", f"/CN={hostname}", "-days", str(days), "-out", cert,
    )  # fmt: skip
    return Leaf(cert=cert, key=key, fullchain=cert)


def _self_signed_ext(sans: str) -> str:
    # No authorityKeyIdentifier: the certificate is its own issuer.
    return LEAF_EXTENSIONS.format(sans=sans).replace("authorityKeyIdentifier = keyid, issuer\n", "")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
