"""chatUi open-webui without a browser (seconds): config checks, the rendered step/unit/admin script, and Open
WebUI's secret key travelling like the API keys (a Pulumi secret of its own, in the secrets bundle), never in
user-data, outputs or commands. tests/integration/test_chat_webui.py runs it all for real in a browser."""
from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from support.delivery import secrets_tar
from support.project import ROOT, minimal_raw
from llmdeploy.config import OPEN_WEBUI_MEMORY_MB, ConfigError, parse
from llmdeploy.render import FILES_DIR, STEPS_DIR, HostLayout, render, web_user_email
from llmdeploy.vmpaths import OPEN_WEBUI_ADMIN
from support.openwebui import unit_environment
from support.pulumi_mocks import run_program, unwrap
from test_pulumi_program import MAIN, PRIVATE_KEY
from llmdeploy.stack_yaml import read_stack

KEYS = ["ops:admin", "alice", "bob"]


def webui_raw(**overrides: object) -> dict[str, object]:
    settings: dict[str, object] = dict(chatUi="open-webui", domain="llm.example.org", apiKeys=KEYS,
                                       engine="llamacpp", shape="VM.Standard.E4.Flex", shapeMemoryGbs=16)
    return minimal_raw(**{**settings, **overrides})


def problems(raw: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as err:
        parse(raw)
    return str(err.value)


def test_open_webui_needs_an_admin_key_whose_user_signs_in_first() -> None:
    said = problems(webui_raw(apiKeys=["alice", "bob"]))
    assert "apiKeys" in said and "an admin key (NAME:admin) for chatUi open-webui" in said


@pytest.mark.parametrize(("overrides", "key", "fix"), [
    ({"shapeMemoryGbs": 1}, "shapeMemoryGbs", "pulumi config set shapeMemoryGbs 3"),
    ({"target": "local", "os": "debian-12", "localMemoryMb": 1024}, "localMemoryMb",
     "pulumi config set localMemoryMb 3072"),
])
def test_the_machine_must_have_memory_for_open_webui(overrides: dict[str, object], key: str, fix: str) -> None:
    said = problems(webui_raw(**overrides))
    assert f"{key}: got" in said and f"{OPEN_WEBUI_MEMORY_MB} MB for Open WebUI" in said and fix in said


def test_the_step_runs_after_the_engine_and_before_nginx_opens_the_chat_host() -> None:
    steps = render(parse(webui_raw())).steps
    assert steps.index("40-engine") < steps.index("45-chat") < steps.index("60-nginx")
    assert "45-chat" not in render(parse(minimal_raw())).steps


def test_the_unit_runs_open_webui_on_loopback_offline_with_the_trusted_header(tmp_path: Path) -> None:
    cfg = parse(webui_raw())
    rendered = render(cfg, HostLayout(root=str(tmp_path)))
    secrets = tmp_path / "etc/llmdeploy/secrets"
    secrets.mkdir(parents=True)
    (secrets / "open-webui.env").write_text("WEBUI_SECRET_KEY=k\n")
    unit = rendered.file(f"{FILES_DIR}/open-webui.service").content
    env = unit_environment(unit)
    assert env == env | {
        "OPENAI_API_BASE_URL": f"http://127.0.0.1:{cfg.engine_port}/v1", "ENABLE_OLLAMA_API": "false",
        "WEBUI_AUTH": "true", "WEBUI_AUTH_TRUSTED_EMAIL_HEADER": "X-User-Email",
        "WEBUI_AUTH_TRUSTED_NAME_HEADER": "X-User-Name", "DEFAULT_USER_ROLE": "user",
        "ENABLE_PERSISTENT_CONFIG": "false", "WEBUI_SECRET_KEY": "k", "OFFLINE_MODE": "true",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false", "ENABLE_VERSION_UPDATE_CHECK": "false", "DO_NOT_TRACK": "true",
        "ANONYMIZED_TELEMETRY": "false", "DEFAULT_MODELS": cfg.model_name}
    assert "OPENAI_API_KEY" not in env  # the engines listen on loopback without a key of their own
    assert "--host 127.0.0.1 --port 8088" in unit and f"MemoryMax={OPEN_WEBUI_MEMORY_MB}M" in unit
    step = rendered.file(f"{STEPS_DIR}/45-chat.sh").content
    assert "open-webui==0.12.4 torch==2.13.0+cpu" not in step  # pinned from Pulumi.yaml, not written here
    assert '"$requirement" "$torch"' in step and "--extra-index-url https://download.pytorch.org/whl/cpu" in step
    admin = rendered.file(OPEN_WEBUI_ADMIN).content
    assert f"X-User-Email: {web_user_email('ops')}" in admin and "http://127.0.0.1:8088/api/v1/auths/signin" in admin


def test_a_gpu_shape_takes_the_torch_open_webui_pulls() -> None:
    step = render(parse(webui_raw(shape="VM.GPU.A10.1", engine="ollama"))).file(f"{STEPS_DIR}/45-chat.sh").content
    assert "download.pytorch.org" not in step and "torch==" not in step


def test_pulumi_makes_the_secret_key_and_sends_it_only_in_the_secret_bundle() -> None:
    values: dict[str, Any] = read_stack(ROOT, "chat-webui") | {"sshPrivateKey": PRIVATE_KEY}
    run = run_program(MAIN, values, stack="chat-webui", secret_keys=("sshPrivateKey",))
    password = next(r for r in run.resources if r.type == "random:index/randomPassword:RandomPassword"
                    and r.name.endswith("-open-webui-secret-key"))
    ready = run.one("command:remote:Command")
    bundle = secrets_tar(unwrap(ready.inputs["stdin"]))
    delivered = bundle.extractfile("open-webui.env").read().decode()  # type: ignore[union-attr]
    secret_key = delivered.removeprefix("WEBUI_SECRET_KEY=").strip()
    assert len(secret_key) >= 32 and password.name.startswith(ready.name.removesuffix("-readiness"))
    public = json.dumps(run.outputs) + json.dumps([unwrap(r.inputs).get("create", "") for r in run.resources])
    instance = unwrap(run.one("oci:Core/instance:Instance").inputs)
    assert secret_key not in public and secret_key not in json.dumps(instance)
