"""End to end, in the systemd container runtime: `llmdeploy bake --stack local --runtime nspawn` bakes the example
stack (llama.cpp, the tiny model behind an hfToken, a certificate from a local pebble) once for this module, and:

- the baked tree holds no secret: not the API key or the hfToken the bake delivered, no private key, no SSH host
  key, no authorized_keys, no machine-id (bake/scan.py); a copy with a planted key and token is caught;
- baking the same install again does nothing;
- `llmdeploy local up` boots the bake by itself, says so, and passes its smoke test; a second boot of the same bake
  gets new SSH host keys, new API keys, a new certificate and a new machine-id;
- `local up --baked` refuses (exit 2) when no bake matches, before anything is created.

The bakes live in a temporary folder (LLMDEPLOY_BAKED_DIR); every guest is stopped by `llmdeploy local down`, also
when a test fails. About 2 minutes on 2 cores (the bake ~50 s, each boot ~20 s).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmdeploy.bake.scan import scan_tree
from llmdeploy.local import procs
from llmdeploy.local.lifecycle import PROCESS_NAMES
from llmdeploy.local.runtime import of as runtime_of
from llmdeploy.local.state import VmState
from support.project import ROOT
from test_local_vm import Vm, llmdeploy, smoke

pytestmark = pytest.mark.e2e

STACK = "local"
TIMEOUT_S = 15 * 60


@dataclass
class Bake:
    folder: Path
    env: dict[str, str]
    seen: list[str]  # the API key and hfToken the bake delivered
    log: str
    seconds: float


@pytest.fixture(scope="module")
def bake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bake]:
    top = tmp_path_factory.mktemp("bake-local")
    api_key, hf_token = "sk-bake-" + secrets.token_urlsafe(24), "hf_" + secrets.token_urlsafe(24)
    env = {**os.environ, "LLMDEPLOY_STATE_DIR": str(top / "state"), "LLMDEPLOY_BAKED_DIR": str(top / "baked"),
           "LLMDEPLOY_HF_TOKEN": hf_token}
    log = top / "bake.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMDEPLOY_STATE_DIR", env["LLMDEPLOY_STATE_DIR"])
        start = time.monotonic()
        code = llmdeploy(["bake", "--stack", STACK, "--runtime", "nspawn", "--project-dir", str(ROOT)],
                         {**env, "LLMDEPLOY_LOCAL_API_KEYS": json.dumps({"default": api_key})}, log, TIMEOUT_S)
        seconds = time.monotonic() - start
        text = log.read_text(errors="replace")
        print(f"\nllmdeploy bake: exit {code} after {seconds:.0f}s\n{text}")
        assert code == 0, text[-6000:]
        assert VmState.load(STACK) is None  # the bake's guest is gone
        folders = [p for p in (top / "baked").iterdir() if not p.name.startswith(".")]
        assert len(folders) == 1 and folders[0].name.endswith("-nspawn")
        yield Bake(folders[0], env, [api_key, hf_token], text, seconds)


def test_the_bake_holds_no_secret_key_or_identity(bake: Bake) -> None:
    manifest = json.loads((bake.folder / "manifest.json").read_text())
    assert manifest["stack"] == STACK and manifest["runtime"] == "nspawn" and manifest["keep_models"] is True
    assert bake.folder.name == f"{manifest['digest']}-nspawn"
    root = bake.folder / "rootfs"
    assert scan_tree(root, bake.seen) == []
    # ... and what the bake installed is there: the engine's venv, the model, nginx
    assert (root / "opt/llmdeploy/llamacpp/bin/python").exists()
    assert (root / "var/lib/llmdeploy/models/tiny-llama.gguf").stat().st_size > 0
    assert (root / "usr/sbin/nginx").exists()
    assert (root / "etc/machine-id").read_text() == ""


def test_the_scan_finds_a_key_planted_in_a_copy(bake: Bake, tmp_path: Path) -> None:
    copy = tmp_path / "rootfs"
    # Hard links: instant, and only new files are written below, so the bake itself is left as it was.
    subprocess.run(["cp", "-al", str(bake.folder / "rootfs"), str(copy)], check=True)
    (copy / "etc/llmdeploy/secrets").mkdir(parents=True, exist_ok=True)
    (copy / "etc/llmdeploy/secrets/api-keys.map").write_text(f'"Bearer {bake.seen[0]}" default;\n')
    (copy / "var/log/nginx/planted.log").write_text(f"hf token {bake.seen[1]}\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(copy / "etc/ssh/ssh_host_ed25519_key")],
                   check=True)
    found = scan_tree(copy, bake.seen)
    assert "/etc/llmdeploy/secrets/api-keys.map: holds a secret the bake saw" in found
    assert "/var/log/nginx/planted.log: holds a secret the bake saw" in found
    assert "/etc/ssh/ssh_host_ed25519_key: a private key (PEM)" in found
    assert "/etc/ssh/ssh_host_ed25519_key: an SSH host key" in found
    assert scan_tree(bake.folder / "rootfs", bake.seen) == []


def test_baking_the_same_install_again_does_nothing(bake: Bake, tmp_path: Path) -> None:
    before = (bake.folder / "manifest.json").read_text()
    log = tmp_path / "rebake.log"
    start = time.monotonic()
    code = llmdeploy(["bake", "--stack", STACK, "--runtime", "nspawn", "--project-dir", str(ROOT)], bake.env, log, 300)
    text = log.read_text()
    assert code == 0 and f"already baked: {bake.folder}" in text and "nothing to do" in text, text
    assert time.monotonic() - start < 60 and (bake.folder / "manifest.json").read_text() == before


def boot(bake: Bake, log: Path) -> Iterator[Vm]:
    """`local up` of the stack (which finds the bake by itself), and `down` afterwards, also on failure."""
    start = time.monotonic()
    try:
        code = llmdeploy(["local", "up", "--stack", STACK, "--project-dir", str(ROOT), "--runtime", "nspawn"],
                         bake.env, log, TIMEOUT_S)
        text = log.read_text(errors="replace")
        print(f"\nllmdeploy local up (baked): exit {code} after {time.monotonic() - start:.0f}s\n{text}")
        assert code == 0, text[-6000:]
        state = VmState.load(STACK)
        assert state is not None and state.phase == "ready"
        yield Vm(state, bake.env, time.monotonic() - start, text, bake.env["LLMDEPLOY_HF_TOKEN"])
    finally:
        left = VmState.load(STACK)
        llmdeploy(["local", "down", "--stack", STACK], bake.env, log, 300)
        if left is not None:
            runtime_of(left).stop(left)
            for name in PROCESS_NAMES:
                procs.stop_process(left.pids.get(name), left.markers.get(name, "\0"))
        assert VmState.load(STACK) is None


def served_certificate(vm: Vm) -> str:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", vm.state.port(443)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=vm.state.domain) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der
    return hashlib.sha256(der).hexdigest()


def identity(vm: Vm) -> dict[str, str]:
    return {"host key": vm.state.host_key, "api key": vm.state.api_keys()["default"],
            "certificate": served_certificate(vm), "machine-id": vm.sudo("cat /etc/machine-id").strip()}


def test_two_boots_of_the_bake_pass_smoke_with_new_keys_certificate_and_identity(
        bake: Bake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDEPLOY_STATE_DIR", bake.env["LLMDEPLOY_STATE_DIR"])
    seen = []
    baked_at = json.loads((bake.folder / "manifest.json").read_text())["created_epoch"]
    for n in (1, 2):
        for vm in boot(bake, tmp_path / f"up-{n}.log"):
            assert f"baked image: {bake.folder}" in vm.up_log
            assert "PASS  ssh: stage markers" in vm.up_log and "FAIL " not in vm.up_log
            smoke(vm)
            t = vm.state.timeline
            print(f"\nboot {n} from the bake to passing smoke: {t['smoke_done'] - t['nspawn_started']:.0f}s")
            # the engine came from the bake: its step found the venv and the model in place (written before it)
            written = vm.sudo("stat -c %Y /var/lib/llmdeploy/models/tiny-llama.gguf /opt/llmdeploy/llamacpp/bin/pip")
            assert all(int(t) <= baked_at for t in written.split()), (written, baked_at)
            seen.append(identity(vm))
    first, second = seen
    assert all(first[k] and first[k] != second[k] for k in first), {k: first[k] == second[k] for k in first}
    assert bake.seen[0] not in (first["api key"], second["api key"])  # the bake's own key is nobody's


def test_up_with_baked_refuses_when_no_bake_matches(bake: Bake, tmp_path: Path) -> None:
    env = {**bake.env, "LLMDEPLOY_BAKED_DIR": str(tmp_path / "empty")}
    log = tmp_path / "up.log"
    code = llmdeploy(["local", "up", "--stack", STACK, "--project-dir", str(ROOT), "--runtime", "nspawn", "--baked"],
                     env, log, 300)
    text = log.read_text()
    assert code == 2 and "--baked: no bake of install" in text and "llmdeploy bake --stack local" in text, text
    assert not (Path(bake.env["LLMDEPLOY_STATE_DIR"]) / STACK / "state.json").exists()
