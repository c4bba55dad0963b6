"""llmdeploy usage's arithmetic: the window, the status classes, several upstream times, lines that are not usage
records, and the table's order (tests/integration/test_usage_log.py proves the log itself, with real nginx)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from llmdeploy.errors import UsageError
from llmdeploy.operate.usage_report import NO_KEY_LABEL, parse_window, summarize, table

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def line(name: str, status: int, minutes_ago: float = 1, upstream: str = "0.100", request_time: float = 0.2) -> str:
    when = (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="seconds")
    return json.dumps({"time": when, "name": name, "addr": "192.0.2.1", "host": "llm.example.org", "method": "GET",
                       "path": "/v1/models", "status": status, "request_bytes": 100, "response_bytes": 1000,
                       "request_time": request_time, "upstream_time": upstream})


def test_each_status_lands_in_its_class_and_the_window_drops_older_lines() -> None:
    lines = [line("alice", 200), line("alice", 304), line("alice", 401), line("alice", 429), line("alice", 404),
             line("alice", 502), line("alice", 200, minutes_ago=120)]
    alice = summarize(lines, timedelta(hours=1), NOW).keys[0]
    assert (alice.requests, alice.ok, alice.unauthorized, alice.throttled, alice.client_errors,
            alice.server_errors) == (6, 2, 1, 1, 1, 1)
    assert alice.request_bytes == 600 and alice.response_bytes == 6000
    assert summarize(lines, None, NOW).keys[0].requests == 7  # --since all


def test_upstream_times_of_several_servers_add_up_and_a_dash_is_none() -> None:
    got = summarize([line("bob", 200, upstream="0.250, 0.500"), line("bob", 401, upstream="-")], None, NOW).keys[0]
    assert got.upstream_seconds == pytest.approx(0.75)


def test_lines_that_are_not_records_are_counted_not_fatal() -> None:
    report = summarize([line("bob", 200), "", "not json", '{"time": "2026-12-07T11:59:00+00:00"}',
                        line("bob", 200)[:40]], None, NOW)
    assert report.keys[0].requests == 1 and report.skipped_lines == 3
    assert "3 line(s) of the log were not usage records" in table(report)


def test_the_busiest_key_comes_first_and_requests_without_a_key_last() -> None:
    lines = [line("-", 401)] * 5 + [line("alice", 200)] + [line("bob", 200)] * 2
    report = summarize(lines, None, NOW)
    assert [k.name for k in report.keys] == ["bob", "alice", NO_KEY_LABEL]
    rows = table(report).splitlines()
    assert rows[0].split()[:2] == ["key", "requests"] and rows[1].split()[:2] == ["bob", "2"]
    assert rows[-1] == "(the whole log; 2 key(s) or user(s))"


def test_an_empty_window_says_so() -> None:
    report = summarize([line("alice", 200, minutes_ago=90)], timedelta(minutes=30), NOW)
    assert report.keys == [] and table(report).endswith(f"(no requests since {(NOW - timedelta(minutes=30)).isoformat()})")


@pytest.mark.parametrize("text,want", [("30m", timedelta(minutes=30)), ("24h", timedelta(hours=24)),
                                       ("7d", timedelta(days=7)), ("all", None)])
def test_windows(text: str, want: timedelta | None) -> None:
    assert parse_window(text) == want


@pytest.mark.parametrize("text", ["", "0h", "5x", "1.5h", "-1d", "h"])
def test_a_bad_window_names_the_forms_it_takes(text: str) -> None:
    with pytest.raises(UsageError, match=r"expected minutes, hours or days \(30m, 24h, 7d\) or 'all'"):
        parse_window(text)


@pytest.mark.parametrize("text", ["99999999d", "9999999999999999999999h"])
def test_a_window_further_back_than_any_date_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="further back than any date: use --since all"):
        parse_window(text)


def test_a_line_missing_a_field_is_skipped_whole_never_half_counted() -> None:
    broken = json.loads(line("carol", 200))
    del broken["response_bytes"]
    report = summarize([json.dumps(broken), line("bob", 200)], None, NOW)
    assert [k.name for k in report.keys] == ["bob"] and report.skipped_lines == 1
