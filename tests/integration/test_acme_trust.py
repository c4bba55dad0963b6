"""Stacks whose certificate comes from a test ACME directory (Let's Encrypt staging, pebble), whose roots no
system store trusts: the smoke gate of `pulumi up`, `llmdeploy workshop status` and the handouts' snippets
trust that directory's roots (llmdeploy/acme_roots.py), and a public directory changes nothing.

- The pinned staging roots are checked with openssl: subject, self-signature, SHA-256, and a real staging
  chain (intermediates as Let's Encrypt staging served them) verifies against them and not the system store.
- The example stacks ollama-a10 and workshop-a10 (staging) are run under Pulumi's mocks and their smoke
  Command's own script is run with bash: the CA file it hands to `llmdeploy smoke` verifies that chain.
- Against a real nginx serving a certificate from a test CA that no system store has, registered as a test
  directory: the smoke gate's script with the program's environment passes `tls: chain`, and fails it
  without the directory's roots; `workshop status` passes the attendee, and the handout's curl snippet, run
  as printed next to the CA file it ships with, gets an answer.
"""
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy import acme_roots
from llmdeploy.acme_roots import LE_STAGING, KnownDirectory, PinnedRoot
from llmdeploy.cli import main
from llmdeploy.pem import certificate_sha256
from llmdeploy.stack.gates import SMOKE_SCRIPT
from llmdeploy.stack_yaml import read_stack
from llmdeploy.workshop.handouts import snippets
from llmdeploy.workshop.attendee_outputs import attendee_outputs
from support.acme_staging import STAGING_FILE, STAGING_ROOTS, certificates, run_example, smoke_environments
from support.certs import openssl
from support.endpoint import Endpoint
from support.openai_stub import MODEL_ID, openai_stub
from support.project import ROOT
from support.site import site_endpoint
from support.workshop_stack import STACK, attendee_entry, people, workshop_project

STAGING_CHAIN = ROOT / "tests" / "support" / "le-staging-chain.pem"

TEST_DIRECTORY = "https://acme.example.test/directory"


def verifies_staging_chain(ca_file: Path, work: Path) -> bool:
    """Does `openssl verify` accept the first certificate of the real staging chain, trusting only ca_file?"""
    first = work / "ye2.pem"
    first.write_text(certificates(STAGING_CHAIN.read_text())[0])
    result = subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), "-untrusted", str(STAGING_CHAIN), str(first)],
                            capture_output=True, text=True, timeout=30)
    return result.returncode == 0


# --- the pinned roots ----------------------------------------------------------------------------------------


def test_the_pinned_staging_roots_are_self_signed_with_the_published_names_and_fingerprints(tmp_path: Path) -> None:
    certs = certificates(STAGING_FILE.read_text())
    assert len(certs) == 2
    found = {}
    for n, pem in enumerate(certs):
        path = tmp_path / f"root{n}.pem"
        path.write_text(pem)
        subject = openssl("x509", "-in", path, "-noout", "-subject", "-nameopt", "multiline")
        name = next(line.split("=", 1)[1].strip() for line in subject.splitlines() if "commonName" in line)
        sha256 = openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha256").split("=", 1)[1]
        found[name] = sha256.strip().replace(":", "").lower()
        assert openssl("verify", "-check_ss_sig", "-CAfile", path, path).strip().endswith("OK")  # self-signed
    assert found == STAGING_ROOTS
    table = next(d for d in acme_roots.KNOWN_TEST_DIRECTORIES if d.url == LE_STAGING)
    assert {r.name: r.sha256 for r in table.roots} == STAGING_ROOTS
    assert acme_roots.pinned_roots_for(LE_STAGING) == "".join(certs)


def test_a_real_staging_chain_verifies_against_the_pinned_roots_and_not_the_system_store(tmp_path: Path) -> None:
    assert verifies_staging_chain(STAGING_FILE, tmp_path)
    assert not verifies_staging_chain(Path("/etc/ssl/certs/ca-certificates.crt"), tmp_path)


