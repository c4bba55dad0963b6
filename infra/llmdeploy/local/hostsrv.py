"""The servers on this machine that the guest reaches: in the QEMU VM at 10.0.2.2 (QEMU's user-mode network
maps that address to the host's loopback, where they listen); in the systemd container at the host side of
its veth pair (where they listen instead, see nspawn.py):

- the model server: an HTTP server holding the GGUF file the stack's llamacppModelUrl names
  (the guest has no model hub; the tiny model is written here, or `--model-file` serves a real one), and a
  stand-in of the Hugging Face Hub (the stack's hfEndpoint) for the repositories in its folder's <org>/<name>/
  subfolders: the routes huggingface_hub calls (hf_api.py model_info, list_repo_tree, get_paths_info;
  file_download.py's HEAD and GET of /{repo}/resolve/{rev}/{file}, with X-Repo-Commit, ETag and Content-Length).
  When the stack has an hfToken it answers as the Hub does for a gated repository: every file and route needs
  `Authorization: Bearer <token>` (401 with X-Error-Code GatedRepo without it), and it logs each decision,
  never the token;
  and a PEP 503 simple index (/simple/<project>/, files at /wheels/<name>) of the wheels in its wheel folders
  (pip's find-links on this machine, or `--torch-wheels`): the stack's torchIndexUrl, so that the guest gets this
  machine's CPU torch instead of reaching download.pytorch.org;
- pebble, Let's Encrypt's ACME test server, with pebble-challtestsrv as its DNS (every name answers
  127.0.0.1): certbot in the guest talks to pebble at https://10.0.2.2:PORT/dir, and pebble's http-01
  validation reaches the guest's nginx through the loopback port forwarded to the guest's port 80.
  Debian's pebble ships no listener certificate: one is issued here by a CA made for this VM, which the
  guest trusts through extraCaCerts (cloud-init ca_certs). Pebble's issuing root changes on every start,
  so it is saved when pebble starts: the smoke test trusts it.

Each is a detached process stopped by PID (procs.py). This module starts them; the model server's own code is
modelserver.py.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import Failure
from ..polling import attempts
from ..private_files import write_private
from . import procs
from .qemu import free_ports

GUEST_HOST_IP = "10.0.2.2"  # the host, as QEMU's user-mode network shows it to the guest
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}


class HostServerError(Failure):
    pass


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ports(ports: list[int], pid: int, what: str, log: Path, timeout: float = 20.0,
               host: str = "127.0.0.1") -> None:
    for _ in attempts(timeout, every=0.1):
        if not procs.alive(pid):
            raise HostServerError(f"{what} exited at once; last lines of {log}:\n{procs.tail(log, 15)}")
        if all(port_open(p, host) for p in ports):
            return
    raise HostServerError(f"{what} did not listen on {host} port(s) {ports} within {timeout:.0f}s; last lines of "
                          f"{log}:\n{procs.tail(log, 15)}")


# ---------------------------------------------------------------------------------------------- model server

@dataclass(frozen=True)
class ModelServer:
    pid: int
    port: int
    folder: Path
    guest_host: str = GUEST_HOST_IP  # this machine as the guest reaches it

    @property
    def guest_simple_index(self) -> str:
        """Its PEP 503 index of this machine's wheel folders, as the guest reaches it."""
        return f"{self.guest_endpoint}/simple"

    @property
    def guest_endpoint(self) -> str:
        """Its base URL as the guest reaches it: the stack's hfEndpoint when it stands in for the Hub."""
        return f"http://{self.guest_host}:{self.port}"

    def guest_url(self, filename: str) -> str:
        return f"{self.guest_endpoint}/{filename}"


def start_model_server(folder: Path, log: Path, token: str = "", host: str = "127.0.0.1",
                       port: int = 0, guest_host: str = GUEST_HOST_IP,
                       wheel_dirs: tuple[Path, ...] = ()) -> ModelServer:
    """Serve `folder` over HTTP on a free port of `host` (loopback for QEMU; the guest reaches it as
    `guest_host`): its files by name, and its <org>/<name>/ folders as
    Hugging Face repositories (modelserver.py). With a token (the stack's hfToken), every request needs
    `Authorization: Bearer <token>`; the token reaches the server in a private file, never on its command line."""
    port = port or free_ports(1)[0]
    cmd = [sys.executable, "-m", "llmdeploy.local.modelserver", "--folder", str(folder), "--host", host,
           "--port", str(port)]
    if token:
        token_file = log.with_name(log.name + ".token")
        write_private(token_file, token.encode())
        cmd += ["--token-file", str(token_file)]
    for wheels in wheel_dirs:
        cmd += ["--wheels", str(wheels)]
    pid = _start_module(cmd, log, port, host, "the model server", str(folder))
    return ModelServer(pid, port, folder, guest_host)


