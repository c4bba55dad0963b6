"""The rendered hardening files (sshd drop-in, sysctl) and what they must hold, for the hardening tests."""
from __future__ import annotations

from llmdeploy.config import parse
from llmdeploy.render import FILES_DIR, render
from support.project import minimal_raw
from support.sshd import ADMIN

# What Go's golang.org/x/crypto/ssh offers as a client when its Config leaves the lists empty, as pulumi-command's
# provider/pkg/provider/remote/connection.go does (ClientConfig with only User, Auth and HostKeyCallback).
# pulumi-command 1.x's provider/go.mod requires golang.org/x/crypto v0.25.0. From x/crypto's ssh/common.go at
# v0.22.0 (https://cs.opensource.google/go/x/crypto/+/refs/tags/v0.22.0:ssh/common.go, lines 28-85:
# preferredKexAlgos, preferredCiphers, supportedMACs, supportedHostKeyAlgos), unchanged in these lists up to
# v0.25.0; later releases (SupportedAlgorithms(), v0.38) still default to every name below.
GO_X_CRYPTO_CLIENT_DEFAULTS = {
    "KexAlgorithms": {"curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
                      "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "diffie-hellman-group14-sha256",
                      "diffie-hellman-group14-sha1"},
    "Ciphers": {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                "aes128-ctr", "aes192-ctr", "aes256-ctr"},
    "MACs": {"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512",
             "hmac-sha1", "hmac-sha1-96"},
    "HostKeyAlgorithms": {"rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com",
                          "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
                          "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
                          "ecdsa-sha2-nistp521-cert-v01@openssh.com", "ssh-ed25519-cert-v01@openssh.com",
                          "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512",
                          "rsa-sha2-256", "ssh-rsa", "ssh-dss", "ssh-ed25519"},
}


def rendered_sshd_conf() -> str:
    cfg = parse(minimal_raw(adminUser=ADMIN), stack="harden")
    return render(cfg).file(f"{FILES_DIR}/sshd-llmdeploy.conf").content


def sshd_lists(conf: str) -> dict[str, list[str]]:
    """The algorithm lists a sshd_config fragment sets, by keyword."""
    lists = {}
    for line in conf.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in GO_X_CRYPTO_CLIENT_DEFAULTS:
            lists[parts[0]] = parts[1].split(",")
    return lists


# Keys each network namespace has its own copy of (net.core.bpf_jit_* exist in the first namespace only).
PER_NETNS = ("net.ipv4.", "net.ipv6.")


def rendered_file(name: str) -> str:
    return render(parse(minimal_raw(), stack="harden")).file(f"{FILES_DIR}/{name}").content


def sysctl_values(conf: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}
