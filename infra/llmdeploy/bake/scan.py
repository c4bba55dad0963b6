"""What a baked root tree must not hold, looked for on this machine after the bake stopped the guest: every secret
the bake saw (API keys, hfToken, the bake's own SSH host key), a private key in PEM, an authorized_keys with a key,
an SSH host key, a machine-id, cloud-init's instance data, llmdeploy's secrets, TLS and bundle. A finding names the
file and what it holds, never the secret itself. `llmdeploy bake` runs it on every nspawn bake and keeps no image
with a finding; tests/e2e/test_bake_local.py plants a key in a copy to show that it finds one."""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from ..vmpaths import BUNDLE_DIR, LOG_DIR, SECRETS_DIR, STAGES_DIR, TLS_DIR, READY_MARKER

# A PEM private key: the header and a line of base64 (programs that parse keys hold the header alone).
PEM_PRIVATE = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(Proc-Type[^\n]*\n[^\n]*\n\r?\n)?[A-Za-z0-9+/=]{40,}"
MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
# Packages' own files: self-tests and test fixtures hold throwaway PEM keys (gnutls, Python packages) that every
# install of the package holds too.
PACKAGE_PARTS = ("site-packages", "dist-packages", "/usr/share/", "/usr/lib/",
                 "/usr/include/")
# Per-instance places that must be absent or empty in a bake (the scrub removes them).
MUST_BE_EMPTY = (SECRETS_DIR, TLS_DIR, "/etc/letsencrypt", BUNDLE_DIR, STAGES_DIR, LOG_DIR, READY_MARKER,
                 "/var/lib/cloud/instance", "/var/lib/cloud/instances", "/var/lib/open-webui")


def _inside(root: Path, guest_path: str) -> Path:
    return root / guest_path.lstrip("/")


def _files(root: Path) -> Iterable[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(folder, d))]
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                yield path


def _grep(root: Path, patterns: list[str], *mode: str) -> list[Path]:
    """Files holding any of the patterns (grep over the tree: fast even for GBs of venvs)."""
    if not patterns:
        return []
    proc = subprocess.run(["grep", "-rl", *(mode or ("-F",)), "--binary-files=text", "--no-messages", "-f", "-",
                           str(root)],
                          input="\n".join(patterns).encode(), capture_output=True)
    return [Path(line) for line in proc.stdout.decode(errors="replace").splitlines() if line]


def scan_tree(root: Path, secrets: Iterable[str] = ()) -> list[str]:
    """Findings, one line each ("PATH: what"); empty when the tree is clean. Paths are the guest's."""
    findings: list[str] = []

    def guest(path: Path | str) -> str:
        return "/" + str(Path(path).relative_to(root))

    for path in _grep(root, sorted({s for s in secrets if s})):
        findings.append(f"{guest(path)}: holds a secret the bake saw")
    for path in _files(root):
        rel = guest(path)
        if path.name == "authorized_keys" and path.read_bytes().strip():
            findings.append(f"{rel}: an authorized_keys with keys")
        elif rel.startswith("/etc/ssh/ssh_host_"):
            findings.append(f"{rel}: an SSH host key")
        elif rel in ("/etc/machine-id", "/var/lib/dbus/machine-id") and \
                MACHINE_ID.match(path.read_text(errors="replace").strip()):
            findings.append(f"{rel}: a machine-id")
    for path in _grep(root, [PEM_PRIVATE], "-zP"):
        if not any(part in guest(path) for part in PACKAGE_PARTS):
            findings.append(f"{guest(path)}: a private key (PEM)")
    for place in MUST_BE_EMPTY:
        path = _inside(root, place)
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            findings.append(f"{place}: per-instance state left")
    journal = _inside(root, "/var/log/journal")
    if journal.is_dir():
        findings += [f"{guest(p)}: a journal named after a machine-id" for p in journal.iterdir()
                     if MACHINE_ID.match(p.name)]
    return sorted(set(findings))
