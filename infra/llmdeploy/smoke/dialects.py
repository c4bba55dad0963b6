"""The API dialects `llmdeploy smoke` speaks: which routes to call, with which bodies, and how to read answers.

- `openai`: the OpenAI-compatible API of vLLM, Xinference, llama.cpp's server and Ollama's /v1:
  GET /v1/models ({"object": "list", "data": [{"id": ...}]}), POST /v1/chat/completions and
  /v1/completions, streamed as Server-Sent Events.
- `xinference`: the same routes; its model list adds Xinference's own fields to each entry (`model_name`,
  `model_type`, `model_ability`, `model_format`, ...), and the model is found by its uid (`id`) or name.
- `ollama`: Ollama's native API: GET /api/tags ({"models": [{"name": "llama3.1:8b", ...}]}),
  POST /api/generate and /api/chat, streamed as NDJSON whose last object says `"done": true`.
- `oci-ds`: OCI Data Science `/predict`, signed with the `oci` SDK; handled by `llmdeploy.smoke.oci_ds`.

A dialect is data plus small pure functions, so the checks in http_checks.py stay the same for all.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

OCI_DS = "oci-ds"  # OCI Data Science /predict: llmdeploy.smoke.oci_ds, not a dialect here
PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 8  # a non-streamed answer only has to exist
STREAM_TOKENS = 16  # a streamed one needs enough events to judge how they arrive
# A second stream, when the first was too quick to judge (see longer_stream): a prompt with a long answer.
LONG_PROMPT = "Count from 1 to 300, one number after the other, separated by spaces."

Json = dict[str, Any]


@dataclass(frozen=True)
class ApiCall:
    """One request a check sends, and how to find the generated text in its answer (or in one stream event)."""

    name: str
    method: str
    path: str
    body: Json | None
    text_of: Callable[[Json], str]
    stream: str | None = None  # None, "sse" or "ndjson"


@dataclass(frozen=True)
class ModelEntry:
    """A model the server lists: the id to send, other names it answers to, and the server's details."""

    id: str
    aliases: tuple[str, ...] = ()
    details: Json = field(default_factory=dict)


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _first_choice(obj: Json) -> Json:
    choices = obj.get("choices")
    return _dict(choices[0]) if isinstance(choices, list) and choices else {}


def _text(*values: Any) -> str:
    return "".join(v for v in values if isinstance(v, str))


def openai_chat_text(obj: Json) -> str:
    """Text of a chat answer or chunk (content, or reasoning_content for reasoning models)."""
    choice = _first_choice(obj)
    part = _dict(choice.get("message")) or _dict(choice.get("delta"))
    return _text(part.get("content"), part.get("reasoning_content"))


def openai_completion_text(obj: Json) -> str:
    return _text(_first_choice(obj).get("text"))


def ollama_generate_text(obj: Json) -> str:
    return _text(obj.get("response"), obj.get("thinking"))


def ollama_chat_text(obj: Json) -> str:
    message = _dict(obj.get("message"))
    return _text(message.get("content"), message.get("thinking"))


def requested_tokens(call: ApiCall) -> int:
    """The tokens a request asks for (max_tokens, or Ollama's options.num_predict)."""
    body = call.body or {}
    tokens = _dict(body.get("options")).get("num_predict", body.get("max_tokens"))
    return tokens if isinstance(tokens, int) else STREAM_TOKENS


def longer_stream(call: ApiCall, tokens: int) -> ApiCall:
    """The same streamed request, asking for `tokens` tokens of an answer that is long by nature, so that a
    fast model generates long enough for its stream to be judged."""
    body = copy.deepcopy(call.body or {})
    if "messages" in body:
        body["messages"] = [{"role": "user", "content": LONG_PROMPT}]
    if "prompt" in body:
        body["prompt"] = LONG_PROMPT
    if isinstance(body.get("options"), dict):
        body["options"]["num_predict"] = tokens
    else:
        body["max_tokens"] = tokens
    return replace(call, body=body)


class BaseDialect:
    """What every dialect shares: finding the wanted model among those listed."""

    kind = ""
    models_path = ""

    def find_model(self, models: list[ModelEntry], wanted: str) -> ModelEntry | None:
        return next((m for m in models if wanted == m.id or wanted in m.aliases), None)

    def model_problem(self, model: ModelEntry) -> str | None:
        """Why this model cannot answer the checks (None: it can, as far as the list tells)."""
        return None


class OpenAIDialect(BaseDialect):
    """vLLM, Xinference, llama.cpp and Ollama's /v1 routes."""

    kind = "openai"
    models_path = "/v1/models"

    def parse_models(self, payload: Any) -> list[ModelEntry]:
        data = _dict(payload).get("data")
        if not isinstance(data, list):
            raise ValueError('expected {"object": "list", "data": [...]}')
        return [ModelEntry(str(m["id"])) for m in data if isinstance(m, dict) and "id" in m]

    def calls(self, model: str) -> list[ApiCall]:
        chat = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0}
        text = {"model": model, "prompt": PROMPT, "temperature": 0}
        return [
            ApiCall("chat", "POST", "/v1/chat/completions", {**chat, "max_tokens": MAX_TOKENS}, openai_chat_text),
            ApiCall("completion", "POST", "/v1/completions", {**text, "max_tokens": MAX_TOKENS},
                    openai_completion_text),
            ApiCall("stream", "POST", "/v1/chat/completions",
                    {**chat, "max_tokens": STREAM_TOKENS, "stream": True}, openai_chat_text, "sse"),
            ApiCall("stream", "POST", "/v1/completions",
                    {**text, "max_tokens": STREAM_TOKENS, "stream": True}, openai_completion_text, "sse"),
        ]

    def auth_probes(self, model: str) -> list[ApiCall]:
        """Every API route, with the cheapest request that a server accepts."""
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        return [
            ApiCall("auth", "GET", self.models_path, None, openai_chat_text),
            ApiCall("auth", "POST", "/v1/chat/completions", chat, openai_chat_text),
            ApiCall("auth", "POST", "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 1},
                    openai_completion_text),
        ]

    def is_end(self, data: str, obj: Json | None) -> bool:
        return data.strip() == "[DONE]"

    def stream_error(self, obj: Json) -> str | None:
        error = obj.get("error")
        return None if error is None else str(_dict(error).get("message") or error)

    def decode_seconds(self, obj: Json) -> float | None:
        """The server's own generation time, if it reports one (llama.cpp: timings.predicted_ms)."""
        predicted_ms = _dict(obj.get("timings")).get("predicted_ms")
        return float(predicted_ms) / 1000 if isinstance(predicted_ms, (int, float)) else None


