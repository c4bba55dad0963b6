"""A Streamlit session over its WebSocket (/<base>/_stcore/stream), run by the Streamlit venv's Python (it has
Streamlit's protobufs and the websockets package): connect, ask for a run of the app, read frames until the app's
text arrives. Prints one JSON line: the handshake status, the frames read, whether the text came.

Usage: python streamlit_client.py URL CA_FILE COOKIE ORIGIN TEXT
"""
from __future__ import annotations

import json
import ssl
import sys
import time

from streamlit.proto.BackMsg_pb2 import BackMsg
from websockets.sync.client import connect


def main(url: str, ca: str, cookie: str, origin: str, text: str) -> int:
    context = ssl.create_default_context(cafile=ca)
    result = {"status": 0, "frames": 0, "found": False}
    headers = {"Cookie": cookie} if cookie else {}
    with connect(url, ssl=context, additional_headers=headers, origin=origin, open_timeout=10,  # type: ignore[arg-type]
                 subprotocols=["streamlit"]) as ws:  # type: ignore[list-item]
        result["status"] = ws.response.status_code if ws.response else 0
        run = BackMsg()
        run.rerun_script.query_string = ""
        run.rerun_script.page_script_hash = ""
        ws.send(run.SerializeToString())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not result["found"]:
            frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            result["frames"] += 1
            result["found"] = text.encode() in (frame if isinstance(frame, bytes) else frame.encode())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
