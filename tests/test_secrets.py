"""Secret delivery: the bundle's contents, and the VM's install script run for real on a temp root."""
from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import minimal_raw
from llmdeploy.config import ConfigError, parse
from llmdeploy.render import INSTALL_SECRETS, Layout, render
from llmdeploy.secrets import api_keys_map, generate_api_key, secrets_bundle, wait_for_installer

CERT = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHkey\n-----END PRIVATE KEY-----\n"


def members(bundle: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_generated_keys_are_long_random_and_distinct() -> None:
    keys = {generate_api_key() for _ in range(50)}
    assert len(keys) == 50 and all(k.startswith("sk-llm-") and len(k) >= 40 for k in keys)


def test_map_refuses_keys_that_could_break_nginx_syntax() -> None:
    assert api_keys_map({"a": "k" * 30}) == f'"Bearer {"k" * 30}" a;\n'
    with pytest.raises(ValueError, match="API key 'a'"):
        api_keys_map({"a": 'short";'})


def test_bundle_holds_every_secret_and_only_what_is_configured() -> None:
    cfg = parse(minimal_raw(apiKeys=["default", "ci"], hfToken="hf_tokenvalue123", tlsMode="provided",
                            tlsCertificate=CERT, tlsPrivateKey=KEY))
    keys = {"default": generate_api_key(), "ci": generate_api_key()}
    files = members(secrets_bundle(cfg, keys))
    assert set(files) == {"api-keys.map", "hf.env", "tls/fullchain.pem", "tls/privkey.pem"}
    assert all(keys[n] in files["api-keys.map"] for n in keys)
    assert "HF_TOKEN=hf_tokenvalue123" in files["hf.env"]
    plain = members(secrets_bundle(parse(minimal_raw()), {"default": keys["default"]}))
    assert set(plain) == {"api-keys.map"}
    with pytest.raises(ValueError, match="ci"):
        secrets_bundle(cfg, {"default": keys["default"]})


def test_install_script_installs_provided_tls_root_only_and_is_idempotent(tmp_path: Path) -> None:
    cfg = parse(minimal_raw(tlsMode="provided", tlsCertificate=CERT, tlsPrivateKey=KEY))
    layout = Layout(root=str(tmp_path / "root"))
    script = tmp_path / "install-secrets"
    script.write_text(render(cfg, layout).file(INSTALL_SECRETS).content)
    script.chmod(0o755)
    bundle = secrets_bundle(cfg, {"default": generate_api_key()})
    first = subprocess.run([str(script)], input=bundle, capture_output=True, check=True)
    tls = Path(layout.paths["tls_dir"])
    assert (tls / "fullchain.pem").read_text() == CERT and (tls / "privkey.pem").read_text() == KEY
    assert (tls / "privkey.pem").resolve().stat().st_mode & 0o777 == 0o600
    assert Path(layout.paths["api_keys_map"]).stat().st_mode & 0o777 == 0o600
    assert b"installed" in first.stdout and b"sk-llm-" not in first.stdout + first.stderr
    second = subprocess.run([str(script)], input=bundle, capture_output=True, check=True)
    assert b"installed" not in second.stdout  # nothing changed, nothing reloaded


def test_delivery_waits_briefly_for_the_installer_and_says_why_it_gives_up(tmp_path: Path) -> None:
    """The installer is missing (cloud-init's write_files never ran): the delivery gives up at its deadline
    with a message, and never reads the bundle (stdin) meanwhile."""
    result = subprocess.run(["bash", "-c", f"{wait_for_installer(2)}; echo never"], input=b"bundle bytes",
                            capture_output=True, timeout=30)
    assert result.returncode == 1 and b"never" not in result.stdout
    assert f"{INSTALL_SECRETS} is not on the VM after 2s: cloud-init's write_files has not run".encode() in result.stderr
    left = subprocess.run(["bash", "-c", f"({wait_for_installer(2)}); cat"], input=b"bundle bytes",
                          capture_output=True, timeout=30)
    assert left.stdout == b"bundle bytes"  # the wait read none of it


@pytest.mark.parametrize("token", ["hf with space", 'hf"quote', "hf'quote", "hf\\\\back", "hf\nnewline"])
def test_a_token_that_cannot_go_into_hf_env_is_refused_at_validate(token: str) -> None:
    with pytest.raises(ConfigError, match="hfToken: got \\(secret\\); expected a Hugging Face access token") as exc:
        parse(minimal_raw(hfToken=token))
    assert token not in str(exc.value)
    assert members(secrets_bundle(parse(minimal_raw(hfToken="hf_AbC-1.2~x")), {"default": generate_api_key()}))[
        "hf.env"] == "HF_TOKEN=hf_AbC-1.2~x\nHUGGING_FACE_HUB_TOKEN=hf_AbC-1.2~x\n"
