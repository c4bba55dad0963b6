"""Which ACME directories count as test directories, and what llmdeploy asks of their roots before it creates
anything; the real chain, nginx and smoke runs are in tests/integration/test_acme_trust.py."""
from pathlib import Path

import pytest

from llmdeploy import acme_roots
from llmdeploy.acme_roots import LE_STAGING, KnownDirectory, PinnedRoot
from support.acme_staging import STAGING_FILE, STAGING_ROOTS, certificates, run_example, smoke_environments


def test_only_the_exact_staging_directory_is_a_test_directory() -> None:
    for url in (LE_STAGING, LE_STAGING + "/", "HTTPS://ACME-STAGING-V02.API.LETSENCRYPT.ORG/directory"):
        assert acme_roots.known_test_directory(url) is not None, url
        assert acme_roots.pinned_roots_for(url).count("BEGIN CERTIFICATE") == 2
    for url in ("https://acme-v02.api.letsencrypt.org/directory", "https://acme-staging-v02.api.letsencrypt.org/dir",
                "https://acme-staging-v02.api.letsencrypt.org.evil.test/directory", "https://acme.zerossl.com/v2/DV90"):
        assert acme_roots.known_test_directory(url) is None and acme_roots.pinned_roots_for(url) == "", url


def test_a_roots_file_that_is_not_exactly_the_pinned_roots_is_refused(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    x1, x2 = certificates(STAGING_FILE.read_text())
    (tmp_path / "one-missing.pem").write_text(x1)
    monkeypatch.setattr(acme_roots, "ROOTS_FOLDER", tmp_path)
    directory = KnownDirectory("staging, one root lost", LE_STAGING, "one-missing.pem",
                               tuple(PinnedRoot(n, s) for n, s in STAGING_ROOTS.items()))
    with pytest.raises(RuntimeError, match="does not hold exactly the pinned staging, one root lost roots"):
        acme_roots.read_pinned_roots(directory)


def test_a_public_directory_changes_nothing() -> None:
    for env in smoke_environments(run_example("ollama-a10", acmeDirectoryUrl="https://acme-v02.api.letsencrypt.org/directory")):
        assert env["LLMDEPLOY_ACME_ROOTS_PEM"] == "" and env["LLMDEPLOY_SMOKE_CA_BUNDLE"] == ""


def test_a_pebble_directory_needs_smoke_ca_bundle_before_anything_is_created(tmp_path: Path) -> None:
    pebble = "https://pebble.example.test:14000/dir"
    with pytest.raises(Exception, match="pebble's directory .*pulumi config set smokeCaBundle pebble-root.pem"):
        run_example("ollama-a10", acmeDirectoryUrl=pebble)
    from support import pulumi_mocks
    assert pulumi_mocks.LAST_MOCKS is not None and pulumi_mocks.LAST_MOCKS.resources == []
    env = smoke_environments(run_example("ollama-a10", acmeDirectoryUrl=pebble, smokeCaBundle="pebble-root.pem"))[0]
    assert env["LLMDEPLOY_SMOKE_CA_BUNDLE"] == "pebble-root.pem" and env["LLMDEPLOY_ACME_ROOTS_PEM"] == ""
