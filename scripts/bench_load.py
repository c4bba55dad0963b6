#!/usr/bin/env python3
"""Load through the proxy: K API keys x N concurrent streams for S seconds through the project's rendered nginx
site (TLS, API keys, limits) in front of a real llama.cpp server, and what nginx answers and costs meanwhile.

It starts what the integration tests start (tests/support): llama.cpp (1 thread, a tiny GGUF, --parallel slots;
requests beyond the slots queue in llama.cpp, which is the point: the bench measures nginx holding N streams,
not llama.cpp's throughput) and the rendered site in a real nginx with a test CA and K delivered keys. The keys'
rate limit is set far above what this machine can send, so no stream is refused by its own key's limit.
Meanwhile, --wrong-key-clients clients send 20 wrong keys a second each: they get 401,
then 429 (intended), and every 429 must carry Retry-After. Every server is stopped by PID at the end.

Each stream is a chat completion with "stream": true on a kept-alive TLS connection of its own client; time to
first token (TTFT) is from sending the request to the first SSE event with generated text. nginx's memory is the
RSS and PSS (/proc/PID/smaps_rollup) of its master and workers, after a warm-up and at the end.

Target: 0 errors (any answer but 200 to a good key, a broken stream, a connection error), and every 429 carries
Retry-After. Exit status 0 when met, 1 when not.

    python3 scripts/bench_load.py [--keys 10] [--streams 100] [--seconds 60] [--max-tokens 16] [--parallel 16]
                                  [--wrong-key-clients 1]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra"), str(ROOT)]

from llmdeploy.smoke.dialects import openai_chat_text  # noqa: E402
from llmdeploy.smoke.streams import SSEParser  # noqa: E402
from tests.support.endpoint import Endpoint, llama_endpoint  # noqa: E402

WRONG_KEY = "Bearer sk-llm-" + "x" * 43


def key_names(count: int) -> list[str]:
    """The keys the streams share ("default" first: the test endpoint checks delivery with it)."""
    return ["default"] + [f"bench{i}" for i in range(1, count)]


@dataclass
class Tally:
    """What the clients saw; each client thread adds under the lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    streams: Counter[str] = field(default_factory=Counter)  # good keys: "200" or the error ("503", "broken: ...")
    wrong: Counter[str] = field(default_factory=Counter)  # wrong keys: status codes
    wrong_429_without_retry_after: int = 0
    ttfts: list[float] = field(default_factory=list)

    def stream(self, outcome: str, ttft: float | None) -> None:
        with self.lock:
            self.streams[outcome] += 1
            if ttft is not None:
                self.ttfts.append(ttft)


@dataclass(frozen=True)
class Memory:
    rss_kib: int
    pss_kib: int
    processes: int

    def __str__(self) -> str:
        return f"RSS {self.rss_kib / 1024:.1f} MiB, PSS {self.pss_kib / 1024:.1f} MiB ({self.processes} processes)"


def nginx_memory(master: int) -> Memory:
    """RSS and PSS of nginx's master and its workers (children of the master), from smaps_rollup."""
    pids = [master] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == master]
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name == "Rss":
                    rss += int(value.split()[0])
                elif name == "Pss":
                    pss += int(value.split()[0])
        except FileNotFoundError:
            pass
    return Memory(rss, pss, len(pids))


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return -1


