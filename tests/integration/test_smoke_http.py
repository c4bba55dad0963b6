"""The HTTP checks of `llmdeploy smoke` against real servers on loopback.

A good endpoint is the project's rendered nginx site in a real nginx (test CA) in front of a real llama.cpp
server: every check passes. Each fault a deployment can have is then made for real and must be caught:
a site that accepts any key, an expired certificate, a wrong-host certificate, a proxy that buffers streams,
a dead engine (502). The Xinference and Ollama dialects run against stubs behind the rendered site of their
engine: Xinference is a 6 GB install, and Ollama's server cannot run here at all (its binary and models come
from ollama.com and GitHub, which this machine cannot reach), so tests/support/ollama_stub.py answers as
Ollama's API documentation specifies.
"""
from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from llmdeploy.pem import hostname_matches
from llmdeploy.smoke.http_checks import (
    TlsProbe,
    check_cert_expiry,
    run_http_checks,
)
from llmdeploy.result import FAIL, PASS, WARN, CheckResult
from llmdeploy.smoke.dialects import LONG_PROMPT, dialect_for, longer_stream, requested_tokens
from llmdeploy.smoke.stream_checks import JUDGE_MAX_TOKENS
from llmdeploy.smoke.streams import MIN_GENERATION_S, NDJSONParser, SSEParser, judge_timing
from llmdeploy.smoke.targets import Credentials, Target
from support.certs import issue_leaf, make_ca
from support.endpoint import PASSWORD, Endpoint, llama_endpoint
from support.llamaserver import llama_server
from support.ollama_stub import MODEL as OLLAMA_MODEL
from support.ollama_stub import ollama_stub
from support.openai_stub import MODEL_ID, openai_stub
from support.ports import free_port
from support.site import open_proxy, site_endpoint
from support.tinymodel import write_tiny_gguf

pytestmark = pytest.mark.integration

OPENAI_CHECKS = [
    "tls: chain", "tls: hostname", "tls: expiry", "http: redirect to https", "https: HSTS",
    "models: GET /v1/models",
    "auth: GET /v1/models", "auth: POST /v1/chat/completions", "auth: POST /v1/completions",
    "chat: POST /v1/chat/completions", "completion: POST /v1/completions",
    "stream: POST /v1/chat/completions", "stream: POST /v1/completions",
]


def target_for(ep: Endpoint, model: str | None = "tiny", **changes: object) -> Target:
    target = Target(url=ep.base, credentials=Credentials(api_key=ep.keys["default"]), model=model,
                    ca_bundle=ep.ca, http_url=ep.http_base, timeout=15, name="itest")
    return replace(target, **changes)


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def failures(results: list[CheckResult]) -> dict[str, str]:
    return {r.name: r.summary for r in results if r.status == FAIL}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with llama_endpoint(tmp_path_factory.mktemp("good")) as ep:
        yield ep


# --- a good endpoint ----------------------------------------------------------------------------------------


STREAMS = ["stream: POST /v1/chat/completions", "stream: POST /v1/completions"]


def test_every_check_passes_on_a_good_endpoint(good: Endpoint) -> None:
    """The tiny model generates thousands of tokens a second: even asked for 256 tokens, its streams are over
    in milliseconds, too quick to tell a buffering proxy from none, so they WARN and say why (never PASS)."""
    results = run_http_checks(target_for(good))
    assert [r.name for r in results] == OPENAI_CHECKS
    assert all(r.status == PASS for r in results if r.name not in STREAMS), [r.line() for r in results]
    checks = by_name(results)
    for name in STREAMS:
        assert checks[name].status == WARN and "cannot tell whether a proxy buffers the stream" in checks[name].summary
        assert checks[name].evidence["judging_request"]["body"]["max_tokens"] == JUDGE_MAX_TOKENS
    stream = checks["stream: POST /v1/chat/completions"]
    assert stream.metrics["ttft_s"] > 0 and stream.metrics["tokens_per_s"] > 0 and stream.metrics["events"] >= 4
    assert stream.evidence["end_marker"] is True
    assert checks["tls: expiry"].metrics["days_left"] > 29
    assert checks["models: GET /v1/models"].evidence["models"] == ["tiny"]
    assert checks["auth: POST /v1/completions"].evidence["statuses"] == {
        "no credentials": 401, "wrong key": 401, "right key": 200}


def test_basic_auth_passes_and_the_first_listed_model_is_used(good: Endpoint) -> None:
    target = target_for(good, model=None, credentials=Credentials(basic=("alice", PASSWORD)))
    results = run_http_checks(target)
    assert all(r.status == PASS for r in results if r.name not in STREAMS), [r.line() for r in results]
    assert "using the first" in by_name(results)["models: GET /v1/models"].summary
    assert by_name(results)["auth: GET /v1/models"].evidence["statuses"]["wrong password"] == 401


