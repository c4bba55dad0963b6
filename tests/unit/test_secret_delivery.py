"""Secret delivery: the bundle's contents, and the VM's install script run for real on a temp root."""
import io
import tarfile

import pytest

from llmdeploy.config import ConfigError, parse
from llmdeploy.secret_delivery import api_keys_map, generate_api_key, secrets_bundle
from support.project import minimal_raw

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


@pytest.mark.parametrize("token", ["hf with space", 'hf"quote', "hf'quote", "hf\\\\back", "hf\nnewline"])
def test_a_token_that_cannot_go_into_hf_env_is_refused_at_validate(token: str) -> None:
    with pytest.raises(ConfigError, match="hfToken: got \\(secret\\); expected a Hugging Face access token") as exc:
        parse(minimal_raw(hfToken=token))
    assert token not in str(exc.value)
    assert members(secrets_bundle(parse(minimal_raw(hfToken="hf_AbC-1.2~x")), {"default": generate_api_key()}))[
        "hf.env"] == "HF_TOKEN=hf_AbC-1.2~x\nHUGGING_FACE_HUB_TOKEN=hf_AbC-1.2~x\n"
