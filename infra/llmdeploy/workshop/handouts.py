"""`llmdeploy workshop handouts`: one page per attendee, as HTML and as PDF, plus a CSV for the instructor.

Each page: the attendee's endpoint, OpenAI base URL, model and API key; a QR code; ready-to-paste curl,
OpenAI Python client and BioChatter snippets (and Xinference's own client on an Xinference stack); and when the
endpoint's smoke test last passed (from the status file `llmdeploy workshop status` writes).

- The QR code holds three shell lines, `export OPENAI_BASE_URL=...`, `export OPENAI_API_KEY=...` and
  `export OPENAI_MODEL=...`: what an attendee needs to get onto a laptop without typing a 50-character key,
  ready to paste into a terminal or a .env file (the OpenAI client reads the first two by itself). The URL
  alone would open in a phone's browser and get a 401.
- Self-signed endpoints, and endpoints whose certificate comes from a test ACME directory (Let's Encrypt
  staging, pebble: llmdeploy/acme_roots.py), come with the CA to trust as <id>-ca.pem; the snippets trust it
  (curl --cacert, SSL_CERT_FILE for the Python clients, which both use httpx) and the HTML page offers it as a
  download.
- With a chat frontend (chatUi), the page names its sign-in URL and has a second QR code holding that URL alone,
  for a phone's camera: the attendee pastes the key on the page it opens.
- The CSV holds no keys: it is the instructor's list (who, which endpoint, which files, last smoke pass), and
  CSV files get opened in spreadsheets, mailed and synced. A key is only in that attendee's own handout and in
  Pulumi's encrypted state (`pulumi stack output attendees --show-secrets`).
- Every file is written 0600 in a 0700 folder: the handouts hold keys, the CSV names and e-mail addresses.

The PDF is rendered from the same HTML by WeasyPrint (PyPI `weasyprint`, which needs Debian's Pango), once
for the whole roster (handouts.pdf, one page per attendee, for printing), then split into <id>.pdf.
"""
from __future__ import annotations

import base64
import csv
import io
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from ..engines import ENGINES
from ..errors import Failure, UsageError
from ..private_files import secure_folder, write_private
from .handout_template import CSS, PAGE
from .attendee_outputs import AttendeeOutput
from .status import attendee_ca

PROMPT = "Say hello in five words."
BIO_PROMPT = "What does the BRCA1 gene do?"
CSV_COLUMNS = ("id", "name", "email", "endpoint", "endpoint_url", "chat_url", "model", "ca_file", "last_smoke_pass",
               "last_smoke_result", "html", "pdf")


@dataclass(frozen=True)
class Written:
    folder: Path
    html: list[Path]
    pdf: list[Path]
    combined_pdf: Path
    csv: Path
    ca_files: list[Path]


def qr_text(a: AttendeeOutput) -> str:
    return (f"export OPENAI_BASE_URL={a.openai_base_url}\nexport OPENAI_API_KEY={a.api_key}\n"
            f"export OPENAI_MODEL={a.model}")


def qr_svg_uri(text: str) -> str:
    import segno
    return segno.make(text, error="m", micro=False).svg_data_uri(scale=4, border=2)


def ca_name(a: AttendeeOutput) -> str:
    return f"{a.id}-ca.pem"


def ca_reason(a: AttendeeOutput, acme_trust: str) -> str:
    """Why the attendee needs the CA file: the page says it in words."""
    if acme_trust and a.ca_certificate:
        return "its own certificate authority (self-signed TLS) and a test ACME CA"
    if acme_trust:
        return "a certificate from a test ACME CA (e.g. Let's Encrypt staging), which no browser or system trusts"
    return "its own certificate authority (self-signed TLS)"


def snippets(a: AttendeeOutput, acme_trust: str = "", engine: str = "") -> dict[str, str]:
    """The page's ready-to-paste code (tests run each against a real endpoint): curl, the OpenAI SDK, BioChatter's
    GptConversation, and on an Xinference stack Xinference's own client."""
    ca = ca_name(a) if attendee_ca(a, acme_trust) else ""
    cacert = f"  --cacert {ca} \\\n" if ca else ""
    curl = (f"curl {a.openai_base_url}/chat/completions \\\n{cacert}"
            f"  -H \"Authorization: Bearer {a.api_key}\" \\\n"
            f"  -H \"Content-Type: application/json\" \\\n"
            f"  -d '{{\"model\": \"{a.model}\",\n"
            f"       \"messages\": [{{\"role\": \"user\", \"content\": \"{PROMPT}\"}}]}}'")
    trust = (f"import os\nos.environ[\"SSL_CERT_FILE\"] = \"{ca}\"  # the CA this endpoint's certificate needs\n"
             if ca else "")
    openai = (f"{trust}from openai import OpenAI  # pip install openai\n\n"
              f"client = OpenAI(base_url=\"{a.openai_base_url}\",\n"
              f"                api_key=\"{a.api_key}\")\n"
              f"reply = client.chat.completions.create(\n"
              f"    model=\"{a.model}\",\n"
              f"    messages=[{{\"role\": \"user\", \"content\": \"{PROMPT}\"}}],\n)\n"
              f"print(reply.choices[0].message.content)")
    biochatter = (f"{trust}from biochatter.llm_connect import GptConversation  # pip install biochatter\n\n"
                  f"conversation = GptConversation(model_name=\"{a.model}\", prompts={{}},\n"
                  f"                               base_url=\"{a.openai_base_url}\")\n"
                  f"conversation.set_api_key(api_key=\"{a.api_key}\")\n"
                  f"response, token_usage, correction = conversation.query(\"{BIO_PROMPT}\")\n"
                  f"print(response)")
    found = {"curl": curl, "openai": openai, "biochatter": biochatter}
    own = ENGINES[engine].client_snippet(a.endpoint_url, a.api_key, a.model, PROMPT, trust) if engine in ENGINES else ""
    if own:  # the engine's own client (Xinference's), under the engine's name
        found[engine] = own
    return found


