"""hfToken through the local target, without a VM: the host-side model server refuses downloads without the
stack's bearer token (as Hugging Face does for a gated repository), and the rendered lib.sh `download` that
the llama.cpp step calls sends it, run for real against that server, with the token on no command line.
Also how `llmdeploy local up` wires it (hfEndpoint is the model server), and the early host-key check."""
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy.local import hostsrv, procs
from llmdeploy.local.localconfig import local_config
from llmdeploy.local.ssh import console_host_fingerprints
from llmdeploy.sshclient import CommandResult, host_key_fingerprint
from llmdeploy.render import render
from support.delivery import bundle_files, secrets_tar, split_payload
from support.project import ROOT, SSH_KEY

TOKEN = "hf_LocalGate0123456789abcdefgh"
MODEL = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[hostsrv.ModelServer]:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "m.gguf").write_bytes(MODEL)
    server = hostsrv.start_model_server(folder, tmp_path / "model-server.log", token=TOKEN)
    try:
        yield server
    finally:
        procs.stop_process(server.pid, str(folder))


def lib_sh(tmp_path: Path) -> Path:
    cfg = local_config(ROOT, "local", ssh_public_key=SSH_KEY, model_url="http://10.0.2.2:1/m.gguf",
                       extra_ca_certs=[])
    path = tmp_path / "lib.sh"
    path.write_text(render(cfg).file("/usr/local/lib/llmdeploy/lib.sh").content)
    return path


def curl_status(url: str, *args: str) -> str:
    return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args, url],
                          capture_output=True, text=True, timeout=30).stdout


def test_the_model_server_refuses_downloads_without_the_right_bearer_token(model_server: hostsrv.ModelServer,
                                                                           tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{model_server.port}/m.gguf"
    assert curl_status(url) == "401"
    wrong = tmp_path / "wrong-header"
    wrong.write_text("Authorization: Bearer hf_not-the-token\n")
    assert curl_status(url, "-H", f"@{wrong}") == "401"
    headers = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", url], capture_output=True, text=True,
                             timeout=30).stdout
    assert "X-Error-Code: GatedRepo" in headers  # as Hugging Face answers for a gated repository
    log = (tmp_path / "model-server.log").read_text()
    assert "refused /m.gguf: no bearer token" in log and "refused /m.gguf: wrong bearer token" in log
    assert TOKEN not in log and TOKEN not in procs.cmdline(model_server.pid)
    assert model_server.guest_endpoint == f"http://10.0.2.2:{model_server.port}"


