"""Let's Encrypt's ACME test server (Debian's `pebble`) and its fake DNS (`pebble-challtestsrv`) on loopback.

Why: the 70-acme step gets its certificate with certbot's http-01 webroot method through the rendered
nginx site. Pebble validates for real: its VA resolves the domain through challtestsrv (every name
answers 127.0.0.1) and fetches the token from nginx's HTTP port, which the config's httpPort points at.
The Debian package ships no listener certificate, so one is issued here by a test CA; ACME clients
must trust that CA (certbot: REQUESTS_CA_BUNDLE). PEBBLE_VA_NOSLEEP=1 drops pebble's random
validation delay and PEBBLE_WFE_NONCEREJECT=0 its deliberate bad-nonce errors. Pebble's issuing root
and intermediate change on every start; fetch them from its management port. Both processes are
stopped by PID when the with-block ends.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from .certs import issue_leaf, make_ca
from .ports import LOOPBACK, free_port, port_open
from .procs import start_process, stop_process, wait_until

PEBBLE_ENV = ("PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")


@dataclass(frozen=True)
class Pebble:
    directory: str  # the ACME directory URL
    management: str  # base URL of pebble's management API (roots, intermediates)
    listener_ca: str  # trust this for the ACME API and the management API
    pid: int
    challtestsrv_pid: int

    def _get(self, path: str) -> str:
        with requests.Session() as s:
            s.trust_env = False  # REQUESTS_CA_BUNDLE in this environment would override verify=
            resp = s.get(f"{self.management}{path}", verify=self.listener_ca, timeout=10)
        resp.raise_for_status()
        return resp.text

    def root_pem(self) -> str:
        """The root that signs this run's certificates."""
        return self._get("/roots/0")

    def intermediate_pem(self) -> str:
        return self._get("/intermediates/0")


def _listening(ports: list[int]) -> str | None:
    closed = [p for p in ports if not port_open(p)]
    return f"no listener yet on {LOOPBACK} port(s) {closed}" if closed else None


@contextmanager
def run_pebble(work: Path, http_port: int, timeout: float = 20.0) -> Iterator[Pebble]:
    """pebble + challtestsrv on free loopback ports; http-01 validation goes to `http_port` on 127.0.0.1."""
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ca = make_ca(work / "listener-ca", name="pebble listener test CA")
    leaf = issue_leaf(ca, work / "listener", hostnames=["localhost"], ips=[LOOPBACK])
    acme, management, dns, dns_management = free_port(), free_port(), free_port(), free_port()
    config = work / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"{LOOPBACK}:{acme}", "managementListenAddress": f"{LOOPBACK}:{management}",
        "certificate": str(leaf.cert), "privateKey": str(leaf.key),
        "httpPort": http_port, "tlsPort": free_port(),  # tls-alpn-01 is not used; a port nobody serves
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}, indent=2))
    challtestsrv = start_process(
        ["pebble-challtestsrv", "-defaultIPv4", LOOPBACK, "-defaultIPv6", "", "-dns01", f"{LOOPBACK}:{dns}",
         "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"{LOOPBACK}:{dns_management}"],
        work / "challtestsrv.log")
    try:
        wait_until(lambda: _listening([dns, dns_management]), challtestsrv, timeout, "pebble-challtestsrv",
                   work / "challtestsrv.log")
        pebble = start_process(["env", *PEBBLE_ENV, "pebble", "-config", str(config),
                                "-dnsserver", f"{LOOPBACK}:{dns}"], work / "pebble.log")
        try:
            wait_until(lambda: _listening([acme, management]), pebble, timeout, "pebble", work / "pebble.log")
            yield Pebble(directory=f"https://{LOOPBACK}:{acme}/dir", management=f"https://{LOOPBACK}:{management}",
                         listener_ca=str(ca.cert), pid=pebble.pid, challtestsrv_pid=challtestsrv.pid)
        finally:
            stop_process(pebble)
    finally:
        stop_process(challtestsrv)
