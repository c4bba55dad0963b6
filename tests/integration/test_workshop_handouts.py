"""`llmdeploy workshop handouts`: one page per attendee as HTML and PDF (plus one PDF of all pages), a QR code
that really scans, ready-to-paste curl / OpenAI / BioChatter snippets, the last smoke pass, a CSV for the
instructor without keys, and file modes that keep the keys private; bad outputs are exit 2 with the fix.

Why: the handout is what an attendee holds in their hand. It has to fit one page, carry the right key in every
snippet, scan with a phone (decoded here with zbar from the PDF rendered by poppler, as a person would see it),
and never leak a key into a file meant for sharing.
"""
import csv
import io
import json
import stat
import subprocess
from pathlib import Path

import pytest

from llmdeploy.roster import set_status
from llmdeploy.secret_delivery import generate_api_key
from support.certs import make_ca
from support.fake_pulumi import fake_pulumi
from support.handouts import ATTENDEES, project, run
from support.workshop_stack import STACK, attendee_entry, pdf_pages, pdf_text, workshop_project


@pytest.fixture
def keys() -> dict[str, str]:
    return {who: generate_api_key() for who in ("alice", "bob", "carol")}


@pytest.fixture
def outputs(tmp_path: Path, keys: dict[str, str]) -> dict[str, object]:
    ca = Path(make_ca(tmp_path / "vm-ca").cert).read_text()
    return {"modelName": "llama3.1:8b", "attendees": {
        "alice": attendee_entry("alice", "https://alice.ws.example.org", keys["alice"], model="llama3.1:8b",
                                name="Alice Müller-Lüdenscheidt"),
        "bob": attendee_entry("bob", "https://203.0.113.7", keys["bob"], model="llama3.1:8b", ca=ca, endpoint="ep0",
                              name="Bob <b>Bold</b>"),
        "carol": attendee_entry("carol", "https://203.0.113.7", keys["carol"], model="llama3.1:8b", ca=ca,
                                endpoint="ep0", name="=HYPERLINK(\"http://evil\")"),
    }}


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_handouts_from_an_outputs_file(tmp_path: Path, project: Path, outputs: dict[str, object],
                                       keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "handouts"
    status = write_json(tmp_path / "status.json", {"version": 1, "stack": STACK, "attendees": {
        "alice": {"lastRun": "2026-11-22T09:12:30Z", "lastResult": "pass", "lastPass": "2026-11-22T09:12:30Z"},
        "bob": {"lastRun": "2026-11-22T09:40:00Z", "lastResult": "fail", "lastPass": "2026-11-22T08:05:00Z"}}})
    code, out, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                         "--outputs", str(write_json(tmp_path / "outputs.json", outputs)), "--out", str(out_dir),
                         "--status-file", str(status), "--title", "BioHackathon 2026")
    assert code == 0, err
    ids = ["alice", "bob", "carol"]
    expected = {f"{i}.{ext}" for i in ids for ext in ("html", "pdf")} | {"handouts.pdf", "attendees.csv",
                                                                         "bob-ca.pem", "carol-ca.pem"}
    assert {p.name for p in out_dir.iterdir()} == expected
    assert mode(out_dir) == 0o700
    assert all(mode(p) == 0o600 for p in out_dir.iterdir())
    assert "1 attendee(s) have no smoke result" in err

    # PDF: one page per attendee, in id order, each page carrying its own attendee's key and nobody else's.
    combined = out_dir / "handouts.pdf"
    assert pdf_pages(combined) == 3
    pages = [pdf_text(combined, n) for n in (1, 2, 3)]
    for index, who in enumerate(ids):
        assert keys[who] in pages[index] and all(keys[o] not in pages[index] for o in ids if o != who)
        single = out_dir / f"{who}.pdf"
        assert pdf_pages(single) == 1 and keys[who] in pdf_text(single, 1)
    assert "Alice Müller-Lüdenscheidt" in pages[0] and "BIOHACKATHON 2026" in pages[0]  # the kicker is in capitals
    assert "Smoke test passed at 2026-11-22 09:12 UTC." in pages[0]
    assert "Smoke test last passed at 2026-11-22 08:05 UTC; the latest run (2026-11-22 09:40 UTC) failed." in pages[1]
    assert "Smoke test: not run yet." in pages[2]
    # What a person copies out of the PDF is the snippet, intact.
    assert f'-H "Authorization: Bearer {keys["alice"]}"' in pages[0]
    assert "client = OpenAI(base_url=\"https://alice.ws.example.org/v1\"," in pages[0]

    # HTML: the snippets, ready to paste, with this attendee's key, base URL and model.
    alice = (out_dir / "alice.html").read_text()
    assert "curl https://alice.ws.example.org/v1/chat/completions \\" in alice
    assert f"-H &#34;Authorization: Bearer {keys['alice']}&#34;" in alice
    assert "from openai import OpenAI" in alice and "client = OpenAI(base_url=&#34;https://alice.ws.example.org/v1&#34;" \
        in alice
    assert "from biochatter.llm_connect import GptConversation" in alice
    assert "base_url=&#34;https://alice.ws.example.org/v1&#34;)" in alice and "conversation.set_api_key(" in alice
    assert "your own VM" in alice and "SSL_CERT_FILE" not in alice and "--cacert" not in alice
    assert "xinference_client" not in alice  # an Ollama stack: no Xinference client
    bob = (out_dir / "bob.html").read_text()
    assert "Bob &lt;b&gt;Bold&lt;/b&gt;" in bob and "<b>Bold</b>" not in bob  # names are text, never markup
    assert "--cacert bob-ca.pem" in bob and "os.environ[&#34;SSL_CERT_FILE&#34;] = &#34;bob-ca.pem&#34;" in bob
    assert 'download="bob-ca.pem" href="data:application/x-pem-file;base64,' in bob
    assert "shared endpoint ep0 (your key has its own rate limit)" in " ".join(bob.split())
    assert (out_dir / "bob-ca.pem").read_text() == outputs["attendees"]["bob"]["caCertificate"]  # type: ignore[index]

    # The instructor's CSV: everyone, their files and smoke state, and no key at all.
    table = (out_dir / "attendees.csv").read_text()
    assert all(k not in table for k in keys.values()) and "sk-llm-" not in table
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [r["id"] for r in rows] == ids
    assert rows[0]["last_smoke_pass"] == "2026-11-22T09:12:30Z" and rows[2]["last_smoke_result"] == "not run"
    assert rows[1]["ca_file"] == "bob-ca.pem" and rows[1]["endpoint"] == "ep0"
    assert rows[2]["name"].startswith("'=HYPERLINK")  # a spreadsheet must not run it as a formula
    assert all(k not in out + err for k in keys.values())


