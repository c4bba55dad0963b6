"""A throwaway workshop project for the workshop command tests: the checkout's Pulumi.yaml, a roster CSV and a
Pulumi.<stack>.yaml, in a temporary folder (the example stacks in the checkout stay untouched), plus the
`attendees` output that `pulumi up` would export for it.

Why: every workshop command reads a stack the way `pulumi up` does; the tests build small ones with exactly
the layout, shapes, TLS mode and roster each case needs.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
STACK = "ws"
COMPARTMENT = "ocid1.compartment.oc1..aaaaworkshoptest"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt2OCpI0iCvVGd2ky1nGPFv4n4Yf5vUbUNpHvZ8CXCm test@llmdeploy"


def roster_text(rows: list[dict[str, str]], columns: tuple[str, ...] = ("id", "name", "email", "status")) -> str:
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(row.get(c, "") for c in columns))
    return "\n".join(lines) + "\n"


def people(count: int, prefix: str = "u") -> list[dict[str, str]]:
    return [{"id": f"{prefix}{i:02d}", "name": f"Attendee {i}", "email": f"{prefix}{i:02d}@example.org"}
            for i in range(1, count + 1)]


def workshop_project(tmp: Path, rows: list[dict[str, str]], stack: str = STACK,
                     columns: tuple[str, ...] = ("id", "name", "email", "status"), **config: Any) -> Path:
    """A project folder with roster.csv and Pulumi.<stack>.yaml; `config` adds or overrides stack keys."""
    root = tmp / "project"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "roster.csv").write_text(roster_text(rows, columns), encoding="utf-8")
    values: dict[str, Any] = {"compartmentId": COMPARTMENT, "engine": "ollama", "ollamaModel": "llama3.1:8b",
                              "sshPublicKeys": [SSH_KEY], "workshopRoster": "roster.csv",
                              "expiresAt": "2099-01-01T00:00:00Z"}
    values.update(config)
    body = {"config": {"oci:region": "eu-frankfurt-1", **{f"llmdeploy:{k}": v for k, v in values.items()}}}
    (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return root


def attendee_entry(attendee_id: str, url: str, key: str, model: str = "tiny", ca: str = "",
                   endpoint: str = "", name: str = "", http_url: str = "", chat_url: str = "") -> dict[str, Any]:
    entry = {"name": name or f"Attendee {attendee_id}", "email": f"{attendee_id}@example.org", "endpointUrl": url,
             "openaiBaseUrl": f"{url}/v1", "apiKey": key, "model": model, "caCertificate": ca,
             "endpoint": endpoint or attendee_id}
    if http_url:
        entry["httpUrl"] = http_url
    if chat_url:
        entry["chatUrl"] = chat_url
    return entry


def export_with(stack: str, names: list[str], project: str = "llmdeploy") -> dict[str, Any]:
    """A `pulumi stack export` document holding random-password resources under the workshop component."""
    parent = f"urn:pulumi:{stack}::{project}::llmdeploy:workshop:Workshop::{project}-{stack}"
    resources: list[dict[str, Any]] = [
        {"urn": f"urn:pulumi:{stack}::{project}::pulumi:pulumi:Stack::{project}-{stack}", "custom": False,
         "type": "pulumi:pulumi:Stack"},
        {"urn": parent, "custom": False, "type": "llmdeploy:workshop:Workshop"}]
    for name in names:
        resources.append({"urn": f"urn:pulumi:{stack}::{project}::llmdeploy:workshop:Workshop$llmdeploy:vm:VmEndpoint"
                                 f"$random:index/randomPassword:RandomPassword::{name}",
                          "custom": True, "type": "random:index/randomPassword:RandomPassword", "id": "none",
                          "parent": parent, "outputs": {"result": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                                                                   "ciphertext": "v1:AAAAsecret"}}})
    return {"version": 3, "deployment": {"manifest": {"time": "2026-11-22T00:00:00Z"}, "resources": resources}}


def pdf_pages(path: Path) -> int:
    """The page count, as poppler's pdfinfo reads it."""
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return int(next(line.split()[1] for line in info.splitlines() if line.startswith("Pages:")))


def pdf_text(path: Path, page: int) -> str:
    """One page's text (1-based), as poppler's pdftotext extracts it, with line wrapping undone."""
    text = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), "-enc", "UTF-8", str(path), "-"],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    return " ".join(text.split())
