"""The GPU parts of provisioning, run for real where they can be (no GPU here): the driver step 25-nvidia, vLLM's
CUDA pre-start check and log diagnosis, and Ollama's GPU check, each with stand-ins for nvidia-smi, modprobe, apt
and docker first on PATH (as tests/integration/test_provision_steps.py does for cloud-init); the rest on the rendered text:
step order, the unattended-upgrades blacklist (parsed by the real apt-config), and no systemd reload once the
engine's GPU container runs."""
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from llmdeploy.config import parse
from llmdeploy.render import FILES_DIR, STEPS_DIR, Rendered, render
from llmdeploy.topology import WORKER, node
from support.gpu_stack import LIBEXEC, rendered
from support.ollama_stub import ollama_stub
from support.project import minimal_raw
from support.vmroot import VmRoot, vm_root

FAKEBIN = "/usr/local/lib/llmdeploy/fakebin"

PATH = f"PATH={FAKEBIN}:$PATH "


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmRoot]:
    with vm_root(tmp_path / "vm") as root:
        yield root


def install(vm: VmRoot, r: Rendered) -> None:
    for f in r.files:
        if f.path.startswith(("/usr/local/lib/llmdeploy", "/usr/local/share/llmdeploy", "/etc/llmdeploy")):
            vm.install(f.path, f.content, int(f.mode, 8))


def fake(vm: VmRoot, name: str, script: str) -> None:
    vm.install(f"{FAKEBIN}/{name}", "#!/bin/bash\n" + script, 0o755)


def test_the_driver_packages_are_kept_out_of_unattended_upgrades(tmp_path: Path) -> None:
    r = rendered(engine="ollama")
    conf = tmp_path / "52llmdeploy-nvidia"
    conf.write_text(r.file(f"{FILES_DIR}/nvidia-unattended-upgrades").content)
    dump = subprocess.run(["apt-config", "-c", str(conf), "dump", "Unattended-Upgrade::Package-Blacklist"],
                          capture_output=True, text=True, check=True).stdout  # the real apt parses it
    listed = re.findall(r'Package-Blacklist:: "([^"]+)"', dump)
    for package in ("nvidia-utils-580-server", "libnvidia-compute-580-server", "nvidia-kernel-common-580-server",
                    "linux-modules-nvidia-580-server-6.8.0-1030-oracle", "linux-image-6.8.0-1030-oracle"):
        assert any(re.match(p, package) for p in listed), package  # unattended-upgrades uses re.match
    assert not any(re.match(p, "openssl") or re.match(p, "nginx") for p in listed)
    assert "/etc/apt/apt.conf.d/52llmdeploy-nvidia" in r.file(f"{STEPS_DIR}/25-nvidia.sh").content


# ---- 25-nvidia, run for real -------------------------------------------------------------------------------------

def driver_fakes(vm: VmRoot, modprobe_ok: bool = True, preinstalled: str = "") -> None:
    """nvidia-smi answers once the module is loaded (modprobe succeeded) or when an image driver is preinstalled;
    apt-get records what it installs; dpkg-query says nothing is installed yet."""
    state = "/var/lib/llmdeploy/fake"
    vm.install(f"{state}/.keep", "")
    if preinstalled:
        vm.install(f"{state}/loaded", preinstalled)
    fake(vm, "nvidia-smi", f"""[ -f {state}/loaded ] || {{ echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." ; exit 9; }}
case "$*" in
  *driver_version*csv,noheader*) cat {state}/loaded ;;
  *) echo "index, name, driver_version, memory.total [MiB]"; echo "0, NVIDIA A10, $(cat {state}/loaded), 23028 MiB" ;;
esac
""")
    fake(vm, "modprobe", f"""echo "modprobe $*" >>{state}/calls
{'[ "$1" = nvidia ] && echo 580.95.05 >' + state + '/loaded; exit 0' if modprobe_ok else
 'echo "modprobe: ERROR: could not insert nvidia: Key was rejected by service" >&2; exit 1'}
""")
    fake(vm, "apt-get", f'echo "apt-get $*" >>{state}/calls\n')
    fake(vm, "dpkg-query", "exit 1\n")
    fake(vm, "dmesg", "echo '[  5.1] nvidia: module verification failed'\n")