class XinferenceDialect(OpenAIDialect):
    """Xinference: OpenAI-compatible routes; its model list carries model_name, model_type, model_ability."""

    kind = "xinference"
    DETAIL_KEYS = ("model_name", "model_type", "model_ability", "model_format", "model_size_in_billions",
                   "quantization", "model_engine", "replica")

    def parse_models(self, payload: Any) -> list[ModelEntry]:
        data = _dict(payload).get("data")
        if not isinstance(data, list):
            raise ValueError('expected {"object": "list", "data": [...]}')
        entries = []
        for item in (m for m in data if isinstance(m, dict) and "id" in m):
            details = {k: item[k] for k in self.DETAIL_KEYS if k in item}
            name = item.get("model_name")
            entries.append(ModelEntry(str(item["id"]), (str(name),) if name else (), details))
        return entries

    def model_problem(self, model: ModelEntry) -> str | None:
        model_type = model.details.get("model_type")
        if model_type is not None and str(model_type).upper() != "LLM":
            return f"model_type is {model_type!r}, not 'LLM': it cannot answer chat or completions"
        abilities = model.details.get("model_ability")
        if isinstance(abilities, list) and "chat" not in abilities:
            return f"model_ability is {abilities}: it has no 'chat' ability"
        return None


class OllamaDialect(BaseDialect):
    """Ollama's native API (/api/tags, /api/generate, /api/chat); NDJSON streams ending in "done": true."""

    kind = "ollama"
    models_path = "/api/tags"

    def parse_models(self, payload: Any) -> list[ModelEntry]:
        models = _dict(payload).get("models")
        if not isinstance(models, list):
            raise ValueError('expected {"models": [{"name": ...}, ...]}')
        entries = []
        for item in (m for m in models if isinstance(m, dict) and ("name" in m or "model" in m)):
            name = str(item.get("name") or item.get("model"))
            aliases = {str(item.get("model") or name)}
            if name.endswith(":latest"):
                aliases.add(name[: -len(":latest")])  # "llama3" means "llama3:latest"
            details = {k: item[k] for k in ("size", "digest", "details") if k in item}
            entries.append(ModelEntry(name, tuple(sorted(aliases - {name})), details))
        return entries

    def calls(self, model: str) -> list[ApiCall]:
        gen = {"model": model, "prompt": PROMPT}
        chat = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
        short, long = {"num_predict": MAX_TOKENS, "temperature": 0}, {"num_predict": STREAM_TOKENS, "temperature": 0}
        return [
            ApiCall("generate", "POST", "/api/generate", {**gen, "stream": False, "options": short},
                    ollama_generate_text),
            ApiCall("chat", "POST", "/api/chat", {**chat, "stream": False, "options": short}, ollama_chat_text),
            ApiCall("stream", "POST", "/api/generate", {**gen, "stream": True, "options": long},
                    ollama_generate_text, "ndjson"),
            ApiCall("stream", "POST", "/api/chat", {**chat, "stream": True, "options": long},
                    ollama_chat_text, "ndjson"),
        ]

    def auth_probes(self, model: str) -> list[ApiCall]:
        """The native routes, and Ollama's OpenAI-compatible list (the site exposes /v1/ too)."""
        one = {"num_predict": 1}
        return [
            ApiCall("auth", "GET", self.models_path, None, ollama_generate_text),
            ApiCall("auth", "POST", "/api/generate", {"model": model, "prompt": "hi", "stream": False,
                                                      "options": one}, ollama_generate_text),
            ApiCall("auth", "POST", "/api/chat", {"model": model, "stream": False, "options": one,
                                                  "messages": [{"role": "user", "content": "hi"}]},
                    ollama_chat_text),
            ApiCall("auth", "GET", "/v1/models", None, openai_chat_text),
        ]

    def is_end(self, data: str, obj: Json | None) -> bool:
        return bool(obj and obj.get("done") is True)

    def stream_error(self, obj: Json) -> str | None:
        error = obj.get("error")
        return None if error is None else str(error)

    def decode_seconds(self, obj: Json) -> float | None:
        """Ollama's final object: eval_duration in nanoseconds."""
        duration = obj.get("eval_duration")
        return float(duration) / 1e9 if isinstance(duration, (int, float)) and obj.get("done") else None


Dialect = OpenAIDialect | OllamaDialect  # XinferenceDialect is an OpenAIDialect
# Each engine names the one that speaks its API (engines/<engine>.py `dialect`).
_DIALECTS: dict[str, Callable[[], Dialect]] = {d.kind: d for d in (OpenAIDialect, OllamaDialect, XinferenceDialect)}
KINDS = (*_DIALECTS, OCI_DS)


def dialect_for(kind: str) -> Dialect:
    """The dialect for --kind (oci-ds has none here: it is delegated to llmdeploy.smoke.oci_ds)."""
    try:
        return _DIALECTS[kind]()
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}") from None
