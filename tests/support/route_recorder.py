"""A backend that answers 200 to any method on any path and records every request it gets.

Why: the route tests ask which requests nginx lets through to the engine and which it stops, not what an
engine answers. A real engine would answer 404 or 422 to a bare probe of a management route, or act on it
(an Ollama `/api/delete`); this one only says which method and path arrived, so "the engine never saw it"
is a fact the test reads from the record rather than infers from a status code.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from .stubserver import StubHandler, StubState, serve


class _Handler(StubHandler[StubState]):
    def _answer(self, head: bool = False) -> None:
        self.arrive()
        data = json.dumps({"method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(data)
        self.close_connection = True

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()


@contextmanager
def route_recorder() -> Iterator[StubState]:
    with serve(_Handler, StubState()) as state:
        yield state
