"""read_stack(): a stack file read the way the Pulumi CLI passes it to the program, or a message saying the fix.

Why: `llmdeploy render/validate` must see the same values `pulumi up` sees, refuse secrets stored in
plaintext and, for `secure:` values it cannot decrypt, say which environment variable to set.
Each test works on a temporary project folder (a copy of Pulumi.yaml plus one stack file).
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from llmdeploy.config import ConfigError, StackConfig
from llmdeploy.stack_yaml import StackFileError, load_stack_config, read_stack, secret_env_name
from support.project import ROOT, SSH_KEY

VALID = f"""\
config:
  oci:region: eu-frankfurt-1
  llmdeploy:compartmentId: ocid1.compartment.oc1..x
  llmdeploy:engine: ollama
  llmdeploy:apiKeys:
    - default
  llmdeploy:sshPublicKeys:
    - {SSH_KEY}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    return tmp_path


def write_stack(root: Path, stack: str, text: str) -> Path:
    path = root / f"Pulumi.{stack}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def stack_error(root: Path, stack: str = "dev", env: dict[str, str] | None = None) -> str:
    with pytest.raises(StackFileError) as info:
        read_stack(root, stack, env={} if env is None else env)
    return str(info.value)


def test_valid_stack_file_gives_keys_without_the_project_prefix(project: Path) -> None:
    write_stack(project, "dev", VALID)
    values = read_stack(project, "dev", env={})
    assert values == {"compartmentId": "ocid1.compartment.oc1..x", "engine": "ollama", "apiKeys": ["default"],
                      "sshPublicKeys": [SSH_KEY]}


def test_missing_stack_file_lists_examples_and_stack_init(project: Path) -> None:
    write_stack(project, "example-a", VALID)
    write_stack(project, "example-b", VALID)
    message = stack_error(project, "dev")
    assert f"no stack file {project / 'Pulumi.dev.yaml'}" in message
    assert "pulumi stack init dev" in message
    assert "pulumi config set" in message
    assert "(example-a, example-b)" in message


def test_missing_stack_file_without_examples(project: Path) -> None:
    message = stack_error(project, "dev")
    assert "pulumi stack init dev" in message and "(none)" in message


def test_invalid_yaml(project: Path) -> None:
    write_stack(project, "dev", "config:\n  llmdeploy:engine: [ollama\n")
    assert "Pulumi.dev.yaml is not valid YAML" in stack_error(project)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "config:\n  - llmdeploy:engine\n"])
def test_not_a_mapping(project: Path, text: str) -> None:
    write_stack(project, "dev", text)
    assert "Pulumi.dev.yaml must be a mapping with a 'config:' mapping" in stack_error(project)


@pytest.mark.parametrize("text", ["", "encryptionsalt: v1:abc\n", "config:\n"])
def test_empty_stack_file_has_no_values(project: Path, text: str) -> None:
    write_stack(project, "dev", text)
    assert read_stack(project, "dev", env={"TF_VAR_region": "eu-frankfurt-1"}) == {}


def test_key_without_namespace(project: Path) -> None:
    write_stack(project, "dev", VALID + "  shape: VM.GPU.A10.2\n")
    message = stack_error(project)
    assert "'shape' has no namespace; write it as llmdeploy:shape" in message


def test_other_namespaces_are_ignored(project: Path) -> None:
    write_stack(project, "dev", VALID + "  oci:tenancyOcid: ocid1.tenancy.oc1..t\n  random:foo: bar\n")
    values = read_stack(project, "dev", env={})
    assert "region" not in values and "tenancyOcid" not in values and "foo" not in values
    assert values["engine"] == "ollama"


def test_namespace_follows_the_project_name(project: Path) -> None:
    text = (project / "Pulumi.yaml").read_text(encoding="utf-8").replace("name: llmdeploy\n", "name: myllm\n", 1)
    (project / "Pulumi.yaml").write_text(text, encoding="utf-8")
    write_stack(project, "dev", "config:\n  oci:region: eu-frankfurt-1\n  myllm:engine: vllm\n")
    assert read_stack(project, "dev", env={}) == {"engine": "vllm"}
    write_stack(project, "dev", "config:\n  oci:region: eu-frankfurt-1\n  llmdeploy:engine: ollama\n")
    assert "llmdeploy:engine: unknown namespace 'llmdeploy'" in stack_error(project)


