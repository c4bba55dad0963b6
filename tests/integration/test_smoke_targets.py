"""`llmdeploy smoke --targets FILE`: many endpoints at once, with bounded concurrency, a progress bar on
stderr, a summary table, --json and --junit for all of them, and no secret in any output.

The wall time for N endpoints must stay close to the slowest one, not the sum: proven with N stub engines
that answer every request after an artificial delay, while a gauge shared by all of them counts the
requests in flight (never more than --concurrency endpoints at once). The mixed run uses real servers: a
good endpoint (rendered site, real nginx, real llama.cpp) and one whose engine is down (502).
"""
from __future__ import annotations

import io
import json
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from llmdeploy.cli import main
from llmdeploy.smoke.redact import Redactor
from llmdeploy.smoke.report import SmokeProgress, summary_table
from llmdeploy.result import FAIL, PASS, CheckResult
from llmdeploy.smoke.runner import TargetReport, run_targets
from llmdeploy.smoke.targets import Credentials, Target, TargetError, load_targets
from support.certs import make_ca
from support.endpoint import Endpoint, llama_endpoint
from support.openai_stub import MODEL_ID, OpenAIStub, openai_stub
from support.ports import free_port
from support.site import site_endpoint
from support.stubserver import Gauge

pytestmark = pytest.mark.integration

N_ENDPOINTS, CONCURRENCY, LATENCY = 8, 4, 0.05
KEY = "sk-stub-" + "s" * 32


@pytest.fixture
def slow_stubs() -> Iterator[tuple[list[OpenAIStub], Gauge]]:
    gauge = Gauge()
    with ExitStack() as stack:
        stubs = [stack.enter_context(openai_stub(latency=LATENCY, api_key=KEY, gauge=gauge)) for _ in range(N_ENDPOINTS)]
        yield stubs, gauge


