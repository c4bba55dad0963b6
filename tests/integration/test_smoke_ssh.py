"""The SSH smoke checks against a real sshd (Debian's openssh-server on loopback, throwaway keys) in front
of a fake VM: the VM's paths are bind-mounted from a temp dir in a private mount namespace, `ss`, `df`
and `sudo` are real, and only cloud-init, systemctl, journalctl and nvidia-smi are stand-ins (see
tests/support/sshd.py). The engine's port is a real listening socket, on 127.0.0.1 or on 0.0.0.0.
Every test stops its sshd by PID."""
from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.config import parse
from llmdeploy.errors import EXIT_FAILED
from llmdeploy.local.ssh import loopback_login
from llmdeploy.render import BASE_STEPS, render
from llmdeploy.result import FAIL, PASS, WARN, CheckResult
from llmdeploy.smoke.ssh_checks import (check_disk, check_memory, is_loopback, parse_cloud_init_status, parse_listeners,
                                        run_ssh_checks)
from llmdeploy.sshclient import CommandResult, HostKeyMismatch, SshError, parse_host_key, ssh_key_fingerprint
from llmdeploy.vmpaths import BOOT_FINISHED, CLOUD_INIT_OUTPUT, READY_MARKER, STAGES_DIR, step_log
from support.project import minimal_raw
from support.sshd import ADMIN, FakeVm, Sshd, is_running, keygen, run_sshd

pytestmark = pytest.mark.integration

JOURNAL = ["Nov 22 02:10:01 vm llamacpp[812]: main: loading model 'tiny.gguf'",
           "Nov 22 02:10:02 vm llamacpp[812]: error: failed to allocate 24 GiB for the KV cache",
           "Nov 22 02:10:02 vm systemd[1]: llamacpp.service: Main process exited, code=exited, status=1/FAILURE",
           "Nov 22 02:10:02 vm systemd[1]: llamacpp.service: Failed with result 'exit-code'."]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    with run_sshd(tmp_path / "vm") as server:
        yield server
    assert not is_running(server.pid), "sshd must be stopped by PID"


