"""Rendered provisioning code run for real (in a private mount namespace): the step runner's stage
markers, and the TLS step's certificates and re-run behaviour."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from conftest import minimal_raw
from llmdeploy.config import parse
from llmdeploy.render import PROVISION, STEPS_DIR, render
from support.vmroot import VmRoot, vm_root

LIB = "/usr/local/lib/llmdeploy/lib.sh"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmRoot]:
    with vm_root(tmp_path / "vm") as root:
        yield root


def install_rendered(vm: VmRoot, **overrides: object) -> list[str]:
    rendered = render(parse(minimal_raw(**overrides), stack="steps"))
    for f in rendered.files:
        if f.path.startswith(("/usr/local/lib/llmdeploy", "/usr/local/share/llmdeploy", "/etc/llmdeploy")):
            vm.install(f.path, f.content, int(f.mode, 8))
    vm.install(PROVISION.replace("/usr/local/sbin", "/usr/local/lib/llmdeploy"), rendered.file(PROVISION).content,
               0o755)
    return list(rendered.steps)


def test_runner_marks_each_step_and_pins_a_failure_to_its_step(vm: VmRoot) -> None:
    install_rendered(vm)
    for step in vm.path(STEPS_DIR).iterdir():
        step.unlink()
    vm.install(f"{STEPS_DIR}/10-ok.sh", '#!/bin/bash\n. /usr/local/lib/llmdeploy/lib.sh\nlog "all good"\n', 0o755)
    vm.install(f"{STEPS_DIR}/20-breaks.sh", "#!/bin/bash\necho 'disk on fire' >&2\nexit 3\n", 0o755)
    vm.install(f"{STEPS_DIR}/30-after.sh", "#!/bin/bash\ntrue\n", 0o755)
    first = vm.run("/usr/local/lib/llmdeploy/llmdeploy-provision")
    stages = vm.path("/var/lib/llmdeploy/stages")
    assert first.returncode == 3
    assert "[20-breaks] FAILED with exit code 3" in first.stdout and "disk on fire" in first.stderr
    assert sorted(p.name for p in stages.iterdir()) == ["10-ok.done", "20-breaks.failed"]
    assert "exit=3" in (stages / "20-breaks.failed").read_text()
    done_at = (stages / "10-ok.done").read_text()
    vm.install(f"{STEPS_DIR}/20-breaks.sh", "#!/bin/bash\ntrue\n", 0o755)  # the operator fixes it
    second = vm.run("/usr/local/lib/llmdeploy/llmdeploy-provision")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in stages.iterdir()) == ["10-ok.done", "20-breaks.done", "30-after.done"]
    assert (stages / "10-ok.done").read_text() == done_at  # a re-run keeps the first success's time
    assert "all good" in vm.path("/var/log/llmdeploy/10-ok.log").read_text()


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_self_signed_step_makes_a_ca_signed_leaf_and_keeps_it_on_re_run(vm: VmRoot) -> None:
    install_rendered(vm, tlsMode="self-signed", domain="llm.example.org")
    first = vm.run(f"bash {STEPS_DIR}/50-tls.sh")
    assert first.returncode == 0, first.stdout + first.stderr
    tls = vm.path("/etc/llmdeploy/tls")
    leaf = tls / "self-signed" / "cert.pem"
    assert "OK" in openssl("verify", "-CAfile", str(tls / "ca.pem"), str(leaf))
    ext = openssl("x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName,basicConstraints,extendedKeyUsage")
    assert "DNS:llm.example.org" in ext and "CA:FALSE" in ext and "TLS Web Server Authentication" in ext
    assert (tls / "fullchain.pem").resolve() == (tls / "self-signed" / "fullchain.pem").resolve()
    assert (tls / "self-signed" / "privkey.pem").stat().st_mode & 0o077 == 0
    before = leaf.read_bytes()
    second = vm.run(f"bash {STEPS_DIR}/50-tls.sh")
    assert second.returncode == 0 and leaf.read_bytes() == before


def test_acme_mode_starts_on_a_placeholder_and_a_re_run_keeps_the_real_certificate(vm: VmRoot) -> None:
    install_rendered(vm, tlsMode="letsencrypt", domain="llm.example.org")
    assert vm.run(f"bash {STEPS_DIR}/50-tls.sh").returncode == 0
    tls = vm.path("/etc/llmdeploy/tls")
    assert (tls / "fullchain.pem").resolve() == (tls / "placeholder" / "fullchain.pem").resolve()
    # What step 70 does after certbot: point nginx at the live certificate (an absolute link).
    live = "/etc/llmdeploy/tls/live-test"
    relink = (f"mkdir -p {live} && cp /etc/llmdeploy/tls/placeholder/*.pem {live}/ && "
              f"ln -sfn {live}/fullchain.pem /etc/llmdeploy/tls/fullchain.pem && "
              f"ln -sfn {live}/privkey.pem /etc/llmdeploy/tls/privkey.pem && bash {STEPS_DIR}/50-tls.sh && "
              "readlink /etc/llmdeploy/tls/fullchain.pem /etc/llmdeploy/tls/privkey.pem")
    result = vm.run(relink)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == [f"{live}/fullchain.pem", f"{live}/privkey.pem"]