@pytest.mark.parametrize("key, env_name", [("hfToken", "LLMDEPLOY_HF_TOKEN"),
                                           ("basicAuthPasswords", "LLMDEPLOY_BASIC_AUTH_PASSWORDS")])
def test_secure_value_without_env_var_names_the_variable(project: Path, key: str, env_name: str) -> None:
    write_stack(project, "dev", VALID + f"  llmdeploy:{key}:\n    secure: v1:AAAAciphertext==\n")
    message = stack_error(project, env={"UNRELATED": "1"})
    assert f"llmdeploy:{key} is encrypted (secure:)" in message
    assert f"{env_name}=\"$(pulumi config get {key} --stack dev)\"" in message
    assert "ciphertext" not in message


def test_secure_value_with_the_env_var_set(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack(project, "dev", VALID + "  llmdeploy:hfToken:\n    secure: v1:AAAAciphertext==\n")
    monkeypatch.setenv("LLMDEPLOY_HF_TOKEN", "from-os-environ")  # the env argument wins over os.environ
    values = read_stack(project, "dev", env={"LLMDEPLOY_HF_TOKEN": "hf_from_env_mapping"})
    assert values["hfToken"] == "hf_from_env_mapping"
    assert read_stack(project, "dev")["hfToken"] == "from-os-environ"  # env=None means os.environ


def test_secret_given_only_in_the_environment(project: Path) -> None:
    write_stack(project, "dev", VALID)
    values = read_stack(project, "dev", env={"LLMDEPLOY_BASIC_AUTH_PASSWORDS": '{"alice": "a-long-passphrase"}',
                                             "LLMDEPLOY_SHAPE": "ignored: not a secret"})
    assert values["basicAuthPasswords"] == '{"alice": "a-long-passphrase"}'
    assert "shape" not in values


@pytest.mark.parametrize("key", ["hfToken", "tlsPrivateKey", "basicAuthPasswords"])
def test_secret_stored_in_plaintext_is_refused(project: Path, key: str) -> None:
    write_stack(project, "dev", VALID + f"  llmdeploy:{key}: PLAINTEXT-secret-value\n")
    message = stack_error(project)
    assert f"llmdeploy:{key} is a secret but is stored in plaintext in Pulumi.dev.yaml" in message
    assert f"pulumi config set --secret {key} ..." in message
    assert "PLAINTEXT-secret-value" not in message


def test_empty_secret_in_plaintext_is_fine(project: Path) -> None:
    write_stack(project, "dev", VALID + "  llmdeploy:hfToken: \"\"\n")
    assert read_stack(project, "dev", env={})["hfToken"] == ""


def test_every_problem_in_the_file_is_listed(project: Path) -> None:
    write_stack(project, "dev", VALID + "  shape: VM.GPU.A10.2\n  llmdeploy:hfToken: hf_plain\n"
                "  llmdeploy:tlsCertificate:\n    secure: v1:xyz\n")
    message = stack_error(project)
    lines = message.splitlines()
    assert lines[0] == "Pulumi.dev.yaml:"
    assert len(lines) == 4
    assert "'shape' has no namespace" in message
    assert "llmdeploy:hfToken is a secret but is stored in plaintext" in message
    assert "LLMDEPLOY_TLS_CERTIFICATE=" in message


@pytest.mark.parametrize("stack", ["../etc/passwd", "a b", "", "dev;rm", "dev/x"])
def test_bad_stack_name(project: Path, stack: str) -> None:
    message = stack_error(project, stack)
    assert f"stack name '{stack}' may hold only letters, digits, '_', '.' and '-'" in message


@pytest.mark.parametrize("key, env_name", [
    ("basicAuthPasswords", "LLMDEPLOY_BASIC_AUTH_PASSWORDS"),
    ("hfToken", "LLMDEPLOY_HF_TOKEN"),
    ("tlsCertificate", "LLMDEPLOY_TLS_CERTIFICATE"),
    ("tlsPrivateKey", "LLMDEPLOY_TLS_PRIVATE_KEY"),
    ("compartmentId", "LLMDEPLOY_COMPARTMENT_ID"),
    ("xinferenceModelSizeInBillions", "LLMDEPLOY_XINFERENCE_MODEL_SIZE_IN_BILLIONS"),
    ("shape", "LLMDEPLOY_SHAPE"),
])
def test_secret_env_name(key: str, env_name: str) -> None:
    assert secret_env_name(key) == env_name


def test_load_stack_config_validates(project: Path) -> None:
    write_stack(project, "dev", VALID)
    cfg = load_stack_config(project, "dev", env={})
    assert isinstance(cfg, StackConfig) and (cfg.stack, cfg.engine) == ("dev", "ollama")
    write_stack(project, "bad", VALID.replace("engine: ollama", "engine: olama"))
    with pytest.raises(ConfigError) as info:
        load_stack_config(project, "bad", env={})
    assert str(info.value).startswith("1 config problem(s) in stack 'bad':")


# --- typos that would deploy the defaults: each refused, with the fix (issue 23, finding 2) ---------------------

REGION = "  oci:region: eu-frankfurt-1\n"


@pytest.mark.parametrize("line, message", [
    ("  llmdepoly:engine: llamacpp\n", "unknown namespace 'llmdepoly'; did you mean llmdeploy:engine?"),
    ("  llmdeploy:engine:\n", "llmdeploy:engine has no value: give it one (pulumi config set llmdeploy:engine VALUE), "
                              "or delete the line to use the default (vllm)"),
    ("  oci:regoin: eu-frankfurt-1\n", "oci:regoin is not a setting of the OCI provider; did you mean oci:region?"),
])
def test_a_typo_is_refused_with_the_fix(project: Path, line: str, message: str) -> None:
    write_stack(project, "dev", "config:\n" + REGION + line)
    assert message in stack_error(project)


def test_no_region_is_refused_for_a_cloud_target_and_fine_for_local(project: Path, tmp_path: Path) -> None:
    write_stack(project, "dev", "config:\n  llmdeploy:engine: ollama\n")
    assert "no OCI region for the vm target: pulumi config set oci:region" in stack_error(project, env={})
    assert read_stack(project, "dev", env={"TF_VAR_region": "us-ashburn-1"})["engine"] == "ollama"
    (tmp_path / "home" / ".oci").mkdir(parents=True)
    (tmp_path / "home" / ".oci" / "config").write_text("[DEFAULT]\nuser=ocid1.user.oc1..u\nregion=eu-frankfurt-1\n")
    assert read_stack(project, "dev", env={"HOME": str(tmp_path / "home")})["engine"] == "ollama"
    write_stack(project, "dev", "config:\n  llmdeploy:target: local\n")
    assert read_stack(project, "dev", env={}) == {"target": "local"}


def test_settings_outside_the_config_wrapper_are_refused(project: Path) -> None:
    write_stack(project, "dev", "oci:region: eu-frankfurt-1\nllmdeploy:engine: llamacpp\n")
    message = stack_error(project)
    assert "oci:region, llmdeploy:engine stand at the top level, where Pulumi does not read them" in message
    assert "put a line `config:` first" in message


def test_a_key_given_twice_is_refused_with_both_lines(project: Path) -> None:
    write_stack(project, "dev", "config:\n" + REGION + "  llmdeploy:engine: llamacpp\n  llmdeploy:engine: vllm\n")
    assert "the key 'llmdeploy:engine' is given twice (line 3 and line 4): delete one" in stack_error(project)


def test_every_setting_of_the_installed_oci_provider_is_accepted() -> None:
    """OCI_SETTINGS refuses typos (oci:regoin); it must not refuse a real setting of the pinned provider."""
    import re

    import pulumi_oci.config.vars as provider
    from llmdeploy.stack_yaml import OCI_SETTINGS

    source = Path(provider.__file__).read_text(encoding="utf-8")
    settings = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
                for name in re.findall(r"def ([a-z_]+)\(self\)", source)}
    assert settings and settings <= set(OCI_SETTINGS), sorted(settings - set(OCI_SETTINGS))
