"""PEM certificates, the one definition: finding them in text, the SHA-256 of one, the names one covers and when
it expires. Config reads a provided certificate with it, the ACME trust a roots file, the readiness gate the CA
that the VM prints, and the smoke test the certificate a server sends.

cryptography loads only when a certificate is parsed (`llmdeploy --help` must not load it)."""
from __future__ import annotations

import hashlib
import re
from datetime import datetime
from ipaddress import ip_address

BEGIN = "-----BEGIN CERTIFICATE-----"
END = "-----END CERTIFICATE-----"
_BLOCK = re.compile(rf"{BEGIN}\s.+?{END}", re.S)


def certificates(text: str) -> list[str]:
    """Every complete PEM certificate in `text` (a bundle, a chain, a log), in order, each ending in a newline."""
    return [block + "\n" for block in _BLOCK.findall(text)]


def first_certificate(text: str) -> str:
    """The first PEM certificate in `text`, ending in a newline; "" when there is none."""
    found = _BLOCK.search(text)
    return found.group(0) + "\n" if found else ""


def mentions_certificate(text: str) -> bool:
    """Whether `text` holds a PEM certificate's header: the quick test for a value meant to be one."""
    return BEGIN in text


def is_certificate_chain(text: str) -> bool:
    """Whether `text` is PEM certificates and nothing else around them (surrounding whitespace aside)."""
    return text.startswith(BEGIN) and text.rstrip().endswith(END)


def certificate_sha256(cert_pem: str) -> str:
    """SHA-256 of the DER certificate, lower-case hex without colons (`openssl x509 -fingerprint -sha256`)."""
    import ssl

    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def certificate_names(der: bytes) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) in the certificate's subjectAltName."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def pem_names(pem: str) -> tuple[list[str], list[str]] | None:
    """certificate_names of the first certificate in a PEM chain, or None when it does not parse."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        return certificate_names(x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER))
    except ValueError:
        return None


def certificate_not_after(der: bytes) -> datetime:
    """When the DER certificate expires (UTC)."""
    from cryptography import x509

    return x509.load_der_x509_certificate(der).not_valid_after_utc


def hostname_matches(host: str, dns_names: list[str], ips: list[str]) -> bool:
    """RFC 6125 matching: exact name, or a wildcard as the whole left-most label; IPs only against IP SANs."""
    try:
        return ip_address(host) in {ip_address(ip) for ip in ips}
    except ValueError:
        pass
    host = host.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in dns_names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False
