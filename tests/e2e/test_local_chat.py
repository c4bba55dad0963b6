"""End to end, chat in the browser on a booted stack: `llmdeploy local up --runtime nspawn --stack local-chat`
(Pulumi.local-chat.yaml: llama.cpp on the tiny model, nginx with pebble's certificate for llm.test and
chat.llm.test, Open WebUI installed by step 45-chat with this machine's CPU torch, API keys ops:admin, alice, bob),
and Debian's chromium (headless, Playwright; tests/support/chat_browser.py) on the chat host at the container's
forwarded HTTPS port. What tests/integration/test_chat_webui.py proves on loopback, here through the VM's own
provisioning: the chat URL lands on the sign-in page, a wrong key is refused, the right key reaches the chat as
its user, a message gets the engine's answer on the page, and Bob sees none of Alice's chats.

One boot for the module; `llmdeploy local down` (and the PIDs, test_local_vm.booted) stops it, also on failure.
Screenshots go to build/artifacts/chat-local/ (ignored by git). Heavy: run under `flock /tmp/llmdeploy-heavy.lock`.
"""
from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmdeploy.local.localconfig import local_config
from llmdeploy.render import web_user_email
from support.chat_browser import (Person, assert_cannot_see_chats_of, assert_login_page_refuses_a_wrong_key,
                                  assert_signed_in_as, chromium, shown_as_markdown)
from support.project import ROOT
from test_local_vm import Vm, booted

pytestmark = pytest.mark.e2e

STACK = "local-chat"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts" / "chat-local"
ALICE_ASKS = "alice-local-question-4417: say something"
# The line llama.cpp's server logs for each completion it finishes (in the guest's journal).
ENGINE_ANSWERED = re.compile(r"print_timing: .* total time =")


@dataclass
class LocalChat:
    vm: Vm
    url: str  # https://chat.llm.test:PORT, the container's 443 forwarded to loopback
    shots: Path


def chat_host(vm: Vm) -> str:
    """The stack's chat host as its config gives it (chatHost, or chat.<domain>)."""
    public_key = vm.state.ssh_key.with_suffix(".pub").read_text().strip()
    return local_config(ROOT, STACK, ssh_public_key=public_key, model_url="http://10.0.2.2/tiny-llama.gguf",
                        extra_ca_certs=[]).chat.host


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChat]:
    start = time.monotonic()
    shots = tmp_path_factory.mktemp("chat-local-shots")
    for vm in booted(tmp_path_factory, "nspawn", STACK):  # `down` runs when the loop resumes, also on failure
        assert vm.state.runtime == "nspawn" and set(vm.state.api_keys()) == {"ops", "alice", "bob"}
        yield LocalChat(vm, f"https://{chat_host(vm)}:{vm.state.port(443)}", shots)
    shutil.copytree(shots, ARTIFACTS, dirs_exist_ok=True)
    print(f"\n{STACK}: module time on nspawn {time.monotonic() - start:.0f}s")


@pytest.fixture(scope="module")
def browser(chat: LocalChat) -> Iterator[object]:
    with chromium([chat_host(chat.vm), chat.vm.state.domain]) as launched:
        yield launched


@pytest.fixture(scope="module")
def alice(chat: LocalChat, browser: object) -> Iterator[Person]:
    person = Person(browser, chat.url, chat.shots, "alice")
    yield person
    person.context.close()


def test_the_chat_url_lands_on_the_login_page_and_a_wrong_key_is_refused(chat: LocalChat, browser: object) -> None:
    someone = Person(browser, chat.url, chat.shots, "someone")
    assert_login_page_refuses_a_wrong_key(someone)
    someone.context.close()


def test_the_right_key_reaches_the_chat_as_its_user(chat: LocalChat, alice: Person) -> None:
    key = chat.vm.state.api_keys()["alice"]
    alice.sign_in(key)
    alice.wait_for_chat()
    assert_signed_in_as(alice, key, web_user_email("alice"), "user")
    alice.shot("03-signed-in-chat")


def engine_answers(vm: Vm) -> int:
    log = vm.sudo(f"journalctl -u {vm.unit} --no-pager -o cat")
    return len(ENGINE_ANSWERED.findall(log))


def test_a_message_sent_gets_the_engines_answer_on_the_page(chat: LocalChat, alice: Person) -> None:
    answered = engine_answers(chat.vm)
    shown = alice.send(ALICE_ASKS)
    alice.shot("04-answer-from-the-engine")
    assert ALICE_ASKS in alice.page.inner_text("#messages-container")
    # llama.cpp in the guest answered one more chat completion, and that answer is the one on the page.
    assert engine_answers(chat.vm) > answered
    kept = alice.kept_answers()
    assert len(kept) == 1 and shown_as_markdown(kept[0], shown), (kept, shown)


def test_attendee_b_cannot_see_attendee_a_chats(chat: LocalChat, browser: object, alice: Person) -> None:
    bob = Person(browser, chat.url, chat.shots, "bob")
    bob.sign_in(chat.vm.state.api_keys()["bob"])
    bob.wait_for_chat()
    assert_cannot_see_chats_of(bob, alice, ALICE_ASKS)
    bob.context.close()
