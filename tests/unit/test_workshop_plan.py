"""`llmdeploy workshop plan`: instances and GPUs per shape for the roster and layout, checked against the
tenancy's limits (a limits file offline, or OCI's limits API through the SDK against a local stand-in that
verifies request signatures), the Let's Encrypt budget, DNS, expiresAt and a cost estimate; exit 1 with the
reason when the plan cannot work, 2 for bad input.

Why: the first wall a workshop hits is GPU quota, found out only when `pulumi up` fails halfway through the
roster; the second is Let's Encrypt's 50 certificates per registered domain per week. Both are knowable before
any resource exists, and the plan must say so with numbers and a fix.
"""
from pathlib import Path

import pytest

from llmdeploy.workshop.plan import registered_domain
from llmdeploy.workshop.prices import PRICES
from support.workshop_plan import AD1, AD2, AD3, line, plan
from support.workshop_stack import people, workshop_project


def limits_file(tmp: Path, per_ad: dict[str, int], limit: str = "gpu-a10-count") -> Path:
    path = tmp / "limits.yaml"
    path.write_text("compute:\n  " + limit + ":\n" + "".join(f"    {ad}: {n}\n" for ad, n in per_ad.items()))
    return path


def test_a_gpu_shortfall_fails_with_numbers_and_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = people(40) + [{"id": "big", "name": "Big Model", "email": "big@example.org", "shape": "VM.GPU.A10.2"}]
    root = workshop_project(tmp_path, rows, columns=("id", "name", "email", "status", "shape"))
    limits = limits_file(tmp_path, {AD1: 20, AD2: 60, AD3: 2})
    code, out, _ = plan(capsys, root, "--limits", str(limits))
    assert code == 1
    gpus = line(out, "limit gpu-a10-count")
    assert gpus.startswith("FAIL")
    assert "need 42 GPUs (40 x VM.GPU.A10.1, 1 x VM.GPU.A10.2)" in gpus
    assert f"in {AD1} (the region's first AD: availabilityDomain is empty); only 20 available: short by 22 GPUs" in gpus
    assert f"pulumi config set availabilityDomain {AD2} (60 available there)" in gpus
    assert "workshopLayout shared with workshopEndpoints 20" in gpus
    assert line(out, "shape VM.GPU.A10.1").startswith("PASS  shape VM.GPU.A10.1                 40 instance(s), 40 A10")
    assert "1 instance(s), 2 A10 GPU(s) (2 per instance)" in line(out, "shape VM.GPU.A10.2")
    assert line(out, "cost VM.GPU.A10.1").endswith("40 x $2.00/h x 8 h = $640.00")
    assert "$32.00" in line(out, "cost VM.GPU.A10.2")
    assert "41 active attendee(s) (0 revoked), layout dedicated: 41 instance(s), 42 GPU(s); estimated $672.00 for 8 h" \
        in out
    assert out.rstrip().endswith("the plan cannot work: limit gpu-a10-count")


def test_the_configured_ad_is_the_one_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(30), availabilityDomain=AD2)
    code, out, _ = plan(capsys, root, "--limits", str(limits_file(tmp_path, {AD1: 2, AD2: 30})))
    assert code == 0, out
    assert line(out, "limit gpu-a10-count") == (f"PASS  limit gpu-a10-count                need 30 GPUs (30 x "
                                                f"VM.GPU.A10.1) in {AD2}; 30 available (0 to spare)")


def test_shared_layout_needs_few_gpus_and_revoked_attendees_count_for_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = people(40)
    rows[3]["status"] = "revoked"
    root = workshop_project(tmp_path, rows, workshopLayout="shared", workshopEndpoints=3, workshopHours=6)
    code, out, _ = plan(capsys, root, "--limits", str(limits_file(tmp_path, {AD1: 4})))
    assert code == 0, out
    assert "shared: 3 endpoint(s) for 39 attendee(s), 13-13 each, every attendee with an own key at 30r/m" in out
    assert "need 3 GPUs (3 x VM.GPU.A10.1)" in line(out, "limit gpu-a10-count")
    assert line(out, "cost VM.GPU.A10.1").endswith("3 x $2.00/h x 6 h = $36.00")
    assert "39 active attendee(s) (1 revoked)" in out and out.rstrip().endswith("the plan can work")


def test_cpu_flex_shapes_count_ocpus_and_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(5), engine="llamacpp", shape="VM.Standard.E4.Flex", shapeOcpus=2,
                            shapeMemoryGbs=16, modelName="qwen-small")
    limits = tmp_path / "limits.yaml"
    limits.write_text(f"compute:\n  standard-e4-core-count: {{{AD1}: 8}}\n  standard-e4-memory-count: {{{AD1}: 500}}\n")
    code, out, _ = plan(capsys, root, "--limits", str(limits))
    assert code == 1
    assert line(out, "limit standard-e4-core-count").startswith("FAIL")
    assert "need 10 OCPUs (5 x VM.Standard.E4.Flex)" in out and "only 8 available: short by 2 OCPUs" in out
    assert line(out, "limit standard-e4-memory-count").startswith("PASS")
    per_hour = PRICES["VM.Standard.E4.Flex"].hourly(2, 16)
    assert f"5 x ${per_hour:.4f}/h x 8 h = ${5 * per_hour * 8:,.2f}" in line(out, "cost VM.Standard.E4.Flex")


def test_offline_without_limits_warns_and_says_how(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(3))
    code, out, _ = plan(capsys, root, "--offline")
    assert code == 0
    assert line(out, "limits") == "WARN  limits                             not checked (--offline); pass --limits " \
                                  "FILE to check offline"


LE = {"tlsMode": "letsencrypt", "workshopDomain": "ws.bioinf.example.ac.uk", "domain": "ws.bioinf.example.ac.uk",
      "dnsZone": "example.ac.uk"}