def test_the_qr_code_scans_from_the_printed_page(tmp_path: Path, project: Path, outputs: dict[str, object],
                                                 keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "handouts"
    code, _, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                       "--outputs", str(write_json(tmp_path / "o.json", outputs)), "--out", str(out_dir))
    assert code == 0, err
    # 100 dpi: a page as a phone camera sees a printout, not a crisp vector.
    subprocess.run(["pdftoppm", "-r", "100", "-png", "-f", "2", "-l", "2", str(out_dir / "handouts.pdf"),
                    str(tmp_path / "page")], check=True, timeout=60)
    image = next(tmp_path.glob("page*.png"))
    decoded = subprocess.run(["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout.strip() == (f"export OPENAI_BASE_URL=https://203.0.113.7/v1\n"
                                      f"export OPENAI_API_KEY={keys['bob']}\nexport OPENAI_MODEL=llama3.1:8b")


def test_existing_files_and_folder_are_made_private(tmp_path: Path, project: Path, outputs: dict[str, object],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "shared-folder"
    out_dir.mkdir(mode=0o755)
    (out_dir / "alice.pdf").write_text("old")
    (out_dir / "alice.pdf").chmod(0o644)
    code, _, _ = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                     "--outputs", str(write_json(tmp_path / "o.json", outputs)), "--out", str(out_dir))
    assert code == 0
    assert mode(out_dir) == 0o700 and mode(out_dir / "alice.pdf") == 0o600


def test_handouts_read_the_outputs_through_the_pulumi_cli(tmp_path: Path, project: Path, outputs: dict[str, object],
                                                          keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "passphrase-from-env")
    with fake_pulumi(tmp_path, monkeypatch) as pulumi:
        pulumi.answer("outputs.json", outputs)
        code, out, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project))
    assert code == 0, err
    assert (project / "build" / "workshop" / STACK / "handouts" / "handouts.pdf").is_file()
    [call] = pulumi.calls()
    assert call["argv"] == ["stack", "output", "--json", "--show-secrets", "--cwd", str(project), "--stack", STACK,
                            "--non-interactive"]
    assert call["passphrase_inherited"]  # the secret reaches pulumi through the environment ...
    assert "passphrase-from-env" not in json.dumps(call["argv"])  # ... never its command line
    assert all(k not in out + err for k in keys.values())


def test_a_stack_pulumi_does_not_know_is_exit_2_with_pulumis_words(tmp_path: Path, project: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with fake_pulumi(tmp_path, monkeypatch):
        code, _, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project))
    assert code == 2
    assert "cannot read the outputs of stack 'ws'" in err and "no stack named" in err


