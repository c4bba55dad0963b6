"""Waits for the local VM the way `pulumi up`'s readiness gate does: runs the VM's own llmdeploy-wait-ready
(templates/wait-ready.sh.j2, the one definition of "ready": every stage marker, cloud-init finished without
error, the engine answering) over SSH, and shows the stages as they finish meanwhile (progress.py). A dropped
connection logs in again and runs it again for the time that is left; a guest that dies ends the wait."""
from __future__ import annotations

from collections.abc import Callable

from ..errors import Failure
from ..polling import Deadline, attempts
from ..vmpaths import WAIT_READY
from .progress import BootProgress, show
from ..sshclient import Running, Session, SshError

GRACE_S = 120.0  # beyond wait-ready's own deadline, before a silent connection counts as lost


class ProvisionFailed(Failure):
    """Provisioning failed or did not finish; the message is what the VM said."""


def wait_ready(login: Callable[[], Session], progress: BootProgress, timeout_s: int,
               alive: Callable[[], str | None] = lambda: None, poll_s: float = 3.0) -> str:
    """wait-ready's stdout (it ends with the self-signed CA, if any) once it exits 0; ProvisionFailed with what it
    printed when it fails, when the guest dies, or when no login works until the deadline."""
    last = "no SSH login yet"
    for deadline in attempts(timeout_s, every=poll_s):
        _check_alive(alive)
        try:
            session = login()
        except SshError as exc:
            last = f"SSH: {exc}"
            continue
        try:
            running = session.start(f"sudo -n {WAIT_READY} {max(1, round(deadline.left))}")
            code = _follow(running, session, progress, alive, poll_s, Deadline(deadline.left + GRACE_S))
            stdout, stderr = running.output()
        except SshError as exc:
            code, stdout, stderr = -1, "", f"SSH: {exc}"
        finally:
            session.close()
        if code == 0:
            return stdout
        if code != -1:
            raise ProvisionFailed(f"{WAIT_READY} exited {code}:\n{(stderr or stdout).strip()[-3000:]}")
        last = stderr if stderr.startswith("SSH: ") else "the SSH connection dropped while wait-ready ran"
    raise ProvisionFailed(f"provisioning not finished after {timeout_s / 60:.0f} min; last seen: {last}")


def _follow(running: Running, session: Session, progress: BootProgress, alive: Callable[[], str | None],
            poll_s: float, give_up: Deadline) -> int:
    """wait-ready's exit code (-1: the connection dropped), showing the stages until then and once after."""
    while (code := running.poll()) is None:
        _check_alive(alive)
        if give_up.expired:
            return -1
        _show(session, progress)
        give_up.sleep(poll_s)
    if code == 0:
        _show(session, progress)  # every stage is done now: report each one
    return code


def _check_alive(alive: Callable[[], str | None]) -> None:
    dead = alive()
    if dead:
        raise ProvisionFailed(f"the VM stopped during provisioning: {dead}")


def _show(session: Session, progress: BootProgress) -> None:
    try:
        show(session, progress)
    except SshError:
        pass  # the display may miss a poll; wait-ready's own channel decides
