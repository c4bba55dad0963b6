"""The streaming check of `llmdeploy smoke`: a streamed request must arrive event by event, not in one burst that
a buffering proxy held back. It sends the request, reads the stream as it arrives (the parsers and the timing
judgement are in streams.py), and reports time to first token and tokens/s.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import Failure
from ..result import CheckResult, timed
from .dialects import ApiCall, Dialect, longer_stream, requested_tokens
from .http_client import describe_call, excerpt, send
from .streams import StreamTiming, judge_timing, parser_for
from .targets import Target

JUDGE_TARGET_S = 0.5  # a stream too quick to judge is asked again for about this long a generation
# ... but for 64 tokens at most: the whole answer (64 events of 200-300 bytes) must still fit a buffering proxy's
# buffers (nginx: proxy_buffers 8 4k, 32 KB), which flush piecewise once full and so look like a stream.
JUDGE_MAX_TOKENS = 64


def _read_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives (read1: whatever the socket has, chunked or not, without waiting for more)."""
    raw = response.raw
    if hasattr(raw, "read1"):
        while data := raw.read1(65536):
            yield data
    else:  # pragma: no cover - urllib3 < 2.3
        yield from response.iter_content(chunk_size=None)


@dataclass
class StreamRead:
    """A stream read to its end: text events' arrival times, the text, and what ended it."""

    arrivals: list[float]
    text: str
    events: int
    end_marker: bool
    decode_s: float | None
    content_type: str


def read_stream(response: requests.Response, dialect: Dialect, call: ApiCall, start: float) -> StreamRead:
    """Parse the stream as it arrives; ValueError names an event that is not JSON or carries an error."""
    parser = parser_for(call.stream or "sse")
    events = []
    for chunk in _read_chunks(response):
        events += parser.feed(chunk, time.monotonic() - start)
    events += parser.close(time.monotonic() - start)
    read = StreamRead([], "", len(events), False, None, response.headers.get("Content-Type", ""))
    pieces = []
    for number, event in enumerate(events, 1):
        if dialect.is_end(event.data, None):
            read.end_marker = True
            continue
        try:
            obj = json.loads(event.data)
        except json.JSONDecodeError:
            raise ValueError(f"event {number} is not JSON: {excerpt(event.data, 80)!r}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"event {number} is not a JSON object: {excerpt(event.data, 80)!r}")
        error = dialect.stream_error(obj)
        if error:
            raise ValueError(f"event {number} reports an error: {excerpt(error, 120)}")
        read.end_marker = read.end_marker or dialect.is_end(event.data, obj)
        read.decode_s = dialect.decode_seconds(obj) or read.decode_s
        text = call.text_of(obj)
        if text:
            read.arrivals.append(event.arrived)
            pieces.append(text)
    read.text = "".join(pieces)
    return read


class StreamRefused(Failure):
    """A streamed request answered with an error, or with events that are not the dialect's."""

    def __init__(self, summary: str, **evidence: Any) -> None:
        super().__init__(summary)
        self.summary, self.evidence = summary, evidence


def stream_call(session: requests.Session, target: Target, dialect: Dialect, call: ApiCall) -> StreamRead:
    """Send a streamed request and read it to its end; StreamRefused for a non-200 answer or a bad event."""
    # A fresh connection per stream: llama.cpp's server drops the kept-alive connection after some streams.
    headers = {**target.credentials.headers(), "Connection": "close", "Accept-Encoding": "identity"}
    start = time.monotonic()
    with send(session, target, call, headers, stream=True) as response:
        if response.status_code != 200:
            raise StreamRefused(f"HTTP {response.status_code}: {excerpt(response.text, 120) or '(empty body)'}",
                                status=response.status_code, response=excerpt(response.text, 500))
        try:
            return read_stream(response, dialect, call, start)
        except ValueError as exc:
            raise StreamRefused(str(exc)) from None


def tokens_to_judge(asked: int, timing: StreamTiming) -> int:
    """Tokens for a second stream whose generation lasts about JUDGE_TARGET_S (at least twice the first's)."""
    wanted = math.ceil(asked * JUDGE_TARGET_S / timing.generation_s) if timing.generation_s > 0 else JUDGE_MAX_TOKENS
    return max(2 * asked, min(JUDGE_MAX_TOKENS, wanted))


def stream_check(session: requests.Session, target: Target, dialect: Dialect, call: ApiCall) -> CheckResult:
    """A streamed request arrives event by event; reports time to first token and tokens/s.

    A stream too quick to judge (a tiny or fast model) is asked again, once, for enough tokens of a long answer
    to last about JUDGE_TARGET_S; when that is still too quick, the check is a WARN that says so: it cannot
    tell whether a proxy buffers the stream, so it must not pass it. A burst timed by the client alone is
    confirmed by one more stream before it fails."""
    with timed(f"stream: {call.method} {target.shown_path(call.path)}") as result:
        result.evidence["request"] = describe_call(call)
        try:
            read = stream_call(session, target, dialect, call)
            timing = judge_timing(read.arrivals, read.decode_s)
            again = ""
            if read.arrivals and not timing.judged:
                longer = longer_stream(call, tokens_to_judge(requested_tokens(call), timing))
                result.evidence.update(too_quick=timing.reason, judging_request=describe_call(longer))
                again = f"a second stream asking for {requested_tokens(longer)} tokens"
                call = longer
                read = stream_call(session, target, dialect, call)
                timing = judge_timing(read.arrivals, read.decode_s)
            if timing.burst and read.decode_s is None:
                # Timed from the client alone, an engine that hands a whole answer to its HTTP layer at once
                # (vLLM right after a restart did) looks like a buffering proxy. A proxy buffers every stream,
                # so only a burst that comes again is one.
                result.evidence.update(first_burst=timing.reason)
                again = f"{again}; " if again else ""
                read = stream_call(session, target, dialect, call)
                timing = judge_timing(read.arrivals, read.decode_s)
                again += "again on a confirming stream" if timing.burst else "one burst, not on a confirming stream"
        except StreamRefused as exc:
            return result.fail(exc.summary, **exc.evidence)
        result.metrics.update(timing.metrics())
        result.evidence.update(content_type=read.content_type, events=read.events, end_marker=read.end_marker,
                               text=excerpt(read.text, 300), timing=timing.reason)
        if not read.arrivals:
            return result.fail(f"the stream ended after {read.events} event(s) without any generated text "
                               f"(Content-Type: {read.content_type or 'none'})")
        on = f" ({again})" if again else ""
        if timing.burst:
            return result.fail(f"arrived in one burst, not token by token{on}: {timing.reason}; a proxy is "
                               "buffering the stream (nginx: proxy_buffering off)")
        rate = f", {timing.tokens_per_s:.0f} tokens/s" if timing.tokens_per_s else ""
        result.summary = f"{timing.events} text events, first after {(timing.ttft or 0) * 1000:.0f} ms{rate}{on}"
        if not timing.judged:
            return result.warn(f"{result.summary}; cannot tell whether a proxy buffers the stream: {timing.reason}; "
                               "check it with a bigger model, or look for proxy_buffering off in the proxy")
        if call.stream == "sse" and not read.end_marker:
            result.summary += " (no [DONE]: accepted)"
        if call.stream == "ndjson" and not read.end_marker:
            return result.warn(result.summary + '; the stream ended without "done": true')
    return result