def test_wall_time_stays_close_to_the_slowest_endpoint_not_the_sum(slow_stubs: tuple[list[OpenAIStub], Gauge]) -> None:
    stubs, gauge = slow_stubs
    targets = [Target(url=s.url, credentials=Credentials(api_key=KEY), model=MODEL_ID, timeout=10, name=f"stub-{i}")
               for i, s in enumerate(stubs)]
    start = time.monotonic()
    reports = run_targets(targets, concurrency=CONCURRENCY)
    wall = time.monotonic() - start
    total = sum(r.seconds for r in reports)
    assert [r.target.name for r in reports] == [t.name for t in targets]  # in the order given
    for report in reports:  # every endpoint fully checked: only plain HTTP (no TLS) fails
        assert {r.name for r in report.results if r.status == FAIL} == {"tls"}, [r.line() for r in report.results]
        assert report.seconds >= 14 * LATENCY  # 14 requests, each delayed
    assert wall < 0.5 * total, (wall, total)
    waves = -(-N_ENDPOINTS // CONCURRENCY)  # 8 endpoints, 4 at a time: two rounds of the slowest at most
    assert wall < waves * max(r.seconds for r in reports) + 1.0, (wall, [r.seconds for r in reports])
    assert 2 <= gauge.peak <= CONCURRENCY  # endpoints did run side by side, never more than allowed


# --- a targets file through the CLI -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with llama_endpoint(tmp_path_factory.mktemp("good")) as ep:
        yield ep


@pytest.fixture(scope="module")
def dead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with site_endpoint(tmp_path_factory.mktemp("dead"), free_port()) as ep:
        yield ep


def test_a_targets_file_checks_every_endpoint_with_summary_json_and_junit(
        good: Endpoint, dead: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(good.ca, tmp_path / "good-ca.pem")
    monkeypatch.setenv("WS_GOOD_KEY", good.keys["default"])
    entries = [
        {"name": "ws-good", "url": good.base, "api_key_env": "WS_GOOD_KEY", "model": "tiny", "ca_bundle": "good-ca.pem",
         "http_url": good.http_base},
        {"name": "ws-dead", "url": dead.base, "api_key": dead.keys["default"], "ca_bundle": dead.ca,
         "http_url": dead.http_base},
    ]
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump(entries))
    code = main(["smoke", "--targets", str(tmp_path / "targets.yaml"), "--concurrency", "2", "--timeout", "15",
                 "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "smoke [1/2]" in err and "smoke [2/2]" in err and "ws-dead: FAILED (5 check(s))" in err
    table = out[out.index("target "):]
    assert "ws-good " in table and "PASS" in table.splitlines()[1]
    assert "ws-dead" in table and "FAIL  models: GET /v1/models: HTTP 502" in table
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False
    assert [(t["name"], t["passed"], t["counts"]["fail"]) for t in report["targets"]] == [
        ("ws-good", True, 0), ("ws-dead", False, 5)]
    suites = ET.parse(tmp_path / "r.xml").getroot().findall("testsuite")
    assert [(s.get("name"), s.get("tests"), s.get("failures")) for s in suites] == [
        ("ws-good", "13", "0"), ("ws-dead", "13", "5")]
    failure = suites[1].find("testcase[@name='models: GET /v1/models']/failure")
    assert failure is not None and failure.get("message", "").startswith("HTTP 502")
    assert '"status": 502' in (failure.text or "")  # the evidence
    written = out + err + (tmp_path / "r.json").read_text() + (tmp_path / "r.xml").read_text()
    assert good.keys["default"] not in written and dead.keys["default"] not in written


def test_targets_can_be_json_and_take_defaults_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text(Path(make_ca(tmp_path / "vm-ca").cert).read_text())  # a bundle must be PEM
    (tmp_path / "t.json").write_text(json.dumps({"targets": [{"url": "https://a.example.com/"},
                                                             {"url": "https://b.example.com:8443", "kind": "ollama",
                                                              "basic": "bob:pw-123", "ca_bundle": "ca.pem"}]}))
    defaults = Target(url="", credentials=Credentials(api_key="default-key"), model="m", timeout=7)
    a, b = load_targets(str(tmp_path / "t.json"), defaults, env={})
    assert (a.name, a.url, a.kind, a.model, a.credentials.api_key, a.timeout) == (
        "a.example.com", "https://a.example.com", "openai", "m", "default-key", 7)
    assert (b.name, b.kind, b.credentials.basic, b.ca_bundle) == (
        "b.example.com:8443", "ollama", ("bob", "pw-123"), str(tmp_path / "ca.pem"))


@pytest.mark.parametrize(("content", "message"), [
    ("url: https://a.example.com\n", "must hold a non-empty list of targets"),
    ("- url: https://a.example.com\n  apikey: k\n", "target #1: unknown key(s) apikey; accepted keys: name, url"),
    ("- name: x\n", "target #1: missing url:"),
    ("- url: https://a.example.com\n  api_key_env: NOT_SET_ANYWHERE\n",
     "api_key_env names $NOT_SET_ANYWHERE, which is not set or empty; export it first"),
    ("- url: https://a.example.com\n", "no credentials; set $LLMDEPLOY_API_KEY"),
    ("- {url: https://a.example.com, api_key: k}\n- {url: https://a.example.com, api_key: k}\n",
     "two targets are named 'a.example.com'"),
    ("- {url: https://a.example.com, api_key: k, kind: vllm}\n", "unknown kind 'vllm'; expected one of openai"),
    ("- {url: https://a.example.com, api_key: k, basic: 'a:b'}\n", "give only one of api_key, api_key_env and basic"),
    ("- [unclosed\n", "is not valid YAML"),
])
def test_a_bad_targets_file_is_named_with_its_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], content: str, message: str) -> None:
    monkeypatch.delenv("LLMDEPLOY_API_KEY", raising=False)
    (tmp_path / "t.yaml").write_text(content)
    assert main(["smoke", "--targets", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    with pytest.raises(TargetError):
        load_targets(str(tmp_path / "t.yaml"), Target(url=""), env={})


# --- presentation -------------------------------------------------------------------------------------------


def report_of(name: str, *results: CheckResult) -> TargetReport:
    return TargetReport(Target(url=f"https://{name}.example.com", name=name), list(results), 1.25)


def test_progress_redraws_one_bar_on_a_terminal_and_prints_lines_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = SmokeProgress(2, stream)
        progress.start()
        progress.advance(report_of("ws-1", CheckResult("a", PASS)))
        progress.advance(report_of("ws-2", CheckResult("a", FAIL, "broken")))
        progress.finish()
    assert terminal.getvalue().count("\r") == 3 and "[###############---------------] 1/2" in terminal.getvalue()
    assert log.getvalue().splitlines() == ["smoke [1/2] ws-1: ok in 1.2s", "smoke [2/2] ws-2: FAILED (1 check(s)) in 1.2s"]


def test_summary_table_shows_counts_and_the_first_failure_redacted() -> None:
    table = summary_table([report_of("ws-1", CheckResult("a", PASS), CheckResult("b", "warn", "soon")),
                           report_of("ws-22", CheckResult("c", FAIL, "key sk-123456789012 refused"))],
                          Redactor(["sk-123456789012"]))
    assert table.splitlines() == [
        "target  kind       pass warn fail    time  result",
        "ws-1    openai        1    1    0    1.2s  PASS",
        "ws-22   openai        0    0    1    1.2s  FAIL  c: key *** refused",
    ]
