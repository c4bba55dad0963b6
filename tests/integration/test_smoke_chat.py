"""`llmdeploy smoke URL --chat-url CHAT_URL` against the rendered site in the real nginx: an OpenAI stub as the
engine, a recording frontend on the chat host. A good site passes every chat check; a site whose chat host lets
browsers in unsigned, or whose frontend is down, fails the check that names it; bad input exits 2."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.smoke.chat_checks import run_chat_checks
from llmdeploy.result import FAIL, PASS
from llmdeploy.smoke.targets import Credentials, Target
from support.chat import ChatSite, chat_site
from support.openai_stub import MODEL_ID, openai_stub
from support.ports import free_port
from support.route_recorder import route_recorder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatSite]:
    with openai_stub() as engine, route_recorder() as frontend:
        with chat_site(tmp_path_factory.mktemp("smoke-chat"), frontend.port, engine_port=engine.port) as s:
            yield s


def chat_target(site: ChatSite, key: str, chat_url: str = "") -> Target:
    return Target(url=site.api, credentials=Credentials(api_key=key), ca_bundle=site.ep.ca, timeout=10,
                  chat_url=chat_url or f"{site.chat}/_login")


def test_smoke_with_chat_url_passes_a_good_site(site: ChatSite, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMDEPLOY_API_KEY", site.ep.keys["alice"])
    code = main(["smoke", site.api, "--chat-url", f"{site.chat}/_login", "--ca-bundle", site.ep.ca,
                 "--http-url", site.ep.http_base.replace("localhost", "127.0.0.1"), "--model", MODEL_ID, "--timeout", "10"])
    out = capsys.readouterr().out
    chat_lines = [line for line in out.splitlines() if "chat-ui:" in line]
    assert code == 0, out
    assert len(chat_lines) == 3 and all(line.startswith("PASS") for line in chat_lines), chat_lines
    assert site.ep.keys["alice"] not in out


def test_a_key_the_site_does_not_know_fails_the_session_check(site: ChatSite) -> None:
    results = run_chat_checks(chat_target(site, "sk-llm-" + "q" * 43))
    assert [r.status for r in results] == [PASS, PASS, FAIL]
    assert "not 303" in results[2].summary


def test_a_chat_host_without_sign_in_fails_and_gets_no_key(tmp_path: Path) -> None:
    """An open proxy to the frontend (no sign-in at all): the first check fails and no key is sent."""
    from support.site import open_proxy
    with route_recorder() as frontend, open_proxy(tmp_path, frontend.url) as (base, _http, ca):
        target = Target(url=base, credentials=Credentials(api_key="sk-llm-" + "s" * 43), ca_bundle=ca, timeout=10,
                        chat_url=base)
        results = run_chat_checks(target)
    assert results[0].status == FAIL and "unsigned" in results[0].summary
    assert results[-1].status == FAIL and "not run" in results[-1].summary
    assert not any(r.method == "POST" for r in frontend.requests)


def test_a_frontend_that_is_down_fails_the_session_check(tmp_path: Path) -> None:
    dead = free_port()
    with socket.socket() as s:  # nothing listens on it
        assert s.connect_ex(("127.0.0.1", dead)) != 0
    with openai_stub() as engine, chat_site(tmp_path, dead, engine_port=engine.port) as s:
        results = run_chat_checks(chat_target(s, s.ep.keys["alice"]))
    assert [r.status for r in results][:2] == [PASS, PASS] and results[2].status == FAIL
    assert "502" in results[2].summary


@pytest.mark.parametrize(("argv", "message"), [
    (["--chat-url", "http://chat.llm.example.com"], "https://CHAT_HOST"),
    (["--chat-url", "chat.llm.example.com"], "bad chat URL"),
    (["--basic", "alice:long-password-1", "--chat-url", "https://chat.llm.example.com"], "signs in with an API key"),
])
def test_bad_chat_input_exits_2_with_the_fix(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMDEPLOY_API_KEY", raising=False)
    key = [] if "--basic" in argv else ["--api-key", "sk-llm-" + "k" * 43]
    assert main(["smoke", "https://llm.example.com", *key, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_pulumi_smoke_gate_signs_in_on_the_chat_host(site: ChatSite, tmp_path: Path) -> None:
    """The gate's script as Pulumi runs it (gates.SMOKE_SCRIPT) with the chat URL the program hands it: this
    checkout's llmdeploy (plus --http-url: nginx's plain HTTP is not on port 80 here) runs the chat checks too."""
    import os
    import shlex
    import subprocess
    import sys

    from llmdeploy.stack.gates import SMOKE_SCRIPT

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    http = site.ep.http_base.replace("localhost", "127.0.0.1")
    (bin_dir / "llmdeploy").write_text(f"#!/bin/bash\nexec {shlex.quote(sys.executable)} -m llmdeploy.cli "
                                       f"\"$@\" --http-url {http}\n")
    (bin_dir / "llmdeploy").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": os.pathsep.join(sys.path),
           "LLMDEPLOY_SMOKE_URL": site.api, "LLMDEPLOY_SMOKE_KIND": "openai", "LLMDEPLOY_SMOKE_MODEL": MODEL_ID,
           "LLMDEPLOY_API_KEY": site.ep.keys["bob"], "LLMDEPLOY_CA_PEM": Path(site.ep.ca).read_text(),
           "LLMDEPLOY_SMOKE_CHAT_URL": f"{site.chat}/_login"}
    done = subprocess.run(["/bin/bash", "-c", SMOKE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASS  chat-ui:") == 3 and site.ep.keys["bob"] not in done.stdout
