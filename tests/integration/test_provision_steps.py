"""Rendered provisioning code run for real (in a private mount namespace): the step runner's stage
markers, the TLS step's certificates and re-run behaviour, and the order of secret delivery and readiness
(the readiness gate's own command, the secret installer, wait-ready and an engine step that needs hfToken)."""
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmdeploy.config import parse
from llmdeploy import bundle
from llmdeploy.render import HostLayout, VmFile, render
from llmdeploy.vmpaths import (BOOT_FINISHED, BOOTSTRAP, BUNDLE_DIGEST, BUNDLE_STAGE, GATE_DEADLINE, INSTALL_SECRETS,
                               LIBEXEC, PROVISION, READY_MARKER, RECEIVE_BUNDLE, STAGES_DIR, STEPS_DIR, WAIT_READY,
                               step_log)
from llmdeploy.secret_delivery import generate_api_key, secrets_bundle
from llmdeploy.stack.gates import readiness_script
from support.ports import free_port
from support.project import minimal_raw
from support.vmroot import VM_DIRS, VmRoot, bind_mounts, vm_root

LIB = "/usr/local/lib/llmdeploy/lib.sh"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmRoot]:
    with vm_root(tmp_path / "vm") as root:
        yield root


class Engine:
    """A stand-in for the engine's loopback port: answers every GET with `status` (0: not listening)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.server: ThreadingHTTPServer | None = None

    def listen(self) -> None:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(engine.status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def engine() -> Iterator[Engine]:
    stand_in = Engine()
    try:
        yield stand_in
    finally:
        stand_in.close()


def install_rendered(vm: VmRoot, engine_port: int = 0, **overrides: object) -> list[str]:
    rendered = render(parse(minimal_raw(**overrides), stack="steps"), HostLayout(engine_port=engine_port))
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
            vm.install(f"{STAGES_DIR}/{step}.failed", "2026-11-21T10:00:00Z exit=7\n")
            vm.install(step_log(step), "downloading model...\ncurl: (22) 404 Not Found\n")
        elif step != missing:
            vm.install(f"{STAGES_DIR}/{step}.done", "2026-11-21T10:00:00Z\n")
    vm.install(BOOT_FINISHED, "done\n")


WAIT = "/usr/local/lib/llmdeploy/llmdeploy-wait-ready 30"


def test_runner_marks_each_step_and_pins_a_failure_to_its_step(vm: VmRoot) -> None:
    install_rendered(vm)
    for step in vm.path(STEPS_DIR).iterdir():
        step.unlink()
    vm.install(f"{STEPS_DIR}/10-ok.sh", '#!/bin/bash\n. /usr/local/lib/llmdeploy/lib.sh\nlog "all good"\n', 0o755)
    vm.install(f"{STEPS_DIR}/20-breaks.sh", "#!/bin/bash\necho 'disk on fire' >&2\nexit 3\n", 0o755)
    vm.install(f"{STEPS_DIR}/30-after.sh", "#!/bin/bash\ntrue\n", 0o755)
    first = vm.run("/usr/local/lib/llmdeploy/llmdeploy-provision")
    stages = vm.path(STAGES_DIR)
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
    assert "all good" in vm.path(step_log("10-ok")).read_text()


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
def test_wait_ready_passes_when_every_stage_is_done(vm: VmRoot, engine: Engine, cloud_init_rc: int) -> None:
    steps = install_rendered(vm, engine.port, tlsMode="self-signed")
    engine.listen()
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
    vm.install(f"{STAGES_DIR}/10-base.done", "t\n")
    result = vm.run(fake_cloud_init(vm, 0) + "/usr/local/lib/llmdeploy/llmdeploy-wait-ready 1")
    assert result.returncode == 1 and "timed out after 1s; last stage done: 10-base.done" in result.stderr


def test_wait_ready_leaves_its_deadline_for_the_steps_while_it_waits(vm: VmRoot) -> None:
    """The gate's deadline and PID (what xinference-models.py budgets its launch by), only while it waits."""
    install_rendered(vm)
    gate = vm.path(GATE_DEADLINE)
    result = vm.run(fake_cloud_init(vm, 0) + f"/usr/local/lib/llmdeploy/llmdeploy-wait-ready 3 & pid=$!\n"
                    f"sleep 1; echo \"start=$(date +%s) pid=$pid\"; cat {GATE_DEADLINE}\n"
                    f"wait $pid || true; test -e {GATE_DEADLINE} && echo left-behind || echo removed")
    lines = result.stdout.split()
    start, pid = (int(v.split("=")[1]) for v in lines[:2])
    deadline, owner = int(lines[2]), int(lines[3])
    assert owner == pid and start + 1 <= deadline <= start + 3, result.stdout
    assert lines[-1] == "removed" and not gate.exists()


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


