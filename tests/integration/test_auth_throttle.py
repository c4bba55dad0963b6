"""A burst of wrong credentials from one address: 401, then 429 with Retry-After, never 5xx, while good keys
from the same address and from others keep working. The rendered site in the real nginx on loopback.

nginx sees 127.0.0.2 as a different client address from 127.0.0.1 (a client bound to it connects to the same
listener), which stands in for "another address". A good key from the flooding address stands in for a
workshop room behind one NAT address: its attendees must not be locked out by a few who mistyped.
"""
from __future__ import annotations

import base64
import http.client
import json
import shutil
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from llmdeploy.render import AUTH_FAILURES, FILES_DIR, HostLayout, render, retry_after_seconds
from support.endpoint import PASSWORD, Endpoint, endpoint_config
from support.ports import free_port, port_open
from support.procs import start_process, stop_process, wait_until
from support.route_recorder import route_recorder
from support.site import site_endpoint
from support.sshd import sshd_argv

pytestmark = pytest.mark.integration

WRONG_KEY = "Bearer sk-llm-" + "x" * 43
KEYS = ["default", "other", "slow:1r/m"]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        return dict(json.loads(self.body)["error"])


@dataclass
class Client:
    """One kept-alive TLS connection from a chosen loopback address (reconnects if nginx closes it)."""

    ep: Endpoint
    source: str = "127.0.0.1"
    conn: http.client.HTTPSConnection | None = field(default=None, repr=False)

    def get(self, authorization: str = "", path: str = "/v1/models") -> Reply:
        for attempt in range(2):
            if self.conn is None:
                context = ssl.create_default_context(cafile=self.ep.ca)
                self.conn = http.client.HTTPSConnection("localhost", self.ep.host_layout.https_port, context=context,
                                                        timeout=10, source_address=(self.source, 0))
            try:
                self.conn.request("GET", path, headers={"Authorization": authorization} if authorization else {})
                response = self.conn.getresponse()
                reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
                if response.will_close:
                    self.close()
                return reply
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def key(self, name: str) -> str:
        return f"Bearer {self.ep.keys[name]}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture(scope="module")
def keys_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with route_recorder() as backend:
        with site_endpoint(tmp_path_factory.mktemp("keys-only"), backend.port, apiKeys=KEYS, rateLimit="1000r/s",
                           rateLimitBurst=5, basicAuthUsers=[], basicAuthPasswords="") as ep:
            yield ep


@pytest.fixture(scope="module")
def with_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """Keys and a basic-auth user (alice): auth_basic, not try_files, answers the 401 there."""
    with route_recorder() as backend:
        with site_endpoint(tmp_path_factory.mktemp("basic"), backend.port, apiKeys=KEYS, rateLimit="1000r/s",
                           rateLimitBurst=5) as ep:
            yield ep


def flood(client: Client, authorization: str, count: int, good: Client, neighbour: Client) -> tuple[list[Reply], list[int]]:
    """`count` failing requests in a row; every 10th, a good key from the same address and one from the
    neighbouring address. Returns the failing requests' replies and the good keys' statuses."""
    replies, good_statuses = [], []
    for number in range(count):
        replies.append(client.get(authorization))
        if number % 10 == 9:
            good_statuses += [good.get(good.key("default")).status, neighbour.get(neighbour.key("other")).status]
    return replies, good_statuses


def check_flood(replies: list[Reply], seconds: float, basic: bool = False) -> None:
    statuses = [r.status for r in replies]
    counts = Counter(statuses)
    print(f"{len(replies)} failing requests from one address in {seconds:.1f} s: {dict(sorted(counts.items()))}")
    assert set(counts) == {401, 429}, counts  # never 5xx, never let in
    first_429 = statuses.index(429)
    assert statuses[:first_429] == [401] * first_429, statuses
    # The burst, plus what the bucket refills while the flood runs (one a second at 60r/m).
    allowed = AUTH_FAILURES.burst + 1 + int(seconds / retry_after_seconds(AUTH_FAILURES.rate)) + 1
    assert AUTH_FAILURES.burst < counts[401] <= allowed, (counts, seconds)
    assert counts[429] >= len(replies) - allowed
    for reply in replies:
        if reply.status == 429:
            assert reply.headers.get("retry-after") == str(retry_after_seconds(AUTH_FAILURES.rate)), reply.headers
            assert reply.error()["type"] == "rate_limit_error"
            assert "without a valid API key" in reply.error()["message"]
            assert "strict-transport-security" in reply.headers
        elif basic:  # auth_basic's own answer, which asks the browser for a password
            assert reply.headers.get("www-authenticate") == 'Basic realm="llmdeploy"'
        else:
            assert reply.error()["type"] == "authentication_error"


