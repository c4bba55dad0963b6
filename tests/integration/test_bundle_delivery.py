"""The provisioning bundle's way onto a VM, run for real: the rendered receiver and bootstrap in a private mount
namespace whose VM paths (and /usr/local/sbin) are temp dirs. The bundle is kept only when its SHA-256 is the digest
the metadata carries: a tampered or truncated one is refused at the 00-bundle stage, naming both digests, and
nothing of it is unpacked. After a reboot the bootstrap uses the bundle it kept, without waiting for a delivery."""
from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy import bundle
from llmdeploy.config import parse
from llmdeploy.render import VmFile, render
from llmdeploy.vmpaths import (BOOTSTRAP, BUNDLE_DIGEST, BUNDLE_DIR, BUNDLE_STAGE, PROVISION, READY_MARKER,
                               RECEIVE_BUNDLE, STAGES_DIR)
from support.project import minimal_raw
from support.vmroot import VM_DIRS, VmRoot, bind_mounts, vm_root

# A provision stand-in: the bootstrap execs it once the bundle is unpacked; it says so and marks the VM ready.
PROVISION_STUB = f"#!/bin/bash\necho \"provisioned from $(cat {BUNDLE_DIR}/unpacked)\"\ndate >{READY_MARKER}\n"
SECRETS_STUB = "#!/bin/bash\necho \"secrets: $(wc -c) bytes\"\n"
STAGE_FAILED = f"{STAGES_DIR}/{BUNDLE_STAGE}.failed"


class Vm:
    """A VM with the rendered bootstrap and receiver installed, expecting `packed` (the metadata's digest)."""

    def __init__(self, root: VmRoot, sbin: Path, packed: bytes) -> None:
        self.root, self.sbin, self.packed = root, sbin, packed

    def run(self, command: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        mounts = bind_mounts([(self.root.path(d), d) for d in VM_DIRS] + [(self.sbin, "/usr/local/sbin")])
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                               f"set -e\n{mounts}{command}"], input=stdin, capture_output=True, timeout=timeout)

    def deliver(self, packed: bytes, bootstrap_for: float = 0) -> subprocess.CompletedProcess[bytes]:
        """The gate's own delivery script with `packed` and a small secrets archive on stdin; the bootstrap runs
        beside it for up to `bootstrap_for` seconds (0: not at all)."""
        script = shlex.quote(bundle.delivery_script(timeout_s=4))
        out = "/var/log/llmdeploy/boot.out"
        boot = (f"(rc=0; timeout {bootstrap_for} {BOOTSTRAP} >{out} 2>&1 || rc=$?; echo \"bootstrap rc=$rc\" >>{out}) & ")
        return self.run(f"{boot if bootstrap_for else ''}rc=0; bash -c {script} || rc=$?; wait; "
                        f"cat {out} 2>/dev/null || true; rm -f {out}; exit $rc", bundle.payload(packed, b"secret tar"))

    def path(self, vm_path: str) -> Path:
        return self.sbin / Path(vm_path).name if vm_path.startswith("/usr/local/sbin/") else self.root.path(vm_path)


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Vm]:
    rendered = render(parse(minimal_raw(readinessTimeoutMinutes=5), stack="bundle"))
    files = [VmFile(PROVISION, PROVISION_STUB, "0755"),
             VmFile("/usr/local/sbin/llmdeploy-install-secrets", SECRETS_STUB, "0755"),
             VmFile("/usr/local/share/llmdeploy/files/hello.txt", "from the bundle\n")]
    packed = bundle.pack(files)
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    with vm_root(tmp_path / "vm") as root:
        root.install(BUNDLE_DIGEST, bundle.digest(packed) + "\n")
        root.install(BOOTSTRAP, rendered.file(BOOTSTRAP).content, 0o755)
        (sbin / "llmdeploy-receive-bundle").write_text(rendered.file(RECEIVE_BUNDLE).content)
        (sbin / "llmdeploy-receive-bundle").chmod(0o755)
        yield Vm(root, sbin, packed)