# ---------------------------------------------------------------------------------------------- secrets first

HF_ENV = "/etc/llmdeploy/secrets/hf.env"
TOKEN = "hf_steps0123456789abcdefXYZ"


def test_wait_ready_waits_until_the_engine_answers_its_health_route(vm: VmRoot, engine: Engine) -> None:
    steps = install_rendered(vm, engine.port, engine="llamacpp", tlsMode="letsencrypt", domain="llm.example.org")
    finish_boot(vm, steps)
    health = f"http://127.0.0.1:{engine.port}/health"
    nothing = vm.run(fake_cloud_init(vm, 0) + "/usr/local/lib/llmdeploy/llmdeploy-wait-ready 2")
    assert nothing.returncode == 1
    assert "every stage is done, but the engine (llamacpp" in nothing.stderr and health in nothing.stderr
    assert "last answer: no connection" in nothing.stderr
    engine.status = 503  # llama.cpp while it loads the model
    engine.listen()
    loading = vm.run(fake_cloud_init(vm, 0) + "/usr/local/lib/llmdeploy/llmdeploy-wait-ready 2")
    assert loading.returncode == 1 and "last answer: HTTP 503" in loading.stderr
    # Serving again 3 s later (a restart after a token change): wait-ready waits for it, within its deadline.
    timer = threading.Timer(3.0, lambda: setattr(engine, "status", 200))
    timer.start()
    try:
        start = time.monotonic()
        served = vm.run(fake_cloud_init(vm, 0) + WAIT)
        waited = time.monotonic() - start
    finally:
        timer.cancel()
    assert served.returncode == 0, served.stderr
    assert waited >= 3.0 and f"llamacpp answers {health}" in served.stdout


# Three copies of "ready" used to disagree: the smoke package's wait_until_ready took the ready marker alone,
# `local up`'s progress the ready marker plus every stage marker, wait-ready every stage marker plus a finished
# cloud-init and an answering engine. These show why wait-ready's is the one to keep (the smoke test's own SSH
# checks demand the same: every marker, cloud-init done, the engine active).

def test_a_ready_marker_left_by_an_earlier_run_is_not_ready_when_a_step_failed_since(vm: VmRoot, engine: Engine) -> None:
    """The marker-alone rule said ready here: 90-ready wrote the marker on the first run; a re-run (an
    operator's, or a changed step) then failed at 40-engine. wait-ready reports the failure."""
    steps = install_rendered(vm, engine.port, engine="llamacpp", tlsMode="letsencrypt", domain="llm.example.org")
    engine.listen()
    finish_boot(vm, steps, failed="40-engine")
    vm.install(READY_MARKER, "2026-11-21T09:00:00Z\n")
    result = vm.run(fake_cloud_init(vm, 0) + WAIT)
    assert result.returncode == 1
    assert "provisioning FAILED at stage 40-engine (2026-11-21T10:00:00Z exit=7)" in result.stderr
    assert "curl: (22) 404 Not Found" in result.stderr


def test_every_marker_is_not_ready_while_cloud_init_still_runs(vm: VmRoot, engine: Engine) -> None:
    """The markers-only rule said ready here: every stage marker and the ready marker, but cloud-init's final
    modules have not finished (no boot-finished), and `cloud-init status` would say running. wait-ready
    waits for boot-finished, then returns once the engine answers."""
    steps = install_rendered(vm, engine.port, engine="llamacpp", tlsMode="letsencrypt", domain="llm.example.org")
    engine.listen()
    finish_boot(vm, steps)
    vm.install(READY_MARKER, "2026-11-21T10:00:00Z\n")
    vm.path(BOOT_FINISHED).unlink()
    running = vm.run(fake_cloud_init(vm, 0) + "/usr/local/lib/llmdeploy/llmdeploy-wait-ready 2")
    assert running.returncode == 1 and "timed out after 2s; last stage done: " in running.stderr
    timer = threading.Timer(2.0, lambda: vm.install(BOOT_FINISHED, "done\n"))
    timer.start()
    try:
        finished = vm.run(fake_cloud_init(vm, 0) + WAIT)
    finally:
        timer.cancel()
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith(f"ready: every stage done ({', '.join(steps)})")


def engine_step_needing_the_token(rendered_step: str) -> str:
    """The rendered engine step's first lines (through its wait for hfToken), then what the engine does
    with the token: reads hf.env (vLLM's and Xinference's units do, as EnvironmentFile) and fails without it."""
    lines = rendered_step.splitlines()
    waits = [i for i, line in enumerate(lines) if line.startswith(("wait_for_secret ", "wait_for_hf_token"))]
    head = lines[: (waits[-1] if waits else lines.index(". /usr/local/lib/llmdeploy/lib.sh")) + 1]
    return "\n".join(head + [f"grep -q '^HF_TOKEN=.' {HF_ENV} || {{ log 'no hfToken: the gated download fails'; exit 9; }}",
                             'log "downloading the gated weights with the delivered token"', ""])


