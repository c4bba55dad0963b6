"""Read streamed LLM answers as they arrive, and judge their timing.

OpenAI-style servers stream Server-Sent Events (`data: {...}` lines, a blank line between events, often a
final `data: [DONE]`); Ollama's native API streams NDJSON (one JSON object per line, the last with
`"done": true`). Real servers differ in the details, so the parsers are lenient where the specs allow it:
lines may end in CRLF (Xinference), LF or CR, a line may be split across network reads, and a stream may
end without `[DONE]` (Xinference's completions) or without a blank line after its last event.

Every event is stamped with the time its last byte arrived, which is what `judge_timing` needs to tell a
stream that arrives token by token from one that a buffering proxy held back and delivered in one burst.
"""
from __future__ import annotations

import re
import statistics
from itertools import pairwise
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")

# Burst detection (see judge_timing).
BURST_MIN_EVENTS = 4  # fewer content events than this cannot show a pattern
MIN_GENERATION_S = 0.2  # generation shorter than this is too quick to tell a burst from token-by-token
SERVER_SPAN_FRACTION = 0.1  # with the server's own decode time: events spread over less than 10% of it
WAIT_SPAN_FRACTION = 0.05  # without it: events spread over less than 5% of the wait for the first one
BURST_MEDIAN_GAP_S = 0.005  # ... and arriving less than 5 ms apart (faster than any real decode of big models)


@dataclass(frozen=True)
class StreamEvent:
    """One event: SSE data (its `data:` lines joined by newlines) or one NDJSON line."""

    arrived: float  # seconds since the request was sent
    data: str


class _Lines:
    """Split bytes into lines at CRLF, LF or CR, across reads (a CR at the end of a read may be half a CRLF)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        lines: list[bytes] = []
        start = 0
        for match in _LINE_END.finditer(self._buffer):
            if match.group() == b"\r" and match.end() == len(self._buffer):
                break  # wait: the next read may start with the LF of this CRLF
            lines.append(self._buffer[start:match.start()])
            start = match.end()
        self._buffer = self._buffer[start:]
        return lines

    def close(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        lines = _LINE_END.split(rest)
        return lines[:-1] if lines and lines[-1] == b"" else lines


class SSEParser:
    """Incremental Server-Sent Events parser (WHATWG rules for `data:` fields and comments)."""

    def __init__(self) -> None:
        self._lines = _Lines()
        self._data: list[str] = []

    def feed(self, chunk: bytes, arrived: float) -> list[StreamEvent]:
        return self._consume(self._lines.feed(chunk), arrived)

    def close(self, arrived: float) -> list[StreamEvent]:
        """End of stream: also return an event the server did not end with a blank line."""
        events = self._consume(self._lines.close(), arrived)
        return events + self._dispatch(arrived)

    def _consume(self, lines: list[bytes], arrived: float) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if line == "":
                events.extend(self._dispatch(arrived))
            elif line.startswith(":"):
                continue  # comment / keep-alive
            else:
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value.removeprefix(" "))
        return events

    def _dispatch(self, arrived: float) -> list[StreamEvent]:
        if not self._data:
            return []
        data, self._data = "\n".join(self._data), []
        return [StreamEvent(arrived, data)]


class NDJSONParser:
    """Incremental newline-delimited JSON parser: one event per non-empty line (LF or CRLF)."""

    def __init__(self) -> None:
        self._lines = _Lines()

    def feed(self, chunk: bytes, arrived: float) -> list[StreamEvent]:
        return self._events(self._lines.feed(chunk), arrived)

    def close(self, arrived: float) -> list[StreamEvent]:
        return self._events(self._lines.close(), arrived)

    @staticmethod
    def _events(lines: list[bytes], arrived: float) -> list[StreamEvent]:
        texts = (line.decode("utf-8", errors="replace").strip() for line in lines)
        return [StreamEvent(arrived, text) for text in texts if text]


def parser_for(stream_format: str) -> SSEParser | NDJSONParser:
    return NDJSONParser() if stream_format == "ndjson" else SSEParser()


@dataclass(frozen=True)
class StreamTiming:
    """How the content of a stream arrived."""

    events: int  # events that carried generated text
    ttft: float | None  # seconds from the request to the first text
    span: float  # seconds from the first text to the last
    tokens_per_s: float | None  # text events per second after the first (None: too few to tell)
    burst: bool  # True: delivered in one burst although generation took longer (a buffering proxy)
    reason: str  # why it is (or is not) a burst, or why it cannot be told, in words
    judged: bool = True  # False: too few events or too short a generation to tell either way
    generation_s: float = 0.0  # how long generation took, as judged (the server's figure, else request to last)

    def metrics(self) -> dict[str, float]:
        found = {"ttft_s": self.ttft, "tokens_per_s": self.tokens_per_s, "span_s": self.span,
                 "events": float(self.events)}
        return {k: round(v, 4) for k, v in found.items() if v is not None}


def judge_timing(arrivals: list[float], server_decode_s: float | None = None) -> StreamTiming:
    """Time to first token, tokens/s, and whether the text events came in one burst.

    A buffering proxy holds the whole answer back and then sends it at once: the client waits the whole
    generation for the first token, then gets every token within a millisecond or two. So a stream is a
    burst when its events are spread over a tiny fraction of the time generation took. That time is the
    server's own figure when it reports one (llama.cpp's `timings.predicted_ms`, Ollama's `eval_duration`),
    else the time from the request to the last event (behind a buffering proxy, all of it is generation).
    A generation shorter than MIN_GENERATION_S, or fewer than BURST_MIN_EVENTS events, cannot be judged
    (`judged` False): a burst and a stream look alike when everything happens within a few milliseconds.
    """
    if not arrivals:
        return StreamTiming(0, None, 0.0, None, False, "no text arrived", judged=False)
    ttft, span, count = arrivals[0], arrivals[-1] - arrivals[0], len(arrivals)
    rate = (count - 1) / span if count > 1 and span > 0 else None
    gaps = [b - a for a, b in pairwise(arrivals)]
    median_gap = statistics.median(gaps) if gaps else 0.0
    if server_decode_s is not None:
        generation, basis, fraction = server_decode_s, "the server's decode time", SERVER_SPAN_FRACTION
    else:
        generation, basis, fraction = arrivals[-1], "the time from the request to the last token", WAIT_SPAN_FRACTION
    if count < BURST_MIN_EVENTS:
        return StreamTiming(count, ttft, span, rate, False, f"only {count} text event(s), too few to judge",
                            judged=False, generation_s=generation)
    words = (f"{count} text events within {span * 1000:.1f} ms (median gap {median_gap * 1000:.2f} ms) "
             f"against {generation:.3f}s of {basis}")
    if generation < MIN_GENERATION_S:
        return StreamTiming(count, ttft, span, rate, False, f"{words}: generation shorter than {MIN_GENERATION_S}s "
                            "is too quick to tell a burst from token-by-token", judged=False, generation_s=generation)
    burst = span < fraction * generation
    if server_decode_s is None:
        burst = burst and median_gap < BURST_MEDIAN_GAP_S
    return StreamTiming(count, ttft, span, rate, burst, words, generation_s=generation)