def test_300_wrong_keys_get_401_then_429_and_good_keys_keep_working(keys_only: Endpoint) -> None:
    flooder, good, neighbour = Client(keys_only), Client(keys_only), Client(keys_only, "127.0.0.2")
    start = time.monotonic()
    replies, good_statuses = flood(flooder, WRONG_KEY, 300, good, neighbour)
    check_flood(replies, time.monotonic() - start)
    assert good_statuses == [200] * 60, Counter(good_statuses)
    # Another address is not throttled for its own mistakes: its first wrong key gets the 401 that explains.
    assert neighbour.get(WRONG_KEY).status == 401
    # Nor is a request with no key at all from there.
    assert neighbour.get().status == 401
    # The flooding address: still 429 for a wrong key, 200 for a good one.
    assert flooder.get(WRONG_KEY).status == 429
    assert flooder.get(flooder.key("other")).status == 200
    # The bucket leaks: after Retry-After, the next wrong key is answered 401 again.
    time.sleep(retry_after_seconds(AUTH_FAILURES.rate) + 0.2)
    assert flooder.get(WRONG_KEY).status == 401
    for c in (flooder, good, neighbour):
        c.close()


def test_no_key_and_unknown_routes_count_too(keys_only: Endpoint) -> None:
    flooder = Client(keys_only, "127.0.0.3")  # an address of its own: the last test's bucket is still full
    statuses = [flooder.get(path="/no-such-route").status for _ in range(AUTH_FAILURES.burst + 20)]
    assert statuses[0] == 401 and statuses[-1] == 429 and set(statuses) == {401, 429}, Counter(statuses)
    assert flooder.get(flooder.key("default"), path="/no-such-route").status == 404  # a key: the route is unknown
    flooder.close()


def test_a_key_over_its_own_rate_gets_429_with_its_retry_after(keys_only: Endpoint) -> None:
    """slow is 1r/m with a burst of 5: a bucket that refills one a minute says Retry-After: 60."""
    client = Client(keys_only, "127.0.0.4")
    statuses = [client.get(client.key("slow")).status for _ in range(7)]
    assert statuses == [200] * 6 + [429], statuses
    reply = client.get(client.key("slow"))
    assert reply.status == 429 and reply.headers.get("retry-after") == "60"
    assert "rate limit exceeded for this API key" in reply.error()["message"]
    assert client.get(client.key("default")).status == 200
    client.close()


def test_with_basic_auth_wrong_keys_and_unknown_users_are_throttled_but_alice_is_not(with_basic: Endpoint) -> None:
    alice = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    flooder, good, neighbour = Client(with_basic), Client(with_basic), Client(with_basic, "127.0.0.2")
    start = time.monotonic()
    replies, good_statuses = flood(flooder, WRONG_KEY, 150, good, neighbour)
    check_flood(replies, time.monotonic() - start, basic=True)
    assert good_statuses == [200] * 30
    assert flooder.get(alice).status == 200  # a valid password from the flooding address is not counted
    # Guessing with made-up user names from the same address is throttled too.
    mallory = "Basic " + base64.b64encode(b"mallory:guess").decode()
    assert flooder.get(mallory).status == 429
    assert neighbour.get(mallory).status == 401
    for c in (flooder, good, neighbour):
        c.close()


def test_the_rendered_limits_match_the_documented_ones(keys_only: Endpoint) -> None:
    site = keys_only.rendered.nginx_site
    assert f"zone=llmdeploy_auth_failures:10m rate={AUTH_FAILURES.rate};" in site
    assert f"limit_req zone=llmdeploy_auth_failures burst={AUTH_FAILURES.burst} nodelay;" in site



# ---- SSH: fail2ban's sshd jail, as 16-fail2ban installs it --------------------------------------------------

SSHD_CONFIG = """\
ListenAddress 127.0.0.1:{port}
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {dir}/no-such-authorized-keys
"""


