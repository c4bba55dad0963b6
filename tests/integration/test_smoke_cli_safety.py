"""`llmdeploy smoke` with input a person would type (issue 23, CLI findings 1, 4, 6 and 8): a plain http:// URL,
a one-character key, a base URL ending in /v1, a CA bundle that is not a certificate.

Why: smoke is handed the real API key. It must not send it unencrypted unless told to (--allow-plain-http),
must not print it through the redaction's masks, and must ask and print the path it really asks. The server is
a recording HTTP server (support/route_recorder.py): what reached it is read from its record, not inferred.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.errors import UsageError
from llmdeploy.smoke.redact import Redactor
from support.project import ROOT
from support.route_recorder import route_recorder

pytestmark = pytest.mark.integration
KEY = "sk-llm-" + "k" * 43


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMDEPLOY_API_KEY", raising=False)
    monkeypatch.delenv("LLMDEPLOY_BASIC_PASSWORD", raising=False)


def smoke(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a process (its exit code and stderr are the process's), this checkout's code first on the path."""
    path = os.pathsep.join([str(ROOT / "infra"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "llmdeploy.cli", "smoke", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": path, **(env or {})})


@pytest.mark.parametrize("creds, env", [(["--api-key", KEY], {}), ([], {"LLMDEPLOY_API_KEY": KEY}),
                                        (["--basic", "alice:" + "p" * 20], {})])
def test_plain_http_gets_no_request_with_the_credential(creds: list[str], env: dict[str, str]) -> None:
    with route_recorder() as server:
        result = smoke(server.url, *creds, "--timeout", "5", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{server.url} is plain HTTP" in result.stderr and "nothing was sent" in result.stderr
    assert "--allow-plain-http" in result.stderr and "Traceback" not in result.stderr
    assert server.requests == []  # refused before the first request: no Authorization header ever arrived


def test_allow_plain_http_sends_it_because_the_user_said_so() -> None:
    with route_recorder() as server:
        result = smoke(server.url, "--api-key", KEY, "--allow-plain-http", "--timeout", "5")
    sent = [r for r in server.requests if r.headers.get("Authorization") == f"Bearer {KEY}"]
    assert sent, result.stdout + result.stderr
    assert "FAIL  tls" in result.stdout and "is plain HTTP" in result.stdout  # still reported as a failure
    assert KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("key", ["a", "1", "short-key"])
def test_a_key_too_short_to_redact_is_refused_before_any_request(key: str) -> None:
    with route_recorder() as server:
        result = smoke(server.url, "--api-key", key, "--allow-plain-http", "--timeout", "5")
    assert result.returncode == 2
    assert f"a credential of {len(key)} character(s) is too short" in result.stderr
    assert "at least 12 characters" in result.stderr
    assert "open***i" not in result.stdout and "***27.0.0.***" not in result.stdout
    assert server.requests == []


def test_the_redactor_refuses_a_secret_it_would_reveal() -> None:
    with pytest.raises(UsageError):
        Redactor(["a"])
    assert Redactor([KEY]).text(f"openai {KEY} 127.0.0.1") == "openai *** 127.0.0.1"


@pytest.mark.parametrize("suffix, asked", [("/v1", "/v1/models"), ("/v1/", "/v1/models"),
                                           ("/llm/v1", "/llm/v1/models"), ("/llm", "/llm/v1/models")])
def test_a_v1_base_url_is_asked_and_printed_once(suffix: str, asked: str) -> None:
    with route_recorder() as server:
        result = smoke(server.url + suffix, "--api-key", KEY, "--allow-plain-http", "--model", "m", "--timeout", "5")
    paths = {r.path for r in server.requests}
    assert asked in paths and not any("/v1/v1" in p for p in paths), paths
    assert f"models: GET {asked} " in result.stdout, result.stdout
    assert f"auth: GET {asked} " in result.stdout


def test_a_ca_bundle_that_is_not_a_certificate_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("this is not a certificate\n")
    assert main(["smoke", "https://llm.example.com", "--api-key", KEY, "--ca-bundle", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert f"the CA bundle '{bundle}' holds no PEM certificate" in err and "handshake" not in err


def test_a_targets_file_entry_on_plain_http_is_refused_too(tmp_path: Path) -> None:
    """The command line's --allow-plain-http is every entry's default; without it no entry gets a request."""
    with route_recorder() as server:
        targets = tmp_path / "targets.yaml"
        targets.write_text(f"- url: https://llm.example.com\n  api_key: {KEY}\n"
                           f"- url: {server.url}\n  name: lab\n  api_key: {KEY}\n")
        refused = smoke("--targets", str(targets), "--timeout", "5")
        assert refused.returncode == 2 and "lab: " in refused.stderr and "is plain HTTP" in refused.stderr
        assert server.requests == []
        allowed = smoke("--targets", str(targets), "--allow-plain-http", "--timeout", "2")
        assert any(r.headers.get("Authorization") == f"Bearer {KEY}" for r in server.requests), allowed.stdout
