"""The rendered hardening files on their own: every drop-in algorithm kind Go's x/crypto/ssh speaks, every
sysctl key known, every file installed by the base step. The auditors' tools run in
tests/integration/test_hardening.py."""
import re
from pathlib import Path

from llmdeploy.config import parse
from llmdeploy.render import BASE_STEPS, HARDENING_FILES, STEPS_DIR, render
from support.hardening import GO_X_CRYPTO_CLIENT_DEFAULTS, PER_NETNS, rendered_file, rendered_sshd_conf, sshd_lists, sysctl_values
from support.project import minimal_raw

# ... so the readiness gate negotiates these with the hardened sshd (the intersection, written out).
GO_X_CRYPTO_WITH_LLMDEPLOY = {
    "KexAlgorithms": {"curve25519-sha256", "curve25519-sha256@libssh.org"},
    "Ciphers": {"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr",
                "aes192-ctr", "aes128-ctr"},
    "MACs": {"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"},
    "HostKeyAlgorithms": {"ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", "rsa-sha2-512",
                          "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256", "rsa-sha2-256-cert-v01@openssh.com"},
}


def test_go_x_crypto_shares_every_algorithm_kind_with_the_drop_in() -> None:
    """pulumi-command's readiness gate (Go's x/crypto/ssh with its default lists) can still log in."""
    lists = sshd_lists(rendered_sshd_conf())
    assert set(lists) == set(GO_X_CRYPTO_CLIENT_DEFAULTS)
    shared = {kind: set(names) & GO_X_CRYPTO_CLIENT_DEFAULTS[kind] for kind, names in lists.items()}
    assert shared == GO_X_CRYPTO_WITH_LLMDEPLOY
    # The first algorithm Go asks for in each kind is one sshd offers, so nothing falls back.
    assert "curve25519-sha256" in lists["KexAlgorithms"] and "aes128-gcm@openssh.com" in lists["Ciphers"]


# Keys the target kernels (Debian 12's and Ubuntu's) have but a CI kernel may lack (12-sysctl applies with -e).
TARGET_KERNEL_ONLY = {"kernel.yama.ptrace_scope", "kernel.sysrq"}


def test_every_other_sysctl_key_exists_so_a_typo_cannot_hide_behind_sysctl_e() -> None:
    values = sysctl_values(rendered_file("sysctl-hardening.conf"))
    others = [k for k in values if not k.startswith(PER_NETNS)]
    assert "fs.suid_dumpable" in others and "kernel.modules_disabled" not in others  # Docker and NVIDIA load modules
    missing = [k for k in others if not Path("/proc/sys", *k.split(".")).exists()]
    assert set(missing) <= TARGET_KERNEL_ONLY, missing


def test_base_step_installs_every_hardening_file() -> None:
    rendered = render(parse(minimal_raw(), stack="harden"))
    base = "".join(rendered.file(f"{STEPS_DIR}/{step}.sh").content for step in BASE_STEPS)
    for name in HARDENING_FILES:
        assert re.search(rf'install_file "\$LLMDEPLOY_FILES/{re.escape(name)}" /etc/\S+ 0644', base), name
    assert "* hard core 0" in rendered_file("limits-nocore.conf")
    assert "Storage=none" in rendered_file("coredump.conf")
    banner = rendered_file("issue").lower()
    assert all(word in banner for word in ("authorized", "monitored", "prohibited", "legal"))  # lynis BANN-7126
    assert "\\" not in banner  # /etc/issue expands backslash escapes
    assert "Banner /etc/issue.net" in rendered_sshd_conf()
