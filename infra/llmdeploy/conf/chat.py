"""The chat section of Pulumi.yaml: chatUi, its host name and BioChatter Light's source; each frontend's own checks
are in frontends.py."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..engines import Engine
from ..frontends import CHAT_UIS, NONE, BiochatterNext, ChatFrontend, frontend, next_server_key
from .auth import Auth
from .deployment import DeploymentKind
from .reader import DOMAIN_RE, Problem, Reader
from .tls import Tls, check_provided_names


@dataclass(frozen=True)
class Chat:
    """The chat frontend for people (chatUi), served on its own host name behind the API's keys."""

    ui: str  # none | open-webui | biochatter-light | biochatter-next
    host: str  # chat.<domain> unless chatHost says otherwise; empty when ui is none
    biochatter_light_repo: str
    biochatter_light_ref: str
    admin: str = ""  # the first admin key's name: it signs in first, so it is the frontend's admin (Open WebUI)
    next_images: BiochatterNextImages | None = None  # chatUi biochatter-next: its two containers, by digest

    @property
    def frontend(self) -> ChatFrontend | None:
        return frontend(self.ui)

    @property
    def enabled(self) -> bool:
        return self.frontend is not None

    @property
    def path(self) -> str:
        """Where the frontend's page is on its host (frontends.py)."""
        return self.frontend.path if self.frontend else "/"


@dataclass(frozen=True)
class BiochatterNextImages:
    """BioChatter Next's containers, each pinned by digest, and the key its server talks to the engine with."""

    server: str
    client: str
    server_key: str  # the first ordinary (not :admin) API key's name: delivered over SSH, never in user-data


# NAME[:TAG]@sha256:DIGEST, nothing a shell or a unit file would read otherwise.
_DIGEST_IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9._/:-]{0,254}@sha256:[0-9a-f]{64}")
_NEXT_IMAGES = {"biochatterNextServerImage": "biocypher/biochatter-server:TAG",
                "biochatterNextClientImage": "REGISTRY/biochatter-next:TAG"}


def _next_images(r: Reader, auth: Auth) -> BiochatterNextImages:
    """Both images by digest: a tag can be moved, a digest cannot; llmdeploy ships no digest it has not seen."""
    found = {}
    for key, example in _NEXT_IMAGES.items():
        image = r.str(key)
        found[key] = image
        if not _DIGEST_IMAGE_RE.fullmatch(image):
            r.bad(key, image, "an image pinned by digest (NAME@sha256:<64 hex>) for chatUi biochatter-next; "
                  f"`docker buildx imagetools inspect {example}` prints the Digest to pin (docs/chat.md)",
                  f"{example.split(':')[0]}@sha256:<digest>")
    return BiochatterNextImages(found["biochatterNextServerImage"], found["biochatterNextClientImage"],
                                next_server_key(auth))


_GIT_REF_RE = re.compile(r"[0-9a-f]{40}|[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")


def parse_chat(r: Reader, kind: DeploymentKind, domain: str, auth: Auth, engine: Engine, model_name: str,
               os_name: str, tls: Tls) -> Chat:
    ui = r.choice("chatUi", CHAT_UIS)
    repo, ref = r.str("biochatterLightRepo"), r.str("biochatterLightRef")
    if not re.fullmatch(r"(https?|ssh|git|file)://[^\s'\"`$\\;&|<>]+", repo):
        r.bad("biochatterLightRepo", repo, "a git URL (https://, ssh://, git:// or file://) without spaces or shell "
              "characters", str(r.decls["biochatterLightRepo"].default))
    if not _GIT_REF_RE.fullmatch(ref) or ".." in ref:
        r.bad("biochatterLightRef", ref, "a tag or a 40-hex commit of biochatterLightRepo",
              str(r.decls["biochatterLightRef"].default))
    chosen = frontend(ui)
    if chosen is None or r.failed("chatUi"):
        return Chat(NONE, "", repo, ref)
    host = _chat_host(r, ui, kind, domain)
    if kind.model_deployment:
        r.bad("chatUi", ui, "none on the datascience target (a model deployment has no host to run a frontend on)",
              "none")
    if not auth.api_keys and not r.failed("apiKeys"):
        r.problems.append(Problem(
            "chatUi", ui, "API keys to sign in with: the chat page asks for an API key, and basic-auth users have "
            "none (Open WebUI's own Authorization header collides with basic auth)",
            "pulumi config set --path 'apiKeys[0]' default; or pulumi config set chatUi none"))
    if host and tls.mode == "provided":
        check_provided_names(r, tls, host)
    chosen.check(r, engine, model_name, os_name, auth)
    images = _next_images(r, auth) if isinstance(chosen, BiochatterNext) else None
    return Chat(ui, host, repo, ref, next((k.name for k in auth.api_keys if k.admin), ""), images)


def _chat_host(r: Reader, ui: str, kind: DeploymentKind, domain: str) -> str:
    """chatHost, or chat.<domain>; chat.localhost (loopback to a browser) on the local target without a domain."""
    given = r.str("chatHost").lower().rstrip(".")
    if given and not (DOMAIN_RE.fullmatch(given) or re.fullmatch(r"([a-z0-9-]+\.)?localhost", given)):
        r.bad("chatHost", given, "a DNS name such as chat.llm.example.org, or empty for chat.<domain>",
              f"chat.{domain or 'llm.example.org'}")
        return ""
    if given and given == domain:
        r.bad("chatHost", given, "a host name other than domain (the API keeps domain; the chat frontend needs a "
              "name of its own, since Open WebUI cannot live under a path)", f"chat.{domain}")
    host = given or (f"chat.{domain}" if domain else "chat.localhost" if kind.local_vm else "")
    if not host and r.str("workshopRoster") and r.str("workshopDomain"):
        return ""  # each workshop endpoint's own config gets chat.<its domain> (workshop/configs.py)
    if not host:
        r.problems.append(Problem(
            "chatUi", ui, "a domain for the chat frontend's own host name (chat.<domain>): an endpoint reached by "
            "its IP address has no second name to give it", "pulumi config set domain llm.example.org (the chat page "
            "is then https://chat.llm.example.org/, on the same certificate); or pulumi config set chatHost NAME"))
    elif r.str("workshopRoster") and given:
        r.bad("chatHost", given, "empty in a workshop: each endpoint's chat page is chat.<its own domain>", "''")
    return host
