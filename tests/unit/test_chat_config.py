"""chatUi and chatHost: the typed config, its errors (each names the key, what is accepted and the fix), and what
the rendering derives from them (the certificate's names, certbot's, the sign-in pages, the frontend's step)."""
from __future__ import annotations

import json

import pytest

from support.project import minimal_raw
from llmdeploy.config import ConfigError, parse
from llmdeploy.render import FILES_DIR, STEPS_DIR, render, tls_sans

def chat_raw(**overrides: object) -> dict[str, object]:
    """A stack with an admin key (Open WebUI's first user) and an attendee's, unless overridden."""
    return minimal_raw(**{"apiKeys": ["instructor:admin", "default"], **overrides})


LLAMA = dict(engine="llamacpp", shape="VM.Standard.E4.Flex", llamacppModelUrl="https://models.invalid/m.gguf")
WEBUI_KEYS = ["default", "ops:admin"]  # Open WebUI's admin is the admin key's user (test_chat_webui_config.py)


def problems(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(chat_raw(**overrides))
    return str(caught.value)


def test_chat_is_off_by_default_and_renders_no_chat_host() -> None:
    cfg = parse(chat_raw(domain="llm.example.org"))
    assert cfg.chat.ui == "none" and cfg.chat.host == ""
    assert "llmdeploy_web_user" not in render(cfg).nginx_site


@pytest.mark.parametrize(("overrides", "host"), [
    (dict(domain="llm.example.org"), "chat.llm.example.org"),
    (dict(domain="llm.example.org", chatHost="talk.example.org"), "talk.example.org"),
    (dict(target="local", os="debian-12", **LLAMA), "chat.localhost"),
])
def test_the_chat_host_is_chat_dot_domain_unless_set(overrides: dict[str, object], host: str) -> None:
    cfg = parse(chat_raw(chatUi="open-webui", **overrides))
    assert cfg.chat.host == host and cfg.chat.path == "/"
    assert f"DNS:{host}" in tls_sans(cfg).split(",")
    assert f"server_name {host};" in render(cfg).nginx_site


def test_certbot_asks_for_both_names_and_expands_an_older_certificate() -> None:
    cfg = parse(chat_raw(chatUi="open-webui", domain="llm.example.org", tlsMode="letsencrypt"))
    step = render(cfg).file(f"{STEPS_DIR}/70-acme.sh").content
    assert '--cert-name "$domain" --expand -d "$domain" -d chat.llm.example.org' in step
    assert "covers_chat" in step


def test_the_sign_in_pages_are_installed_by_the_nginx_step() -> None:
    rendered = render(parse(chat_raw(chatUi="open-webui", domain="llm.example.org")))
    page = rendered.file(f"{FILES_DIR}/chat-login.html").content
    failed = rendered.file(f"{FILES_DIR}/chat-login-failed.html").content
    assert '<form method="post" action="/_login">' in page and "not accepted" not in page and "not accepted" in failed
    assert "chat-login-failed.html" in rendered.file(f"{STEPS_DIR}/60-nginx.sh").content


def test_biochatter_light_gets_its_step_and_unit_and_the_light_path() -> None:
    cfg = parse(chat_raw(chatUi="biochatter-light", domain="llm.example.org", modelName="gpt-3.5-turbo", **LLAMA))
    rendered = render(cfg)
    assert "45-chat" in rendered.steps and cfg.chat.path == "/light/"
    step = rendered.file(f"{STEPS_DIR}/45-chat.sh").content
    assert "repo=https://github.com/biocypher/biochatter-light.git" in step and "ref=v0.8.5" in step
    unit = rendered.file(f"{FILES_DIR}/biochatter-light.service").content
    assert "Environment=OPENAI_BASE_URL=http://127.0.0.1:8080/v1" in unit and "--server.baseUrlPath light" in unit
    assert "location /light/ {" in rendered.nginx_site


def test_a_mirror_and_a_commit_pin_the_biochatter_light_source() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    cfg = parse(chat_raw(chatUi="biochatter-light", domain="llm.example.org", modelName="gpt-3.5-turbo",
                            biochatterLightRepo="https://git.mirror.example.org/biochatter-light.git",
                            biochatterLightRef=commit, **LLAMA))
    step = render(cfg).file(f"{STEPS_DIR}/45-chat.sh").content
    assert "repo=https://git.mirror.example.org/biochatter-light.git" in step and f"ref={commit}" in step
    assert 'git -C "$app" rev-parse HEAD)" != "$ref"' in step  # a commit is checked after the fetch


def test_ollama_feeds_biochatter_light_its_own_model_variables() -> None:
    cfg = parse(chat_raw(chatUi="biochatter-light", domain="llm.example.org", engine="ollama"))
    unit = render(cfg).file(f"{FILES_DIR}/biochatter-light.service").content
    assert "Environment=OLLAMA_URL=http://127.0.0.1:11434" in unit and "Environment=OLLAMA_MODEL=llama3.1:8b" in unit
    assert "OPENAI_BASE_URL" not in unit


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(chatUi="webui", domain="llm.example.org"),
     "chatUi: got 'webui'; expected one of none, open-webui, biochatter-light"),
    (dict(chatUi="open-webui"), "a domain for the chat frontend's own host name"),
    (dict(chatUi="open-webui", domain="llm.example.org", chatHost="llm.example.org"),
     "a host name other than domain"),
    (dict(chatUi="open-webui", domain="llm.example.org", chatHost="not a host"), "chatHost: got 'not a host'"),
    (dict(chatUi="open-webui", domain="llm.example.org", apiKeys=[], basicAuthUsers=["bob"],
          basicAuthPasswords=json.dumps({"bob": "a-long-passphrase"})),
     "API keys to sign in with"),
    (dict(chatUi="open-webui", target="datascience", dsContainerImage="iad.ocir.io/t/vllm:v1", engine="vllm",
          domain="llm.example.org"), "none on the datascience target"),
    (dict(chatUi="biochatter-light", domain="llm.example.org", os="ubuntu-24.04", modelName="gpt-3.5-turbo", **LLAMA),
     "os: got 'ubuntu-24.04'; expected one of ubuntu-22.04, debian-12 for chatUi biochatter-light"),
    (dict(chatUi="biochatter-light", domain="llm.example.org", **LLAMA),
     "modelName: got 'm'; expected gpt-3.5-turbo for chatUi biochatter-light"),
    (dict(chatUi="open-webui", domain="llm.example.org", apiKeys=["default"]),
     "an admin key (NAME:admin) for chatUi open-webui"),
    (dict(biochatterLightRef="v1; rm -rf /"), "biochatterLightRef: got"),
    (dict(biochatterLightRepo="github.com/x/y"), "biochatterLightRepo: got"),
])
def test_bad_chat_settings_name_the_key_and_the_fix(overrides: dict[str, object], message: str) -> None:
    text = problems(**overrides)
    assert message in text and "pulumi config" in text


def test_the_first_admin_key_is_the_frontends_admin_and_shared_endpoints_keep_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from llmdeploy.endpoints import plan_endpoints
    from llmdeploy.roster import read_roster

    raw = chat_raw(chatUi="open-webui", apiKeys=["ops", "instructor:admin"], workshopRoster="r.csv",
                   workshopLayout="shared", workshopEndpoints=1, workshopDomain="ws.example.org")
    cfg = parse(raw)
    assert cfg.chat.admin == "instructor" and cfg.chat.host == ""  # each endpoint gets its own
    (tmp_path / "r.csv").write_text("id,name,email\nalice,Alice,a@example.org\nbob,Bob,b@example.org\n")
    [plan] = plan_endpoints(cfg, read_roster(tmp_path / "r.csv"))
    assert [k.name for k in plan.cfg.auth.api_keys] == ["alice", "bob", "instructor"]
    assert plan.cfg.chat.admin == "instructor" and plan.cfg.chat.host == "chat.ep0.ws.example.org"
    assert not any(k.admin for k in plan.cfg.auth.api_keys if k.name in ("alice", "bob"))