class Client:
    """One kept-alive TLS connection to the endpoint, reopened when nginx or the network closes it."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.context = ssl.create_default_context(cafile=ep.ca)
        self.conn: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> http.client.HTTPResponse:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection("localhost", self.ep.host_layout.https_port, context=self.context,
                                                    timeout=600)
        self.conn.request(method, path, body=body, headers=headers)
        return self.conn.getresponse()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def one_stream(client: Client, key: str, body: bytes) -> tuple[str, float | None]:
    """One streamed chat completion: ("200", ttft) when it streamed text and ended with [DONE], else the error."""
    start = time.perf_counter()
    response = client.request("POST", "/v1/chat/completions", body,
                              {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    if response.status != 200:
        response.read()
        return str(response.status), None
    parser, first, done = SSEParser(), None, False
    while chunk := response.read1(65536):
        for event in parser.feed(chunk, time.perf_counter() - start):
            if event.data == "[DONE]":
                done = True
            elif first is None and openai_chat_text(_json(event.data)):
                first = event.arrived
    if response.will_close:
        client.close()
    if not done or first is None:
        return f"broken: {'no text' if first is None else 'no [DONE]'}", None
    return "200", first


def _json(data: str) -> dict[str, object]:
    value = json.loads(data)
    return value if isinstance(value, dict) else {}


def stream_client(ep: Endpoint, key: str, body: bytes, deadline: float, tally: Tally) -> None:
    client = Client(ep)
    while time.monotonic() < deadline:
        try:
            outcome, ttft = one_stream(client, key, body)
        except (OSError, http.client.HTTPException) as exc:
            client.close()
            outcome, ttft = f"connection: {exc.__class__.__name__}", None
        tally.stream(outcome, ttft)
    client.close()


def wrong_key_client(ep: Endpoint, deadline: float, tally: Tally) -> None:
    client = Client(ep)
    while time.monotonic() < deadline:
        try:
            response = client.request("GET", "/v1/models", None, {"Authorization": WRONG_KEY})
            response.read()
            if response.will_close:
                client.close()
            status = str(response.status)
            missing = response.status == 429 and not response.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as exc:
            client.close()
            status, missing = f"connection: {exc.__class__.__name__}", False
        with tally.lock:
            tally.wrong[status] += 1
            tally.wrong_429_without_retry_after += missing
        time.sleep(0.05)  # 20 a second: well over the 1 a second allowed, without taking the streams' CPU
    client.close()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run(ep: Endpoint, args: argparse.Namespace) -> tuple[Tally, list[Memory], float]:
    """The load; nginx's memory after the warm-up, at its highest PSS (sampled each second) and at the end."""
    keys = [ep.keys[name] for name in key_names(args.keys)]
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": args.max_tokens, "stream": True}).encode()
    warm = Client(ep)  # a warm-up stream: workers forked, TLS session cache and llama.cpp's first batch done
    one_stream(warm, keys[0], body)
    warm.close()
    before, tally = nginx_memory(ep.nginx_pid), Tally()
    start = time.monotonic()
    deadline = start + args.seconds
    threads = [threading.Thread(target=stream_client, args=(ep, keys[i % len(keys)], body, deadline, tally))
               for i in range(args.streams)]
    threads += [threading.Thread(target=wrong_key_client, args=(ep, deadline, tally))
                for _ in range(args.wrong_key_clients)]
    for t in threads:
        t.start()
    peak = before
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        now = nginx_memory(ep.nginx_pid)
        peak = now if now.pss_kib > peak.pss_kib else peak
    elapsed = time.monotonic() - start
    return tally, [before, peak, nginx_memory(ep.nginx_pid)], elapsed


def report(tally: Tally, memory: list[Memory], elapsed: float, load: tuple[str, str], args: argparse.Namespace) -> bool:
    before, peak, after = memory
    ok_streams = tally.streams["200"]
    errors = {k: v for k, v in tally.streams.items() if k != "200"}
    wrong_unexpected = {k: v for k, v in tally.wrong.items() if k not in ("401", "429")}
    print(f"\n{args.streams} concurrent streams on {args.keys} keys for {elapsed:.1f} s "
          f"(max_tokens {args.max_tokens}, llama.cpp --parallel {args.parallel}, 1 thread)")
    print(f"streams completed:      {ok_streams} ({ok_streams / elapsed:.1f}/s)")
    print(f"stream errors:          {sum(errors.values())} {dict(sorted(errors.items())) or ''}".rstrip())
    if tally.ttfts:
        print(f"TTFT p50 / p99:         {percentile(tally.ttfts, 50) * 1000:.0f} ms / "
              f"{percentile(tally.ttfts, 99) * 1000:.0f} ms (queued behind llama.cpp's slots)")
    if args.wrong_key_clients:
        print(f"wrong-key requests:     {sum(tally.wrong.values())} from {args.wrong_key_clients} client(s): "
              f"{dict(sorted(tally.wrong.items()))}; 429 without Retry-After: {tally.wrong_429_without_retry_after}")
    print(f"nginx memory at start:  {before}")
    print(f"nginx memory at peak:   {peak}")
    print(f"nginx memory at end:    {after}")
    print(f"load average (1 min):   {load[0]} at start, {load[1]} at end (other work on this machine included)")
    met = (not errors and ok_streams > 0 and not wrong_unexpected and tally.wrong_429_without_retry_after == 0
           and (not args.wrong_key_clients or tally.wrong["429"] > 0))
    print(f"\nverdict: {'target met' if met else 'target MISSED'} (0 errors other than intended 429s, every 429 "
          "with Retry-After)")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10, help="API keys the streams share (default 10)")
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams (default 100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per stream (default 16)")
    parser.add_argument("--parallel", type=int, default=16, help="llama.cpp slots (default 16; the rest queue)")
    parser.add_argument("--wrong-key-clients", type=int, default=1,
                        help="clients sending wrong keys meanwhile, for the intended 401/429 (default 1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        # Each slot gets 256 tokens of context; the keys' rate limit is far above what this machine can send.
        with llama_endpoint(Path(tmp), parallel=args.parallel, n_ctx=256 * args.parallel,
                            apiKeys=key_names(args.keys), rateLimit="100000r/s",
                            rateLimitBurst=10000, basicAuthUsers=[], basicAuthPasswords="") as ep:
            print(f"llama.cpp (1 thread, tiny GGUF, {args.parallel} slots) behind nginx (rendered site) at {ep.base}")
            load_start = f"{os.getloadavg()[0]:.2f}"
            tally, memory, elapsed = run(ep, args)
            load_end = f"{os.getloadavg()[0]:.2f}"
    return 0 if report(tally, memory, elapsed, (load_start, load_end), args) else 1


if __name__ == "__main__":
    sys.exit(main())
