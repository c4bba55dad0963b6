"""Logins to the local guest. The first one, as soon as its sshd and admin user exist, learns the guest's host key
(first contact, over the loopback port forward to the guest this process has just started); the key is then
confirmed against what cloud-init printed on the guest's console (ssh.py reads it) before any secret is sent.
Every later login pins it."""
from __future__ import annotations

from ..polling import attempts
from ..sshclient import Session, SshError, host_key_fingerprint
from ..vmpaths import BOOT_FINISHED
from . import LocalError, image, procs
from .progress import Clock, Say, clock
from .runtime import Runtime
from .ssh import console_host_fingerprints, console_host_keys, known_hosts_line, loopback_login, ssh_banner
from .state import VmState

SSH_DEADLINE_S = 600.0
CONSOLE_KEYS_DEADLINE_S = 120.0


def first_login(state: VmState, guest: Runtime, img: image.Image, say: Say, elapsed: Clock) -> Session:
    """Log in once sshd and the admin user exist (the runtime raises if the guest dies on the way); the host key
    it presents is recorded in the state, not yet trusted (confirm_host_key)."""
    last = "nothing yet"
    for _ in attempts(SSH_DEADLINE_S, every=3):
        guest.check_boot(state, img, say, elapsed)
        if not ssh_banner(state.port(22)):
            last = "no SSH banner yet"
            continue
        try:
            session = loopback_login(state.port(22), state.admin_user, state.ssh_key, timeout=15)
        except SshError as exc:
            last = str(exc)
            continue
        state.host_key = session.host_key
        state.known_hosts.write_text(known_hosts_line(state.port(22), state.host_key))
        state.timeline["ssh_up"] = round(elapsed(), 1)
        state.save()
        say(f"SSH up ({clock(elapsed() - state.timeline[guest.started_event])} after boot); cloud-init is provisioning")
        return session
    raise LocalError(f"no SSH login after {SSH_DEADLINE_S / 60:.0f} min; last: {last}; console: "
                     f"{procs.tail(state.serial_log, 15)}")


def login(state: VmState) -> Session:
    """A login with the guest's host key pinned."""
    return loopback_login(state.port(22), state.admin_user, state.ssh_key, host_key=state.host_key, timeout=30)


def confirm_host_key(state: VmState, session: Session, say: Say) -> None:
    """The key learnt at the first login must be one cloud-init printed on the serial console: its
    fingerprint when the key was generated (early, before any step runs), or the key itself (once
    provisioning has finished)."""
    keys: set[str] = set()
    fingerprints: set[str] = set()
    for _ in attempts(CONSOLE_KEYS_DEADLINE_S, every=2):
        keys = console_host_keys(state.serial_log)
        fingerprints = console_host_fingerprints(state.serial_log)
        if keys or host_key_fingerprint(state.host_key) in fingerprints:
            break
        session.run(f"test -e {BOOT_FINISHED}", timeout=30)
    else:
        raise LocalError(f"cloud-init printed neither the fingerprints of the SSH host keys it generated nor the "
                         f"keys on the console within {CONSOLE_KEYS_DEADLINE_S:.0f}s of the first login "
                         f"({state.serial_log}); the host key cannot be confirmed, so no secret is sent")
    if state.host_key not in keys and host_key_fingerprint(state.host_key) not in fingerprints:
        raise LocalError(f"the SSH host key of the first login ({state.host_key[:50]}...) is not one the VM printed on "
                         "its console: something else answered on the forwarded port")
    say("SSH host key confirmed against the VM's console")