def test_a_good_bundle_is_kept_unpacked_and_provisioned_from_then_the_secrets_follow(vm: Vm) -> None:
    result = vm.deliver(vm.packed, bootstrap_for=20)
    out = result.stdout.decode()
    want = bundle.digest(vm.packed)
    assert result.returncode == 0, result.stderr.decode() + out
    assert f"bundle {want} kept" in out and f"provisioned from {want}" in out and "bootstrap rc=0" in out
    assert out.index(f"bundle {want} kept") < out.index("secrets: ")  # the secrets' installer came with the bundle
    assert (vm.path(f"{BUNDLE_DIR}/{want}.tar.gz")).read_bytes() == vm.packed
    assert vm.path("/usr/local/share/llmdeploy/files/hello.txt").read_text() == "from the bundle\n"
    assert vm.path(f"{STAGES_DIR}/{BUNDLE_STAGE}.done").exists() and not vm.path(STAGE_FAILED).exists()


@pytest.mark.parametrize("damage", ["tampered", "truncated", "another stack's"])
def test_a_bad_bundle_is_refused_at_the_bundle_stage_naming_both_digests(vm: Vm, damage: str) -> None:
    bad = {"tampered": vm.packed[:100] + bytes([vm.packed[100] ^ 1]) + vm.packed[101:],
           "truncated": vm.packed[: len(vm.packed) // 2],
           "another stack's": bundle.pack([VmFile(PROVISION, "#!/bin/bash\necho other\n", "0755")])}[damage]
    result = vm.deliver(bad, bootstrap_for=6)
    err, out = result.stderr.decode(), result.stdout.decode()
    want, got = bundle.digest(vm.packed), bundle.digest(bad)
    assert result.returncode == 1 and "secrets: " not in out  # the secrets are not sent to a refused machine
    assert f"bundle refused: its SHA-256 is {got} ({len(bad)} bytes), but this VM's metadata says {want}" in err
    assert "has not unpacked" not in err  # the refusal ends the delivery at once: no wait for the bootstrap after it
    marker = vm.path(STAGE_FAILED).read_text()
    assert "exit=1" in marker and got in marker and want in marker
    assert [p.name for p in vm.path(BUNDLE_DIR).iterdir()] == []  # nothing of it kept
    assert not vm.path(PROVISION).exists() and not vm.path("/usr/local/share/llmdeploy/files/hello.txt").exists()
    assert "provisioned from" not in out and "bootstrap rc=124" in out  # still waiting for a good one
    again = vm.deliver(vm.packed, bootstrap_for=20)  # a re-run of the gate with the right bundle goes through
    assert again.returncode == 0 and f"provisioned from {want}" in again.stdout.decode()
    assert not vm.path(STAGE_FAILED).exists()


def test_after_a_reboot_the_kept_bundle_is_used_without_waiting_for_a_delivery(vm: Vm) -> None:
    assert vm.deliver(vm.packed, bootstrap_for=20).returncode == 0
    want = bundle.digest(vm.packed)
    rebooted = vm.run(f"timeout 5 {BOOTSTRAP}")  # ready before: nothing to do
    assert rebooted.returncode == 0 and b"provisioned before this boot" in rebooted.stdout
    vm.path(READY_MARKER).unlink()  # a reboot in the middle of provisioning: it goes on from the kept bundle
    interrupted = vm.run(f"timeout 5 {BOOTSTRAP}")
    assert interrupted.returncode == 0 and f"provisioned from {want}".encode() in interrupted.stdout
    # The kept bundle changed on disk: refused, not unpacked again.
    kept = vm.path(f"{BUNDLE_DIR}/{want}.tar.gz")
    kept.write_bytes(kept.read_bytes()[:-10])
    vm.path(READY_MARKER).unlink()
    changed = vm.run(f"timeout 5 {BOOTSTRAP}")
    assert changed.returncode == 1 and b"it was changed on disk" in changed.stderr
    assert "changed on disk" in vm.path(STAGE_FAILED).read_text()


def test_the_delivery_gives_up_when_the_receiver_never_appears_and_reads_nothing(vm: Vm) -> None:
    (vm.sbin / "llmdeploy-receive-bundle").unlink()  # cloud-init's write_files never ran
    script = shlex.quote(bundle.delivery_script(timeout_s=2))
    result = vm.run(f"rc=0; bash -c {script} || rc=$?; echo \"rc=$rc\"; cat", b"payload bytes")
    out = result.stdout.decode()
    assert "rc=1" in out and out.endswith("payload bytes")  # the wait read none of stdin
    assert f"{RECEIVE_BUNDLE} is not on the VM: cloud-init has not run after 2s" in result.stderr.decode()