def ca_bundle_handed_to_smoke(env: dict[str, str], work: Path) -> Path | None:
    """Run the smoke gate's script with `env` and a stand-in `llmdeploy` that keeps its --ca-bundle file."""
    bin_dir, kept = work / "bin", work / "kept-ca.pem"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "llmdeploy").write_text('#!/bin/bash\nwhile [ $# -gt 0 ]; do\n'
                                       '  if [ "$1" = --ca-bundle ]; then cp "$2" "$KEEP"; fi; shift\ndone\n')
    (bin_dir / "llmdeploy").chmod(0o755)
    run_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "KEEP": str(kept), **env}
    result = subprocess.run(["/bin/bash", "-c", SMOKE_SCRIPT], env=run_env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return kept if kept.exists() else None


@pytest.mark.parametrize("stack", ["ollama-a10", "workshop-a10"])
def test_the_staging_example_stacks_smoke_test_trusting_the_staging_roots(stack: str, tmp_path: Path) -> None:
    assert read_stack(ROOT, stack)["acmeDirectoryUrl"] == LE_STAGING and not read_stack(ROOT, stack).get("smokeCaBundle")
    environments = smoke_environments(run_example(stack))
    for n, env in enumerate(environments):
        assert env["LLMDEPLOY_ACME_ROOTS_PEM"] == acme_roots.pinned_roots_for(LE_STAGING)
        # A letsencrypt VM prints no CA of its own (wait-ready does for self-signed only).
        bundle = ca_bundle_handed_to_smoke({**env, "LLMDEPLOY_CA_PEM": ""}, tmp_path / str(n))
        assert bundle is not None and verifies_staging_chain(bundle, tmp_path)


@pytest.fixture
def acme_test_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    """The rendered site (real nginx, certificate from a fresh test CA) in front of a stub engine, and that CA
    registered as the roots of the test ACME directory TEST_DIRECTORY."""
    with openai_stub(token_delay=0.02) as stub, site_endpoint(tmp_path / "site", stub.port) as ep:
        root = Path(ep.ca).read_text()
        (tmp_path / "test-acme-roots.pem").write_text(root)
        monkeypatch.setattr(acme_roots, "ROOTS_FOLDER", tmp_path)
        monkeypatch.setattr(acme_roots, "KNOWN_TEST_DIRECTORIES", (KnownDirectory(
            "a test ACME directory", TEST_DIRECTORY, "test-acme-roots.pem",
            (PinnedRoot("llmdeploy test CA", certificate_sha256(certificates(root)[0])),)),))
        yield ep


def run_smoke_gate(env: dict[str, str], ep: Endpoint) -> subprocess.CompletedProcess[str]:
    """The gate's script as Pulumi runs it, with the real `llmdeploy` (plus --http-url: nginx's plain HTTP is not
    on port 80 here)."""
    bin_dir = Path(ep.host_layout.paths.tls_dir).parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    real = subprocess.run(["bash", "-c", "command -v llmdeploy"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "llmdeploy").write_text(f'#!/bin/bash\nexec {shlex.quote(real)} "$@" --http-url {ep.http_base}\n')
    (bin_dir / "llmdeploy").chmod(0o755)
    env = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LLMDEPLOY_SMOKE_URL": ep.base,
           "LLMDEPLOY_SMOKE_MODEL": MODEL_ID, "LLMDEPLOY_API_KEY": ep.keys["default"], "LLMDEPLOY_CA_PEM": ""}
    return subprocess.run(["/bin/bash", "-c", SMOKE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)


def test_the_smoke_gate_trusts_a_test_directorys_roots_and_fails_without_them(acme_test_site: Endpoint) -> None:
    ep = acme_test_site
    env = smoke_environments(run_example("ollama-a10", acmeDirectoryUrl=TEST_DIRECTORY))[0]
    assert env["LLMDEPLOY_ACME_ROOTS_PEM"] == Path(ep.ca).read_text()
    trusted = run_smoke_gate(env, ep)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "PASS  tls: chain" in trusted.stdout and "FAIL" not in trusted.stdout
    untrusted = run_smoke_gate({**env, "LLMDEPLOY_ACME_ROOTS_PEM": ""}, ep)
    assert untrusted.returncode == 1 and "FAIL  tls: chain" in untrusted.stdout
    assert ep.keys["default"] not in trusted.stdout + trusted.stderr + untrusted.stdout + untrusted.stderr


def test_workshop_status_and_the_handouts_trust_a_test_directorys_roots(
        acme_test_site: Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ep = acme_test_site
    project = workshop_project(tmp_path, people(1), tlsMode="letsencrypt", acmeDirectoryUrl=TEST_DIRECTORY,
                               dnsZone="example.org", workshopDomain="ws.example.org")
    outputs = {"attendees": {"u01": attendee_entry("u01", ep.base, ep.keys["default"], model=MODEL_ID,
                                                   http_url=ep.http_base)}}  # no caCertificate: not self-signed
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    common = ["--stack", STACK, "--project-dir", str(project), "--outputs", str(tmp_path / "outputs.json"),
              "--status-file", str(tmp_path / "status.json")]
    code = main(["workshop", "status", *common, "--timeout", "20"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads((tmp_path / "status.json").read_text())["attendees"]["u01"]["lastResult"] == "pass"

    code = main(["workshop", "handouts", *common, "--out", str(tmp_path / "h")])
    out = capsys.readouterr().out
    assert code == 0 and "1 with their endpoint's CA as <id>-ca.pem" in out
    ca_file = tmp_path / "h" / "u01-ca.pem"
    assert ca_file.read_text() == Path(ep.ca).read_text()
    html = (tmp_path / "h" / "u01.html").read_text()
    assert "a certificate from a test ACME CA" in html and 'download="u01-ca.pem"' in html
    # The curl snippet, run as the attendee would: in the folder with the CA file it came with.
    attendee = attendee_outputs(outputs, "outputs")[0]
    curl = snippets(attendee, Path(ep.ca).read_text())["curl"]
    assert "--cacert u01-ca.pem" in curl and curl in html.replace("&#34;", '"').replace("&#39;", "'")
    answered = subprocess.run(["bash", "-c", curl.replace("curl ", "curl -sS --fail-with-body ", 1)],
                              cwd=tmp_path / "h", capture_output=True, text=True, timeout=60)
    assert answered.returncode == 0 and json.loads(answered.stdout)["choices"][0]["message"]["content"], answered


def test_the_handouts_of_a_staging_workshop_ship_the_staging_roots(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    project = workshop_project(tmp_path, people(1), tlsMode="letsencrypt", acmeDirectoryUrl=LE_STAGING,
                               dnsZone="example.org", workshopDomain="ws.example.org")
    outputs = {"attendees": {"u01": attendee_entry("u01", "https://u01.ws.example.org", "sk-llm-" + "a" * 40,
                                                   model="llama3.1:8b")}}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    code = main(["workshop", "handouts", "--stack", STACK, "--project-dir", str(project), "--outputs",
                 str(tmp_path / "outputs.json"), "--status-file", str(tmp_path / "s.json"), "--out", str(tmp_path / "h")])
    capsys.readouterr()
    assert code == 0
    assert (tmp_path / "h" / "u01-ca.pem").read_text() == acme_roots.pinned_roots_for(LE_STAGING)
    assert verifies_staging_chain(tmp_path / "h" / "u01-ca.pem", tmp_path)
    assert "ca_file" in (tmp_path / "h" / "attendees.csv").read_text().splitlines()[0]
    html = (tmp_path / "h" / "u01.html").read_text()
    assert "--cacert u01-ca.pem" in html and "SSL_CERT_FILE" in html
