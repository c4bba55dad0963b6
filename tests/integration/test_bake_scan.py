"""The scan of a baked tree (bake/scan.py, grep over the tree): it finds each kind of per-instance leftover a
planted copy holds, names the file and never the secret, and passes a clean tree with a package's own test key.
The e2e test (tests/e2e/test_bake_local.py) runs it on a real bake and on a copy with a planted key."""
from __future__ import annotations

from pathlib import Path

from llmdeploy.bake.scan import scan_tree


def test_the_scan_finds_each_kind_of_leftover_and_passes_a_clean_tree(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "etc/machine-id").write_text("")
    # a package's self-test key (gnutls holds one) is package content, not this machine's
    (root / "usr/lib/x86_64-linux-gnu/libx.so").write_text(PEM)
    assert scan_tree(root, ["sk-llm-secret"]) == []
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("x")
    (root / "home/admin/.ssh").mkdir(parents=True)
    (root / "home/admin/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA admin\n")
    (root / "opt/app").mkdir(parents=True)
    (root / "opt/app/key.pem").write_text(PEM)
    (root / "var/log/nginx").mkdir(parents=True)
    (root / "var/log/nginx/access.log").write_text("Bearer sk-llm-secret\n")
    (root / "etc/llmdeploy/secrets").mkdir(parents=True)
    (root / "etc/llmdeploy/secrets/api-keys.map").write_text("")
    found = scan_tree(root, ["sk-llm-secret"])
    assert found == sorted([
        "/etc/llmdeploy/secrets: per-instance state left", "/etc/machine-id: a machine-id",
        "/etc/ssh/ssh_host_ed25519_key: an SSH host key", "/home/admin/.ssh/authorized_keys: an authorized_keys "
        "with keys", "/opt/app/key.pem: a private key (PEM)", "/var/log/nginx/access.log: holds a secret the bake saw"])
    assert not any("sk-llm-secret" in line for line in found)  # a finding names the file, never the secret


PEM = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGdQnmWvJcjx1fMg2TjzeMb6EqPn5WqDM8fxn4cbk1tD\n"
       "-----END PRIVATE KEY-----\n")


PEM = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGdQnmWvJcjx1fMg2TjzeMb6EqPn5WqDM8fxn4cbk1tD\n"
       "-----END PRIVATE KEY-----\n")