def run_driver_step(vm: VmRoot, tmp_path: Path, **overrides: object) -> subprocess.CompletedProcess[str]:
    install(vm, rendered(engine="ollama", **overrides))
    # The step writes under /etc: give it private copies of those folders inside the mount namespace.
    etc = {d: tmp_path / d.strip("/").replace("/", "_") for d in ("/etc/apt/apt.conf.d", "/etc/modules-load.d")}
    for d in etc.values():
        d.mkdir()
    mounts = " && ".join(f"mount --bind {local} {d}" for d, local in etc.items())
    # ... and a private /tmp (last: the folders above live under the real one).
    result = vm.run(f"{mounts} && mount -t tmpfs tmpfs /tmp && {PATH} bash {STEPS_DIR}/25-nvidia.sh")
    result.etc = etc  # type: ignore[attr-defined]
    return result


def test_the_driver_step_installs_the_prebuilt_modules_for_the_running_kernel(vm: VmRoot, tmp_path: Path) -> None:
    driver_fakes(vm)
    result = run_driver_step(vm, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    kernel = os.uname().release
    calls = vm.path("/var/lib/llmdeploy/fake/calls").read_text()
    assert (f"install -y -q --no-install-recommends linux-modules-nvidia-580-server-{kernel} "
            "nvidia-headless-no-dkms-580-server nvidia-utils-580-server") in calls
    assert "modprobe nvidia\nmodprobe nvidia-uvm" in calls
    assert "NVIDIA A10, 580.95.05" in result.stdout
    etc = result.etc  # type: ignore[attr-defined]
    assert "nvidia-" in (etc["/etc/apt/apt.conf.d"] / "52llmdeploy-nvidia").read_text()
    assert (etc["/etc/modules-load.d"] / "llmdeploy-nvidia.conf").read_text() == "nvidia\nnvidia-uvm\n"


def test_a_driver_that_does_not_load_fails_the_stage_saying_what_to_do(vm: VmRoot, tmp_path: Path) -> None:
    driver_fakes(vm, modprobe_ok=False)
    result = run_driver_step(vm, tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert f"NVIDIA driver branch 580 is not working on kernel {os.uname().release}" in out
    assert "Key was rejected by service" in out and "module verification failed" in out
    assert "pulumi config set nvidiaDriverBranch" in out and "imageId" in out


def test_an_image_with_another_driver_branch_is_refused_by_name(vm: VmRoot, tmp_path: Path) -> None:
    driver_fakes(vm, preinstalled="570.133.20")
    result = run_driver_step(vm, tmp_path)
    assert result.returncode == 1
    assert "the image already runs driver branch 570; set nvidiaDriverBranch 570" in result.stdout
    assert not vm.path("/var/lib/llmdeploy/fake/calls").exists()  # nothing installed over it


def test_a_loaded_driver_of_the_branch_is_left_alone_on_a_re_run(vm: VmRoot, tmp_path: Path) -> None:
    driver_fakes(vm, preinstalled="580.95.05")
    result = run_driver_step(vm, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not vm.path("/var/lib/llmdeploy/fake/calls").exists()


# ---- 25-nvidia on NVSwitch shapes: Fabric Manager, and a check that fails while the fabric is down ---------------

# `nvidia-smi -q` as a driver of branch 580 prints it (abridged to two GPUs and the lines around the Fabric section;
# the section's layout as in NVIDIA/k8s-dra-driver-gpu#626 and Azure/azhpc-images#506). STATE and STATUS are
# filled in per case: Hopper reports Not Started, In Progress, Completed; Ampere (A100) says N/A.
NVSMI_Q = """
==============NVSMI LOG==============

Timestamp                                 : Sun Dec  6 23:40:00 2026
Driver Version                            : 580.95.05
CUDA Version                              : 13.0

Attached GPUs                             : 2
GPU 00000000:19:00.0
    Product Name                          : {product}
    Product Brand                         : NVIDIA
    Persistence Mode                      : Enabled
    Fabric
        State                             : {state}
        Status                            : {status}
        CliqueId                          : 0
        ClusterUUID                       : 00000000-0000-0000-0000-000000000000
        Health
            Bandwidth                     : Full
    Processes                             : None

GPU 00000000:3B:00.0
    Product Name                          : {product}
    Product Brand                         : NVIDIA
    Persistence Mode                      : Enabled
    Fabric
        State                             : {state}
        Status                            : {status}
        CliqueId                          : 0
        ClusterUUID                       : 00000000-0000-0000-0000-000000000000
        Health
            Bandwidth                     : Full
    Processes                             : None
"""

# A stand-in for the driver's libcuda.so.1: cuInit returns the number in the fake state's cuinit file (802 is
# CUDA_ERROR_SYSTEM_NOT_READY, what CUDA says on an NVSwitch system without Fabric Manager).
FAKE_LIBCUDA = r"""
#include <stdio.h>
static int code(void) {
  int c = 0;
  FILE *f = fopen("/var/lib/llmdeploy/fake/cuinit", "r");
  if (f) { if (fscanf(f, "%d", &c) != 1) c = 0; fclose(f); }
  return c;
}
int cuInit(unsigned int flags) { (void)flags; return code(); }
int cuDeviceGetCount(int *n) { *n = 8; return 0; }
int cuGetErrorName(int e, const char **s) {
  *s = e == 802 ? "CUDA_ERROR_SYSTEM_NOT_READY" : "CUDA_ERROR_UNKNOWN";
  return 0;
}
"""
FAKELIB = "/usr/local/lib/llmdeploy/fakelib"
STATE = "/var/lib/llmdeploy/fake"


def fabric_fakes(vm: VmRoot, tmp_path: Path, states: list[tuple[str, str]], cuinit: int = 0,
                 product: str = "NVIDIA H100 80GB HBM3", fm_starts: bool = True) -> None:
    """A loaded branch 580 driver whose `nvidia-smi -q` shows states[i] (fabric state, status) at its i-th call
    (the last one from then on); apt-get and systemctl record their calls."""
    vm.install(f"{STATE}/loaded", "580.95.05")
    vm.install(f"{STATE}/cuinit", str(cuinit))
    for i, (state, status) in enumerate(states):
        vm.install(f"{STATE}/q{i}", NVSMI_Q.format(product=product, state=state, status=status))
    fake(vm, "nvidia-smi", f"""case "$*" in
  *driver_version*csv,noheader*) cat {STATE}/loaded ;;
  -q) n=$(cat {STATE}/q-calls 2>/dev/null || echo 0); echo $((n + 1)) >{STATE}/q-calls
      [ -f {STATE}/q$n ] || n={len(states) - 1}; cat {STATE}/q$n ;;
  *) echo "index, name, driver_version, memory.total [MiB]"; echo "0, {product}, 580.95.05, 81559 MiB" ;;
esac
""")
    fake(vm, "apt-get", f'echo "apt-get $*" >>{STATE}/calls\n')
    fake(vm, "dpkg-query", "exit 1\n")
    fake(vm, "systemctl", f'echo "systemctl $*" >>{STATE}/calls\n'
         + ('[ "$1" = is-active ] && echo active\nexit 0\n' if fm_starts else
            '[ "$1" = enable ] && { echo "Job for nvidia-fabricmanager.service failed" >&2; exit 1; }\nexit 0\n'))
    source = tmp_path / "libcuda.c"
    source.write_text(FAKE_LIBCUDA)
    library = vm.path(f"{FAKELIB}/libcuda.so.1")
    library.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)


def run_fabric_step(vm: VmRoot, tmp_path: Path, shape: str, wait_s: int = 0) -> subprocess.CompletedProcess[str]:
    install(vm, rendered(engine="ollama", shape=shape))
    etc = {d: tmp_path / d.strip("/").replace("/", "_") for d in ("/etc/apt/apt.conf.d", "/etc/modules-load.d")}
    for d in etc.values():
        d.mkdir()
    mounts = " && ".join(f"mount --bind {local} {d}" for d, local in etc.items())
    return vm.run(f"{mounts} && mount -t tmpfs tmpfs /tmp && LD_LIBRARY_PATH={FAKELIB} "
                  f"LLMDEPLOY_FABRIC_WAIT_S={wait_s} {PATH} bash {STEPS_DIR}/25-nvidia.sh")


def test_an_nvswitch_shape_gets_fabric_manager_and_waits_for_the_fabric(vm: VmRoot, tmp_path: Path) -> None:
    fabric_fakes(vm, tmp_path, [("In Progress", "N/A"), ("Completed", "Success")])
    result = run_fabric_step(vm, tmp_path, "BM.GPU.H100.8", wait_s=60)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = vm.path(f"{STATE}/calls").read_text()
    assert "install -y -q --no-install-recommends nvidia-fabricmanager-580 libnvidia-nscq-580" in calls
    assert "systemctl enable --no-reload --now nvidia-fabricmanager" in calls
    assert vm.path(f"{STATE}/q-calls").read_text().strip() == "2"  # it waited out In Progress
    assert "NVLink fabric up" in result.stdout


@pytest.mark.parametrize(("shape", "states", "cuinit", "said"), [
    ("BM.GPU.H100.8", [("In Progress", "N/A")], 0,
     "nvidia-smi -q says the fabric is not ready: GPU 00000000:19:00.0: In Progress, N/A"),
    ("BM.GPU.H100.8", [("Not Started", "N/A")], 0,
     "nvidia-smi -q says the fabric is not ready: GPU 00000000:19:00.0: Not Started, N/A"),
    # A100s report no fabric state: the CUDA device query fails as vLLM would.
    ("BM.GPU.A100-v2.8", [("N/A", "N/A")], 802,
     "a CUDA device query fails: CUDA error 802 (CUDA_ERROR_SYSTEM_NOT_READY)"),
])
def test_the_driver_step_fails_while_the_fabric_is_down(vm: VmRoot, tmp_path: Path, shape: str,
                                                       states: list[tuple[str, str]], cuinit: int, said: str) -> None:
    fabric_fakes(vm, tmp_path, states, cuinit=cuinit)
    result = run_fabric_step(vm, tmp_path, shape)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: the NVLink fabric of this NVSwitch shape is not up (driver branch 580): " + said in result.stdout
    assert "journalctl -u nvidia-fabricmanager" in result.stdout


def test_a_fabric_that_completed_with_an_error_fails_without_waiting(vm: VmRoot, tmp_path: Path) -> None:
    fabric_fakes(vm, tmp_path, [("Completed", "Insufficient Resources")])
    result = run_fabric_step(vm, tmp_path, "BM.GPU.H100.8", wait_s=600)  # no wait helps: it fails at once
    assert result.returncode == 1
    assert "fabric registration failed: GPU 00000000:19:00.0: Completed, Insufficient Resources" in result.stdout


def test_an_a100_whose_cuda_initialises_passes(vm: VmRoot, tmp_path: Path) -> None:
    fabric_fakes(vm, tmp_path, [("N/A", "N/A")], product="NVIDIA A100-SXM4-80GB")
    result = run_fabric_step(vm, tmp_path, "BM.GPU.A100-v2.8")
    assert result.returncode == 0, result.stdout + result.stderr


def test_fabric_manager_that_does_not_start_fails_the_step(vm: VmRoot, tmp_path: Path) -> None:
    fabric_fakes(vm, tmp_path, [("Completed", "Success")], fm_starts=False)
    result = run_fabric_step(vm, tmp_path, "BM.GPU.H100.8")
    assert result.returncode == 1
    assert "nvidia-fabricmanager did not start: Job for nvidia-fabricmanager.service failed" in result.stdout


@pytest.mark.parametrize(("raw", "nvswitch"), [
    ({"shape": "BM.GPU.A100-v2.8"}, True), ({"shape": "BM.GPU4.8"}, True), ({"shape": "BM.GPU.H100.8"}, True),
    ({"shape": "VM.GPU.A10.2"}, False), ({"shape": "BM.GPU.L40S.4"}, False),
])
def test_only_nvswitch_shapes_install_fabric_manager(raw: dict[str, object], nvswitch: bool) -> None:
    # On a shape without NVSwitch Fabric Manager refuses to start (NVIDIA/gpu-operator#610: NV_WARN_NOTHING_TO_DO).
    step = rendered(engine="ollama", **raw).file(f"{STEPS_DIR}/25-nvidia.sh").content
    assert ("nvidia-fabricmanager-$branch" in step) == nvswitch


def test_a_ray_worker_gets_fabric_manager_by_its_own_shape() -> None:
    cfg = parse(minimal_raw(target="ray", engine="vllm", shape="VM.GPU.A10.2", rayWorkers=1,
                            rayWorkerShape="BM.GPU.H100.8", rayTensorParallel=2), stack="gpu")
    assert "nvidia-fabricmanager-$branch" not in render(cfg).file(f"{STEPS_DIR}/25-nvidia.sh").content
    worker = render(cfg, node=node(cfg, WORKER, 0))
    assert "nvidia-fabricmanager-$branch" in worker.file(f"{STEPS_DIR}/25-nvidia.sh").content


# ---- vLLM: the image's CUDA against the driver's, and vLLM's own refusals ------------------------------------------

def cuda_fakes(vm: VmRoot, driver: str, driver_cuda: str, image_env: str) -> None:
    fake(vm, "nvidia-smi", f"""case "$*" in
  *driver_version*) echo {driver} ;;
  *) echo "| NVIDIA-SMI {driver}     Driver Version: {driver}     CUDA Version: {driver_cuda}     |" ;;
esac
""")
    # docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' IMAGE prints one variable a line.
    fake(vm, "docker", f"""[ "$1 $2" = "image inspect" ] || exit 2
printf '%s\\n' 'PATH=/usr/local/nvidia/bin:/usr/bin' 'NVIDIA_REQUIRE_CUDA=cuda>=13.0' '{image_env}'
""")


def cuda_check(vm: VmRoot, **fakes: str) -> subprocess.CompletedProcess[str]:
    install(vm, rendered(engine="vllm", shape="VM.GPU.A10.1", tlsMode="self-signed"))
    cuda_fakes(vm, **fakes)
    return vm.run(f"{PATH} {LIBEXEC}/vllm-cuda-check docker.io/vllm/vllm-openai:v0.33.0")


def test_the_cuda_check_passes_a_driver_that_supports_the_image(vm: VmRoot) -> None:
    result = cuda_check(vm, driver="580.95.05", driver_cuda="13.0", image_env="CUDA_VERSION=13.0.1")
    assert result.returncode == 0, result.stderr
    assert "needs CUDA 13.0; driver 580.95.05 supports up to 13.0" in result.stdout


def test_the_cuda_check_refuses_an_older_driver_naming_both(vm: VmRoot) -> None:
    result = cuda_check(vm, driver="570.133.20", driver_cuda="12.8", image_env="CUDA_VERSION=13.0.1")
    assert result.returncode == 1
    assert ("docker.io/vllm/vllm-openai:v0.33.0 is built for CUDA 13.0, but NVIDIA driver 570.133.20 supports CUDA "
            "up to 12.8") in result.stderr
    assert "needs driver 580.65.06 or newer" in result.stderr and "nvidiaDriverBranch" in result.stderr


def test_the_cuda_check_says_when_it_cannot_judge(vm: VmRoot) -> None:
    result = cuda_check(vm, driver="580.95.05", driver_cuda="13.0", image_env="LANG=C.UTF-8")
    assert result.returncode == 0 and "cannot compare" in result.stdout


VLLM_LOGS = {  # vLLM's messages as it prints them
    "context": ("(APIServer pid=53)   Value error, User-specified max_model_len (65536) is greater than the derived "
                "max_model_len (max_position_embeddings=32768.0 or model_max_length=None in model's config.json). To "
                "allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.",
                "pulumi config set vllmMaxModelLen 32768"),
    "kv": ("ERROR 07-11 06:23:05 [core.py:390] ValueError: To serve at least one request with the models's max seq len "
           "(118000), (6.30 GiB KV cache is needed, which is larger than the available KV cache memory (6.11 GiB). "
           "Based on the available memory, the estimated maximum model length is 114432. Try increasing "
           "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
           "pulumi config set vllmMaxModelLen 114432"),
    "heads": ("ValueError: Total number of attention heads (28) must be divisible by tensor parallel size (8).",
              "pulumi config set vllmTensorParallelSize"),
}


@pytest.mark.parametrize("case", VLLM_LOGS)
def test_vllms_refusals_are_named_with_the_fix(vm: VmRoot, case: str) -> None:
    install(vm, rendered(engine="vllm", tlsMode="self-signed"))
    line, fix = VLLM_LOGS[case]
    log = f"INFO loading weights\n{line}\nINFO shutting down\n" * 3
    result = vm.run(f"{LIBEXEC}/vllm-log-cause <<'EOF'\n{log}EOF")
    assert result.returncode == 0 and result.stdout.startswith("vLLM refuses to start: ") and fix in result.stdout


def test_an_ordinary_vllm_log_names_no_cause(vm: VmRoot) -> None:
    install(vm, rendered(engine="vllm", tlsMode="self-signed"))
    assert vm.run(f"{LIBEXEC}/vllm-log-cause <<'EOF'\nINFO Loading weights took 31.2 seconds\nEOF").returncode == 1


@pytest.mark.parametrize(("vram", "rc", "said"), [
    (1.0, 0, "llama3.1:8b runs on the GPU (100%"),
    (0.5, 0, "WARN: only 50% of llama3.1:8b is in GPU memory"),
    (0.0, 1, "FAILED: Ollama runs llama3.1:8b on the CPU (size_vram 0 of 6654289920 bytes in /api/ps)"),
])
def test_ollama_gpu_check_reads_size_vram_from_api_ps(vm: VmRoot, vram: float, rc: int, said: str) -> None:
    r = rendered(engine="ollama")
    install(vm, r)
    assert f'{LIBEXEC}/ollama-gpu-check "$model"' in r.file(f"{STEPS_DIR}/40-engine.sh").content
    with ollama_stub(vram_fraction=vram) as stub:
        result = vm.run(f"OLLAMA_HOST=127.0.0.1:{stub.port} {LIBEXEC}/ollama-gpu-check llama3.1:8b")
        loads = [q for q in stub.requests if q.path == "/api/generate"]
    assert result.returncode == rc, result.stdout + result.stderr
    assert said in result.stdout + result.stderr
    assert loads and b'"prompt": ""' in loads[0].body  # an empty prompt loads the model


def test_the_toolkit_key_is_dearmored_again_over_a_half_written_file(tmp_path: Path) -> None:
    """Real gpg: without --batch --yes it asks to overwrite the file a failed first attempt left, and fails."""
    step = rendered(engine="vllm", tlsMode="self-signed").file(f"{STEPS_DIR}/30-docker.sh").content
    command = re.search(r"\|\s*\n?\s*gpg ([^\n]+)", step)
    assert command, "no gpg --dearmor in 30-docker"
    key = tmp_path / "nvidia-container-toolkit.gpg"
    args = command.group(1).replace("/etc/apt/keyrings/nvidia-container-toolkit.gpg", str(key)).split()
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    raw = os.urandom(300)
    armored = subprocess.run(["gpg", "--homedir", str(home), "--enarmor"], input=raw, capture_output=True,
                             check=True).stdout
    key.write_bytes(b"")  # what a failed first attempt leaves
    done = subprocess.run(["gpg", "--homedir", str(home), *args], input=armored, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    assert key.read_bytes() == raw