def _when(text: str | None) -> str:
    if not text:
        return ""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def smoke_line(entry: dict[str, Any] | None) -> tuple[str, str]:
    """(css class, text) for the handout's smoke-test line."""
    if not entry or not entry.get("lastRun"):
        return "unknown", "Smoke test: not run yet."
    last_pass = _when(entry.get("lastPass"))
    if entry.get("lastResult") == "pass":
        return "ok", f"Smoke test passed at {last_pass}."
    if last_pass:
        return "warn", f"Smoke test last passed at {last_pass}; the latest run ({_when(entry.get('lastRun'))}) failed."
    return "bad", f"Smoke test has not passed yet (last run {_when(entry.get('lastRun'))})."


def _env() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def page_context(a: AttendeeOutput, stack: str, title: str, status: dict[str, Any] | None,
                 generated: str, acme_trust: str = "", engine: str = "") -> dict[str, Any]:
    css_class, smoke = smoke_line(status)
    ca = attendee_ca(a, acme_trust)
    return {"a": a, "stack": stack, "title": title, "snippets": snippets(a, acme_trust, engine),
            "qr": qr_svg_uri(qr_text(a)),
            # The chat's QR holds its sign-in page's URL only, never the key: a phone's camera opens it as it is.
            "chat_qr": qr_svg_uri(a.chat_url) if a.chat_url else "",
            "smoke_class": css_class, "smoke": smoke, "generated": generated, "ca_name": ca_name(a),
            "ca": ca, "ca_reason": ca_reason(a, acme_trust),
            "ca_data_uri": ("data:application/x-pem-file;base64," + base64.b64encode(ca.encode()).decode()) if ca else ""}


def render_html(pages: list[dict[str, Any]], title: str, for_print: bool) -> str:
    return _env().from_string(PAGE).render(pages=pages, title=title, css=CSS, for_print=for_print)


def pdf_renderer() -> Any:
    try:
        import weasyprint
    except ImportError:
        raise UsageError("PDF handouts need WeasyPrint: pip install weasyprint (it needs Debian's "
                         "libpango-1.0-0 and libpangoft2-1.0-0; scripts/setup.sh installs both)") from None
    except OSError as exc:
        raise UsageError(f"WeasyPrint cannot load its libraries ({exc}): apt-get install libpango-1.0-0 "
                         "libpangoft2-1.0-0 fonts-dejavu-core") from None
    return weasyprint


def write_handouts(attendees: list[AttendeeOutput], out: Path, stack: str, status: dict[str, dict[str, Any]],
                   title: str = "", now: datetime | None = None, acme_trust: str = "", engine: str = "") -> Written:
    """`acme_trust`: the test ACME roots the stack's certificates need (workshop.status.stack_acme_trust);
    `engine`: the stack's engine (an Xinference stack's page has Xinference's client too)."""
    weasyprint = pdf_renderer()
    title = title or f"LLM workshop ({stack})"
    generated = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    secure_folder(out)
    contexts = [page_context(a, stack, title, status.get(a.id), generated, acme_trust, engine) for a in attendees]
    html_files, ca_files = [], []
    for a, ctx in zip(attendees, contexts):
        path = out / f"{a.id}.html"
        write_private(path, render_html([ctx], title, for_print=False).encode())
        html_files.append(path)
        if ctx["ca"]:
            ca_path = out / ca_name(a)
            write_private(ca_path, ctx["ca"].encode())
            ca_files.append(ca_path)
    document = weasyprint.HTML(string=render_html(contexts, title, for_print=True), base_url=str(out)).render()
    if len(document.pages) != len(attendees):
        raise Failure(f"the handouts came out as {len(document.pages)} pages for {len(attendees)} attendees: a "
                      "page overflowed (a very long name or URL?); shorten it in the roster")
    combined = out / "handouts.pdf"
    write_private(combined, document.write_pdf())
    pdf_files = []
    for index, a in enumerate(attendees):
        path = out / f"{a.id}.pdf"
        write_private(path, document.copy([document.pages[index]]).write_pdf())
        pdf_files.append(path)
    csv_path = out / "attendees.csv"
    write_private(csv_path, instructor_csv(attendees, status, acme_trust).encode())
    return Written(out, html_files, pdf_files, combined, csv_path, ca_files)


def instructor_csv(attendees: list[AttendeeOutput], status: dict[str, dict[str, Any]], acme_trust: str = "") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in attendees:
        entry = status.get(a.id) or {}
        writer.writerow([a.id, _cell(a.name), _cell(a.email), a.endpoint, a.endpoint_url, a.chat_url, a.model,
                         ca_name(a) if attendee_ca(a, acme_trust) else "", entry.get("lastPass") or "",
                         entry.get("lastResult") or "not run", f"{a.id}.html", f"{a.id}.pdf"])
    return buffer.getvalue()


def _cell(text: str) -> str:
    """A spreadsheet must not run a cell as a formula (=, +, -, @ at its start)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