def test_a_model_that_is_not_listed_fails(good: Endpoint) -> None:
    results = by_name(run_http_checks(target_for(good, model="llama3.1:8b")))
    assert results["models: GET /v1/models"].status == FAIL
    assert "'llama3.1:8b' is not listed; the server lists: tiny" in results["models: GET /v1/models"].summary


def test_no_credential_is_sent_without_a_verified_certificate(good: Endpoint) -> None:
    """Without --ca-bundle the test CA is unknown: the chain fails and nothing else is sent."""
    results = run_http_checks(target_for(good, ca_bundle=None))
    assert failures(results).keys() == {"tls: chain", "auth and API"}
    assert "--ca-bundle" in failures(results)["tls: chain"]


def test_an_endpoint_where_nothing_listens_is_one_clear_failure() -> None:
    target = Target(url=f"https://127.0.0.1:{free_port()}", credentials=Credentials(api_key="k" * 20), timeout=5)
    results = run_http_checks(target)
    assert [(r.name, r.status) for r in results] == [("tls: handshake", FAIL), ("auth and API", FAIL)]
    assert "Connection refused" in results[0].summary and results[1].summary == "not run: there is no TLS connection"


def test_a_plain_http_url_fails_tls_but_still_checks_the_api(tmp_path: Path) -> None:
    with openai_stub() as stub:
        target = Target(url=stub.url, credentials=Credentials(api_key="k" * 20), model=MODEL_ID, timeout=10)
        results = run_http_checks(target)
    assert failures(results).keys() == {"tls", "auth: GET /v1/models", "auth: POST /v1/chat/completions",
                                        "auth: POST /v1/completions"}  # the stub wants no key at all
    assert "plain HTTP" in failures(results)["tls"]
    assert by_name(results)["stream: POST /v1/completions"].status == WARN  # an instant stub: too quick to judge


# --- faults that must be caught -----------------------------------------------------------------------------


def test_a_site_that_accepts_any_key_fails_every_auth_check(tmp_path: Path) -> None:
    """nginx without auth in front of the real llama.cpp server: TLS and the API are fine, auth is not."""
    with llama_server(write_tiny_gguf(tmp_path / "tiny.gguf"), alias="tiny") as llama:
        with open_proxy(tmp_path, llama.url) as (base, http_base, ca):
            target = Target(url=base, credentials=Credentials(api_key="sk-" + "a" * 40), model="tiny",
                            ca_bundle=ca, http_url=http_base, timeout=15)
            results = run_http_checks(target)
    failed = failures(results)
    assert failed.keys() == {"auth: GET /v1/models", "auth: POST /v1/chat/completions", "auth: POST /v1/completions"}
    assert all(summary.startswith("ACCEPTED a request with no credentials (200)") for summary in failed.values())
    assert by_name(results)["chat: POST /v1/chat/completions"].status == PASS


def test_a_wrong_key_accepted_is_caught_even_when_no_key_is_refused(tmp_path: Path) -> None:
    """A site that only checks that some Bearer header is present (a real mistake: deciding on
    `$http_authorization` instead of the key's name): no key is refused, any key is let in."""
    def any_bearer(site: str) -> str:
        edited = site.replace("map $llmdeploy_client $llmdeploy_target {", "map $http_authorization $llmdeploy_target {")
        assert edited != site
        return edited

    with openai_stub() as stub:
        with site_endpoint(tmp_path, stub.port, edit=any_bearer, basicAuthUsers=[], basicAuthPasswords="") as ep:
            results = run_http_checks(target_for(ep, model=MODEL_ID))
    failed = failures(results)
    assert failed.keys() == {"auth: GET /v1/models", "auth: POST /v1/chat/completions", "auth: POST /v1/completions"}
    assert all(summary.startswith("ACCEPTED a request with wrong key (200)") for summary in failed.values())


def test_an_expired_certificate_is_caught(tmp_path: Path) -> None:
    with openai_stub() as stub, site_endpoint(tmp_path, stub.port, cert="expired") as ep:
        results = run_http_checks(target_for(ep, model=MODEL_ID))
    failed = failures(results)
    assert failed.keys() == {"tls: chain", "tls: expiry", "auth and API"}
    assert "certificate has expired" in failed["tls: chain"]
    assert "expired 1 day(s) ago" in failed["tls: expiry"]
    assert by_name(results)["tls: hostname"].status == PASS
    assert not [r for r in stub.requests if "Authorization" in r.headers]  # no credential reached anyone


