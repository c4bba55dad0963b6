"""Per-key usage through the rendered nginx site (real nginx, real llama.cpp): every request is logged under its
key's name, and `llmdeploy usage` sums the log to exactly what the clients saw, per key, with the 401s and 429s.
No key or password is in the log or in what `usage` prints, even one a careless client put in the query string."""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.endpoint import PASSWORD, Endpoint, llama_endpoint
from support.usage_log import usage_records

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with llama_endpoint(tmp_path_factory.mktemp("usage")) as ep:
        yield ep


def _usage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["llmdeploy", "usage", *args], capture_output=True, text=True, timeout=60)


def _mark(endpoint: Endpoint, s: requests.Session, name: str) -> int:
    """A request whose line ends up in the log, and the line's number once it is there."""
    s.get(f"{endpoint.base}/llmdeploy-test-{name}", timeout=10)
    path = f"/llmdeploy-test-{name}"
    records = usage_records(Path(endpoint.host_layout.paths.usage_log), lambda rs: any(r["path"] == path for r in rs))
    return next(number for number, record in enumerate(records) if record["path"] == path)


@pytest.fixture(scope="module")
def traffic(endpoint: Endpoint, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Counter[int]], Path]:
    """Known requests from two keys, a basic-auth user, a wrong key and a flood from the 1r/m key: the statuses
    each client saw, and the log's lines for them (between two markers: the fixture's own polls are not
    this test's)."""
    seen: dict[str, Counter[int]] = {"default": Counter(), "slow": Counter(), "alice": Counter(), "-": Counter()}
    with endpoint.session() as s:
        start = _mark(endpoint, s, "start")
        for _ in range(5):
            seen["default"][s.get(f"{endpoint.base}/v1/models", headers=endpoint.bearer("default"), timeout=10).status_code] += 1
        answer = s.post(f"{endpoint.base}/v1/chat/completions", headers=endpoint.bearer("default"), timeout=60,
                        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        seen["default"][answer.status_code] += 1
        answer_bytes = len(answer.content)
        # A key in the query string (a careless client): the log keeps the path only.
        key_in_url = f"{endpoint.base}/v1/models?api_key={endpoint.keys['default']}"
        seen["default"][s.get(key_in_url, headers=endpoint.bearer("default"), timeout=10).status_code] += 1
        for _ in range(8):  # 1r/m, burst 3: the first 4 pass, then 429
            seen["slow"][s.get(f"{endpoint.base}/v1/models", headers=endpoint.bearer("slow"), timeout=10).status_code] += 1
        for password in (PASSWORD, PASSWORD, "wrong-password-123"):
            seen["alice"][s.get(f"{endpoint.base}/v1/models", auth=("alice", password), timeout=10).status_code] += 1
        for _ in range(3):
            wrong = {"Authorization": "Bearer sk-llm-" + "x" * 43}
            seen["-"][s.get(f"{endpoint.base}/v1/models", headers=wrong, timeout=10).status_code] += 1
        end = _mark(endpoint, s, "end")
    lines = Path(endpoint.host_layout.paths.usage_log).read_text().splitlines()[start + 1:end]
    log = tmp_path_factory.mktemp("usage-copy") / "llmdeploy-usage.log"
    log.write_text("\n".join(lines) + "\n")
    assert answer_bytes > 0
    return seen, log


def _secrets(endpoint: Endpoint) -> list[str]:
    return [*endpoint.keys.values(), PASSWORD]


def test_the_log_names_every_request_and_holds_no_secret(endpoint: Endpoint,
                                                         traffic: tuple[dict[str, Counter[int]], Path]) -> None:
    seen, log = traffic
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert Counter(e["name"] for e in entries) == {name: sum(c.values()) for name, c in seen.items()}
    whole = Path(endpoint.host_layout.paths.usage_log).read_text()
    entries = [json.loads(line) for line in whole.splitlines()]
    assert {e["path"] for e in entries} == {"/v1/models", "/v1/chat/completions", "/llmdeploy-test-start",
                                            "/llmdeploy-test-end"}  # no query string
    chat = next(e for e in entries if e["path"] == "/v1/chat/completions")
    assert chat["status"] == 200 and chat["request_bytes"] > 0 and chat["response_bytes"] > 0
    # The engine's time is there when nginx reached it, empty (escape=json) when nginx answered itself. (nginx times the request
    # and the upstream on different clocks: one may read a millisecond past the other, so they are not compared.)
    assert float(chat["upstream_time"]) >= 0 and chat["request_time"] >= 0
    refused = [e for e in entries if e["status"] in (401, 429)]
    assert refused and {e["upstream_time"] for e in refused} == {""}
    for secret in _secrets(endpoint):
        assert secret not in whole


def test_usage_sums_the_log_to_what_each_client_saw(endpoint: Endpoint,
                                                    traffic: tuple[dict[str, Counter[int]], Path]) -> None:
    seen, log = traffic
    assert seen["slow"][429] >= 1 and seen["alice"][401] == 1 and seen["-"][401] == 3, seen
    done = _usage("--log", str(log), "--json")
    assert done.returncode == 0, done.stderr
    report = {k["name"]: k for k in json.loads(done.stdout)["keys"]}
    assert set(report) == {"default", "slow", "alice", "(no valid key)"}
    for name, statuses in seen.items():
        got = report["(no valid key)" if name == "-" else name]
        assert got["requests"] == sum(statuses.values()), (name, got)
        assert got["ok"] == sum(n for status, n in statuses.items() if status < 400), (name, got)
        assert (got["unauthorized"], got["throttled"]) == (statuses[401], statuses[429]), (name, got)
    assert list(report)[:2] == ["slow", "default"]  # the most requests first (8, then 7)
    table = _usage("--log", str(log), "--since", "1h")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:6] == ["key", "requests", "ok", "401",
                                                                                "429", "4xx"], table.stdout
    for secret in _secrets(endpoint):
        assert secret not in done.stdout + done.stderr + table.stdout + table.stderr
