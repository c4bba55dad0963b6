"""A complete llmdeploy endpoint on loopback for integration tests: the rendered nginx site in a real
nginx with a test CA, in front of a real engine (llama.cpp) or a stub, keys delivered through the
rendered llmdeploy-install-secrets script, as on the VM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import requests

from llmdeploy.config import StackConfig, parse
from llmdeploy.render import FILES_DIR, INSTALL_SECRETS, HostLayout, Rendered, render
from llmdeploy.secret_delivery import generate_api_key, secrets_bundle

from .certs import issue_leaf, make_ca
from .llamaserver import llama_server
from .nginx import run_nginx
from .ports import free_ports
from .tinymodel import write_tiny_gguf

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm test@llmdeploy"
PASSWORD = "alice-long-passphrase-1"


@dataclass
class Endpoint:
    cfg: StackConfig
    rendered: Rendered
    base: str
    http_base: str
    ca: str
    keys: dict[str, str]
    host_layout: HostLayout
    status_before_delivery: int
    nginx_pid: int

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE in this environment would override verify=
        s.verify = self.ca
        return s

    def bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


def endpoint_config(**overrides: object) -> StackConfig:
    raw: dict[str, object] = dict(compartmentId="ocid1.compartment.oc1..aaaatest", sshPublicKeys=[SSH_KEY], engine="llamacpp", shape="VM.Standard.E4.Flex", modelName="tiny",
                      llamacppModelUrl="https://models.invalid/tiny-q8_0.gguf",
                      apiKeys=["default", "slow:1r/m"], rateLimit="1000r/s", rateLimitBurst=3,
                      basicAuthUsers=["alice"], basicAuthPasswords=json.dumps({"alice": PASSWORD}))
    raw.update(overrides)
    return parse(raw, stack="itest")


def install_tls(host_layout: HostLayout, workdir: Path) -> str:
    ca = make_ca(workdir / "ca")
    leaf = issue_leaf(ca, workdir / "leaf", hostnames=["localhost"], ips=["127.0.0.1"])
    tls = Path(host_layout.paths.tls_dir)
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "fullchain.pem").write_bytes(Path(leaf.fullchain).read_bytes())
    (tls / "privkey.pem").write_bytes(Path(leaf.key).read_bytes())
    return str(ca.cert)


def install_site(rendered: Rendered, host_layout: HostLayout, workdir: Path) -> Path:
    """What the 60-nginx step does on the VM: htpasswd, an empty key map until delivery, the chat sign-in pages
    (chatUi), the site."""
    paths = host_layout.paths
    Path(paths.secrets_dir).mkdir(parents=True, exist_ok=True)
    Path(paths.api_keys_map).touch()
    Path(paths.htpasswd).write_text(rendered.file(f"{FILES_DIR}/htpasswd").content)
    Path(paths.acme_webroot).mkdir(parents=True, exist_ok=True)
    Path(paths.usage_log).parent.mkdir(parents=True, exist_ok=True)  # the nginx package's /var/log/nginx
    for page in (f for f in rendered.files if f.path.startswith(f"{FILES_DIR}/chat-login")):
        chat_root = Path(paths.chat_root)
        chat_root.mkdir(parents=True, exist_ok=True)
        (chat_root / Path(page.path).name).write_text(page.content)
    site = workdir / "llmdeploy.conf"
    site.write_text(rendered.nginx_site)
    return site


def deliver_secrets(rendered: Rendered, bundle: bytes, workdir: Path) -> str:
    script = workdir / "llmdeploy-install-secrets"
    script.write_text(rendered.file(INSTALL_SECRETS).content)
    script.chmod(0o755)
    result = subprocess.run([str(script)], input=bundle, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def loopback_host_layout(root: Path, engine_port: int, chat_port: int = 0) -> HostLayout:
    http, https, login = free_ports(3)
    return HostLayout(root=str(root), http_listen=f"127.0.0.1:{http}", https_listen=f"127.0.0.1:{https}",
                  https_port=https, engine_port=engine_port, chat_port=chat_port, login_port=login)


def wait_for_status(session: requests.Session, url: str, headers: dict[str, str], want: int) -> int:
    deadline, got = time.monotonic() + 10, 0
    while time.monotonic() < deadline:
        try:
            got = session.get(url, headers=headers, timeout=5).status_code
        except requests.ConnectionError:  # a reload closes kept-alive connections; ask again
            got = 0
        if got == want:
            break
        time.sleep(0.1)
    return got


@contextmanager
def llama_endpoint(work: Path, parallel: int = 2, n_ctx: int = 512, **overrides: object) -> Iterator[Endpoint]:
    """nginx (rendered site, test CA) in front of llama.cpp on a tiny model, keys delivered and live;
    llama.cpp runs `parallel` slots sharing `n_ctx` tokens of context."""
    model = write_tiny_gguf(work / "tiny.gguf")
    cfg = endpoint_config(**overrides)
    with llama_server(model, alias="tiny", n_ctx=n_ctx, parallel=parallel) as llama:
        host_layout = loopback_host_layout(work / "root", llama.port)
        rendered = render(cfg, host_layout)
        ca = install_tls(host_layout, work)
        site = install_site(rendered, host_layout, work)
        ports = [int(host_layout.http_listen.rsplit(":", 1)[1]), host_layout.https_port]
        with run_nginx(site, work / "nginx", wait_ports=ports) as nginx:
            keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
            ep = Endpoint(cfg, rendered, f"https://localhost:{host_layout.https_port}",
                          f"http://localhost:{ports[0]}", ca, keys, host_layout, 0, nginx.pid)
            with ep.session() as s:
                ep.status_before_delivery = s.get(f"{ep.base}/v1/models", headers=ep.bearer("default"),
                                                  timeout=5).status_code
                deliver_secrets(rendered, secrets_bundle(cfg, keys), work)
                os.kill(nginx.pid, signal.SIGHUP)  # what `systemctl reload nginx` does on the VM
                wait_for_status(s, f"{ep.base}/v1/models", ep.bearer("default"), 200)
            yield ep
