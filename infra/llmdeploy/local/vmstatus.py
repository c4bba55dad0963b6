"""What `llmdeploy local` says about a VM: `status` (its processes, its stages, asked over SSH), and the summary
`up` ends with (the endpoint, the keys and a curl line)."""
from __future__ import annotations

import json
import shlex
import sys
from typing import TextIO

from ..errors import Failure
from ..sshclient import SshError
from . import API_KEYS_ENV, LocalError, procs, runtime
from .guestlogin import login
from .state import VmState

HOST_SERVERS = ("model_server", "pebble", "challtestsrv", "instance_services")  # the host-side servers a VM may use, by state.pids name


def require_state(stack: str) -> VmState:
    state = VmState.load(stack)
    if state is None:
        raise LocalError(f"no local VM for stack '{stack}': start one with llmdeploy local up --stack {stack}")
    return state


def running(state: VmState) -> bool:
    return runtime.of(state).alive(state)


def require_running(stack: str) -> VmState:
    """The state of the stack's local VM, which runs and has an SSH login (LocalError saying what to do if not)."""
    state = require_state(stack)
    if not running(state):
        raise LocalError(f"the VM of stack '{stack}' is not running (phase {state.phase}); "
                         f"llmdeploy local down --stack {stack}, then up again")
    if not state.host_key:
        raise LocalError(f"the VM of stack '{stack}' has no SSH login yet (phase {state.phase})")
    return state


def status(stack: str, out: TextIO | None = None) -> int:
    """Print the VM's state; exit code 0 when it runs and is ready, 1 otherwise."""
    out = out or sys.stdout
    state = VmState.load(stack)
    if state is None:
        print(f"no local VM for stack '{stack}'", file=out)
        return 1
    guest = runtime.of(state)
    up_now = guest.alive(state)
    print(f"stack:        {stack} ({state.phase}{'' if up_now else f', {guest.label} NOT running'})", file=out)
    print(f"vm:           {guest.describe(state)}, created {state.created}", file=out)
    print(f"endpoint:     {state.endpoint}  (model {state.model_name}, TLS {state.tls_mode})", file=out)
    print("ports:        " + ", ".join(f"{g} -> 127.0.0.1:{h}" for g, h in state.ports.items()), file=out)
    for name in HOST_SERVERS:
        if name in state.pids:
            alive = procs.alive(state.pids[name], state.markers.get(name, ""))
            print(f"{name + ':':<14}pid {state.pids[name]} {'running' if alive else 'NOT running'}", file=out)
    if up_now and state.host_key:
        try:  # inside the guest: what `llmdeploy status` shows of any VM, by the same code
            for line in guest_status(state)[1:]:
                print(line, file=out)
        except (SshError, Failure) as exc:
            print(f"stages:       (SSH: {exc})", file=out)
    print(f"state:        {state.folder}", file=out)
    return 0 if up_now and state.phase == "ready" else 1


def guest_status(state: VmState) -> list[str]:
    """operate.status's lines for the guest, over the pinned login."""
    from ..operate import status

    session = login(state)
    try:
        return status.lines(status.read_status(session, f"the local VM of stack '{state.stack}'"))
    finally:
        session.close()


def curl_line(state: VmState) -> str:
    resolve = f" --resolve {state.domain}:{state.port(443)}:127.0.0.1" if state.host != "127.0.0.1" else ""
    body = json.dumps({"model": state.model_name, "messages": [{"role": "user", "content": "Hello"}],
                       "max_tokens": 32})
    return (f"curl --cacert {shlex.quote(str(state.ca_file))}{resolve} {state.endpoint}/v1/chat/completions "
            f"-H \"Authorization: Bearer $LLMDEPLOY_API_KEY\" -H 'Content-Type: application/json' -d '{body}'")


def print_summary(state: VmState, out: TextIO) -> None:
    keys = state.api_keys()
    lines = ["", f"endpoint: {state.endpoint}", f"model:    {state.model_name}", f"ca:       {state.ca_file}"]
    if state.keys_from_caller:  # the caller (pulumi up) holds them as secrets; they stay out of its logs
        lines.append(f"api keys: {', '.join(keys)} (as given in ${API_KEYS_ENV})")
        if keys:
            lines += ["", curl_line(state)]
    else:
        for name, key in keys.items():
            lines.append(f"api key:  {name} = {key}")
        if keys:
            lines += ["", f"export LLMDEPLOY_API_KEY={next(iter(keys.values()))}", curl_line(state)]
    s = state.stack
    lines += ["", f"llmdeploy local status --stack {s}    llmdeploy local ssh --stack {s}    "
                  f"llmdeploy local logs --stack {s}", f"the VM keeps running; stop it with: llmdeploy local down --stack {s}"]
    print("\n".join(lines), file=out, flush=True)
