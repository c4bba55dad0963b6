"""ACME directories whose certificates no system CA store trusts, and what a client must trust instead.

One table for every client llmdeploy runs or hands out: the smoke gate of `pulumi up` (stack/vm.py, gates.py),
`llmdeploy workshop status` and the handouts' curl and Python snippets (workshop/status.py, handouts.py).

- Let's Encrypt staging (matched by its exact directory URL): pinned copies of its roots in
  letsencrypt-staging-roots.pem next to this file, checked against the SHA-256 fingerprints below whenever they
  are read. Pinned rather than fetched from letsencrypt.org at smoke time: what the smoke test trusts then
  cannot be changed by anything on the network, and it works where letsencrypt.org is unreachable. Staging
  also has the Generation Y roots "(STAGING) Yearning Yucca Root YE" and "(STAGING) Yonder Yam Root YR", but
  the chains it issues by default (what certbot installs) end in their cross-signs by X1 and X2
  (leaf <- YR1 <- Root YR <- Pretend Pear X1; leaf <- YE2 <- Root YE <- Bogus Broccoli X2 <- Pretend Pear X1),
  so these two verify every default chain. Add YE and YR here (PEM and fingerprint) if staging stops serving
  the cross-signs.
- pebble (a directory whose path is pebble's `/dir`): it makes new roots at every start, so nothing can be
  pinned; its roots are only on its management port, whose address pebble's directory does not reveal and
  whose TLS certificate is pebble's own. So a pebble stack must set smokeCaBundle to a file holding pebble's
  current root (`curl --cacert LISTENER_CA https://PEBBLE_HOST:15000/roots/0`), read again at every smoke run.
- Any other directory (Let's Encrypt production, ZeroSSL, ...) issues from roots the system store has:
  nothing changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UsageError
from .pem import certificate_sha256, certificates

LE_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
PEBBLE_DIRECTORY_PATH = "/dir"  # pebble's wfe.DirectoryPath (Boulder and Let's Encrypt use /directory)
ROOTS_FOLDER = Path(__file__).resolve().parent


class AcmeTrustError(UsageError):
    """A test ACME directory whose roots the client cannot get: the message says what to set."""


@dataclass(frozen=True)
class PinnedRoot:
    name: str
    sha256: str  # of the DER certificate, lower-case hex without colons (`openssl x509 -fingerprint -sha256`)


@dataclass(frozen=True)
class KnownDirectory:
    """A known test ACME directory: its URL, the file of roots it issues from, and their fingerprints."""

    name: str
    url: str
    roots_file: str
    roots: tuple[PinnedRoot, ...]

    @property
    def path(self) -> Path:
        return ROOTS_FOLDER / self.roots_file


KNOWN_TEST_DIRECTORIES = (
    KnownDirectory("Let's Encrypt staging", LE_STAGING, "letsencrypt-staging-roots.pem", (
        PinnedRoot("(STAGING) Pretend Pear X1", "e70570a989f8565aabdf7cae27abd1621872d6a3f811e3fef27e3dba02912198"),
        PinnedRoot("(STAGING) Bogus Broccoli X2", "9b2a339fe6a3e85585c4cd75536cb8c1cf7cd603b9a64bec2521858ae48da85d"),
    )),
)


def _normal(url: str) -> str:
    """The URL as compared: scheme and host in lower case, no trailing slash; the path stays exact."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}" + (
        f"?{parts.query}" if parts.query else "")


def known_test_directory(url: str) -> KnownDirectory | None:
    return next((d for d in KNOWN_TEST_DIRECTORIES if _normal(d.url) == _normal(url)), None)


def looks_like_pebble(url: str) -> bool:
    return bool(url) and urlsplit(url.strip()).path == PEBBLE_DIRECTORY_PATH


@cache
def read_pinned_roots(directory: KnownDirectory) -> str:
    """The directory's roots file, exactly the pinned certificates (RuntimeError if the file was changed)."""
    certs = certificates(directory.path.read_text(encoding="ascii"))
    found, wanted = sorted(certificate_sha256(c) for c in certs), sorted(r.sha256 for r in directory.roots)
    if found != wanted:
        raise RuntimeError(f"{directory.path} does not hold exactly the pinned {directory.name} roots "
                           f"(SHA-256 {', '.join(wanted)}; found {', '.join(found) or 'none'}): restore it from git")
    return "".join(certs)


def pinned_roots_for(acme_directory_url: str) -> str:
    """The pinned roots of a known test directory; "" for any other directory (the system store's business)."""
    directory = known_test_directory(acme_directory_url)
    return read_pinned_roots(directory) if directory else ""


def pebble_problem(acme_directory_url: str, smoke_ca_bundle: str) -> str | None:
    """Why a client cannot trust this stack's certificates (a pebble directory without smokeCaBundle), or None."""
    if not looks_like_pebble(acme_directory_url) or smoke_ca_bundle:
        return None
    host = urlsplit(acme_directory_url.strip()).hostname or "PEBBLE_HOST"
    return (f"acmeDirectoryUrl {acme_directory_url} is pebble's directory (path {PEBBLE_DIRECTORY_PATH}), whose roots "
            "no system store trusts and which pebble makes anew at every start; save its current root and point "
            f"smokeCaBundle at it: curl --cacert PEBBLE_LISTENER_CA https://{host}:15000/roots/0 > pebble-root.pem && "
            "pulumi config set smokeCaBundle pebble-root.pem (again after every pebble restart; if this is not "
            "pebble, set smokeCaBundle to the CA bundle that verifies its certificates)")


def client_trust_pem(acme_directory_url: str, smoke_ca_bundle: str, root: Path) -> str:
    """Everything a client of the stack must trust beyond the system store for its ACME certificate: a test
    directory's pinned roots, or (pebble) the certificates in smokeCaBundle (relative to `root`). AcmeTrustError
    when a pebble stack has no smokeCaBundle or it cannot be read."""
    pinned = pinned_roots_for(acme_directory_url)
    if pinned or not looks_like_pebble(acme_directory_url):
        return pinned
    problem = pebble_problem(acme_directory_url, smoke_ca_bundle)
    if problem:
        raise AcmeTrustError(problem)
    path = root / smoke_ca_bundle
    try:
        certs = certificates(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AcmeTrustError(f"smokeCaBundle {smoke_ca_bundle}: cannot read {path} ({exc}); point it at a PEM file "
                             "with pebble's root (pulumi config set smokeCaBundle FILE)") from None
    if not certs:
        raise AcmeTrustError(f"smokeCaBundle {smoke_ca_bundle}: {path} holds no PEM certificate; save pebble's root "
                             "there (curl ... https://PEBBLE_HOST:15000/roots/0 > FILE)")
    return "".join(certs)