def run_with_sbin(vm: VmRoot, sbin: Path, command: str, stdin: bytes, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """`command` in a private mount namespace where the VM's directories and /usr/local/sbin (the
    installer, wait-ready, a fake cloud-init: sudo's secure_path finds them there) come from temp dirs."""
    script = bind_mounts([(vm.path(d), d) for d in VM_DIRS] + [(sbin, "/usr/local/sbin")])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", f"set -e\n{script}{command}"],
                          input=stdin, capture_output=True, timeout=timeout)


def test_the_readiness_gate_delivers_first_so_the_engine_step_gets_its_token(vm: VmRoot, engine: Engine,
                                                                             tmp_path: Path) -> None:
    """The whole order as `pulumi up` runs it: the bootstrap (cloud-init's per-boot script) waits for the bundle
    while the gate logs in; the receiver appears a moment later (write_files); the gate's own command delivers the
    bundle, which the bootstrap checks, unpacks and provisions from; then the secrets: the engine step that waited
    for hfToken goes on, and wait-ready returns once every stage and the engine are up."""
    overrides = {"engine": "vllm", "hfToken": TOKEN, "tlsMode": "self-signed"}
    cfg = parse(minimal_raw(**overrides), stack="steps")
    rendered = render(cfg, HostLayout(engine_port=engine.port))
    files = []
    for f in rendered.bundle_files:  # the real 50-tls: it issues the certificate for the early-delivered IP too
        step = f.path[len(STEPS_DIR) + 1:-3] if f.path.startswith(STEPS_DIR + "/") else ""
        if step == "40-engine":
            f = VmFile(f.path, engine_step_needing_the_token(f.content), f.mode)
        elif step and step != "50-tls":
            f = VmFile(f.path, "#!/bin/bash\ntrue\n", f.mode)
        if f.path == INSTALL_SECRETS:  # the secrets come 3 s after the bundle: the engine step starts first, and waits
            files.append(VmFile(f"{LIBEXEC}/install-secrets-now", f.content, f.mode))
            f = VmFile(f.path, f"#!/bin/bash\nsleep 3\nexec {LIBEXEC}/install-secrets-now\n", f.mode)
        files.append(f)
    packed = bundle.pack(files)
    vm.install(BUNDLE_DIGEST, bundle.digest(packed) + "\n")
    vm.install(BOOTSTRAP, rendered.file(BOOTSTRAP).content, 0o755)
    sbin, staged = tmp_path / "sbin", tmp_path / "staged"
    sbin.mkdir()
    staged.mkdir()
    (sbin / "cloud-init").write_text("#!/bin/sh\necho 'status: done'\n")
    (sbin / "systemctl").write_text("#!/bin/sh\necho \"$*\" >>/var/lib/llmdeploy/systemctl.calls\nexit 3\n")
    (staged / "llmdeploy-receive-bundle").write_text(rendered.file(RECEIVE_BUNDLE).content)
    for f in (*sbin.iterdir(), *staged.iterdir()):
        f.chmod(0o755)
    engine.listen()
    stdin = bundle.payload(packed, secrets_bundle(cfg, {"default": generate_api_key()}, "203.0.113.9"))
    command = (f"(sleep 3; cp {staged}/llmdeploy-receive-bundle /usr/local/sbin/) & "
               f"({BOOTSTRAP} >/var/log/llmdeploy/provision.out 2>&1; "
               "mkdir -p /var/lib/cloud/instance; touch /var/lib/cloud/instance/boot-finished) & "
               f"bash -c {shlex.quote(readiness_script(60))}; rc=$?; wait; exit $rc")
    result = run_with_sbin(vm, sbin, command, stdin)
    out, err = result.stdout.decode(), result.stderr.decode()
    engine_log = vm.path(step_log("40-engine")).read_text()
    assert result.returncode == 0, err + engine_log
    assert out.index(f"bundle {bundle.digest(packed)} kept") < out.index(f"installed {HF_ENV}")
    assert out.index(f"installed {HF_ENV}") < out.index("ready: every stage done")
    assert vm.path(f"{STAGES_DIR}/{BUNDLE_STAGE}.done").exists()
    assert "waiting up to 3600s for hfToken" in engine_log  # the step did start before the token came
    assert "downloading the gated weights with the delivered token" in engine_log
    assert "restart" not in vm.path("/var/lib/llmdeploy/systemctl.calls").read_text()  # a first token restarts nothing
    assert "step 50-tls will issue the self-signed certificate for IP:203.0.113.9 too" in out
    leaf = vm.path("/etc/llmdeploy/tls/self-signed/cert.pem")
    assert "IP Address:203.0.113.9" in openssl("x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName")
    assert TOKEN not in out + err + engine_log
    assert vm.path(HF_ENV).stat().st_mode & 0o077 == 0


