"""chatUi biochatter-next: its config (both images pinned by digest, an ordinary key for its server), what it renders
(Docker, its step, two loopback-only units, nginx under /biochatter-next) and the key its server gets, delivered
over SSH and never an admin key. Its sign-in and routing run behind the real nginx in
tests/integration/test_chat_next.py; the validators in tests/integration/test_validators.py."""
from __future__ import annotations

import io
import tarfile

import pytest

from llmdeploy.config import ConfigError, StackConfig, parse
from llmdeploy.frontends import NEXT_KEY_ENV
from llmdeploy.render import FILES_DIR, STEPS_DIR, render
from llmdeploy.secret_delivery import generate_api_key, secrets_bundle
from support.next_config import CLIENT, DIGEST, SERVER
from support.project import minimal_raw

LLAMA = dict(engine="llamacpp", shape="VM.Standard.E4.Flex", llamacppModelUrl="https://models.invalid/m.gguf")


def next_raw(**overrides: object) -> dict[str, object]:
    return minimal_raw(**{"chatUi": "biochatter-next", "domain": "llm.example.org",
                          "apiKeys": ["ops:admin", "alice", "bob"], "biochatterNextServerImage": SERVER,
                          "biochatterNextClientImage": CLIENT, **LLAMA, **overrides})


def next_cfg(**overrides: object) -> StackConfig:
    return parse(next_raw(**overrides))


def problems(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(next_raw(**overrides))
    return str(caught.value)


def test_it_installs_docker_and_runs_its_step_before_nginx() -> None:
    cfg = next_cfg()
    rendered = render(cfg)
    assert cfg.docker and cfg.chat.path == "/biochatter-next"
    steps = list(rendered.steps)
    assert steps.index("30-docker") < steps.index("40-engine") < steps.index("45-chat") < steps.index("60-nginx")
    step = rendered.file(f"{STEPS_DIR}/45-chat.sh").content
    assert f"server_image={SERVER}" in step and f"client_image={CLIENT}" in step
    assert 'retry 3 docker pull -q "$image"' in step and "docker buildx imagetools inspect" in step
    assert f"wait_for_secret /etc/llmdeploy/secrets/{NEXT_KEY_ENV}" in step  # the key first, then the containers
    assert "wait_for_http http://127.0.0.1:3000/biochatter-next 200" in step


def test_both_containers_are_pinned_by_digest_and_bound_to_loopback() -> None:
    rendered = render(next_cfg())
    server = rendered.file(f"{FILES_DIR}/biochatter-next-server.service").content
    client = rendered.file(f"{FILES_DIR}/biochatter-next-client.service").content
    assert f"  {SERVER} \\\n  gunicorn -k uvicorn.workers.UvicornWorker app:app --bind 127.0.0.1:5001" in server
    assert f"  {CLIENT}\n" in client
    for unit in (server, client):
        assert "--network host" in unit and " -p " not in unit and "0.0.0.0" not in unit.split("ExecStart=", 1)[1]
    assert "-e HOSTNAME=127.0.0.1 -e PORT=3000" in client and "-e BASE_URL=http://127.0.0.1:5001" in client
    assert "-e OPENAI_BASE_URL=http://127.0.0.1:8080/v1" in server and "-e OPENAI_MODEL=m" in server
    assert f"--env-file /etc/llmdeploy/secrets/{NEXT_KEY_ENV}" in server and "OPENAI_API_KEY=" not in server
    assert "OPENAI_API_KEY" not in client and "--env-file" not in client  # the client holds no key


def test_nginx_sends_the_root_to_its_base_path_and_all_else_to_the_client() -> None:
    """Its pages fetch root paths outside the basePath (/api/openai/...): the whole chat host goes to the client,
    signed in; Light's site keeps only /light/."""
    site = render(next_cfg()).nginx_site
    chat = site.split("server_name chat.llm.example.org;", 1)[1]
    assert "location = / {\n        return 302 /biochatter-next;" in chat
    assert "    location / {\n" in chat and "return 404;" not in chat
    assert "proxy_pass http://127.0.0.1:3000;" in site and "127.0.0.1:5001" not in site  # the server: never nginx's


def test_its_server_gets_the_first_ordinary_key_over_ssh_never_an_admin_key() -> None:
    cfg = next_cfg(apiKeys=["ops:admin", "alice", "bob"])
    keys = {name: generate_api_key() for name in ("ops", "alice", "bob")}
    with tarfile.open(fileobj=io.BytesIO(secrets_bundle(cfg, keys))) as tar:
        member = tar.extractfile(NEXT_KEY_ENV)
        assert member is not None
        assert member.read().decode() == f"OPENAI_API_KEY={keys['alice']}\n"
    rendered = render(cfg)
    text = rendered.expanded()
    assert not any(key in text for key in keys.values())  # the key travels over SSH only
    installer = rendered.file("/usr/local/sbin/llmdeploy-install-secrets").content
    assert f'put "$work/{NEXT_KEY_ENV}" /etc/llmdeploy/secrets/{NEXT_KEY_ENV}' in installer
    assert "systemctl restart biochatter-next-server" in installer  # a rotated key reaches the running server


def test_other_frontends_deliver_no_next_key() -> None:
    cfg = parse(minimal_raw(chatUi="open-webui", domain="llm.example.org", apiKeys=["ops:admin", "alice"]))
    with tarfile.open(fileobj=io.BytesIO(secrets_bundle(cfg, {"ops": generate_api_key(),
                                                               "alice": generate_api_key()}))) as tar:
        assert NEXT_KEY_ENV not in tar.getnames()
    assert "biochatter-next" not in render(cfg).file("/usr/local/sbin/llmdeploy-install-secrets").content


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(biochatterNextServerImage=""), "biochatterNextServerImage: got ''; expected an image pinned by digest"),
    (dict(biochatterNextServerImage="biocypher/biochatter-server:0.5.5"),
     "docker buildx imagetools inspect biocypher/biochatter-server:TAG"),
    (dict(biochatterNextClientImage="registry.example.org/biochatter-next:latest"),
     "biochatterNextClientImage: got 'registry.example.org/biochatter-next:latest'"),
    (dict(biochatterNextClientImage=f"x@{DIGEST}; curl evil"), "biochatterNextClientImage: got"),
    (dict(apiKeys=["ops:admin"]), "a key without :admin for chatUi biochatter-next"),
])
def test_bad_settings_name_the_key_and_the_fix(overrides: dict[str, object], message: str) -> None:
    text = problems(**overrides)
    assert message in text and "pulumi config set" in text
