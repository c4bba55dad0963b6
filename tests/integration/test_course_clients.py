"""The course's own Python clients against llmdeploy endpoints, through the rendered nginx with TLS: BioChatter's
GptConversation with an API key on real llama.cpp (xllamacpp), BioChatter's OllamaConversation with a basic-auth
user in the URL on Ollama's API dialect, and the handout's Python snippets run as the attendee runs them.

Why: the course's attendees drive the endpoint with these classes, not with curl. Each program runs in the clients'
own virtualenv (PyPI biochatter 0.14.2, xinference-client 4.1.0; tests/support/course_clients.py). The Xinference
and vLLM halves, which need those real engines, are in tests/integration/test_engines_real.py.

OllamaConversation's stand-in: Ollama cannot run here (its binary and models come from ollama.com and GitHub), and
no real server installable here speaks Ollama's /api/chat (llama.cpp's server does not). The stand-in is the
project's Ollama stub (tests/support/ollama_stub.py), written to Ollama's API documentation, behind the real
rendered Ollama site. It proves what llmdeploy decides: the URL's credentials reach nginx as basic auth from
LangChain's ChatOllama, /api/chat passes the route allow-list for an ordinary user, the credential is stripped
before the engine, a wrong password is refused, no password is logged. It does not prove a real Ollama's answers
(the stub's text is fixed) nor that ChatOllama parses every field a given Ollama version adds.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from llmdeploy.workshop.handouts import page_context
from llmdeploy.workshop.attendee_outputs import AttendeeOutput
from support.course_clients import (GPT_CONVERSATION, OLLAMA_CONVERSATION, answer, clients_python, run_client,
                                    with_user)
from support.endpoint import PASSWORD, Endpoint, llama_endpoint
from support.ollama_stub import MODEL as OLLAMA_MODEL
from support.ollama_stub import OllamaStub, ollama_stub
from support.site import site_endpoint
from support.usage_log import usage_records

pytestmark = pytest.mark.integration

KEYS = ["default", "ops:admin"]
BOB_PASSWORD = "bob-long-passphrase-2"
WRONG_PASSWORD = "not-alices-passphrase-9"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    clients_python()  # fails with the install command when the clients' virtualenv is missing


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with llama_endpoint(tmp_path_factory.mktemp("llama"), apiKeys=KEYS) as ep:
        yield ep


@dataclass
class OllamaSite:
    ep: Endpoint
    stub: OllamaStub
    logs: Path


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaSite]:
    """The rendered Ollama site, two basic-auth users (1 request a minute each, burst 3), before the stub."""
    work = tmp_path_factory.mktemp("ollama")
    users = json.dumps({"alice": PASSWORD, "bob": BOB_PASSWORD})
    with ollama_stub() as stub:
        with site_endpoint(work / "site", stub.port, engine="ollama", shape="VM.GPU.A10.1", apiKeys=KEYS,
                           basicAuthUsers=["alice", "bob"], basicAuthPasswords=users, rateLimit="1r/m",
                           rateLimitBurst=3, modelName=OLLAMA_MODEL) as ep:
            yield OllamaSite(ep, stub, work / "site" / "nginx")


# ---- GptConversation (API key) on real llama.cpp ----------------------------------------------------------------

def test_gpt_conversation_chats_with_a_key_and_a_wrong_key_is_refused(llama: Endpoint) -> None:
    common = {"MODEL": "tiny", "BASE_URL": f"{llama.base}/v1"}
    good = answer(run_client(GPT_CONVERSATION, ca=llama.ca, API_KEY=llama.keys["default"], **common))
    assert good["key_accepted"] is True and isinstance(good["reply"], str) and good["reply"]
    assert good["usage"] > 0  # the token count from llama.cpp's own usage figures: the engine answered
    wrong = answer(run_client(GPT_CONVERSATION, ca=llama.ca, API_KEY="sk-llm-" + "x" * 43, **common))
    assert wrong == {"key_accepted": False}


# ---- OllamaConversation (no key: a basic-auth user in the URL) on Ollama's API dialect -------------------------

def test_ollama_conversation_chats_as_a_basic_auth_user_and_the_engine_never_sees_the_credential(
        ollama: OllamaSite) -> None:
    before = len(ollama.stub.requests)
    got = answer(run_client(OLLAMA_CONVERSATION, ca=ollama.ep.ca, MODEL=OLLAMA_MODEL,
                            URL=with_user(ollama.ep.base, "alice", PASSWORD)))
    assert got.get("reply", "").startswith("word0 word1"), got  # the stub's text, through nginx
    [chat] = [r for r in ollama.stub.requests[before:] if r.path == "/api/chat"]
    assert json.loads(chat.body)["model"] == OLLAMA_MODEL
    assert "authorization" not in {k.lower() for k in chat.headers}  # nginx strips it before the engine
    logged = {"name": "alice", "method": "POST", "path": "/api/chat", "status": 200}.items()  # by name only
    usage = usage_records(Path(ollama.ep.host_layout.paths.usage_log), lambda records: logged <= records[-1].items())
    assert logged <= usage[-1].items(), usage[-1]


def test_ollama_conversation_with_a_wrong_password_is_refused_and_no_password_is_logged(ollama: OllamaSite) -> None:
    before = len(ollama.stub.requests)
    got = answer(run_client(OLLAMA_CONVERSATION, ca=ollama.ep.ca, MODEL=OLLAMA_MODEL,
                            URL=with_user(ollama.ep.base, "alice", WRONG_PASSWORD)))
    assert "reply" not in got and "401" in got["error"], got
    assert len(ollama.stub.requests) == before
    logs = (ollama.logs / "error.log").read_text() + Path(ollama.ep.host_layout.paths.usage_log).read_text()
    assert 'user "alice": password mismatch' in logs  # nginx says who, at info level and above
    for secret in (PASSWORD, WRONG_PASSWORD, BOB_PASSWORD):
        assert secret not in logs


def test_basic_auth_users_have_their_own_rate_limit_and_an_ordinary_users_routes(ollama: OllamaSite) -> None:
    """rateLimit 1r/m, burst 3, per user (nginx's llmdeploy_basic zone, keyed by $remote_user): bob's fifth
    request in a row is 429 while alice's next one still passes; a basic-auth user may not manage the engine."""
    def send(user: str, password: str, path: str = "/api/tags", method: str = "GET") -> int:
        with ollama.ep.session() as s:
            return s.request(method, f"{ollama.ep.base}{path}", auth=(user, password), json={}, timeout=10).status_code
    statuses = [send("bob", BOB_PASSWORD) for _ in range(5)]
    assert statuses[:4] == [200] * 4 and statuses[4] == 429, statuses
    assert send("alice", PASSWORD) == 200
    assert send("alice", PASSWORD, "/api/pull", "POST") == 403


# ---- the handout's snippets, run as printed ------------------------------------------------------------------

def attendee_for(ep: Endpoint, model: str) -> AttendeeOutput:
    return AttendeeOutput(id="u01", name="U", email="", endpoint_url=ep.base, openai_base_url=f"{ep.base}/v1",
                          api_key=ep.keys["default"], model=model, ca_certificate=Path(ep.ca).read_text(),
                          endpoint="u01")


def run_snippet(code: str, a: AttendeeOutput, folder: Path) -> str:
    """The snippet in a folder holding the CA file the handout comes with, trusting only what the snippet says."""
    folder.mkdir(exist_ok=True)
    (folder / "u01-ca.pem").write_text(a.ca_certificate)
    result = run_client(code, cwd=folder)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("name", ["openai", "biochatter"])
def test_the_handouts_python_snippets_answer_from_llama_cpp(llama: Endpoint, tmp_path: Path, name: str) -> None:
    a = attendee_for(llama, "tiny")
    page = page_context(a, "ws", "t", None, "now", engine="llamacpp")  # what the handout prints
    code = page["snippets"][name]
    assert a.api_key in code and "u01-ca.pem" in code and "xinference" not in page["snippets"]
    assert run_snippet(code, a, tmp_path / "attendee").strip()  # the model's reply, printed
    wrong = replace(a, api_key="sk-llm-" + "x" * 43)
    refused = run_client(page_context(wrong, "ws", "t", None, "now")["snippets"][name], cwd=tmp_path / "attendee")
    # OpenAI's SDK raises on the 401; BioChatter's set_api_key returns False, and query then says why.
    why = {"openai": "openai.AuthenticationError", "biochatter": "Did you call set_api_key()?"}[name]
    assert refused.returncode == 1 and why in refused.stderr, refused.stderr[-2000:]