def _start_module(cmd: list[str], log: Path, port: int, host: str, what: str, marker: str) -> int:
    """Start `cmd` (python -m llmdeploy.<module> ...) as a daemon that imports this very package, and wait for it
    to listen on host:port; stopped by PID (its command line holds `marker`) if it does not."""
    package_root = str(Path(__file__).resolve().parents[2])  # llmdeploy's parent: the child imports this module
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    pid = procs.start_daemon(cmd, log, env=env)
    try:
        wait_ports([port], pid, what, log, host=host)
    except BaseException:
        procs.stop_process(pid, marker)
        raise
    return pid


# ---------------------------------------------------------------------------------------------- pebble

@dataclass(frozen=True)
class PebbleServer:
    pid: int
    challtestsrv_pid: int
    challtestsrv_marker: str
    directory_url: str  # as the guest reaches it
    listener_ca_pem: str  # the guest trusts this for the ACME API
    root_pem: str  # the root pebble signs this run's certificates with (the smoke test trusts it)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(obj: x509.Certificate) -> str:
    return obj.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def listener_certificate(folder: Path, guest_host: str = GUEST_HOST_IP) -> tuple[Path, Path, str]:
    """A CA and a leaf for pebble's listener naming the guest's address of this machine (10.0.2.2 for QEMU),
    127.0.0.1 and localhost: (cert, key, CA PEM)."""
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmdeploy local ACME listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(guest_host)),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmdeploy local ACME")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = folder / "listener.pem", folder / "listener.key"
    cert_path.write_text(_pem(leaf))
    write_private(key_path, _key_pem(leaf_key))
    (folder / "listener-ca.pem").write_text(_pem(ca))
    return cert_path, key_path, _pem(ca)


def start_pebble(folder: Path, http_port: int, bind: str = "127.0.0.1",
                 guest_host: str = GUEST_HOST_IP) -> PebbleServer:
    """pebble + challtestsrv on free loopback ports, pebble's ACME API on `bind` (where the guest reaches it as
    `guest_host`); http-01 validation goes to 127.0.0.1:http_port."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for tool in ("pebble", "pebble-challtestsrv"):
        if not any((Path(d) / tool).is_file() for d in os.environ.get("PATH", "").split(os.pathsep)):
            raise HostServerError(f"{tool} is not installed: apt-get install pebble (scripts/setup.sh installs it); "
                                  "or use tlsMode self-signed for the local stack")
    cert, key, ca_pem = listener_certificate(folder, guest_host)
    acme, management, dns, dns_management, tls_port = free_ports(5)
    config = folder / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"{bind}:{acme}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}, indent=2))
    dns_marker = f"127.0.0.1:{dns_management}"
    log_dns, log_pebble = folder / "challtestsrv.log", folder / "pebble.log"
    dns_pid = procs.start_daemon(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns}",
         "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", dns_marker], log_dns)
    pebble_pid = 0
    try:
        wait_ports([dns, dns_management], dns_pid, "pebble-challtestsrv", log_dns)
        pebble_pid = procs.start_daemon(["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
                                        log_pebble, env={**os.environ, **PEBBLE_ENV})
        wait_ports([acme], pebble_pid, "pebble", log_pebble, host=bind)
        wait_ports([management], pebble_pid, "pebble", log_pebble)
        with requests.Session() as session:
            session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
            resp = session.get(f"https://127.0.0.1:{management}/roots/0", verify=str(folder / "listener-ca.pem"),
                               timeout=10)
            resp.raise_for_status()
            root = resp.text
    except BaseException:
        procs.stop_process(pebble_pid, str(config))
        procs.stop_process(dns_pid, dns_marker)
        raise
    (folder / "acme-root.pem").write_text(root)
    return PebbleServer(pebble_pid, dns_pid, dns_marker, f"https://{guest_host}:{acme}/dir", ca_pem, root)



# ---------------------------------------------------------------------------------------------- OCI instance services

@dataclass(frozen=True)
class InstanceServicesServer:
    pid: int
    marker: str  # what its command line holds
    guest_url: str  # https://<this machine as the guest reaches it>:<port>
    ca_pem: str  # the guest trusts this for it


def start_instance_services(folder: Path, stack: str, instance_id: str, bind: str = "127.0.0.1",
                            guest_host: str = GUEST_HOST_IP) -> InstanceServicesServer:
    """instance_services.py on a free port of `bind`, over HTTPS with a listener certificate for `guest_host`."""
    cert, key, ca_pem = listener_certificate(folder, guest_host)
    port = free_ports(1)[0]
    log = folder / "instance-services.log"
    cmd = [sys.executable, "-m", "llmdeploy.local.instance_services", "--stack", stack, "--instance-id", instance_id,
           "--host", bind, "--port", str(port), "--cert", str(cert), "--key", str(key)]
    pid = _start_module(cmd, log, port, bind, "the OCI instance services stand-in", str(cert))
    return InstanceServicesServer(pid, str(cert), f"https://{guest_host}:{port}", ca_pem)
