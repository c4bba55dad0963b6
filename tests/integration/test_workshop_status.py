"""`llmdeploy workshop status`: every attendee's endpoint smoke-tested with the attendee's own key, side by side,
with a progress bar and a summary table; the last pass per attendee is recorded, and the handouts print it.

Real servers: one shared endpoint (the rendered nginx site, real nginx, real llama.cpp on a tiny model) serving
two attendees with their own delivered keys, a third attendee whose key was never delivered (so auth refuses it),
and a fourth on an endpoint whose engine is down (502). The runs must pass the first two, fail the others with
the reason, keep an earlier pass when a later run fails, and never print or record a key.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.secret_delivery import generate_api_key
from support.endpoint import Endpoint, llama_endpoint
from support.ports import free_port
from support.site import site_endpoint
from support.workshop_stack import STACK, attendee_entry, pdf_pages, pdf_text, people, workshop_project

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with llama_endpoint(tmp_path_factory.mktemp("ep0"), apiKeys=["default", "alice", "bob"]) as ep:
        yield ep


@pytest.fixture(scope="module")
def dead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with site_endpoint(tmp_path_factory.mktemp("ep1"), free_port(), apiKeys=["dave"]) as ep:
        yield ep


def entry(ep: Endpoint, who: str, key: str, endpoint: str) -> dict[str, object]:
    return attendee_entry(who, ep.base, key, model="tiny", ca=Path(ep.ca).read_text(), endpoint=endpoint,
                          http_url=ep.http_base)


def test_status_smokes_every_attendee_and_records_the_last_pass(
        shared: Endpoint, dead: Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    carol_key = generate_api_key()  # never delivered to the endpoint
    outputs = {"attendees": {"alice": entry(shared, "alice", shared.keys["alice"], "ep0"),
                             "bob": entry(shared, "bob", shared.keys["bob"], "ep0"),
                             "carol": entry(shared, "carol", carol_key, "ep0"),
                             "dave": entry(dead, "dave", dead.keys["dave"], "ep1")}}
    keys = [shared.keys["alice"], shared.keys["bob"], carol_key, dead.keys["dave"]]
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({"version": 1, "stack": STACK, "attendees": {
        "carol": {"lastRun": "2026-11-21T10:00:00Z", "lastResult": "pass", "lastPass": "2026-11-21T10:00:00Z"}}}))
    # The roster lists the four: handouts go only to attendees the roster names.
    project = workshop_project(tmp_path, [{"id": who, "name": who.title(), "email": f"{who}@example.org"}
                                          for who in ("alice", "bob", "carol", "dave")])
    code = main(["workshop", "status", "--stack", STACK, "--project-dir", str(project), "--outputs",
                 str(tmp_path / "outputs.json"), "--concurrency", "4", "--timeout", "20", "--status-file",
                 str(status_file), "--json", str(tmp_path / "results.json")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "workshop status: 4 attendee endpoint(s) of stack 'ws', 4 at a time" in out
    assert all(f"smoke [{n}/4]" in err for n in (1, 2, 3, 4))  # the progress bar (plain lines off a terminal)
    table = out[out.index("target "):]
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line.strip() and not line.startswith(" ")}
    assert rows["alice"].rstrip().endswith("PASS") and rows["bob"].rstrip().endswith("PASS")
    assert "FAIL" in rows["carol"] and "HTTP 401" in rows["carol"]  # the key was never delivered
    assert "FAIL" in rows["dave"] and "HTTP 502" in rows["dave"]
    assert "2 of 4 attendee endpoint(s) passed; recorded in" in out
    assert "== carol" in out and "== dave" in out and "== alice" not in out  # details only for the failures

    status = json.loads(status_file.read_text())["attendees"]
    assert status["alice"]["lastResult"] == "pass" and status["alice"]["lastPass"] == status["alice"]["lastRun"]
    assert status["carol"]["lastResult"] == "fail" and status["carol"]["lastPass"] == "2026-11-21T10:00:00Z"
    assert status["dave"]["lastPass"] is None and "502" in status["dave"]["firstFailure"]
    written = out + err + status_file.read_text() + (tmp_path / "results.json").read_text()
    assert all(key not in written for key in keys)
    assert json.loads((tmp_path / "results.json").read_text())["passed"] is False

    # The handouts say what the status run found.
    code = main(["workshop", "handouts", "--stack", STACK, "--project-dir", str(project), "--outputs",
                 str(tmp_path / "outputs.json"), "--status-file", str(status_file), "--out", str(tmp_path / "h")])
    capsys.readouterr()
    assert code == 0
    combined = tmp_path / "h" / "handouts.pdf"
    assert pdf_pages(combined) == 4
    pages = [pdf_text(combined, n) for n in (1, 2, 3, 4)]
    when = status["alice"]["lastPass"].replace("T", " ")[:16]
    assert f"Smoke test passed at {when} UTC." in pages[0]
    assert "Smoke test last passed at 2026-11-21 10:00 UTC; the latest run" in pages[2]
    assert "Smoke test has not passed yet" in pages[3]


def test_status_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = workshop_project(tmp_path, people(1))
    (tmp_path / "o.json").write_text(json.dumps({"attendees": {"a": attendee_entry("a", "https://a", generate_api_key())}}))
    for argv, message in (
            (["--concurrency", "0"], "--concurrency must be at least 1"),
            (["--json", str(tmp_path / "missing" / "r.json")], "does not exist; create it"),
            (["--timeout", "0"], "--timeout must be a positive number")):
        code = main(["workshop", "status", "--stack", STACK, "--project-dir", str(project), "--outputs",
                     str(tmp_path / "o.json"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err


def test_status_checks_each_attendees_chat_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """chatUi: the status run signs each attendee in on their chat page with their own key; an attendee whose
    chat frontend is down fails with the check that says so, although their API works."""
    from support.chat import chat_site
    from support.openai_stub import MODEL_ID, openai_stub
    from support.route_recorder import route_recorder

    with openai_stub() as engine, route_recorder() as frontend, \
            chat_site(tmp_path / "good", frontend.port, engine_port=engine.port) as good, \
            chat_site(tmp_path / "down", free_port(), engine_port=engine.port) as down:
        outputs = {"attendees": {
            who: attendee_entry(who, s.api, s.ep.keys[who], model=MODEL_ID, ca=Path(s.ep.ca).read_text(),
                                endpoint=who, http_url=s.ep.http_base.replace("localhost", "127.0.0.1"),
                                chat_url=f"{s.chat}/_login")
            for who, s in (("alice", good), ("bob", down))}}
        (tmp_path / "outputs.json").write_text(json.dumps(outputs))
        status_file = tmp_path / "status.json"
        code = main(["workshop", "status", "--stack", STACK, "--project-dir", str(workshop_project(tmp_path, people(1))),
                     "--outputs", str(tmp_path / "outputs.json"), "--timeout", "20", "--status-file", str(status_file)])
        out, _ = capsys.readouterr()
        signed_in = [r.headers.get("X-User-Email") for r in frontend.requests]
    assert code == 1, out
    status = json.loads(status_file.read_text())["attendees"]
    assert status["alice"]["lastResult"] == "pass", status["alice"]
    assert status["bob"]["lastResult"] == "fail" and "chat-ui: key signs in" in status["bob"]["firstFailure"]
    assert "alice@workshop.invalid" in signed_in and good.ep.keys["alice"] not in out
