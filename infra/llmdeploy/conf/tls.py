"""The tls section of Pulumi.yaml (tlsMode, acme*, tlsCertificate, tlsPrivateKey), and the names a certificate
must cover: domain, the workshop's domain, the chat host."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..pem import hostname_matches, mentions_certificate, pem_names
from .reader import Problem, Reader, Secret

TLS_MODES = ("letsencrypt", "self-signed", "provided")


@dataclass(frozen=True)
class Tls:
    mode: str
    acme_directory_url: str
    acme_email: str
    certificate: Secret
    private_key: Secret


def parse_tls(r: Reader) -> Tls:
    mode = r.choice("tlsMode", TLS_MODES)
    url = r.str("acmeDirectoryUrl")
    if mode == "letsencrypt" and not re.fullmatch(r"https://\S+", url):
        r.bad("acmeDirectoryUrl", url, "an https URL of an ACME directory",
              "https://acme-staging-v02.api.letsencrypt.org/directory")
    email = r.str("acmeEmail")
    if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        r.bad("acmeEmail", email, "an e-mail address or empty", "ops@example.org")
    cert, key = r.secret("tlsCertificate"), r.secret("tlsPrivateKey")
    if mode == "provided":
        if not mentions_certificate(cert.reveal()):
            r.bad("tlsCertificate", cert.reveal(), "a PEM certificate chain when tlsMode is provided",
                  "-- \"$(cat fullchain.pem)\"")
        if "PRIVATE KEY-----" not in key.reveal():
            r.bad("tlsPrivateKey", key.reveal(), "a PEM private key when tlsMode is provided",
                  "-- \"$(cat privkey.pem)\"")
    return Tls(mode, url, email, cert, key)


def check_domains(r: Reader, tls: Tls, domain: str) -> None:
    """A certificate needs a name. In a workshop, each endpoint's name comes from workshopDomain (<id>.<domain>
    or ep<N>.<domain>); one `domain` for every dedicated VM would point one name at many machines."""
    workshop, workshop_domain = r.str("workshopRoster"), r.str("workshopDomain")
    endpoints = str(r.raw.get("workshopEndpoints") or 1).strip()
    many = r.str("workshopLayout") == "dedicated" or (endpoints.isdigit() and int(endpoints) > 1)
    if workshop and many and domain and not workshop_domain:
        r.bad("domain", domain, "empty in a workshop of several endpoints: each gets <id or epN>.<workshopDomain>, "
              "and one name cannot point at all of them (pulumi config rm domain; pulumi config set "
              f"workshopDomain ws.{domain})", "''")
    elif tls.mode == "letsencrypt" and workshop and not workshop_domain and not domain:
        r.bad("workshopDomain", workshop_domain, "the parent domain of the workshop's hostnames when tlsMode is "
              "letsencrypt (or tlsMode self-signed)", "ws.example.org")
    elif tls.mode == "letsencrypt" and not workshop and not domain:
        r.bad("domain", domain, "a public DNS name pointing at the VM when tlsMode is letsencrypt "
              "(or tlsMode self-signed)", "llm.example.org")


def check_provided_names(r: Reader, tls: Tls, host: str) -> None:
    """A provided certificate must name the chat host too: nginx serves it for both names."""
    names = pem_names(tls.certificate.reveal()) if mentions_certificate(tls.certificate.reveal()) else None
    if names is not None and not hostname_matches(host, *names):
        shown = ", ".join(names[0] + names[1]) or "no names"
        r.problems.append(Problem(
            "tlsCertificate", f"a certificate for {shown}", f"a certificate that also names the chat host {host} "
            "(chatUi serves it on the same certificate)", "reissue it with both names (or *.<domain>), then "
            "pulumi config set --secret tlsCertificate -- \"$(cat fullchain.pem)\"; or pulumi config set chatHost NAME"))
