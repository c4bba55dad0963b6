"""The model server `llmdeploy local up` runs for the VM: the files of one folder over HTTP (GET, HEAD).

With a token (the stack's hfToken, in the environment as MODEL_SERVER_TOKEN_ENV, never on the command line)
it answers as Hugging Face does for a gated repository: a request without `Authorization: Bearer <token>`
gets 401 with `X-Error-Code: GatedRepo`, a wrong token 401 "Invalid credentials in Authorization header".
Each request is logged with what was decided, never with the token.

Standard library only: it runs as a script (`python3 modelserver.py --port P --directory D`).
"""
from __future__ import annotations

import argparse
import functools
import hmac
import http.server
import json
import os
import sys

MODEL_SERVER_TOKEN_ENV = "LLMDEPLOY_MODEL_SERVER_TOKEN"


class ModelHandler(http.server.SimpleHTTPRequestHandler):
    token = ""

    def _refusal(self) -> str:
        """Why this request is refused, or '' when it may have the file."""
        if not self.token:
            return ""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return "no bearer token"
        if not hmac.compare_digest(header[len("Bearer "):].encode(), self.token.encode()):
            return "wrong bearer token"
        return ""

    def _checked(self) -> bool:
        why = self._refusal()
        if not why:
            self.log_message("authorized %s%s", self.path, " (bearer token)" if self.token else "")
            return True
        self.log_message("refused %s: %s", self.path, why)
        message = ("Access to this file is restricted. You must be authenticated to access it."
                   if why == "no bearer token" else "Invalid credentials in Authorization header")
        body = json.dumps({"error": message}).encode()
        self.send_response(401)
        if why == "no bearer token":
            self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("WWW-Authenticate", 'Bearer realm="llmdeploy local model server"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    def do_GET(self) -> None:
        if self._checked():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._checked():
            super().do_HEAD()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a folder of model files, optionally behind a bearer token.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--directory", required=True)
    args = parser.parse_args(argv)
    handler = type("Handler", (ModelHandler,), {"token": os.environ.pop(MODEL_SERVER_TOKEN_ENV, "")})
    server = http.server.ThreadingHTTPServer((args.bind, args.port),
                                             functools.partial(handler, directory=args.directory))
    print(f"serving {args.directory} on {args.bind}:{args.port}"
          f"{', bearer token required' if handler.token else ''}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