def test_a_wrong_host_certificate_is_caught(tmp_path: Path) -> None:
    with openai_stub() as stub, site_endpoint(tmp_path, stub.port, cert="wrong-host") as ep:
        results = run_http_checks(target_for(ep, model=MODEL_ID))
    failed = failures(results)
    assert failed.keys() == {"tls: hostname", "auth and API"}
    assert failed["tls: hostname"] == "the certificate is for other.example.test, not localhost"
    assert by_name(results)["tls: chain"].status == PASS


def test_a_certificate_expiring_soon_is_a_warning(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    leaf = issue_leaf(ca, tmp_path / "leaf", ["llm.example.test"], [], days=5)
    result = check_cert_expiry(TlsProbe(leaf_der=ssl.PEM_cert_to_DER_cert(leaf.cert.read_text())))
    assert result.status == WARN and result.ok
    assert 4 < result.metrics["days_left"] <= 5 and "renew" in result.summary


def buffering_on(site: str) -> str:
    assert site.count("proxy_buffering off;") >= 1
    return site.replace("proxy_buffering off;", "proxy_buffering on;")


def test_a_buffering_proxy_is_caught_from_the_timing_of_events(tmp_path: Path) -> None:
    """The rendered site with `proxy_buffering on`, before an engine that streams 16 tokens 40 ms apart
    and sends no X-Accel-Buffering: the whole stream arrives in one burst after 0.6 s; only the stream
    checks fail, and they say why."""
    with openai_stub(token_delay=0.04) as stub:
        with site_endpoint(tmp_path, stub.port, edit=buffering_on) as ep:
            results = run_http_checks(target_for(ep, model=MODEL_ID))
    failed = failures(results)
    assert failed.keys() == {"stream: POST /v1/chat/completions", "stream: POST /v1/completions"}
    for summary in failed.values():
        assert summary.startswith("arrived in one burst, not token by token") and "proxy_buffering off" in summary
        assert "(again on a confirming stream)" in summary
    burst = by_name(results)["stream: POST /v1/completions"]
    assert burst.metrics["ttft_s"] > 0.5 and burst.metrics["span_s"] < 0.03


def test_an_engine_that_bursts_once_is_not_called_a_buffering_proxy(tmp_path: Path) -> None:
    """The engine sends its first stream in one burst (as vLLM did once right after a restart) behind the real
    site: the burst is not repeated on a confirming stream, so the check passes and says what it saw. Before,
    the first burst failed the smoke test."""
    with openai_stub(token_delay=0.04, bursts=1) as stub, site_endpoint(tmp_path, stub.port) as ep:
        results = run_http_checks(target_for(ep, model=MODEL_ID))
    assert not failures(results), [r.line() for r in results]
    first = by_name(results)["stream: POST /v1/chat/completions"]
    assert first.status == PASS and first.summary.endswith("(one burst, not on a confirming stream)"), first.line()
    assert "median gap" in first.evidence["first_burst"]
    assert "first_burst" not in by_name(results)["stream: POST /v1/completions"].evidence


def stream_results(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.name.startswith("stream: ")]


def test_a_stream_too_quick_to_judge_through_a_buffering_proxy_is_a_warning_not_a_pass(tmp_path: Path) -> None:
    """An engine that generates instantly, behind the site with `proxy_buffering on`: even the second stream
    (64 tokens) is over in milliseconds, so nobody can tell whether the proxy buffers. The check says so as a
    WARN; before, it passed such a stream."""
    with openai_stub(token_delay=0) as stub, site_endpoint(tmp_path, stub.port, edit=buffering_on) as ep:
        results = run_http_checks(target_for(ep, model=MODEL_ID))
    assert not failures(results), [r.line() for r in results]
    for stream in stream_results(results):
        assert stream.status == WARN and stream.ok, stream.line()
        assert "a second stream asking for 64 tokens" in stream.summary
        assert "cannot tell whether a proxy buffers the stream" in stream.summary
        assert f"generation shorter than {MIN_GENERATION_S}s" in stream.summary
        assert stream.evidence["judging_request"]["body"]["max_tokens"] == JUDGE_MAX_TOKENS
        assert stream.evidence["judging_request"]["body"].get("prompt", LONG_PROMPT) == LONG_PROMPT


def test_a_fast_stream_is_asked_again_for_enough_tokens_and_then_judged(tmp_path: Path) -> None:
    """5 ms a token: 16 tokens take 80 ms, too quick to judge; asked again for enough tokens to last about
    0.5 s (64 at most), the stream through a buffering proxy arrives in one burst and fails, and through the
    real site it passes."""
    with openai_stub(token_delay=0.005) as stub:
        with site_endpoint(tmp_path / "buffered", stub.port, edit=buffering_on) as ep:
            buffered = run_http_checks(target_for(ep, model=MODEL_ID))
        with site_endpoint(tmp_path / "streamed", stub.port) as ep:
            streamed = run_http_checks(target_for(ep, model=MODEL_ID))
    assert failures(buffered).keys() == {r.name for r in stream_results(buffered)}
    for stream in stream_results(buffered):
        assert re.match(r"arrived in one burst, not token by token \(a second stream asking for \d+ tokens; "
                        r"again on a confirming stream\)",
                        stream.summary), stream.summary
        assert 32 <= stream.evidence["judging_request"]["body"]["max_tokens"] <= JUDGE_MAX_TOKENS
    assert not failures(streamed), [r.line() for r in streamed]
    for stream in stream_results(streamed):
        asked = stream.evidence["judging_request"]["body"]["max_tokens"]
        assert stream.status == PASS and stream.summary.endswith(f"(a second stream asking for {asked} tokens)")
        assert stream.metrics["events"] == asked and stream.metrics["span_s"] >= MIN_GENERATION_S / 2


def test_the_same_engine_behind_the_unbuffered_site_passes(tmp_path: Path) -> None:
    with openai_stub(token_delay=0.04) as stub, site_endpoint(tmp_path, stub.port) as ep:
        results = run_http_checks(target_for(ep, model=MODEL_ID))
    assert not failures(results), [r.line() for r in results]
    stream = by_name(results)["stream: POST /v1/chat/completions"]
    assert stream.metrics["span_s"] > 0.3 and stream.metrics["ttft_s"] < 0.3


def test_a_dead_engine_is_caught_as_502(tmp_path: Path) -> None:
    with site_endpoint(tmp_path, free_port()) as ep:  # nothing listens on the engine's port
        results = run_http_checks(target_for(ep))
    failed = failures(results)
    api = ["models: GET /v1/models", "chat: POST /v1/chat/completions", "completion: POST /v1/completions",
           "stream: POST /v1/chat/completions", "stream: POST /v1/completions"]
    assert sorted(failed) == sorted(api)
    assert all(failed[name].startswith("HTTP 502") for name in api)
    auth = by_name(results)["auth: POST /v1/completions"]
    assert auth.status == WARN and "answered 502" in auth.summary  # refused without a key; the key got past auth


# --- other dialects -----------------------------------------------------------------------------------------


def test_xinference_dialect_with_crlf_lines_and_no_done_marker(tmp_path: Path) -> None:
    """The rendered Xinference site in front of a stub that answers as Xinference 4.x does: its model list
    fields, SSE lines ending in CRLF, completions streams without [DONE]."""
    with openai_stub(xinference=True, model="qwen2.5-instruct", token_delay=0.02) as stub:
        with site_endpoint(tmp_path, stub.port, engine="xinference", shape="VM.GPU.A10.1") as ep:
            results = run_http_checks(target_for(ep, model="qwen2.5-instruct", kind="xinference"))
    assert all(r.status == PASS for r in results), [r.line() for r in results]
    checks = by_name(results)
    assert checks["models: GET /v1/models"].evidence["model"]["model_type"] == "LLM"
    completion_stream = checks["stream: POST /v1/completions"]
    assert completion_stream.evidence["end_marker"] is False and "no [DONE]" in completion_stream.summary
    assert completion_stream.metrics["events"] == 16


def test_ollama_native_dialect_against_a_stub_that_follows_ollamas_api_docs(tmp_path: Path) -> None:
    """Ollama's server cannot run here (no binary or model can be downloaded): the rendered Ollama site
    (routes /v1/ and /api/) runs in front of tests/support/ollama_stub.py, which answers as Ollama's API
    documentation specifies (/api/tags, /api/generate, /api/chat, NDJSON streams ending in done: true)."""
    with ollama_stub(token_delay=0.02) as stub:
        with site_endpoint(tmp_path, stub.port, engine="ollama", shape="VM.GPU.A10.1") as ep:
            results = run_http_checks(target_for(ep, model="llama3.1:8b", kind="ollama"))
    assert [r.name for r in results][5:] == [
        "models: GET /api/tags", "auth: GET /api/tags", "auth: POST /api/generate", "auth: POST /api/chat",
        "auth: GET /v1/models", "generate: POST /api/generate", "chat: POST /api/chat",
        "stream: POST /api/generate", "stream: POST /api/chat"]
    assert all(r.status == PASS for r in results), [r.line() for r in results]
    stream = by_name(results)["stream: POST /api/chat"]
    assert stream.metrics["events"] == 16 and stream.evidence["end_marker"] is True
    assert stream.evidence["content_type"] == "application/x-ndjson"
    assert by_name(results)["chat: POST /api/chat"].metrics["completion_tokens"] == 8
    assert by_name(results)["models: GET /api/tags"].evidence["models"] == [OLLAMA_MODEL]


def test_ollama_model_without_tag_means_latest(tmp_path: Path) -> None:
    with ollama_stub(model="llama3:latest") as stub:
        target = Target(url=stub.url, credentials=Credentials(api_key="x" * 20), kind="ollama", model="llama3",
                        timeout=10)
        results = by_name(run_http_checks(target))
    assert results["models: GET /api/tags"].status == PASS
    assert results["generate: POST /api/generate"].status == PASS


# --- parsers and timing (no server) -------------------------------------------------------------------------


def feed_all(parser: SSEParser | NDJSONParser, chunks: list[bytes]) -> list[str]:
    events = [e for i, chunk in enumerate(chunks) for e in parser.feed(chunk, float(i))]
    return [e.data for e in events + parser.close(float(len(chunks)))]


def test_sse_parser_accepts_crlf_split_anywhere_and_a_stream_without_done() -> None:
    stream = b'data: {"a": 1}\r\n\r\n: keep-alive\r\n\r\ndata: {"a": 2}\r\n\r\ndata:{"a": 3}'
    for cut in range(1, len(stream)):
        assert feed_all(SSEParser(), [stream[:cut], stream[cut:]]) == ['{"a": 1}', '{"a": 2}', '{"a": 3}'], cut


def test_sse_parser_joins_multi_line_data_and_handles_lf_and_cr() -> None:
    assert feed_all(SSEParser(), [b"event: x\ndata: one\ndata: two\n\rdata: [DONE]\r\r"]) == ["one\ntwo", "[DONE]"]


def test_ndjson_parser_accepts_crlf_and_lines_split_across_reads() -> None:
    stream = b'{"response": "a", "done": false}\r\n{"response": "b", "done": false}\n\n{"done": true}'
    for cut in range(1, len(stream)):
        events = feed_all(NDJSONParser(), [stream[:cut], stream[cut:]])
        assert [e[-14:] for e in events] == ['"done": false}', '"done": false}', '{"done": true}'], cut


def test_timing_calls_a_late_burst_a_burst_and_fast_or_steady_streams_not() -> None:
    late_burst = [1.0 + i * 0.0001 for i in range(16)]
    assert judge_timing(late_burst).burst and judge_timing(late_burst).judged
    steady = judge_timing([0.05 + i * 0.04 for i in range(16)])  # 40 ms apart
    assert not steady.burst and steady.judged
    tiny = judge_timing([0.002 + i * 0.0001 for i in range(16)])  # a tiny model: all done in 4 ms
    assert not tiny.burst and not tiny.judged and "too quick to tell" in tiny.reason
    few = judge_timing([1.0 + i * 0.0001 for i in range(3)])
    assert not few.burst and not few.judged and "too few to judge" in few.reason
    assert not judge_timing([0.6 + i * 0.0001 for i in range(16)], server_decode_s=0.1).judged  # decode too short
    # With the server's own decode time: 16 tokens that took 0.5 s to make, delivered within 2 ms.
    assert judge_timing([0.6 + i * 0.0001 for i in range(16)], server_decode_s=0.5).burst
    assert not judge_timing([0.1 + i * 0.03 for i in range(16)], server_decode_s=0.5).burst


def test_hostname_matching_follows_rfc_6125() -> None:
    assert hostname_matches("llm.example.com", ["*.example.com"], [])
    assert not hostname_matches("a.llm.example.com", ["*.example.com"], [])
    assert not hostname_matches("example.com", ["*.example.com"], [])
    assert hostname_matches("LLM.example.com.", ["llm.example.com"], [])
    assert hostname_matches("127.0.0.1", ["127.0.0.1"], ["127.0.0.1"]) and not hostname_matches("127.0.0.1", ["127.0.0.1"], [])


def test_the_second_stream_asks_every_dialect_for_more_tokens_of_a_long_answer() -> None:
    for kind in ("openai", "xinference", "ollama"):
        for call in (c for c in dialect_for(kind).calls("m") if c.stream):
            longer = longer_stream(call, 64)
            assert requested_tokens(call) == 16 and requested_tokens(longer) == 64, kind
            assert LONG_PROMPT in json.dumps(longer.body) and longer.body["stream"] is True
            assert call.body is not None and LONG_PROMPT not in json.dumps(call.body)  # the first is untouched
