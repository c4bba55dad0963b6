"""What `llmdeploy smoke` checks: one endpoint (URL, credentials, dialect, model, CA bundle, SSH access),
read from the command line or from a targets file (YAML or JSON) listing many.

Every problem with the input is a TargetError whose message names the problem and the fix; the CLI turns
it into exit code 2. Secrets never go into an error message.

Targets file: a list (or {"targets": [...]}) of entries like
    - name: ws-01                        # default: the URL's host[:port]
      url: https://ws-01.example.com
      api_key_env: WS01_KEY              # or api_key: KEY, or basic: USER:PASS; default: LLMDEPLOY_API_KEY
      kind: openai                       # openai | ollama | xinference | oci-ds
      model: qwen2.5-instruct            # default: the first model the server lists
      ca_bundle: ca.pem                  # relative to the targets file
      http_url: http://ws-01.example.com # where plain HTTP is expected to redirect from (default: port 80)
      ssh: llmadmin@ws-01.example.com    # optional SSH checks, with ssh_key (and ssh_host_key)
"""
from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import UsageError
from ..textfiles import FileProblem, load_json, load_yaml, read_text
from .dialects import KINDS, dialect_for

API_KEY_ENV = "LLMDEPLOY_API_KEY"
BASIC_PASSWORD_ENV = "LLMDEPLOY_BASIC_PASSWORD"
DEFAULT_CONCURRENCY = 8  # endpoints checked at once with --targets (here, not in runner: --help must not load it)
TARGET_KEYS = ("name", "url", "api_key", "api_key_env", "basic", "kind", "model", "ca_bundle", "http_url",
               "timeout", "ssh", "ssh_key", "ssh_host_key", "chat_url")


