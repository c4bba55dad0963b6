"""The rendered site with a chat frontend (chatUi) on loopback, for the chat sign-in tests.

The chat host is `localhost` and the API is reached as 127.0.0.1 (nginx's default server), so both names resolve
here without touching /etc/hosts and one test certificate (localhost, 127.0.0.1) covers both.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from .endpoint import Endpoint
from .site import site_endpoint

KEYS = ["ops:admin", "alice", "bob", "slow:1r/m"]


@dataclass
class ChatSite:
    ep: Endpoint
    chat: str  # https://localhost:PORT, the chat host
    api: str  # https://127.0.0.1:PORT, the API host
    nginx_dir: Path  # nginx's work folder: access.log, error.log

    def browser(self) -> requests.Session:
        """A client that keeps cookies, as a browser does (it sends a Secure cookie over HTTPS only)."""
        return self.ep.session()

    def sign_in(self, s: requests.Session, key: str) -> requests.Response:
        return s.post(f"{self.chat}/_login", data={"key": key}, allow_redirects=False, timeout=10)


@contextmanager
def chat_site(work: Path, frontend_port: int, ui: str = "open-webui", engine_port: int = 0,
              **overrides: object) -> Iterator[ChatSite]:
    """nginx with the rendered site: the API in front of the engine on engine_port (default: the frontend's), the
    chat host in front of the frontend on frontend_port. Keys KEYS, delivered as on the VM; no basic-auth users
    (the chat signs in with keys)."""
    settings: dict[str, object] = dict(chatUi=ui, chatHost="localhost", apiKeys=KEYS, basicAuthUsers=[],
                                       basicAuthPasswords="")
    if ui == "biochatter-light":
        settings.update(modelName="gpt-3.5-turbo", os="debian-12", imageId="ocid1.image.oc1..debian12")
    settings.update(overrides)
    with site_endpoint(work, engine_port or frontend_port, chat_port=frontend_port, **settings) as ep:
        port = ep.host_layout.https_port
        yield ChatSite(ep, f"https://localhost:{port}", f"https://127.0.0.1:{port}", work / "nginx")
