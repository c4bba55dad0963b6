"""Read nginx's usage log (the llmdeploy_usage log_format in templates/files/nginx-site.conf.j2) and sum it per
key name over a time window: requests, successes, 401s, 429s, other client errors, server errors, time and bytes.

Lines that are not the format's (a truncated last line while nginx writes, an old format) are counted and
skipped, never fatal: the report says how many.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from ..errors import UsageError

NO_KEY = "-"  # the log's name for a request without a valid key or known user
NO_KEY_LABEL = "(no valid key)"
_WINDOW = re.compile(r"(\d+)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_window(text: str) -> timedelta | None:
    """--since: 30m, 24h, 7d, or 'all' (None)."""
    if text == "all":
        return None
    found = _WINDOW.fullmatch(text.strip())
    if not found or int(found.group(1)) == 0:
        raise UsageError(f"--since {text!r}: expected minutes, hours or days (30m, 24h, 7d) or 'all'")
    try:
        window = timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
        _ = datetime.now(timezone.utc) - window  # a window reaching before year 1 cannot be a date
    except OverflowError:
        raise UsageError(f"--since {text!r} reaches further back than any date: use --since all") from None
    return window


@dataclass
class KeyUsage:
    """One key's (or user's) requests in the window."""

    name: str
    requests: int = 0
    ok: int = 0  # 1xx-3xx
    unauthorized: int = 0  # 401: a wrong key, password, or none
    throttled: int = 0  # 429: over the key's rate, or too many failures from one address
    client_errors: int = 0  # other 4xx
    server_errors: int = 0  # 5xx: the engine or nginx failed
    request_seconds: float = 0.0
    upstream_seconds: float = 0.0  # time the engine took (nginx's $upstream_response_time)
    request_bytes: int = 0
    response_bytes: int = 0
    first: str = ""
    last: str = ""

    def add(self, record: Record) -> None:
        status = record.status
        self.requests += 1
        if status < 400:
            self.ok += 1
        elif status == 401:
            self.unauthorized += 1
        elif status == 429:
            self.throttled += 1
        elif status < 500:
            self.client_errors += 1
        else:
            self.server_errors += 1
        self.request_seconds += record.request_seconds
        self.upstream_seconds += record.upstream_seconds
        self.request_bytes += record.request_bytes
        self.response_bytes += record.response_bytes
        self.first = min(self.first, record.when) if self.first else record.when
        self.last = max(self.last, record.when)


@dataclass
class UsageReport:
    since: str  # ISO time the window starts, or "" for all of the log
    keys: list[KeyUsage] = field(default_factory=list)
    skipped_lines: int = 0

    def as_json(self) -> str:
        return json.dumps({"since": self.since or None, "skipped_lines": self.skipped_lines,
                           "keys": [asdict(k) for k in self.keys]}, indent=2)


def _upstream_seconds(text: str) -> float:
    """$upstream_response_time: empty without an upstream (escape=json), "0.012, 0.030" when nginx tried several."""
    total = 0.0
    for part in re.split(r"[,:]", text):
        try:
            total += float(part.strip())
        except ValueError:
            continue
    return total


@dataclass(frozen=True)
class Record:
    """One line of the log, every field read (a line missing one is skipped whole, never half counted)."""

    name: str
    time: datetime
    status: int
    request_seconds: float
    upstream_seconds: float
    request_bytes: int
    response_bytes: int

    @property
    def when(self) -> str:
        return self.time.astimezone(timezone.utc).isoformat(timespec="seconds")


def read_record(line: str) -> Record:
    """ValueError, KeyError, TypeError or AttributeError for a line that is not a usage record."""
    entry = json.loads(line)
    return Record(str(entry["name"]) or NO_KEY, datetime.fromisoformat(str(entry["time"])), int(str(entry["status"])),
                  float(str(entry["request_time"])), _upstream_seconds(str(entry.get("upstream_time", ""))),
                  int(str(entry["request_bytes"])), int(str(entry["response_bytes"])))


def summarize(lines: Iterable[str], window: timedelta | None, now: datetime | None = None) -> UsageReport:
    """Sum the log's lines per name, keeping those at or after now - window (all with window None)."""
    now = now or datetime.now(timezone.utc)
    start = now - window if window else None
    report = UsageReport(since=start.isoformat(timespec="seconds") if start else "")
    by_name: dict[str, KeyUsage] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            record = read_record(line)
            if start and record.time < start:
                continue
        except (ValueError, KeyError, TypeError, AttributeError):
            report.skipped_lines += 1
            continue
        by_name.setdefault(record.name, KeyUsage(NO_KEY_LABEL if record.name == NO_KEY else record.name)).add(record)
    # The most active first; requests without a valid key last, they are nobody's.
    report.keys = sorted(by_name.values(), key=lambda k: (k.name == NO_KEY_LABEL, -k.requests, k.name))
    return report


COLUMNS = ("key", "requests", "ok", "401", "429", "4xx", "5xx", "avg s", "engine s", "in", "out", "last")


def human_size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def aligned(rows: list[tuple[str, ...]], text_columns: int) -> list[str]:
    """Rows as columns two spaces apart: the first `text_columns` left-aligned, the numbers after them right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def table(report: UsageReport) -> str:
    """The report as aligned columns, with a line that says what the window was."""
    rows = [COLUMNS] + [(k.name, str(k.requests), str(k.ok), str(k.unauthorized), str(k.throttled),
                         str(k.client_errors), str(k.server_errors),
                         f"{k.request_seconds / k.requests:.3f}" if k.requests else "-", f"{k.upstream_seconds:.1f}",
                         human_size(k.request_bytes), human_size(k.response_bytes), k.last) for k in report.keys]
    lines = aligned(rows, text_columns=1)
    window = f"since {report.since}" if report.since else "the whole log"
    named = sum(1 for k in report.keys if k.name != NO_KEY_LABEL)
    lines.append(f"({window}; {named} key(s) or user(s))" if report.keys else f"(no requests {window})")
    if report.skipped_lines:
        lines.append(f"({report.skipped_lines} line(s) of the log were not usage records and were skipped)")
    return "\n".join(lines)
