"""The smoke test of the local VM: the project's own `llmdeploy smoke` checks (TLS, auth on every route,
models, chat, completions, streams, and over SSH: cloud-init, stage markers, services, the engine on
loopback only), run against the forwarded loopback ports, with the VM's host key pinned.

A letsencrypt stack's certificate names its domain (llm.test), which this machine's resolver does not
know: for the duration of the checks that one name resolves to 127.0.0.1 in this process only, as
`curl --resolve` does."""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..engines import ENGINES
from ..result import CheckResult
from ..smoke.dialects import OpenAIDialect
from ..smoke.runner import TargetReport, run_target
from ..smoke.targets import Credentials, SshAccess, Target
from .state import VmState

SMOKE_TIMEOUT = 60.0  # seconds per request: a TCG guest is slow


@contextmanager
def resolve(names: dict[str, str]) -> Iterator[None]:
    """Resolve each name to the given address in this process (nothing else on the machine changes)."""
    if not names:
        yield
        return
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        return real(names.get(host, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real  # type: ignore[assignment]


def credentials(state: VmState, basic: tuple[str, str] | None = None) -> Credentials:
    keys = state.api_keys()
    if keys:
        return Credentials(api_key=next(iter(keys.values())))
    return Credentials(basic=basic)


def target(state: VmState, creds: Credentials) -> Target:
    # The engine's own dialect (Xinference's: its CRLF stream lines, completions streams without [DONE]).
    kind = ENGINES[state.engine].dialect if state.engine in ENGINES else OpenAIDialect.kind
    return Target(url=state.endpoint, credentials=creds, kind=kind, model=state.model_name,
                  ca_bundle=str(state.ca_file), http_url=f"http://{state.host}:{state.port(80)}",
                  timeout=SMOKE_TIMEOUT, name=f"local:{state.stack}",
                  ssh=SshAccess(state.admin_user, "127.0.0.1", str(state.ssh_key), state.port(22), state.host_key))


def run_smoke(state: VmState, emit: Callable[[CheckResult], None] | None = None,
              basic: tuple[str, str] | None = None) -> TargetReport:
    names = {state.domain: "127.0.0.1"} if state.host != "127.0.0.1" else {}
    with resolve(names):
        return run_target(target(state, credentials(state, basic)), emit)
