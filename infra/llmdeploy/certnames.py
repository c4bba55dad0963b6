"""The names a certificate covers, and whether it covers a host: the smoke test reads a served certificate with it,
config.py a provided one (tlsCertificate must also name the chat host)."""
from __future__ import annotations

from ipaddress import ip_address


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
