"""Rendered provisioning code run for real (in a private mount namespace): the step runner's stage
markers, and the TLS step's certificates and re-run behaviour."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from conftest import minimal_raw
from llmdeploy.config import parse
from llmdeploy.render import INSTALL_SECRETS, PROVISION, STEPS_DIR, WAIT_READY, render
from llmdeploy.secrets import generate_api_key, secrets_bundle
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
    for script in (PROVISION, INSTALL_SECRETS, WAIT_READY):  # /usr/local/sbin is not redirected
        vm.install(script.replace("/usr/local/sbin", "/usr/local/lib/llmdeploy"), rendered.file(script).content, 0o755)
    return list(rendered.steps)


def fake_cloud_init(vm: VmRoot, exit_code: int) -> str:
    """cloud-init cannot run here: a stand-in with the real one's `status` exit codes (0 done, 1 error,
    2 recoverable error since 23.4), first on PATH."""
    vm.install("/usr/local/lib/llmdeploy/fakebin/cloud-init",
               f"#!/bin/sh\necho 'status: done'\nexit {exit_code}\n", 0o755)
    return "PATH=/usr/local/lib/llmdeploy/fakebin:$PATH "


def finish_boot(vm: VmRoot, steps: list[str], failed: str = "", missing: str = "") -> None:
    for step in steps:
        if step == failed:
            vm.install(f"/var/lib/llmdeploy/stages/{step}.failed", "2026-11-21T10:00:00Z exit=7\n")
            vm.install(f"/var/log/llmdeploy/{step}.log", "downloading model...\ncurl: (22) 404 Not Found\n")
        elif step != missing:
            vm.install(f"/var/lib/llmdeploy/stages/{step}.done", "2026-11-21T10:00:00Z\n")
    vm.install("/var/lib/cloud/instance/boot-finished", "done\n")


WAIT = "/usr/local/lib/llmdeploy/llmdeploy-wait-ready 30"


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


@pytest.mark.parametrize("cloud_init_rc", [0, 2])
def test_wait_ready_passes_when_every_stage_is_done(vm: VmRoot, cloud_init_rc: int) -> None:
    steps = install_rendered(vm, tlsMode="self-signed")
    finish_boot(vm, steps)
    vm.install("/etc/llmdeploy/tls/ca.pem", "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")
    result = vm.run(fake_cloud_init(vm, cloud_init_rc) + WAIT)
    assert result.returncode == 0, result.stderr
    assert "ready: every stage done" in result.stdout and "BEGIN CERTIFICATE" in result.stdout


def test_wait_ready_names_the_failed_stage_and_shows_its_log(vm: VmRoot) -> None:
    steps = install_rendered(vm)
    finish_boot(vm, steps, failed="40-engine")
    result = vm.run(fake_cloud_init(vm, 1) + WAIT)
    assert result.returncode == 1
    assert "FAILED at stage 40-engine" in result.stderr and "exit=7" in result.stderr
    assert "curl: (22) 404 Not Found" in result.stderr


def test_wait_ready_does_not_trust_cloud_init_alone(vm: VmRoot) -> None:
    steps = install_rendered(vm)
    finish_boot(vm, steps, missing="60-nginx")
    result = vm.run(fake_cloud_init(vm, 0) + WAIT)
    assert result.returncode == 1 and "stage 60-nginx never completed" in result.stderr


def test_wait_ready_fails_on_a_cloud_init_error(vm: VmRoot) -> None:
    steps = install_rendered(vm)
    finish_boot(vm, steps)
    result = vm.run(fake_cloud_init(vm, 1) + WAIT)
    assert result.returncode == 1 and "cloud-init reports an error" in result.stderr


def test_wait_ready_gives_up_at_its_deadline_saying_what_it_saw(vm: VmRoot) -> None:
    install_rendered(vm)
    vm.install("/var/lib/llmdeploy/stages/10-base.done", "t\n")
    result = vm.run(fake_cloud_init(vm, 0) + "/usr/local/lib/llmdeploy/llmdeploy-wait-ready 1")
    assert result.returncode == 1 and "timed out after 1s; last stage done: 10-base.done" in result.stderr


def test_delivered_public_ip_reissues_the_self_signed_certificate(vm: VmRoot) -> None:
    cfg_overrides = {"tlsMode": "self-signed"}
    install_rendered(vm, **cfg_overrides)
    assert vm.run(f"bash {STEPS_DIR}/50-tls.sh").returncode == 0
    tls = vm.path("/etc/llmdeploy/tls")
    ca_before = (tls / "ca.pem").read_bytes()
    bundle = secrets_bundle(parse(minimal_raw(**cfg_overrides)), {"default": generate_api_key()}, "203.0.113.7")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                             " && ".join(f"mount --bind {vm.path(d)} {d}" for d in
                                         ("/usr/local/lib/llmdeploy", "/etc/llmdeploy", "/var/lib/llmdeploy"))
                             + " && /usr/local/lib/llmdeploy/llmdeploy-install-secrets"],
                            input=bundle, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"reissued the self-signed certificate for IP:203.0.113.7" in result.stdout
    leaf = tls / "self-signed" / "cert.pem"
    assert "IP Address:203.0.113.7" in openssl("x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName")
    assert "OK" in openssl("verify", "-CAfile", str(tls / "ca.pem"), str(leaf))
    assert (tls / "ca.pem").read_bytes() == ca_before  # clients that trust the CA keep trusting it
