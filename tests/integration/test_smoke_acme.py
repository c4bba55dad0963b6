"""A certificate from a real ACME server, the way the 70-acme step gets one: certbot's http-01 webroot
method against Debian's pebble (Let's Encrypt's test server), validated through the project's rendered
nginx site on loopback, linked into the site's TLS directory, picked up by a reload, and renewed through
certbot's deploy-hook directory. pebble, challtestsrv and nginx are stopped by PID."""
from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from llmdeploy.render import FILES_DIR, STEPS_DIR, render
from llmdeploy.secret_delivery import generate_api_key, secrets_bundle
from support.endpoint import deliver_secrets, endpoint_config, install_site, install_tls, loopback_host_layout
from support.llamaserver import llama_server
from support.nginx import run_nginx
from support.pebble import Pebble, run_pebble
from support.sshd import is_running
from support.tinymodel import write_tiny_gguf

pytestmark = pytest.mark.integration

DOMAIN = "llm.test"  # challtestsrv answers 127.0.0.1 for it


def served_certificate(port: int, trust: Path) -> x509.Certificate:
    """The leaf nginx serves for DOMAIN, verified (chain and hostname) against `trust` only."""
    context = ssl.create_default_context(cafile=str(trust))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_for_certificate(port: int, trust: Path, not_serial: int | None = None,
                         timeout: float = 15) -> x509.Certificate:
    """Poll until nginx serves a certificate that `trust` verifies (and, if given, another serial)."""
    deadline, last = time.monotonic() + timeout, "nothing yet"
    while time.monotonic() < deadline:
        try:
            cert = served_certificate(port, trust)
            if cert.serial_number != not_serial:
                return cert
            last = f"still serial {not_serial:x}"
        except (ssl.SSLError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise AssertionError(f"nginx did not serve the expected certificate within {timeout}s; last: {last}")


def certbot(args: list[str], state: Path, pebble: Pebble) -> subprocess.CompletedProcess[str]:
    dirs = ["--config-dir", str(state / "config"), "--work-dir", str(state / "work"), "--logs-dir", str(state / "logs")]
    env = {**os.environ, "REQUESTS_CA_BUNDLE": pebble.listener_ca}  # certbot trusts pebble's listener
    return subprocess.run(["certbot", *args, *dirs], capture_output=True, text=True, timeout=180, env=env)


def common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def smoke_as_a_user(url: str, http_url: str, ca: Path, key: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`llmdeploy smoke` in a process of its own whose /etc/hosts (in a private mount namespace) says
    DOMAIN is 127.0.0.1, so the certificate's name is checked as a client elsewhere would check it."""
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {DOMAIN}\n")
    script = (f"mount --bind {hosts} /etc/hosts && exec llmdeploy smoke {url} --http-url {http_url} --model tiny "
              f"--ca-bundle {ca} --timeout 60")
    env = {**os.environ, "LLMDEPLOY_API_KEY": key}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=300, env=env)


def test_certbot_gets_and_renews_a_pebble_certificate_through_the_rendered_site(tmp_path: Path) -> None:
    with llama_server(write_tiny_gguf(tmp_path / "tiny.gguf"), alias="tiny") as llama:
        acme_round_trip(tmp_path, llama.port)


def acme_round_trip(tmp_path: Path, engine_port: int) -> None:
    host_layout = loopback_host_layout(tmp_path / "root", engine_port=engine_port)
    http_port = int(host_layout.http_listen.rsplit(":", 1)[1])
    state = tmp_path / "letsencrypt"
    with run_pebble(tmp_path / "pebble", http_port=http_port) as pebble:
        pids = [pebble.pid, pebble.challtestsrv_pid]
        cfg = endpoint_config(tlsMode="letsencrypt", domain=DOMAIN, acmeDirectoryUrl=pebble.directory)
        rendered = render(cfg, host_layout)
        webroot = host_layout.paths.acme_webroot
        step = rendered.file(f"{STEPS_DIR}/70-acme.sh").content
        assert f"--webroot -w {webroot}" in step and f"--server {pebble.directory}" in step  # what the VM runs
        install_tls(host_layout, tmp_path)  # the placeholder nginx starts on, as after 50-tls
        site = install_site(rendered, host_layout, tmp_path)
        keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
        deliver_secrets(rendered, secrets_bundle(cfg, keys), tmp_path)
        with run_nginx(site, tmp_path / "nginx", wait_ports=[http_port, host_layout.https_port]) as nginx:
            pids.append(nginx.pid)
            root = tmp_path / "pebble-root.pem"
            root.write_text(pebble.root_pem())
            with pytest.raises(ssl.SSLCertVerificationError):
                served_certificate(host_layout.https_port, root)  # the placeholder is not pebble's

            # certbot's deploy hook as the VM installs it, reloading this nginx instead of the system's
            hook = rendered.file(f"{FILES_DIR}/certbot-deploy-hook").content
            assert "nginx -t && systemctl reload nginx" in hook
            hooks = state / "config" / "renewal-hooks" / "deploy"
            hooks.mkdir(parents=True)
            (hooks / "llmdeploy-reload-nginx").write_text(
                hook.replace("nginx -t && systemctl reload nginx", f"kill -HUP {nginx.pid}"))
            (hooks / "llmdeploy-reload-nginx").chmod(0o755)

            got = certbot(["certonly", "--non-interactive", "--agree-tos", "--webroot", "-w", webroot,
                           "--server", pebble.directory, "-d", DOMAIN, "--register-unsafely-without-email"],
                          state, pebble)
            assert got.returncode == 0, got.stdout + got.stderr
            assert '"GET /.well-known/acme-challenge/' in nginx.access_log.read_text()  # pebble's VA came by HTTP

            # link it as 70-acme does, then reload (what `systemctl reload nginx` sends)
            live, tls = state / "config" / "live" / DOMAIN, Path(host_layout.paths.tls_dir)
            for name in ("fullchain.pem", "privkey.pem"):
                (tls / name).unlink()
                (tls / name).symlink_to(live / name)
            os.kill(nginx.pid, signal.SIGHUP)
            first = wait_for_certificate(host_layout.https_port, root)
            assert common_name(first.issuer).startswith("Pebble Intermediate CA")
            assert first.issuer == x509.load_pem_x509_certificate(pebble.intermediate_pem().encode()).subject
            san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.DNSName) == [DOMAIN]

            # The whole smoke test against llama.cpp behind this certificate, trusting pebble's root only.
            smoke = smoke_as_a_user(f"https://{DOMAIN}:{host_layout.https_port}", f"http://{DOMAIN}:{http_port}", root,
                                    keys["default"], tmp_path)
            assert smoke.returncode == 0, smoke.stdout + smoke.stderr
            assert "FAIL" not in smoke.stdout and keys["default"] not in smoke.stdout + smoke.stderr
            assert "tls" in smoke.stdout.lower() and "stream" in smoke.stdout.lower()

            renewed = certbot(["renew", "--no-random-sleep-on-renew", "--force-renewal"], state, pebble)
            assert renewed.returncode == 0, renewed.stdout + renewed.stderr
            assert "Congratulations, all renewals succeeded" in renewed.stdout + renewed.stderr
            second = wait_for_certificate(host_layout.https_port, root, not_serial=first.serial_number)
            assert common_name(second.issuer).startswith("Pebble Intermediate CA")
            assert (live / "fullchain.pem").resolve().name == "fullchain2.pem"  # certbot's second lineage version
    assert not any(is_running(pid) for pid in pids)
