"""A Streamlit session over its WebSocket (/<base>/_stcore/stream), run by the Streamlit venv's Python (it has
Streamlit's protobufs and the websockets package): connect, ask for a run of the app, read frames until the app's
text arrives. Prints one JSON line: the handshake status, the frames read, whether the text came, and the stage it
reached.

Usage: python streamlit_client.py URL CA_FILE ORIGIN TEXT, with the Cookie header's value on stdin (it holds an
API key, which no command line may carry).

Every step has its own limit and the whole run has one (LIMIT), so a stalled server or proxy ends in a JSON line
that names the stage it stalled in, never in a silent hang that the caller can only kill.
"""
from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time

from streamlit.proto.BackMsg_pb2 import BackMsg
from websockets.sync.client import connect

LIMIT = 45  # seconds for the whole run; the caller waits longer
FRAMES_WAIT = 20  # seconds for the app's text once the run is asked for

result: dict[str, object] = {"status": 0, "frames": 0, "found": False, "stage": "connecting"}
_printed = threading.Lock()


def report(extra: dict[str, object] | None = None) -> None:
    """Print the result once (the watchdog and main may race), flushed: the caller reads it even if we hang later."""
    if _printed.acquire(blocking=False):
        print(json.dumps({**result, **(extra or {})}), flush=True)


def watchdog() -> None:
    time.sleep(LIMIT)
    report({"error": f"the client gave up after {LIMIT} s, in stage {result['stage']!r}"})
    os._exit(3)


def main(url: str, ca: str, origin: str, text: str) -> int:
    threading.Thread(target=watchdog, daemon=True).start()
    cookie = sys.stdin.read().strip()
    context = ssl.create_default_context(cafile=ca)
    headers = {"Cookie": cookie} if cookie else {}
    with connect(url, ssl=context, additional_headers=headers, origin=origin, open_timeout=10,  # type: ignore[arg-type]
                 close_timeout=3, subprotocols=["streamlit"]) as ws:  # type: ignore[list-item]
        result["status"] = ws.response.status_code if ws.response else 0
        result["stage"] = "reading frames"
        run = BackMsg()
        run.rerun_script.query_string = ""
        run.rerun_script.page_script_hash = ""
        ws.send(run.SerializeToString())
        deadline = time.monotonic() + FRAMES_WAIT
        while time.monotonic() < deadline and not result["found"]:
            try:
                frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            result["frames"] = int(str(result["frames"])) + 1
            result["found"] = text.encode() in (frame if isinstance(frame, bytes) else frame.encode())
        report()  # before the close handshake: what the session showed is known now
        result["stage"] = "closing"
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(*sys.argv[1:5]))
    except Exception as exc:  # noqa: BLE001 - the caller reads the JSON line, not a traceback
        report({"error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
