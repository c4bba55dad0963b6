"""pyright over infra/ (the Pulumi program and the package): 0 errors. Mocks let wrong field types and
typos in nested dicts through; the SDK's type hints do not."""
from __future__ import annotations

import json
import subprocess
import sys

from support.project import ROOT

PYRIGHT = ROOT / "node_modules" / ".bin" / "pyright"
# The SDKs' types come from the interpreter that runs the tests (the virtualenv .venv under `make test`), not
# whichever python is first on PATH.
PYTHON = ["--pythonpath", sys.executable]


def test_pyright_reports_no_errors_in_infra() -> None:
    assert PYRIGHT.exists(), "pyright is not installed: run scripts/setup.sh (npm install pyright@1.1.414)"
    result = subprocess.run([str(PYRIGHT), "--outputjson", *PYTHON], cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    errors = [f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
              for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert report["summary"]["filesAnalyzed"] >= 15
    assert not errors, "\n".join(errors)


def test_pyright_catches_a_wrong_sdk_field_type(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The reason pyright runs: assign_public_ip takes a string, a bool passes the mocks unnoticed."""
    bad = tmp_path / "bad.py"
    bad.write_text("from pulumi_oci import core\n"
                   "core.InstanceCreateVnicDetailsArgs(assign_public_ip=False)\n"
                   "core.Vcn('v', compartment_id='c', cidr_blockz=['10.0.0.0/16'])\n")
    result = subprocess.run([str(PYRIGHT), "--outputjson", *PYTHON, str(bad)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    errors = [d for d in json.loads(result.stdout)["generalDiagnostics"] if d["severity"] == "error"]
    assert {d["range"]["start"]["line"] + 1 for d in errors} == {2, 3}  # both bad lines, nothing else
    assert any("assign_public_ip" in d["message"] for d in errors)
