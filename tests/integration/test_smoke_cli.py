"""`llmdeploy smoke URL ...` end to end: one line per check with its time, exit codes, --json and --junit,
the API key from $LLMDEPLOY_API_KEY, secrets never printed or written, bad input named with its fix (exit 2,
no traceback), and the SSH and OCI Data Science checks delegated to their modules (a delegate that crashes is one
clear FAIL).

The endpoint is the rendered nginx site in a real nginx in front of a real llama.cpp server (test CA).
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llmdeploy.cli import main
from llmdeploy.smoke import runner
from llmdeploy.result import PASS, CheckResult
from support.endpoint import Endpoint, llama_endpoint
from support.openai_stub import MODEL_ID, openai_stub

pytestmark = pytest.mark.integration

LINE = re.compile(r"^(PASS|WARN|FAIL)  .{36} +\d+\.\d\ds  \S")


@pytest.fixture(scope="module")
def ep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with llama_endpoint(tmp_path_factory.mktemp("cli")) as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMDEPLOY_API_KEY", raising=False)
    monkeypatch.delenv("LLMDEPLOY_BASIC_PASSWORD", raising=False)


def base_args(ep: Endpoint) -> list[str]:
    return ["smoke", ep.base, "--ca-bundle", ep.ca, "--http-url", ep.http_base, "--timeout", "15"]


def check_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if LINE.match(line)]


def test_a_good_endpoint_exits_0_with_a_line_per_check_and_json_and_junit(
        ep: Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ep.keys["default"]
    code = main([*base_args(ep), "--api-key", key, "--model", "tiny",
                 "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    lines = check_lines(out)
    # The tiny model's streams are too quick to judge for buffering: warnings, which do not fail the run.
    streams = [line for line in lines if " stream: " in line]
    assert len(lines) == 13 and all(line.startswith("PASS") for line in lines if line not in streams), out
    assert len(streams) == 2 and all(line.startswith("WARN") for line in streams), out
    assert "11 passed, 2 warning(s), 0 failed" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is True and len(report["targets"][0]["results"]) == 13
    assert [r["status"] for r in report["targets"][0]["results"]].count("warn") == 2
    suites = ET.parse(tmp_path / "r.xml").getroot()
    assert suites.tag == "testsuites" and suites.get("failures") == "0"
    assert [len(s.findall("testcase")) for s in suites.findall("testsuite")] == [13]
    warned = [c for c in suites.iter("testcase") if c.get("name", "").startswith("stream: ")]
    assert all((c.findtext("system-out") or "").startswith("WARN: ") and c.find("failure") is None for c in warned)
    for text in (out, err, (tmp_path / "r.json").read_text(), (tmp_path / "r.xml").read_text()):
        assert key not in text


def test_the_key_can_come_from_the_environment_not_the_command_line(ep: Endpoint) -> None:
    """The way Pulumi runs it: the key in $LLMDEPLOY_API_KEY, nothing secret in the process's arguments
    (which anyone can read with `ps`). REQUESTS_CA_BUNDLE stays set, as here, and must not matter."""
    env = {**os.environ, "LLMDEPLOY_API_KEY": ep.keys["default"]}
    result = subprocess.run([sys.executable, "-m", "llmdeploy.cli", *base_args(ep)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(openai, API key)" in result.stdout and len(check_lines(result.stdout)) == 13
    assert ep.keys["default"] not in result.stdout + result.stderr


def test_a_failing_check_exits_1(ep: Endpoint, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*base_args(ep), "--api-key", ep.keys["default"], "--model", "no-such-model"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^FAIL  models: GET /v1/models .*'no-such-model' is not listed", out, re.MULTILINE)


@pytest.mark.parametrize("auth", ["key", "basic"])
def test_secrets_a_server_echoes_are_redacted_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         auth: str) -> None:
    """The stub answers GET /v1/models with a 500 that repeats the Authorization header it got; the check
    keeps the body as evidence. Neither the key, nor the password, nor its Basic encoding may leave."""
    key, password = "sk-secret-" + "k" * 30, "pass-" + "p" * 20
    secrets = [key] if auth == "key" else [password, base64.b64encode(f"alice:{password}".encode()).decode()]
    creds = ["--api-key", key] if auth == "key" else ["--basic", f"alice:{password}"]
    with openai_stub(echo_auth=True) as stub:
        code = main(["smoke", stub.url, *creds, "--allow-plain-http", "--model", MODEL_ID, "--timeout", "10",
                     "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")])
    out, err = capsys.readouterr()
    assert code == 1
    written = [out, err, (tmp_path / "r.json").read_text(), (tmp_path / "r.xml").read_text()]
    assert "cannot list models for" in out and "***" in written[2]  # the echo is there, masked
    for secret in secrets:
        assert all(secret not in text for text in written), secret


# --- bad input: exit 2, the problem and the fix, no traceback -----------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["smoke"], "no endpoint given"),
    (["smoke", "llm.example.com", "--api-key", "k"], "bad URL 'llm.example.com': expected https://HOST"),
    (["smoke", "https://user:pw@llm.example.com", "--api-key", "k"], "do not put credentials in the URL"),
    (["smoke", "https://llm.example.com"], "no credentials; set $LLMDEPLOY_API_KEY"),
    (["smoke", "https://llm.example.com", "--api-key", " "], "the API key is empty"),
    (["smoke", "https://llm.example.com", "--basic", "alice"], "expected USER:PASS"),
    (["smoke", "https://llm.example.com", "--api-key", "k", "--ca-bundle", "/no/such/ca.pem"],
     "cannot read the CA bundle '/no/such/ca.pem'"),
    (["smoke", "https://llm.example.com", "--api-key", "k", "--ssh", "llmadmin@vm"], "--ssh needs --ssh-key FILE"),
    (["smoke", "https://llm.example.com", "--api-key", "k", "--ssh", "vm", "--ssh-key", "/etc/hostname"],
     "expected USER@HOST"),
    (["smoke", "https://llm.example.com", "--api-key", "k", "--ssh", "a@vm", "--ssh-key", "/no/key"],
     "cannot read the SSH key '/no/key'"),
    (["smoke", "https://llm.example.com", "--api-key", "k", "--json", "/no/such/dir/r.json"],
     "the folder /no/such/dir does not exist"),
    (["smoke", "--targets", "/no/such/targets.yaml"], "cannot read the targets file '/no/such/targets.yaml'"),
    (["smoke", "https://llm.example.com", "--targets", "t.yaml", "--api-key", "k"], "either a URL or --targets"),
    (["smoke", "https://llm.example.com", "--api-key", "k", "--timeout", "0"], "timeout must be a positive"),
    (["smoke", "https://md.example.com/predict", "--kind", "oci-ds"], "--kind oci-ds needs --model NAME"),
    (["smoke", "--targets", "t.yaml", "--concurrency", "0"], "--concurrency must be at least 1"),
])
def test_bad_input_is_named_with_its_fix_and_exits_2(argv: list[str], message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmdeploy smoke: ") and message in err, err
    assert "Traceback" not in err


def test_argparse_errors_exit_2_without_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "llmdeploy.cli", "smoke", "https://x", "--kind", "vllm"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'vllm'" in result.stderr and "Traceback" not in result.stderr


def test_help_says_the_command_line_key_is_visible_in_ps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["smoke", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "$LLMDEPLOY_API_KEY" in text and "`ps`" in text


# --- delegated checks (SSH, OCI Data Science) ---------------------------------------------------------------


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, function: str, results: list[CheckResult]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def run(**kwargs: Any) -> list[CheckResult]:
        calls.append(kwargs)
        return results

    monkeypatch.setattr(getattr(runner, name), function, run)
    return calls


def test_ssh_checks_are_delegated_with_host_user_key_port_and_host_key(
        ep: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "id_ed25519"
    key_file.write_text("not a real key\n")
    calls = fake_module(monkeypatch, "ssh_checks", "run_ssh_checks",
                        [CheckResult("ssh: cloud-init finished", PASS, "status done", 0.5)])
    monkeypatch.setenv("LLMDEPLOY_API_KEY", ep.keys["default"])
    code = main([*base_args(ep), "--ssh", "llmadmin@127.0.0.1:2222", "--ssh-key", str(key_file),
                 "--ssh-host-key", "ssh-ed25519 AAAAtest"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert calls == [{"host": "127.0.0.1", "user": "llmadmin", "key_file": str(key_file), "port": 2222,
                      "host_key": "ssh-ed25519 AAAAtest", "timeout": 15.0}]
    assert re.search(r"^PASS  ssh: cloud-init finished +0\.50s  status done$", out, re.MULTILINE)


def test_oci_ds_is_delegated_without_an_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "oci-config"
    config.write_text("[DEFAULT]\n")
    calls = fake_module(monkeypatch, "oci_ds", "run_oci_ds_checks", [CheckResult("oci-ds: predict", PASS, "200")])
    url = "https://modeldeployment.eu-frankfurt-1.oci.customer-oci.com/ocid1.datasciencemodeldeployment.oc1.x/predict"
    code = main(["smoke", url, "--kind", "oci-ds", "--model", "odsc-llm", "--oci-config", str(config),
                 "--oci-profile", "WORKSHOP"])
    assert code == 0, capsys.readouterr()
    assert calls == [{"url": url, "model": "odsc-llm", "stream": True, "config_file": str(config),
                      "profile": "WORKSHOP", "instance_principal": False, "ca_bundle": None, "timeout": 30.0}]


def test_a_crash_or_a_wrong_answer_of_a_delegate_is_one_clear_failure(
        ep: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def run_ssh_checks(**kwargs: Any) -> list[CheckResult]:
        raise RuntimeError("boom")

    monkeypatch.setattr(runner.ssh_checks, "run_ssh_checks", run_ssh_checks)
    key_file = tmp_path / "id_ed25519"
    key_file.write_text("not a real key\n")
    monkeypatch.setenv("LLMDEPLOY_API_KEY", ep.keys["default"])
    code = main([*base_args(ep), "--ssh", "llmadmin@127.0.0.1:2222", "--ssh-key", str(key_file)])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^FAIL  ssh checks .*run_ssh_checks raised RuntimeError: boom$", out, re.MULTILINE), out

    def run_oci_ds_checks(**kwargs: Any) -> list[str]:
        return ["not a result"]

    [result] = runner.delegated("oci-ds checks", run_oci_ds_checks, url="u")
    assert result.status == "fail"
    assert result.summary == "run_oci_ds_checks returned something other than a list of CheckResult"
