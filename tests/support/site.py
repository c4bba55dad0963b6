"""nginx sites on loopback in front of any backend, for the smoke tests: the project's own rendered site
(any engine, any certificate, optionally edited to break it) and a bare TLS proxy without auth.

Why: the smoke test must pass a good endpoint and catch each fault a real deployment can have: an expired or
wrong-host certificate, a proxy that buffers streams, a dead engine (502), a site that lets anyone in.
Those faults are made here with the real nginx and real certificates (test CA), not simulated.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from llmdeploy.render import HostLayout, render
from llmdeploy.secret_delivery import generate_api_key, secrets_bundle

from .certs import CA, Leaf, issue_leaf, make_ca
from .endpoint import (
    Endpoint,
    deliver_secrets,
    endpoint_config,
    install_site,
    loopback_host_layout,
)
from .nginx import run_nginx
from .ports import LOOPBACK, free_port



def leaf_for(work: Path, cert: str, host: str = LOOPBACK) -> tuple[CA, Leaf]:
    """A test CA and a leaf: "good" (localhost and `host`, 30 days), "expired", "soon" (5 days) or "wrong-host"."""
    ca = make_ca(work / "ca")
    hostnames, ips = (["other.example.test"], []) if cert == "wrong-host" else (["localhost"], sorted({LOOPBACK, host}))
    days = 5 if cert == "soon" else 30
    return ca, issue_leaf(ca, work / "leaf", hostnames=hostnames, ips=ips, days=days, expired=cert == "expired")


def install_leaf(host_layout: HostLayout, leaf: Leaf) -> None:
    tls = Path(host_layout.paths.tls_dir)
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "fullchain.pem").write_bytes(leaf.fullchain.read_bytes())
    (tls / "privkey.pem").write_bytes(leaf.key.read_bytes())


@contextmanager
def site_endpoint(work: Path, backend_port: int, cert: str = "good", edit: Callable[[str], str] | None = None,
                  chat_port: int = 0, netns: tuple[str, Sequence[str]] | None = None,
                  **overrides: object) -> Iterator[Endpoint]:
    """The rendered site (engine and settings from `overrides`) in front of 127.0.0.1:backend_port (and a chat
    frontend on chat_port, with chatUi), keys delivered; `edit` may rewrite the site text first (e.g. to turn
    proxy buffering on). `netns`: (address, nsenter prefix) runs nginx in a network namespace, listening on
    8080/8443 of that address (as on a head VM)."""
    cfg = endpoint_config(**overrides)
    host, prefix = netns or (LOOPBACK, ())
    host_layout = (loopback_host_layout(work / "root", backend_port, chat_port) if netns is None else
              HostLayout(root=str(work / "root"), http_listen=f"{host}:8080", https_listen=f"{host}:8443",
                     https_port=8443, engine_port=backend_port, chat_port=chat_port))
    rendered = render(cfg, host_layout)
    ca, leaf = leaf_for(work, cert, host)
    install_leaf(host_layout, leaf)
    site = install_site(rendered, host_layout, work)
    if edit:
        site.write_text(edit(site.read_text()))
    keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
    deliver_secrets(rendered, secrets_bundle(cfg, keys), work)
    http_port = int(host_layout.http_listen.rsplit(":", 1)[1])
    name = "localhost" if netns is None else host
    with run_nginx(site, work / "nginx", wait_ports=[http_port, host_layout.https_port], prefix=prefix,
                   host=host) as nginx:
        yield Endpoint(cfg, rendered, f"https://{name}:{host_layout.https_port}", f"http://{name}:{http_port}",
                       str(ca.cert), keys, host_layout, 0, nginx.pid)


def open_proxy_site(path: Path, http_port: int, https_port: int, leaf: Leaf, backend_url: str) -> Path:
    """TLS, HSTS and the HTTP redirect done right, but no auth at all: every request reaches the engine."""
    path.write_text(f"""
server {{
    listen 127.0.0.1:{http_port};
    return 301 https://$host:{https_port}$request_uri;
}}
server {{
    listen 127.0.0.1:{https_port} ssl http2;
    ssl_certificate {leaf.fullchain};
    ssl_certificate_key {leaf.key};
    add_header Strict-Transport-Security "max-age=63072000" always;
    location / {{
        proxy_pass {backend_url};
        proxy_http_version 1.1;
        proxy_buffering off;
    }}
}}
""")
    return path


@contextmanager
def open_proxy(work: Path, backend_url: str) -> Iterator[tuple[str, str, str]]:
    """nginx without auth in front of `backend_url`; yields (https base, http base, CA file)."""
    ca, leaf = leaf_for(work, "good")
    http_port, https_port = free_port(), free_port()
    while https_port == http_port:  # the OS may hand out the same free port twice in a row
        https_port = free_port()
    site = open_proxy_site(work / "open.conf", http_port, https_port, leaf, backend_url)
    with run_nginx(site, work / "nginx", wait_ports=[http_port, https_port]):
        yield f"https://localhost:{https_port}", f"http://localhost:{http_port}", str(ca.cert)
