"""pem.py, the one reading of PEM certificates: what counts as one in a bundle, a chain or a log, and its SHA-256.
The staging roots file is real; its fingerprints are the published ones (support/acme_staging.py)."""
from pathlib import Path

import pytest

from llmdeploy import acme_roots, pem
from support.acme_staging import STAGING_FILE, STAGING_ROOTS


def test_a_bundle_yields_each_certificate_with_its_published_sha256() -> None:
    found = pem.certificates(STAGING_FILE.read_text())
    assert sorted(pem.certificate_sha256(c) for c in found) == sorted(STAGING_ROOTS.values())
    assert all(c.startswith(pem.BEGIN) and c.endswith(pem.END + "\n") for c in found)
    assert "".join(found) == acme_roots.pinned_roots_for(acme_roots.LE_STAGING)


def test_the_first_certificate_is_found_among_other_output() -> None:
    x1, x2 = pem.certificates(STAGING_FILE.read_text())
    log = f"stage 40-engine done\r\nready\n{x1.rstrip()}\n{x2}trailing words"
    assert pem.first_certificate(log) == x1
    assert pem.certificates(log) == [x1, x2]
    assert pem.first_certificate("ready\n") == "" and pem.certificates("") == []


def test_a_header_without_its_end_is_no_certificate() -> None:
    x1, _ = pem.certificates(STAGING_FILE.read_text())
    cut = x1[: len(x1) // 2]
    assert pem.certificates(cut) == [] and pem.first_certificate(cut) == ""
    assert pem.mentions_certificate(cut) and not pem.is_certificate_chain(cut)
    assert pem.is_certificate_chain(x1 + "\n\n") and not pem.is_certificate_chain("comment\n" + x1)


def test_a_cut_smoke_ca_bundle_is_refused_as_holding_no_certificate(tmp_path: Path) -> None:
    x1, _ = pem.certificates(STAGING_FILE.read_text())
    (tmp_path / "pebble-root.pem").write_text(x1[: len(x1) // 2])
    with pytest.raises(acme_roots.AcmeTrustError, match="holds no PEM certificate"):
        acme_roots.client_trust_pem("https://pebble.example.test:14000/dir", "pebble-root.pem", tmp_path)


def test_names_and_expiry_of_a_real_root() -> None:
    x1, _ = pem.certificates(STAGING_FILE.read_text())
    assert pem.pem_names(x1) == ([], [])  # a root names no host
    assert pem.pem_names(pem.BEGIN + "\nnot base64\n" + pem.END) is None
    import ssl

    assert pem.certificate_not_after(ssl.PEM_cert_to_DER_cert(x1)).year >= 2030
    assert pem.hostname_matches("a.example.org", ["*.example.org"], []) and \
        not pem.hostname_matches("b.a.example.org", ["*.example.org"], [])