def test_an_undelivered_token_fails_the_engine_stage_saying_why(vm: VmRoot, engine: Engine) -> None:
    steps = install_rendered(vm, engine.port, engine="vllm", hfToken=TOKEN)
    for step in vm.path(STEPS_DIR).iterdir():
        step.unlink()
    # The rendered step waits readinessTimeoutMinutes; the same helper with a 2 s deadline.
    vm.install(f"{STEPS_DIR}/40-engine.sh", f"#!/bin/bash\n. {LIB}\nwait_for_secret {HF_ENV} hfToken 2\n", 0o755)
    run = vm.run("/usr/local/lib/llmdeploy/llmdeploy-provision")
    assert run.returncode == 1
    assert vm.path(f"{STAGES_DIR}/40-engine.failed").is_file()
    vm.install(BOOT_FINISHED, "done\n")
    gate = vm.run(fake_cloud_init(vm, 1) + WAIT)
    assert gate.returncode == 1 and "FAILED at stage 40-engine" in gate.stderr
    assert "hfToken was not delivered within 2 s: pulumi up (or llmdeploy local up) delivers it over SSH" in gate.stderr
    assert "once sshd answers" in gate.stderr and steps


def fake_systemctl(vm: VmRoot, active: bool) -> str:
    """systemctl cannot run here: records its calls; `is-active` answers as told."""
    vm.install("/usr/local/lib/llmdeploy/fakebin/systemctl",
               "#!/bin/sh\necho \"$*\" >>/var/lib/llmdeploy/systemctl.calls\n"
               f"case \"$1\" in is-active) exit {0 if active else 3} ;; esac\nexit 0\n", 0o755)
    return "PATH=/usr/local/lib/llmdeploy/fakebin:$PATH "


def deliver(vm: VmRoot, bundle: bytes, env: str) -> subprocess.CompletedProcess[bytes]:
    return run_with_sbin(vm, vm.path("/usr/local/lib/llmdeploy"), env + "/usr/local/sbin/llmdeploy-install-secrets",
                         bundle)


@pytest.mark.parametrize("engine_name,restarts", [("vllm", True), ("xinference", True), ("llamacpp", False)])
def test_only_a_changed_token_restarts_a_running_engine(vm: VmRoot, engine_name: str, restarts: bool) -> None:
    raw = minimal_raw(engine=engine_name, hfToken=TOKEN)
    install_rendered(vm, engine=engine_name, hfToken=TOKEN)
    calls = vm.path("/var/lib/llmdeploy/systemctl.calls")
    key = generate_api_key()
    first = deliver(vm, secrets_bundle(parse(raw), {"default": key}), fake_systemctl(vm, active=False))
    assert first.returncode == 0, first.stderr
    assert f"installed {HF_ENV}".encode() in first.stdout
    assert "restart" not in (calls.read_text() if calls.exists() else "")  # the engine has not started yet
    again = deliver(vm, secrets_bundle(parse(raw), {"default": key}), fake_systemctl(vm, active=True))
    assert again.returncode == 0 and b"installed" not in again.stdout
    assert "restart" not in (calls.read_text() if calls.exists() else "")
    rotated = deliver(vm, secrets_bundle(parse({**raw, "hfToken": TOKEN + "new"}), {"default": key}),
                      fake_systemctl(vm, active=True))
    assert rotated.returncode == 0, rotated.stderr
    assert (f"try-restart {engine_name}" in calls.read_text()) == restarts


def test_install_file_stops_the_step_when_the_copy_fails(tmp_path: Path) -> None:
    """Called as `if install_file` or `install_file && ...`, bash runs it with set -e off: a failed copy must
    not go on to say "wrote" and report a change."""
    lib = tmp_path / "lib.sh"
    lib.write_text(render(parse(minimal_raw(), stack="steps")).file(LIB).content)
    src = tmp_path / "src"
    src.write_text("new\n")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    script = (f". {lib}; if install_file {src} {blocker}/dest 0644; then echo changed; fi; echo went-on")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "LLMDEPLOY_TEST": "1"})
    assert result.returncode != 0
    assert "changed" not in result.stdout and "went-on" not in result.stdout
    assert "could not write" in result.stdout
