"""The course's own Python clients, run as an attendee runs them: Xinference's client (PyPI `xinference-client`) and
BioChatter's three conversation classes (PyPI `biochatter`), from their own virtualenv (scripts/install_engines.py
`clients`), each a short program run by that virtualenv's Python against an llmdeploy endpoint.

The program comes on stdin and its settings (URL, key, CA) in the environment, never on a command line (a handout
snippet holds a key). Each prints one JSON line: what it got. The environment is a clean one: this machine's
REQUESTS_CA_BUNDLE / SSL_CERT_FILE would otherwise decide what the client trusts.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .engines import ENGINES_DIR

CLIENTS_VENV = ENGINES_DIR / "clients"
INSTALL = "python3 scripts/install_engines.py clients"


def clients_python() -> str:
    python = CLIENTS_VENV / "bin" / "python"
    assert python.is_file() and (CLIENTS_VENV / ".llmdeploy-installed").is_file(), (
        f"the course's clients are not installed in {CLIENTS_VENV}: run `{INSTALL}` (scripts/setup.sh does)")
    return str(python)


def run_client(code: str, ca: str = "", cwd: Path | None = None, timeout: float = 300,
               **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in the clients' virtualenv; `ca` is trusted by httpx (SSL_CERT_FILE) and requests
    (REQUESTS_CA_BUNDLE) alike; `settings` are environment variables the code reads."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({"NO_PROXY": "*", "PYTHONWARNINGS": "ignore", **settings})
    if ca:
        env.update({"SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca})
    return subprocess.run([clients_python(), "-"], input=code, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def answer(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The program's last stdout line as JSON; the whole output if it failed."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def with_user(url: str, user: str, password: str) -> str:
    """https://user:password@host:port: the URL the keyless classes get (their HTTP client sends basic auth)."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


# ---- the programs -------------------------------------------------------------------------------------------

# BioChatter's OpenAI class, with the key (set_api_key checks it with models.list()).
GPT_CONVERSATION = """
import json, os
from biochatter.llm_connect import GptConversation
conversation = GptConversation(model_name=os.environ["MODEL"], prompts={}, base_url=os.environ["BASE_URL"])
out = {"key_accepted": conversation.set_api_key(api_key=os.environ["API_KEY"])}
if out["key_accepted"]:
    out["reply"], out["usage"], _ = conversation.query("Say hello.")
print(json.dumps(out))
"""

# BioChatter's Ollama class: LangChain's ChatOllama (requests), credentials in the URL.
OLLAMA_CONVERSATION = """
import json, os
from biochatter.llm_connect import OllamaConversation
conversation = OllamaConversation(base_url=os.environ["URL"], prompts={}, model_name=os.environ["MODEL"])
try:
    reply, usage, _ = conversation.query("Say hello.")
    print(json.dumps({"reply": reply, "usage": usage}))
except Exception as exc:  # what the attendee sees on a refusal
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""

# BioChatter's Xinference class: Xinference's Client (requests), credentials in the URL.
XINFERENCE_CONVERSATION = """
import json, os
from biochatter.llm_connect import XinferenceConversation
try:
    conversation = XinferenceConversation(base_url=os.environ["URL"], prompts={}, model_name=os.environ["MODEL"])
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
out = {"models": sorted(conversation.models), "model_found": conversation.set_api_key()}
try:
    out["reply"], out["usage"], _ = conversation.query("Say hello.")
except Exception as exc:
    out["query_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""

# The course's advanced exercise with Xinference's own client: list, chat; launch a second copy, chat with it,
# terminate it (the last three need an admin key).
XINFERENCE_EXERCISE = """
import json, os
from xinference_client import RESTfulClient
client = RESTfulClient(os.environ["URL"], api_key=os.environ["API_KEY"])
out = {"models": sorted(client.list_models())}
reply = client.get_model(os.environ["MODEL"]).chat(messages=[{"role": "user", "content": "Say hello."}])
out["reply"] = reply["choices"][0]["message"]["content"]
try:
    uid = client.launch_model(model_name=os.environ["MODEL_NAME"], model_engine="llama.cpp",
                              model_size_in_billions=os.environ["SIZE"], model_format="ggufv2",
                              quantization=os.environ["QUANTIZATION"])
except RuntimeError as exc:
    out["launch_error"] = str(exc)
    print(json.dumps(out))
    raise SystemExit(0)
out["launched"] = uid
out["models_with_copy"] = sorted(client.list_models())
copy = client.get_model(uid).chat(messages=[{"role": "user", "content": "Say hello."}])
out["copy_reply"] = copy["choices"][0]["message"]["content"]
client.terminate_model(uid)
out["models_after"] = sorted(client.list_models())
print(json.dumps(out))
"""