def test_the_rendered_download_sends_the_token_from_hf_env_and_never_on_a_command_line(
        model_server: hostsrv.ModelServer, tmp_path: Path) -> None:
    hf_env = tmp_path / "hf.env"
    hf_env.write_text(f"HF_TOKEN={TOKEN}\nHUGGING_FACE_HUB_TOKEN={TOKEN}\n")
    hf_env.chmod(0o600)
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "curl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>{tmp_path}/curl.argv\nexec /usr/bin/curl "$@"\n')
    (fakebin / "curl").chmod(0o755)
    url, dest = f"http://127.0.0.1:{model_server.port}/m.gguf", tmp_path / "models" / "m.gguf"
    dest.parent.mkdir()
    result = subprocess.run(["bash", "-c", f'. {lib_sh(tmp_path)}; download "$1" "$2" "$3"', "_", url, str(dest),
                             str(hf_env)], capture_output=True, text=True, timeout=60,
                            env={"PATH": f"{fakebin}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == MODEL and not dest.with_name("m.gguf.part").exists()
    argv = (tmp_path / "curl.argv").read_text()
    assert TOKEN not in argv + result.stdout + result.stderr
    header_file = argv.split("-H @", 1)[1].split()[0]
    assert not Path(header_file).exists()  # the header file is removed after the download
    assert "authorized /m.gguf (bearer token)" in (tmp_path / "model-server.log").read_text()


def test_a_download_without_the_token_fails_and_leaves_no_model_file(model_server: hostsrv.ModelServer,
                                                                     tmp_path: Path) -> None:
    dest = tmp_path / "m.gguf"
    script = f'. {lib_sh(tmp_path)}; retry() {{ shift; "$@"; }}; download "$1" "$2"'  # one try, no 5 s pauses
    result = subprocess.run(["bash", "-c", script, "_", f"http://127.0.0.1:{model_server.port}/m.gguf", str(dest)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 22 and "401" in result.stderr
    assert not dest.exists()


@pytest.mark.parametrize("stamp", ["[   55.{n:06d}] ", ""], ids=["vm-console", "container-console"])
def test_the_host_key_is_confirmed_by_the_fingerprint_cloud_init_prints_as_it_generates_it(tmp_path: Path,
                                                                                          stamp: str) -> None:
    """cloud-init's ssh module (init stage, before any step) prints ssh-keygen's output on the console: the
    VM's serial console puts a timestamp before the unit's name, a systemd container's console may not."""
    keys = []
    console = "[  OK  ] Started cloud-init.service\r\n"
    for kind in ("ed25519", "ecdsa"):
        key = tmp_path / kind
        out = subprocess.run(["ssh-keygen", "-t", kind, "-N", "", "-f", str(key)], capture_output=True, text=True,
                             check=True).stdout
        # As the console shows it: each line of cloud-init's output behind its name (and a timestamp).
        console += "".join(f"{stamp.format(n=n)}cloud-init[408]: {line}\r\n" for n, line in enumerate(out.splitlines()))
        keys.append(" ".join(key.with_suffix(".pub").read_text().split()[:2]))
    serial = tmp_path / "serial.log"
    serial.write_text(console)
    printed = console_host_fingerprints(serial)
    assert {host_key_fingerprint(k) for k in keys} == printed
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    assert host_key_fingerprint(" ".join(other.with_suffix(".pub").read_text().split()[:2])) not in printed


STACK_FILE = """\
config:
  llmdeploy:target: local
  llmdeploy:os: debian-12
  llmdeploy:engine: llamacpp
  llmdeploy:llamacppModelUrl: http://10.0.2.2/m.gguf
  llmdeploy:modelName: m
  llmdeploy:tlsMode: self-signed
  llmdeploy:apiKeys:
    - default
"""


class FakeSession:
    """The VM's SSH side: records what `up` runs, in order."""

    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTheOrderTest0000000000000"

    def __init__(self, events: list[tuple[str, bytes | None]]) -> None:
        self.events = events

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 120) -> CommandResult:
        if "llmdeploy-receive-bundle" in command and "llmdeploy-install-secrets" in command:
            self.events.append(("deliver", stdin))
        elif "stages" in command and ("poll stages", None) not in self.events:
            self.events.append(("poll stages", None))
        return CommandResult(command, 0, "", "", 0.0)

    def start(self, command: str) -> object:
        from types import SimpleNamespace
        assert "llmdeploy-wait-ready" in command
        self.events.append(("wait-ready", None))
        return SimpleNamespace(poll=lambda: 0, output=lambda: ("ready\n", ""))

    def close(self) -> None:
        pass


def test_local_up_delivers_the_secrets_once_the_host_key_is_confirmed_then_follows_provisioning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_up` for real up to QEMU (the model server runs, with the token; user-data and seed are written); the
    VM's side is a recording session. The bundle goes before wait-ready (and the stage display it drives)."""
    import hashlib
    import io
    import shutil
    from types import SimpleNamespace

    from llmdeploy.local import lifecycle, qemu, runtime
    from llmdeploy.local.localconfig import ModelSource
    from llmdeploy.local.state import new_state

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    (project / "Pulumi.t.yaml").write_text(STACK_FILE)
    monkeypatch.setenv("LLMDEPLOY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LLMDEPLOY_HF_TOKEN", TOKEN)
    monkeypatch.delenv("LLMDEPLOY_LOCAL_API_KEYS", raising=False)
    events: list[tuple[str, bytes | None]] = []

    def launch(self: object, state: object, *args: object) -> None:  # QEMU itself is not started
        state.timeline["qemu_started"] = 0.0  # type: ignore[attr-defined]

    monkeypatch.setattr(runtime.QemuRuntime, "_launch", launch)
    monkeypatch.setattr(lifecycle, "first_login", lambda *a: FakeSession(events))
    monkeypatch.setattr(lifecycle, "confirm_host_key", lambda *a: events.append(("host key", None)))
    monkeypatch.setattr(runtime.QemuRuntime, "gone", lambda self, state: None)
    monkeypatch.setattr(lifecycle, "login", lambda state: FakeSession(events))
    monkeypatch.setattr(lifecycle, "wait_for_credentials", lambda *a, **k: None)
    monkeypatch.setattr(lifecycle.checks, "run_smoke", lambda *a, **k: SimpleNamespace(passed=True))
    monkeypatch.setattr(lifecycle.qemu, "choose_accel", lambda *a: qemu.Accel("tcg", "test"))
    opts = lifecycle.UpOptions(stack="t", project_dir=project)
    values = lifecycle.stack_values(opts)
    cfg0 = lifecycle.check_stack(opts, values)
    weights = tmp_path / "m.gguf"
    weights.write_bytes(MODEL)
    img = SimpleNamespace(kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd", disk=tmp_path / "disk.qcow2")
    state = new_state("t")
    try:
        lifecycle._up(lifecycle.UpRun(opts, values, cfg0, ModelSource("m.gguf", weights, cfg0.model.url), [],
                                      img, runtime.QemuRuntime(), state, lifecycle.Clock(),  # type: ignore[arg-type]
                                      io.StringIO()))
    finally:
        procs.stop_process(state.pids.get("model_server"), state.markers.get("model_server", "\0"))
    assert [name for name, _ in events] == ["host key", "deliver", "wait-ready", "poll stages"]
    steps = [name for name, _ in lifecycle.UP_STEPS]
    assert [e for e in state.timeline if e.endswith(":done") and e.split(":")[0] in steps] == [f"{s}:done" for s in steps]
    stdin = (events[1][1] or b"").decode()
    with secrets_tar(stdin) as secrets:  # the bundle's line first, then the secrets' archive
        assert f"HF_TOKEN={TOKEN}" in secrets.extractfile("hf.env").read().decode()  # type: ignore[union-attr]
    log = (state.dir / "model-server.log").read_text()
    port = log.split("127.0.0.1:", 1)[1].split(",", 1)[0]
    assert "bearer token required" in log
    user_data = (state.dir / "user-data").read_text()
    steps = "".join(bundle_files(stdin).values())
    assert f'download http://10.0.2.2:{port}/m.gguf "$model_file" /etc/llmdeploy/secrets/hf.env' in steps
    assert hashlib.sha256(split_payload(stdin)[0]).hexdigest() in user_data
    assert TOKEN not in user_data and TOKEN not in steps