def test_more_certificates_than_lets_encrypt_allows_fails_and_proposes_alternatives(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(60), **LE)
    code, out, _ = plan(capsys, root, "--offline")
    assert code == 1
    budget = line(out, "Let's Encrypt budget")
    assert budget.startswith("FAIL")
    assert "60 new certificate(s) for example.ac.uk: 60 of 50 per registered domain per week: 10 endpoint(s) would " \
           "get no certificate" in budget
    assert "workshopLayout shared" in budget
    assert "one wildcard certificate *.ws.bioinf.example.ac.uk by DNS-01 on OCI DNS" in budget
    assert "tlsMode provided" in budget
    assert line(out, "DNS").startswith("PASS  DNS                                60 A record(s) under ws.bioinf")


def test_a_budget_that_leaves_no_room_for_a_rehearsal_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(20), **LE)
    code, out, _ = plan(capsys, root, "--offline", "--le-issued", "12")
    assert code == 0
    budget = line(out, "Let's Encrypt budget")
    assert budget.startswith("WARN") and "20 new certificate(s) for example.ac.uk plus 12 already issued this week: " \
        "32 of 50" in budget and "18 left" in budget
    assert "at most 5 times per week" in budget


def test_shared_endpoints_and_staging_fit_the_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(60), workshopLayout="shared", workshopEndpoints=4, **LE)
    code, out, _ = plan(capsys, root, "--offline")
    assert code == 0 and "4 new certificate(s) for example.ac.uk: 4 of 50" in line(out, "Let's Encrypt budget")
    staging = workshop_project(tmp_path / "s", people(60), acmeDirectoryUrl=
                               "https://acme-staging-v02.api.letsencrypt.org/directory", **LE)
    code, out, _ = plan(capsys, staging, "--offline")
    assert code == 0 and "staging directory (limit 30000" in line(out, "Let's Encrypt budget")


def test_registered_domain_follows_the_public_suffix_list(tmp_path: Path) -> None:
    assert registered_domain("ws.bioinf.example.ac.uk") == ("example.ac.uk", True)
    assert registered_domain("a.b.example.com") == ("example.com", True)
    assert registered_domain("ws.uni-heidelberg.de") == ("uni-heidelberg.de", True)
    assert registered_domain("ws.example.ac.uk", tmp_path / "no-list") == ("ac.uk", False)  # a guess, and said so


# --- DNS, expiry, bad input --------------------------------------------------------------------------------


def test_domain_outside_the_zone_and_a_past_expiry_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(2), workshopDomain="ws.example.org", dnsZone="example.net",
                            expiresAt="2020-01-01T00:00:00Z")
    code, out, _ = plan(capsys, root, "--offline")
    assert code == 1
    assert "workshopDomain ws.example.org is not inside dnsZone example.net" in line(out, "DNS")
    assert line(out, "expiresAt").startswith("FAIL  expiresAt                          2020-01-01T00:00:00Z is in the past")
    assert out.rstrip().endswith("the plan cannot work: DNS; expiresAt")


def test_secrets_stored_encrypted_do_not_stop_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(2), sshPrivateKey={"secure": "v1:AAAAencrypted"})
    code, out, err = plan(capsys, root, "--offline")
    assert code == 0, err


@pytest.mark.parametrize("roster, message", [
    ("id,name,email\nalice,Alice,alice@example.org\nalice,Alice 2,a2@example.org\n",
     "line 3: id 'alice' is already used on line 2"),
    ("id,name,email\nBob Smith,Bob,bob@example.org\n", "line 2: id 'Bob Smith' must be 1-24 of a-z"),
    ("id,name\nalice,Alice\n", "missing column(s) email"),
    ("id,name,email,shape\nalice,Alice,alice@example.org,VM.GPU.A11.1\n", "attendee alice"),
])
def test_a_bad_roster_is_exit_2_with_the_line_and_the_fix(tmp_path: Path, roster: str, message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(1))
    (root / "roster.csv").write_text(roster)
    code, out, err = plan(capsys, root, "--offline")
    assert code == 2
    assert message in err and "Traceback" not in out + err


@pytest.mark.parametrize("setup, extra, message", [
    ("no-roster-key", [], "is not a workshop: workshopRoster is not set"),
    ("missing-roster", [], "cannot read the roster"),
    ("bad-limits", ["--limits", "LIMITS"], "must map 'compute' to limits"),
    ("negative-limits", ["--limits", "LIMITS"], "gpu-a10-count in AD-1: -3 is not a whole number >= 0"),
    ("no-oci-config", ["--oci-config", "/nonexistent/config"], "no OCI config file at /nonexistent/config"),
    ("shared-override", [], "only the dedicated layout honours"),
])
def test_bad_input_is_exit_2_naming_problem_and_fix(tmp_path: Path, setup: str, extra: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config: dict[str, object] = {}
    columns: tuple[str, ...] = ("id", "name", "email", "status")
    rows = people(2)
    if setup == "no-roster-key":
        config["workshopRoster"] = ""
    if setup == "shared-override":
        config.update(workshopLayout="shared")
        columns += ("shape",)
        rows[0]["shape"] = "VM.GPU.A10.2"
    root = workshop_project(tmp_path, rows, columns=columns, **config)
    if setup == "missing-roster":
        (root / "roster.csv").unlink()
    limits = tmp_path / "limits.yaml"
    limits.write_text("gpu-a10-count: 3\n" if setup == "bad-limits" else "compute:\n  gpu-a10-count:\n    AD-1: -3\n")
    code, out, err = plan(capsys, root, *[str(limits) if a == "LIMITS" else a for a in extra])
    assert code == 2, out
    assert message in err and "Traceback" not in out + err