class TargetError(UsageError):
    """Bad input: the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Credentials:
    """An API key (Authorization: Bearer) or a basic-auth user and password."""

    api_key: str | None = None
    basic: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never print a secret by accident
        return f"Credentials({'api_key=***' if self.api_key else ''}{'basic=' + self.basic[0] if self.basic else ''})"

    @property
    def present(self) -> bool:
        return bool(self.api_key or self.basic)

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"Authorization": f"Bearer {self.api_key}"}
        if self.basic:
            return {"Authorization": "Basic " + _b64(f"{self.basic[0]}:{self.basic[1]}")}
        return {}

    def wrong_headers(self) -> dict[str, str]:
        """The same kind of credential, with a wrong secret."""
        wrong = "smoke-wrong-" + os.urandom(12).hex()
        if self.basic:
            return {"Authorization": "Basic " + _b64(f"{self.basic[0]}:{wrong}")}
        return {"Authorization": f"Bearer sk-{wrong}"}

    def secrets(self) -> list[str]:
        """Every form in which the secret could appear in output."""
        found: list[str] = []
        if self.api_key:
            found += [self.api_key, quote(self.api_key, safe="")]
        if self.basic:
            user, password = self.basic
            found += [password, quote(password, safe=""), _b64(f"{user}:{password}")]
        return [s for s in dict.fromkeys(found) if s]

    def describe(self) -> str:
        return "API key" if self.api_key else f"basic auth as {self.basic[0]}" if self.basic else "no credentials"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class SshAccess:
    user: str
    host: str
    key_file: str
    port: int = 22
    host_key: str | None = None


@dataclass(frozen=True)
class Target:
    """One endpoint to check."""

    url: str
    credentials: Credentials = field(default_factory=Credentials)
    kind: str = "openai"
    model: str | None = None
    ca_bundle: str | None = None
    http_url: str | None = None
    timeout: float = 30.0
    name: str = ""
    ssh: SshAccess | None = None
    oci: Mapping[str, Any] = field(default_factory=dict)  # oci-ds: config_file, profile, instance_principal
    chat_url: str | None = None  # the chat frontend (chatUi): its sign-in is checked with the API key
    allow_plain_http: bool = False  # --allow-plain-http: the user accepts sending the credential unencrypted

    @property
    def base(self) -> str:
        return self.url.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    def shown_path(self, path: str) -> str:
        """The path a request for `path` really asks for (the URL's own path first), as check names print it."""
        return urlsplit(self.base).path + path

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def is_https(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def plain_http_url(self) -> str:
        """Where a client that typed http:// lands: --http-url, else port 80 on the same host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (self.http_url or f"http://{host}").rstrip("/")


def check_url(url: str, what: str = "URL") -> str:
    """The URL without a trailing slash, or TargetError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"bad {what} {url!r}: expected https://HOST[:PORT][/PATH], e.g. https://llm.example.com")
    if parts.username or parts.password:
        raise TargetError(f"bad {what}: do not put credentials in the URL; use --api-key or --basic USER:PASS")
    try:
        _ = parts.port  # urllib raises ValueError for a port that is not 1-65535
    except ValueError:
        raise TargetError(f"bad {what} {url!r}: the port is not a number from 1 to 65535") from None
    return url.rstrip("/")


def parse_basic(value: str, env: Mapping[str, str]) -> tuple[str, str]:
    """USER:PASS, or USER with the password in $LLMDEPLOY_BASIC_PASSWORD."""
    user, sep, password = value.partition(":")
    if not sep:
        password = env.get(BASIC_PASSWORD_ENV, "")
    if not user or not password:
        raise TargetError(f"bad --basic value: expected USER:PASS (or USER with the password in ${BASIC_PASSWORD_ENV})")
    return user, password


def credentials_from(api_key: str | None, basic: str | None, env: Mapping[str, str]) -> Credentials:
    """--api-key, else --basic, else $LLMDEPLOY_API_KEY (which keeps the key off the command line)."""
    if api_key is not None and basic is not None:
        raise TargetError("give either an API key or --basic USER:PASS, not both")
    if api_key is not None:
        if not api_key.strip():
            raise TargetError(f"the API key is empty: pass --api-key KEY or set ${API_KEY_ENV}")
        return Credentials(api_key=api_key.strip())
    if basic is not None:
        return Credentials(basic=parse_basic(basic, env))
    if env.get(API_KEY_ENV, "").strip():
        return Credentials(api_key=env[API_KEY_ENV].strip())
    return Credentials()


def require_credentials(target: Target) -> None:
    if target.kind != "oci-ds" and not target.credentials.present:
        raise TargetError(f"{target.name or target.url}: no credentials; set ${API_KEY_ENV} (preferred: not visible "
                          f"in `ps`), or pass --api-key KEY or --basic USER:PASS")


def parse_ssh(value: str, key_file: str | None, host_key: str | None = None) -> SshAccess:
    """USER@HOST[:PORT] plus the private key file."""
    user, sep, rest = value.partition("@")
    host, _, port_text = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if not sep or not user or not host:
        raise TargetError(f"bad --ssh value {value!r}: expected USER@HOST or USER@HOST:PORT, e.g. llmadmin@203.0.113.7")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise TargetError(f"bad --ssh port in {value!r}: expected a number from 1 to 65535")
    if not key_file:
        raise TargetError("--ssh needs --ssh-key FILE (the private key whose public half is in sshPublicKeys)")
    if not os.access(key_file, os.R_OK):
        raise TargetError(f"cannot read the SSH key {key_file!r}: check the path and its permissions")
    return SshAccess(user, host, key_file, int(port_text or 22), host_key)


def check_file(path: str, what: str) -> str:
    if not os.access(path, os.R_OK) or not os.path.isfile(path):
        raise TargetError(f"cannot read the {what} {path!r}: check the path (and its permissions)")
    return path


def check_ca_bundle(path: str) -> None:
    """A CA bundle must hold PEM certificates: otherwise every check would fail as a TLS handshake failure."""
    import ssl  # here: only a bundle given pays for it

    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        reason = exc.args[-1] if exc.args else exc
        raise TargetError(f"the CA bundle {path!r} holds no PEM certificate ({reason}): give the CA's certificate "
                          "file (-----BEGIN CERTIFICATE-----), e.g. the stack's ca.pem") from None


def finish_target(target: Target) -> Target:
    """Validate a target and fill in its name."""
    if target.kind not in KINDS:
        raise TargetError(f"{target.name or target.url}: unknown kind {target.kind!r}; expected one of {', '.join(KINDS)}")
    url = _without_api_suffix(check_url(target.url), target.kind)
    http_url = check_url(target.http_url, "http URL") if target.http_url else None
    if target.ca_bundle:
        check_ca_bundle(check_file(target.ca_bundle, "CA bundle"))
    if target.kind == "oci-ds" and not target.model:
        raise TargetError(f"{target.name or url}: --kind oci-ds needs --model NAME (the name vLLM serves: the "
                          "stack's modelName)")
    if target.timeout <= 0:
        raise TargetError(f"{target.name or url}: the timeout must be a positive number of seconds")
    name = target.name or urlsplit(url).netloc
    done = replace(target, url=url, http_url=http_url, name=name, chat_url=_chat_url(target))
    require_credentials(done)
    _refuse_plain_http(done)
    return done


def _without_api_suffix(url: str, kind: str) -> str:
    """https://host/v1 -> https://host for a dialect whose paths start with /v1 (openai, xinference): the handouts
    and most clients print the base URL with /v1, and the checks add it again (/v1/v1/models)."""
    models_path = dialect_for(kind).models_path if kind != "oci-ds" else ""
    return url[:-len("/v1")] if models_path.startswith("/v1/") and urlsplit(url).path.endswith("/v1") else url


def _refuse_plain_http(target: Target) -> None:
    """A credential goes over plain HTTP only when the user says so: anyone on the path reads it."""
    if target.is_https or not target.credentials.present or target.allow_plain_http:
        return
    raise TargetError(f"{target.name}: {target.url} is plain HTTP, and the checks would send the "
                      f"{target.credentials.describe()} in clear text to every route; nothing was sent. Use the "
                      "https:// URL, or, for a server on a network you trust (a test server on loopback), pass "
                      "--allow-plain-http")


def _chat_url(target: Target) -> str | None:
    """The checked --chat-url: https only, and an API key to sign in with (the chat takes no basic auth)."""
    if not target.chat_url:
        return None
    url = check_url(target.chat_url, "chat URL")
    if urlsplit(url).scheme != "https":
        raise TargetError(f"bad chat URL {url!r}: the chat sign-in sets a Secure cookie, so it is https://CHAT_HOST "
                          "(e.g. https://chat.llm.example.com/_login)")
    if not target.credentials.api_key:
        raise TargetError(f"--chat-url signs in with an API key, and {target.name or target.url} has none: set "
                          f"${API_KEY_ENV} (basic-auth users cannot sign in to the chat)")
    return url


# --- targets file -----------------------------------------------------------------------------------------


def read_targets_file(path: str) -> list[Mapping[str, Any]]:
    """The raw entries of a YAML or JSON targets file."""
    try:
        text = read_text(Path(path), "targets file")
    except OSError as exc:
        raise TargetError(f"cannot read the targets file {path!r}: {exc.strerror or exc}; check the path") from None
    except FileProblem as exc:
        raise TargetError(str(exc)) from None
    where = f"the targets file {path!r}"
    try:
        data = load_json(text, where) if path.endswith(".json") else load_yaml(text, where)
    except FileProblem as exc:
        raise TargetError(str(exc).splitlines()[0]) from None
    if isinstance(data, dict) and "targets" in data:
        data = data["targets"]
    if not isinstance(data, list) or not data:
        raise TargetError(f"the targets file {path!r} must hold a non-empty list of targets "
                          "(each with at least url:), or {targets: [...]}")
    return data


def target_from_entry(entry: Any, index: int, defaults: Target, base_dir: Path, env: Mapping[str, str]) -> Target:
    """One targets-file entry, on top of the command line's defaults (kind, model, CA bundle, timeout, key)."""
    where = f"target #{index + 1}"
    if not isinstance(entry, dict):
        raise TargetError(f"{where}: expected a mapping with url: ..., got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(TARGET_KEYS))
    if unknown:
        raise TargetError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted keys: {', '.join(TARGET_KEYS)}")
    if not entry.get("url"):
        raise TargetError(f"{where}: missing url: (e.g. url: https://llm.example.com)")
    where = f"target {entry.get('name') or entry['url']!r}"
    credentials = _entry_credentials(entry, where, env) or defaults.credentials
    ca = _path(entry.get("ca_bundle"), base_dir)
    ssh = None
    if entry.get("ssh"):
        ssh = parse_ssh(str(entry["ssh"]), _path(entry.get("ssh_key"), base_dir), entry.get("ssh_host_key"))
    try:
        timeout = float(entry.get("timeout", defaults.timeout))
    except (TypeError, ValueError):
        raise TargetError(f"{where}: timeout must be a number of seconds") from None
    target = Target(url=str(entry["url"]), credentials=credentials, kind=str(entry.get("kind", defaults.kind)),
                    model=str(entry["model"]) if entry.get("model") else defaults.model,
                    ca_bundle=ca or defaults.ca_bundle,
                    http_url=entry.get("http_url"), timeout=timeout, name=str(entry.get("name") or ""), ssh=ssh,
                    oci=defaults.oci, chat_url=str(entry["chat_url"]) if entry.get("chat_url") else None,
                    allow_plain_http=defaults.allow_plain_http)
    try:
        return finish_target(target)
    except TargetError as exc:
        raise TargetError(f"{where}: {exc}") from None


def _path(value: Any, base_dir: Path) -> str | None:
    """A path from the targets file: ~ expanded, relative to the file's folder."""
    return str(base_dir / Path(str(value)).expanduser()) if value else None


def _entry_credentials(entry: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Credentials | None:
    given = [k for k in ("api_key", "api_key_env", "basic") if entry.get(k)]
    if len(given) > 1:
        raise TargetError(f"{where}: give only one of api_key, api_key_env and basic (got {', '.join(given)})")
    if entry.get("api_key_env"):
        name = str(entry["api_key_env"])
        if not env.get(name, "").strip():
            raise TargetError(f"{where}: api_key_env names ${name}, which is not set or empty; export it first")
        return Credentials(api_key=env[name].strip())
    if entry.get("api_key"):
        return Credentials(api_key=str(entry["api_key"]).strip())
    if entry.get("basic"):
        try:
            return Credentials(basic=parse_basic(str(entry["basic"]), env))
        except TargetError as exc:
            raise TargetError(f"{where}: {str(exc).replace('--basic', 'basic:')}") from None
    return None


def load_targets(path: str, defaults: Target, env: Mapping[str, str]) -> list[Target]:
    """Every target of a targets file, validated; names must be unique."""
    base_dir = Path(path).resolve().parent
    targets = [target_from_entry(e, i, defaults, base_dir, env) for i, e in enumerate(read_targets_file(path))]
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise TargetError(f"two targets are named {target.name!r}: give each a unique name:")
        seen.add(target.name)
    return targets