def test_a_chat_frontend_puts_its_url_and_a_qr_code_of_it_on_the_page(
        tmp_path: Path, project: Path, outputs: dict[str, object], keys: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """chatUi: the page names the chat's sign-in URL, and a second QR code holds that URL alone (never the key),
    both codes scanning from the printed page; the instructor's CSV lists the URL."""
    chat = "https://chat.alice.ws.example.org/_login"
    attendees = outputs["attendees"]
    assert isinstance(attendees, dict)
    attendees["alice"]["chatUrl"] = chat
    out_dir = tmp_path / "handouts"
    code, _, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                       "--outputs", str(write_json(tmp_path / "o.json", outputs)), "--out", str(out_dir))
    assert code == 0, err
    assert pdf_pages(out_dir / "handouts.pdf") == 3  # still one page each
    assert chat in pdf_text(out_dir / "handouts.pdf", 1).replace("\n", "")
    assert "Chat in the browser" not in pdf_text(out_dir / "handouts.pdf", 2)  # bob has no chat
    subprocess.run(["pdftoppm", "-r", "100", "-png", "-f", "1", "-l", "1", str(out_dir / "handouts.pdf"),
                    str(tmp_path / "page")], check=True, timeout=60)
    decoded = subprocess.run(["zbarimg", "--raw", "-q", str(next(tmp_path.glob("page*.png")))], capture_output=True,
                             text=True, timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    lines = decoded.stdout.splitlines()
    assert chat in lines and f"export OPENAI_API_KEY={keys['alice']}" in lines
    assert not any(keys["alice"] in line and "chat" in line for line in lines)
    rows = list(csv.DictReader(io.StringIO((out_dir / "attendees.csv").read_text())))
    assert rows[0]["chat_url"] == chat and rows[1]["chat_url"] == ""


def test_a_revoked_attendee_gets_no_handout_and_is_named(tmp_path: Path, project: Path, outputs: dict[str, object],
                                                         keys: dict[str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Revoked in the roster, still in the outputs until the next `pulumi up`: her key must not be printed."""
    set_status(project / "roster.csv", "carol", "revoked")
    out_dir = tmp_path / "handouts"
    code, out, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                         "--outputs", str(write_json(tmp_path / "outputs.json", outputs)), "--out", str(out_dir))
    assert code == 0, out + err
    assert "not handed out: carol (revoked in the roster" in err
    assert "wrote 2 handout(s)" in out
    assert not (out_dir / "carol.pdf").exists() and not (out_dir / "carol.html").exists()
    assert (out_dir / "alice.pdf").is_file() and (out_dir / "bob.pdf").is_file()
    assert "carol" not in (out_dir / "attendees.csv").read_text()
    assert pdf_pages(out_dir / "handouts.pdf") == 2
    for path in out_dir.iterdir():
        assert keys["carol"].encode() not in path.read_bytes(), path


def test_an_xinference_stacks_page_has_xinferences_client_too_and_still_fits_one_page(
        tmp_path: Path, outputs: dict[str, object], keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """The snippet itself runs against the real Xinference in tests/integration/test_engines_real.py."""
    project = workshop_project(tmp_path, [{"id": who, "name": who.title(), "email": f"{who}@example.org"}
                                          for who in ATTENDEES], engine="xinference")
    attendees = outputs["attendees"]
    assert isinstance(attendees, dict)
    attendees["bob"]["chatUrl"] = "https://chat.ws.example.org/_login"  # the tallest page: CA, chat and 4 snippets
    out_dir = tmp_path / "handouts"
    code, _, err = run(capsys, "workshop", "handouts", "--stack", STACK, "--project-dir", str(project),
                       "--outputs", str(write_json(tmp_path / "o.json", outputs)), "--out", str(out_dir))
    assert code == 0, err
    assert pdf_pages(out_dir / "handouts.pdf") == 3  # still one page each
    page = pdf_text(out_dir / "handouts.pdf", 2)
    assert "Xinference's client" in page and "from xinference_client import RESTfulClient" in page
    bob = (out_dir / "bob.html").read_text().replace("&#34;", '"')
    assert f'client = RESTfulClient("https://203.0.113.7",\n                       api_key="{keys["bob"]}")' in bob
    assert 'os.environ["REQUESTS_CA_BUNDLE"] = "bob-ca.pem"' in bob  # requests reads this, not SSL_CERT_FILE
    # The smaller QR code of a dense page still scans from a 100 dpi picture of the printout.
    subprocess.run(["pdftoppm", "-r", "100", "-png", "-f", "2", "-l", "2", str(out_dir / "handouts.pdf"),
                    str(tmp_path / "page")], check=True, timeout=60)
    decoded = subprocess.run(["zbarimg", "--raw", "-q", str(next(tmp_path.glob("page*.png")))], capture_output=True,
                             text=True, timeout=60)
    assert f"export OPENAI_API_KEY={keys['bob']}" in decoded.stdout.splitlines(), decoded.stderr