@contextmanager
def listener(address: str) -> Iterator[int]:
    """A real listening TCP socket, as the engine would hold; ss sees it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((address, 0))
        sock.listen()
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def provision_healthy(vm: FakeVm, engine_port: int, **overrides: object) -> dict[str, Any]:
    """What a finished, healthy VM holds: the rendered stack.json, every marker, units active."""
    raw = minimal_raw(engine="llamacpp", shape="VM.Standard.E4.Flex")
    raw.update(overrides)
    info = dict(render(parse(raw, stack="smoke")).info, engine_port=engine_port)
    vm.write_vm_facts(info)
    for step in info["stages"]:
        vm.mark(step, "done")
    vm.write(READY_MARKER, "2026-01-01T00:05:00Z\n")
    vm.write(BOOT_FINISHED, "120.5 - Thu, 01 Jan 2026 00:05:01 +0000 - v. 24.4\n")
    vm.set_unit(str(info["engine_unit"]), "active", journal=JOURNAL[:1])
    vm.set_unit("nginx", "active")
    vm.write(CLOUD_INIT_OUTPUT,
             "2026-01-01T00:05:00Z [90-ready] done in 4 s\nCloud-init v. 24.4 finished at Thu, 01 Jan 2026.\n")
    return info


def check(sshd: Sshd, user: str = ADMIN, key_file: Path | None = None, **kwargs: Any) -> dict[str, CheckResult]:
    kwargs.setdefault("host_key", sshd.host_key_line)
    results = run_ssh_checks(sshd.host, user, str(key_file or sshd.client_key), port=sshd.port, timeout=10, **kwargs)
    by_name = {r.name: r for r in results}
    assert len(by_name) == len(results), [r.name for r in results]
    return by_name


def failures(results: dict[str, CheckResult]) -> list[str]:
    return [r.line() for r in results.values() if r.status == FAIL]


def test_a_healthy_vm_passes_every_check_as_the_admin_user_through_sudo_and_as_root(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        for user in (ADMIN, "root"):
            results = check(sshd, user)
            assert failures(results) == [], user
            # disk and memory may warn on a full build machine; everything else passes outright
            assert {n for n, r in results.items() if r.status != PASS} <= {"ssh: disk headroom", "ssh: memory headroom"}
            names = list(results)
            assert names[:8] == ["ssh: connect", "ssh: stack info", "ssh: cloud-init finished", "ssh: stage markers",
                                 "ssh: engine active", "ssh: nginx active", "ssh: engine port loopback only",
                                 "ssh: disk headroom"]
            assert "ssh: GPU visible" not in results  # a CPU shape
            connect = results["ssh: connect"]
            assert connect.status == PASS and "matches the pinned key" in connect.summary
            assert results["ssh: connect"].seconds < 2  # ~70 ms on loopback
            stages = [*BASE_STEPS, "40-engine", "50-tls", "60-nginx", "90-ready"]
            assert results["ssh: stage markers"].summary == (
                f"all {len(stages)} stages done: {', '.join(stages)}; ready marker present")
            assert results["ssh: engine port loopback only"].summary == f"port {port} bound to 127.0.0.1 only"
            commands = results["ssh: engine active"].evidence["commands"]
            assert commands[0]["command"] == ("sudo -n systemctl is-active llamacpp" if user == ADMIN
                                              else "systemctl is-active llamacpp")
            assert commands[0]["exit_code"] == 0 and commands[0]["stdout"] == "active\n"
            assert "cloud_init_output_tail" not in results["ssh: stage markers"].evidence


def test_an_unpinned_host_key_is_a_warning_that_names_the_key(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        results = check(sshd, host_key=None)
    connect = results["ssh: connect"]
    _, expected = parse_host_key(sshd.host_key_line)
    assert connect.status == WARN and "NOT pinned" in connect.summary and expected in connect.summary
    assert failures(results) == []


def test_a_host_key_mismatch_fails_before_anything_runs(sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key", "another-vm")
    results = check(sshd, host_key=other)
    assert list(results) == ["ssh: connect"]
    connect = results["ssh: connect"]
    assert connect.status == FAIL and connect.summary.startswith(f"host key mismatch for [127.0.0.1]:{sshd.port}: ")
    assert parse_host_key(other)[1] in connect.summary and parse_host_key(sshd.host_key_line)[1] in connect.summary
    # the same key given as a fingerprint is accepted
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        by_fingerprint = check(sshd, host_key=parse_host_key(sshd.host_key_line)[1])
    assert by_fingerprint["ssh: connect"].status == PASS


def test_local_and_smoke_logins_refuse_a_wrong_host_key_alike(sshd: Sshd, tmp_path: Path) -> None:
    """llmdeploy.local's logins and the smoke checks share one client: the same HostKeyMismatch (an SshError,
    exit 1), with the same message, before authentication."""
    other = " ".join(keygen(tmp_path / "other_host_key", "another-vm").split()[:2])
    with pytest.raises(HostKeyMismatch, match=f"^host key mismatch for \\[127.0.0.1\\]:{sshd.port}: ") as info:
        loopback_login(sshd.port, ADMIN, sshd.client_key, host_key=other, timeout=10)
    assert isinstance(info.value, SshError) and info.value.exit_code == EXIT_FAILED
    assert parse_host_key(other)[1] in str(info.value)
    assert info.value.host_key_seen == f"ssh-ed25519 {parse_host_key(sshd.host_key_line)[1]}"
    smoke = check(sshd, host_key=other)["ssh: connect"]
    assert smoke.status == FAIL and smoke.summary == str(info.value)
    assert smoke.evidence["host_key_seen"] == info.value.host_key_seen
    session = loopback_login(sshd.port, ADMIN, sshd.client_key, host_key=" ".join(sshd.host_key_line.split()[:2]),
                             timeout=10)
    try:
        assert session.run("true").ok
        assert session.host_key == " ".join(sshd.host_key_line.split()[:2])
    finally:
        session.close()


def test_local_and_smoke_logins_say_alike_why_a_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    """A client key sshd does not know: both say which user, host and key file, and what the host presented
    (llmdeploy.local used to say only "AuthenticationException: Authentication failed.")."""
    keygen(tmp_path / "stranger", "stranger")
    with pytest.raises(SshError) as info:
        loopback_login(sshd.port, ADMIN, tmp_path / "stranger", host_key=sshd.host_key_line, timeout=10)
    assert str(info.value).startswith(f"authentication failed for {ADMIN}@127.0.0.1:{sshd.port} with key "
                                      f"{tmp_path / 'stranger'} ")
    assert info.value.host_key_seen == f"ssh-ed25519 {parse_host_key(sshd.host_key_line)[1]}"
    smoke = check(sshd, host_key=sshd.host_key_line, key_file=tmp_path / "stranger")
    assert smoke["ssh: connect"].summary == str(info.value)
    assert smoke["ssh: connect"].evidence["host_key_seen"] == info.value.host_key_seen


def test_a_missing_stage_marker_fails_naming_the_step(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        sshd.vm.path(f"{STAGES_DIR}/60-nginx.done").unlink()
        results = check(sshd)
    stages = results["ssh: stage markers"]
    assert stages.status == FAIL
    assert stages.summary == f"stage marker missing for 60-nginx (no 60-nginx.done in {STAGES_DIR})"
    assert stages.evidence["missing"] == ["60-nginx"]
    assert "Cloud-init v. 24.4 finished" in stages.evidence["cloud_init_output_tail"]
    assert failures(results) == [stages.line()]  # nothing else is blamed


def test_a_failed_step_fails_with_its_log_and_cloud_inits_output_attached(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        stages_dir = sshd.vm.path(STAGES_DIR)
        for later in ("40-engine", "50-tls", "60-nginx", "90-ready"):
            (stages_dir / f"{later}.done").unlink()
        sshd.vm.path(READY_MARKER).unlink()
        sshd.vm.mark("40-engine", "failed", "2026-01-01T00:03:00Z exit=3\n")
        sshd.vm.write(step_log("40-engine"), "pulling model\ncurl: (22) 404 Not Found: tiny.gguf\n")
        sshd.vm.write(CLOUD_INIT_OUTPUT,
                      "2026-01-01T00:03:00Z [40-engine] FAILED with exit code 3; last lines of ...\n")
        results = check(sshd)
    stages = results["ssh: stage markers"]
    assert stages.status == FAIL
    assert stages.summary == ("step 40-engine failed (2026-01-01T00:03:00Z exit=3); "
                              "not done: 50-tls, 60-nginx, 90-ready")
    assert "404 Not Found: tiny.gguf" in stages.evidence["40-engine_log_tail"]
    assert "[40-engine] FAILED with exit code 3" in stages.evidence["cloud_init_output_tail"]


def test_cloud_init_exit_1_fails_and_exit_2_passes(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        sshd.vm.set_cloud_init("done", "error", errors=("('scripts_user', RuntimeError('runparts: 1 failed'))",))
        failed = check(sshd)["ssh: cloud-init finished"]
        sshd.vm.set_cloud_init("done", "degraded", warnings=("Failed to set locale en_US.UTF-8",))
        degraded = check(sshd)["ssh: cloud-init finished"]
    assert failed.status == FAIL and failed.metrics["exit_code"] == 1
    assert failed.summary == ("cloud-init reported an error (exit 1, status error): "
                              "('scripts_user', RuntimeError('runparts: 1 failed'))")
    assert "Cloud-init v. 24.4 finished" in failed.evidence["cloud_init_output_tail"]
    assert degraded.status == PASS and degraded.metrics["exit_code"] == 2
    assert degraded.summary == ("done with recoverable errors (exit 2, degraded done): "
                                "1 listed: WARNING: Failed to set locale en_US.UTF-8")


def test_cloud_init_still_running_fails_once_the_command_timeout_passes(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        sshd.vm.set_cloud_init("running")
        start = time.monotonic()
        results = run_ssh_checks(sshd.host, ADMIN, str(sshd.client_key), port=sshd.port,
                                 host_key=sshd.host_key_line, timeout=1.5)
    cloud_init = next(r for r in results if r.name == "ssh: cloud-init finished")
    assert cloud_init.status == FAIL and cloud_init.summary == "cloud-init still running after 2s"
    assert cloud_init.evidence["commands"][0]["stdout"].startswith("...")  # --wait's progress dots
    assert time.monotonic() - start < 10


def test_an_inactive_engine_fails_with_its_journal_attached(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port)
        sshd.vm.set_unit("llamacpp", "failed", journal=JOURNAL)
        results = check(sshd)
    engine = results["ssh: engine active"]
    assert engine.status == FAIL
    assert engine.summary == "llamacpp is failed (systemctl is-active exit 3); its journal is attached"
    assert "failed to allocate 24 GiB for the KV cache" in engine.evidence["journal"]
    assert engine.evidence["commands"][1]["command"] == "sudo -n journalctl -u llamacpp -n 50 --no-pager"
    assert "cloud_init_output_tail" in engine.evidence
    assert results["ssh: nginx active"].status == PASS


def test_an_engine_port_bound_beyond_loopback_or_not_bound_at_all_fails(sshd: Sshd) -> None:
    with listener("0.0.0.0") as port:
        provision_healthy(sshd.vm, port)
        exposed = check(sshd)["ssh: engine port loopback only"]
    assert exposed.status == FAIL
    assert exposed.summary == f"engine port {port} is reachable beyond loopback: bound to 0.0.0.0:{port}"
    with listener("127.0.0.1") as port:
        pass  # closed again: a port that was free a moment ago
    provision_healthy(sshd.vm, port)
    down = check(sshd)["ssh: engine port loopback only"]
    assert down.status == FAIL
    assert down.summary == f"nothing listens on port {port}: the engine is down or on another port"


def test_a_gpu_shape_needs_nvidia_smi_to_see_its_gpus(sshd: Sshd) -> None:
    with listener("127.0.0.1") as port:
        provision_healthy(sshd.vm, port, engine="vllm", shape="VM.GPU.A10.1")
        sshd.vm.set_unit("vllm", "active")
        sshd.vm.set_gpus([])
        no_driver = check(sshd)["ssh: GPU visible"]
        sshd.vm.set_gpus(["NVIDIA A10, 23028 MiB, 550.90.07"])
        visible = check(sshd)["ssh: GPU visible"]
        forced_off = check(sshd, gpu=False)
    assert no_driver.status == FAIL and "couldn't communicate with the NVIDIA driver" in no_driver.summary
    assert no_driver.summary.startswith("nvidia-smi sees no GPU (exit 9)")
    assert visible.status == PASS and visible.summary == "1 GPU(s): NVIDIA A10, 23028 MiB, 550.90.07"
    assert "ssh: GPU visible" not in forced_off


# ------------------------------------------------------------------------------ parsers, without SSH

class StubRemote:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    def sudo(self, argv: list[str], timeout: float | None = None) -> CommandResult:
        return CommandResult(" ".join(argv), 0, self.stdout, "", 0.0)


def test_disk_and_memory_headroom_warn_under_10_and_15_percent() -> None:
    df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100000000 91000000 9000000 91% /\n"
    assert check_disk(StubRemote(df)).status == WARN  # type: ignore[arg-type]
    df_ok = df.replace("91000000 9000000", "80000000 20000000")
    assert check_disk(StubRemote(df_ok)).status == PASS  # type: ignore[arg-type]
    low = "MemTotal:       32000000 kB\nMemFree:  1000 kB\nMemAvailable:    4000000 kB\n"
    memory = check_memory(StubRemote(low))  # type: ignore[arg-type]
    assert memory.status == WARN and memory.summary.startswith("low memory: 3.8 GiB of 30.5 GiB available (12%)")
    assert check_memory(StubRemote(low.replace("4000000", "8000000"))).status == PASS  # type: ignore[arg-type]


def test_listener_addresses_are_parsed_in_every_form_ss_prints() -> None:
    out = ("LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:*\nLISTEN 0 511 [::1]:11434 [::]:*\n"
           "LISTEN 0 128 *:9997 *:*\nLISTEN 0 511 [::]:80 [::]:*\nLISTEN 0 511 [::ffff:127.0.0.1]:8000 *:*\n")
    assert parse_listeners(out) == [("127.0.0.53", 53), ("::1", 11434), ("*", 9997), ("::", 80),
                                    ("::ffff:127.0.0.1", 8000)]
    assert [is_loopback(a) for a, _ in parse_listeners(out)] == [True, True, False, False, True]


def test_cloud_init_status_is_parsed_from_old_and_new_formats() -> None:
    old = "....\nstatus: done\nboot_status_code: enabled-by-generator\ndetail:\nDataSourceOracle\n"
    assert parse_cloud_init_status(old)["status"] == "done"
    new = ("\nstatus: error\nextended_status: error - done\nboot_status_code: enabled-by-generator\n"
           "detail: DataSourceOracle\nerrors:\n\t- ('scripts_user', RuntimeError('boom'))\n"
           "recoverable_errors:\nWARNING:\n\t- Failed to set locale\nDEPRECATED:\n\t- key x is deprecated\n")
    parsed = parse_cloud_init_status(new)
    assert parsed["status"] == "error" and parsed["extended_status"] == "error - done"
    assert parsed["errors"] == ["('scripts_user', RuntimeError('boom'))"]
    assert parsed["recoverable_errors"] == ["WARNING: Failed to set locale", "DEPRECATED: key x is deprecated"]


def test_host_keys_are_pinned_by_key_line_known_hosts_line_or_fingerprint(tmp_path: Path) -> None:
    line = keygen(tmp_path / "k", "c")
    key_type, blob = line.split()[:2]
    fp = ssh_key_fingerprint(base64.b64decode(blob))
    assert fp in subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True,
                                check=True).stdout  # the same fingerprint OpenSSH prints
    assert parse_host_key(line) == (key_type, fp)
    assert parse_host_key(f"[203.0.113.7]:22 {key_type} {blob}") == (key_type, fp)
    assert parse_host_key(fp) == (None, fp)
    with pytest.raises(ValueError, match="expected 'SHA256:...'"):
        parse_host_key("not a key")