def fail2ban_conf(tmp_path: Path) -> Path:
    """Debian's /etc/fail2ban with the rendered jail in jail.d, as the 16-fail2ban step leaves it."""
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    jail = render(endpoint_config(), HostLayout()).file(f"{FILES_DIR}/fail2ban-sshd.conf").content
    (conf / "jail.d" / "llmdeploy-sshd.conf").write_text(jail)
    return conf


def real_sshd_failures(tmp_path: Path) -> list[str]:
    """What the real sshd logs for failed logins from 127.0.0.1: two unknown users and three wrong keys for
    root (a user that exists), by key, as the VM's sshd allows."""
    ssh = tmp_path / "sshd"
    ssh.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "host_key")], check=True)
    port = free_port()
    (ssh / "sshd_config").write_text(SSHD_CONFIG.format(port=port, dir=ssh))
    log = ssh / "sshd.log"
    proc = start_process(sshd_argv("-D", "-e", "-f", str(ssh / "sshd_config")), log)
    try:
        wait_until(lambda: None if port_open(port) else "not listening", proc, 10, "sshd", log)
        key = paramiko.RSAKey.generate(2048)  # a key sshd has never seen (paramiko cannot make ed25519 keys)
        for user in ["nosuchuser", "admin", "root", "root", "root"]:
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            with pytest.raises(paramiko.AuthenticationException):
                client.connect("127.0.0.1", port, username=user, pkey=key, allow_agent=False, look_for_keys=False,
                               timeout=10)
            client.close()
        wait_until(lambda: None if log.read_text().count("[preauth]") >= 5 else "waiting for sshd's log", proc, 10,
                   "sshd", log)
    finally:
        stop_process(proc)
    return [line for line in log.read_text().splitlines() if "127.0.0.1 port" in line]


def test_the_sshd_jail_reads_journald_and_bans_after_5_failures(tmp_path: Path) -> None:
    conf = fail2ban_conf(tmp_path)
    test = subprocess.run(["fail2ban-client", "-c", str(conf), "-t"], capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
    dump = subprocess.run(["fail2ban-client", "-c", str(conf), "-d"], capture_output=True, text=True, timeout=60).stdout
    for setting in ["['add', 'sshd', 'systemd']", "['set', 'sshd', 'maxretry', 5]", "['set', 'sshd', 'findtime', '10m']",
                    "['set', 'sshd', 'bantime', '30m']", "['start', 'sshd']"]:
        assert setting in dump, setting  # the rendered jail overrides Debian's defaults-debian.conf

    # The real server on those settings, reading the real sshd's messages from a file (journald's lines as the
    # systemd backend formats them: date, host, sshd[PID]: message), banning with the dummy action.
    lines = real_sshd_failures(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    auth_log, banned = run / "auth.log", run / "banned"
    auth_log.touch()
    (conf / "fail2ban.d" / "zz-test.local").write_text(
        f"[Definition]\nlogtarget = {run}/fail2ban.log\nsocket = {run}/sock\npidfile = {run}/pid\ndbfile = :memory:\n")
    (conf / "jail.d" / "zz-test.local").write_text(
        f"[sshd]\nbackend = polling\nlogpath = {auth_log}\nignoreself = false\nignoreip =\n"
        f"banaction = dummy[target={banned}]\n")
    server = start_process(["fail2ban-server", "-f", "-x", "-c", str(conf), "-s", str(run / "sock"),
                            "-p", str(run / "pid")], run / "server.out")
    try:
        client = ["fail2ban-client", "-c", str(conf), "-s", str(run / "sock")]

        def status() -> str:
            return subprocess.run([*client, "status", "sshd"], capture_output=True, text=True, timeout=30).stdout

        wait_until(lambda: None if "Banned IP list" in status() else "jail not up", server, 30, "fail2ban",
                   run / "fail2ban.log")
        stamp = time.strftime("%b %e %H:%M:%S")
        with auth_log.open("a") as f:
            f.writelines(f"{stamp} vm sshd[4242]: {line}\n" for line in lines)
        wait_until(lambda: None if "127.0.0.1" in status() else status(), server, 30, "fail2ban",
                   run / "fail2ban.log")
        assert "Total banned:\t1" in status(), status()
        assert "+127.0.0.1" in banned.read_text()
    finally:
        stop_process(server)
