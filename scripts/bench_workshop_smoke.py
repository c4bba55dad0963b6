#!/usr/bin/env python3
"""What checking a whole workshop costs: `llmdeploy workshop status` over 200 attendee endpoints against one,
as a ratio of wall times (200 endpoints / 1 endpoint).

The endpoints are the OpenAI-compatible stub engines of tests/support (openai_stub's handler), each with its
own API key and, by default, behind TLS with a test CA (as real endpoints are), all served by one child process
so that the client's work and the servers' work are separate processes; the child is stopped by PID at the end.
The client side is exactly what `workshop status` runs: the attendees' outputs become smoke targets
(llmdeploy.workshop.status.targets) and llmdeploy.smoke.runner.run_targets checks them, `--concurrency` at a
time. Every endpoint gets the full set of checks; the stubs send no HSTS header and nothing listens on port 80,
so those two checks fail on every endpoint, as expected, and cost the same each time.

Perfect scaling would be a ratio of ceil(200 / concurrency) (waves of endpoints, each as slow as one); the
figures show how close the runner gets on this machine, where client and servers share 2 cores. `--latency`
adds a delay to every answer, like a remote endpoint's round trip, which is when concurrency pays most;
`--token-delay` spaces streamed tokens as an engine does (with none, a stream that waited in a queue arrives in
one burst, and the smoke test rightly calls that buffering).

    python3 scripts/bench_workshop_smoke.py [--endpoints 200] [--concurrency 8,32,64] [--latency 0]
                                            [--token-delay 0.01] [--plain-http]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra"), str(ROOT)]

from llmdeploy.secret_delivery import generate_api_key  # noqa: E402
from llmdeploy.smoke.runner import run_targets  # noqa: E402
from llmdeploy.workshop.attendee_outputs import AttendeeOutput  # noqa: E402
from llmdeploy.workshop.status import targets  # noqa: E402
from tests.support.procs import start_process, stop_process, wait_until  # noqa: E402

MODEL = "stub-model"


def serve(spec_path: Path, ready_path: Path) -> None:
    """Child process: one stub engine per key in the spec, on its own port, until SIGTERM."""
    import ssl

    from tests.support.openai_stub import OpenAIStub, _Handler
    from tests.support.ports import LOOPBACK
    from tests.support.stubserver import _Server
    spec = json.loads(spec_path.read_text())
    context = None
    if spec["tls"]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(spec["cert"], spec["key"])
    ports = []
    for key in spec["keys"]:
        server = _Server((LOOPBACK, 0), _Handler)
        server.state = OpenAIStub(api_key=key, latency=spec["latency"], token_delay=spec["token_delay"], model=MODEL)
        server.state.port = int(server.server_address[1])
        if context:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()
        ports.append(server.state.port)
    ready_path.write_text(json.dumps(ports))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def timed_run(attendees: list[AttendeeOutput], concurrency: int, ca_dir: Path) -> tuple[float, int, dict[str, int]]:
    checks = targets(attendees, ca_dir, timeout=30)
    start = time.monotonic()
    reports = run_targets(checks, concurrency)
    wall = time.monotonic() - start
    failed: dict[str, int] = {}
    for report in reports:
        for result in report.results:
            if not result.ok:
                failed[result.name] = failed.get(result.name, 0) + 1
    return wall, sum(len(r.results) for r in reports), failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--concurrency", default="8,32,64", help="comma-separated list (default: 8,32,64)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every stub waits before answering")
    parser.add_argument("--token-delay", type=float, default=0.01,
                        help="seconds between streamed tokens, as an engine generates them (default: 0.01)")
    parser.add_argument("--single-runs", type=int, default=5, help="runs of the 1-endpoint case (median taken)")
    parser.add_argument("--plain-http", action="store_true", help="no TLS on the stubs")
    parser.add_argument("--serve", nargs=2, metavar=("SPEC", "READY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]))
        return 0
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-workshop-") as tmp_name:
        tmp = Path(tmp_name)
        from tests.support.certs import issue_leaf, make_ca
        ca = make_ca(tmp / "ca")
        leaf = issue_leaf(ca, tmp / "leaf", hostnames=["localhost"], ips=["127.0.0.1"])
        keys = [generate_api_key() for _ in range(args.endpoints)]
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"keys": keys, "latency": args.latency, "token_delay": args.token_delay, "tls": not args.plain_http,
                                    "cert": str(leaf.fullchain), "key": str(leaf.key)}))
        ready = tmp / "ready.json"
        log = tmp / "stubs.log"
        proc = start_process([sys.executable, str(Path(__file__).resolve()), "--serve", str(spec), str(ready)], log,
                             cwd=ROOT)
        try:
            wait_until(lambda: None if ready.exists() and ready.read_text() else "no ports yet", proc, 60,
                       "stub endpoints", log)
            ports = json.loads(ready.read_text())
            scheme = "http" if args.plain_http else "https"
            ca_pem = "" if args.plain_http else Path(ca.cert).read_text()
            attendees = [AttendeeOutput(id=f"a{i:03d}", name=f"A {i}", email="", endpoint_url=f"{scheme}://localhost:"
                                        f"{port}", openai_base_url=f"{scheme}://localhost:{port}/v1", api_key=key,
                                        model=MODEL, ca_certificate=ca_pem, endpoint=f"a{i:03d}")
                         for i, (port, key) in enumerate(zip(ports, keys))]
            ca_dir = tmp / "cas"
            ca_dir.mkdir()
            timed_run(attendees[:1], 1, ca_dir)  # warm-up: imports, first TLS context
            singles = [timed_run(attendees[:1], 1, ca_dir)[0] for _ in range(args.single_runs)]
            one = statistics.median(singles)
            _, checks_one, failed_one = timed_run(attendees[:1], 1, ca_dir)
            print(f"endpoints: {args.endpoints} stub engines ({'plain HTTP' if args.plain_http else 'TLS, test CA'}, "
                  f"latency {args.latency * 1000:.0f} ms per answer, {args.token_delay * 1000:.0f} ms per streamed token), one "
                  f"child process; {os.cpu_count()} CPU(s)")
            print(f"checks per endpoint: {checks_one}; failing by design on every endpoint: "
                  f"{', '.join(sorted(failed_one)) or 'none'}")
            print(f"1 endpoint: {one:.3f} s (median of {len(singles)}: "
                  f"{', '.join(f'{s:.3f}' for s in singles)})")
            print(f"\n{'concurrency':>11} {'wall (s)':>9} {'ratio N/1':>10} {'perfect':>8} {'per endpoint (ms)':>18}")
            for level in levels:
                wall, checks, failed = timed_run(attendees, level, ca_dir)
                unexpected = {k: v for k, v in failed.items() if k not in failed_one or v != args.endpoints}
                perfect = math.ceil(args.endpoints / level)
                print(f"{level:>11} {wall:>9.2f} {wall / one:>10.1f} {perfect:>8} {1000 * wall / args.endpoints:>18.1f}"
                      + (f"  unexpected failures: {unexpected}" if unexpected else ""))
                assert checks == checks_one * args.endpoints
        finally:
            stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
