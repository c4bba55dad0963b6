"""A tampered provisioning bundle on the local runtime, against the guest's real bootstrap and receiver: `llmdeploy
local up` boots the example stack in the systemd container as usual, but one byte of the bundle it delivers over
SSH is flipped. The guest refuses it at the 00-bundle stage, naming both digests; nothing of it is kept or
unpacked; no secret is sent; `up` fails saying so. The VM is kept for the checks, then `down` removes it (also on
failure). About 15 s on 2 cores (the container boots from the cached Debian tree)."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy import bundle
from llmdeploy.errors import LlmdeployError
from llmdeploy.local import guestlogin, lifecycle, secretsdelivery
from llmdeploy.local.state import VmState
from llmdeploy.polling import wait_for
from llmdeploy.sshclient import Session, SshError
from llmdeploy.vmpaths import BUNDLE_DIR, BUNDLE_STAGE, SECRETS_DIR, STAGES_DIR, STEPS_DIR
from support.project import ROOT

pytestmark = pytest.mark.e2e
STACK = "local"


class Refused:
    def __init__(self, error: LlmdeployError, out: str, state: VmState, sent: bytes) -> None:
        self.error, self.out, self.state, self.sent = error, out, state, sent
        self.last_login_error = ""

    def _login(self) -> Session | None:
        """A login, or None while sshd is away: cloud-init restarts it once during boot (set_passwords, for
        ssh_pwauth), and `up` now fails within seconds of its first login, so these checks can land on that
        restart ("Error reading SSH protocol banner")."""
        try:
            return guestlogin.login(self.state)
        except SshError as exc:
            self.last_login_error = str(exc)
            return None

    def sudo(self, command: str) -> str:
        session = wait_for(self._login, within=60, every=2)
        assert session is not None, f"no SSH login to the refused VM within 60 s: {self.last_login_error}"
        try:
            result = session.run(f"sudo -n bash -c {command!r}", timeout=60)
        finally:
            session.close()
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refused]:
    sent: list[bytes] = []

    def tampered(packed: bytes, secrets: bytes) -> bytes:
        bad = packed[:200] + bytes([packed[200] ^ 0x01]) + packed[201:]
        sent.append(bad)
        return bundle.payload(bad, secrets)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMDEPLOY_STATE_DIR", str(tmp_path_factory.mktemp("refused-state")))
        mp.setattr(secretsdelivery, "payload", tampered)
        opts = lifecycle.UpOptions(stack=STACK, project_dir=Path(ROOT), runtime="nspawn", keep_on_failure=True)
        try:
            with pytest.raises(LlmdeployError) as caught:
                lifecycle.local_up(opts, stream=out)
            state = VmState.load(STACK)
            assert state is not None, out.getvalue()
            yield Refused(caught.value, out.getvalue(), state, sent[0])
        finally:
            lifecycle.down(STACK, out=out)
            assert VmState.load(STACK) is None


def test_up_fails_naming_the_refused_bundle_and_both_digests(refused: Refused) -> None:
    got = bundle.digest(refused.sent)
    message = str(refused.error)
    assert "delivering the provisioning bundle and the secrets failed" in message
    assert f"bundle refused: its SHA-256 is {got}" in message and "but this VM's metadata says" in message
    assert "has not unpacked" not in message  # failed at the refusal, not after waiting out the unpacking


def test_the_guest_marks_the_bundle_stage_failed_and_unpacks_nothing(refused: Refused) -> None:
    got = bundle.digest(refused.sent)
    marker = refused.sudo(f"cat {STAGES_DIR}/{BUNDLE_STAGE}.failed")
    assert "exit=1 bundle refused" in marker and got in marker
    want = refused.sudo("cat /etc/llmdeploy/bundle.sha256").strip()
    assert want != got and want in marker
    assert refused.sudo(f"ls -A {BUNDLE_DIR}").strip() == ""  # nothing of it kept
    assert "No such file" in refused.sudo(f"ls {STEPS_DIR}")  # nothing unpacked, no step ran
    assert "No such file" in refused.sudo(f"ls {SECRETS_DIR}")  # no secret sent to a machine that refused
    # The bootstrap still waits for a bundle (cloud-init's final stage may start it after `up` has failed). The
    # pattern's brackets keep pgrep from matching the sudo and bash -c that run it, as the plain name did.
    waiting = wait_for(lambda: "llmdeploy-bootstrap" in refused.sudo("pgrep -af '[l]lmdeploy-bootstrap' || true"),
                       within=120, every=3)
    assert waiting, refused.sudo("systemctl status cloud-final --no-pager || true")
