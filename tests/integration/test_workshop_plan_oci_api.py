"""`llmdeploy workshop plan` reading GPU limits from OCI's Limits API, against the local stand-in that checks
every request's signature (tests/support/oci_api.py), and the installed command failing without a traceback.
The offline plan is tests/unit/test_workshop_plan.py."""
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.oci_api import OciApi, oci_api
from support.oci_server import ApiKey, make_api_key
from support.workshop_plan import AD1, AD2, AD3, line, plan
from support.workshop_stack import COMPARTMENT, STACK, people, workshop_project


@pytest.fixture
def key(tmp_path: Path) -> ApiKey:
    return make_api_key(tmp_path / "oci-key")


@pytest.fixture
def api(key: ApiKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[OciApi]:
    with oci_api([key]) as server:
        monkeypatch.setenv("LLMDEPLOY_OCI_ENDPOINT", server.url)
        yield server


def test_limits_from_oci_limits_api(tmp_path: Path, key: ApiKey, api: OciApi,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    api.limits = {("gpu-a10-count", AD1): (3, 5), ("gpu-a10-count", AD2): (12, 0), ("gpu-a10-count", AD3): (0, 8)}
    root = workshop_project(tmp_path, people(10))
    config = key.write_config(tmp_path / "oci-config")
    code, out, _ = plan(capsys, root, "--oci-config", str(config))
    assert code == 1
    assert f"limits from OCI limits API (us-ashburn-1, compartment {COMPARTMENT})" in out
    gpus = line(out, "limit gpu-a10-count")
    assert f"only 3 available: short by 7 GPUs (other ADs: {AD2}: 12, {AD3}: 0)" in gpus
    assert f"pulumi config set availabilityDomain {AD2} (12 available there)" in gpus
    calls = [s for s in api.seen if "resourceAvailability" in s.path]
    assert {s.query["availabilityDomain"][0] for s in calls} == {AD1, AD2, AD3}
    assert all(s.query["compartmentId"] == [COMPARTMENT] for s in calls)  # quotas of the stack's compartment count
    ads = [s for s in api.seen if s.path == "/20160918/availabilityDomains"]
    assert ads and ads[0].query["compartmentId"] == [key.tenancy]
    assert all(s.status == 200 and s.verdict == key.key_id for s in api.seen)  # every request signed, verified


def test_a_limit_oci_does_not_know_is_a_failure_with_the_command_to_list_them(
        tmp_path: Path, key: ApiKey, api: OciApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.limits = {("gpu-a10-count", AD1): (10, 0)}
    root = workshop_project(tmp_path, people(2), shape="BM.GPU.L40S.4")
    code, out, _ = plan(capsys, root, "--oci-config", str(key.write_config(tmp_path / "oci-config")))
    assert code == 1
    gpus = line(out, "limit gpu-l40s-count")
    assert "cannot tell what is available: OCI answered 404 NotAuthorizedOrNotFound" in gpus
    assert "oci limits definition list --service-name compute" in gpus


def test_a_stranger_key_gets_401_and_the_plan_says_so(tmp_path: Path, api: OciApi,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    api.limits = {("gpu-a10-count", AD1): (10, 0)}
    stranger = make_api_key(tmp_path / "stranger", "stranger").write_config(tmp_path / "stranger-config")
    root = workshop_project(tmp_path, people(2), availabilityDomain=AD1)
    code, out, err = plan(capsys, root, "--oci-config", str(stranger))
    assert code == 1
    assert "cannot list the availability domains: 401 NotAuthenticated" in err


def test_no_traceback_from_the_installed_command(tmp_path: Path) -> None:
    root = workshop_project(tmp_path, people(1))
    (root / "roster.csv").write_text("id,name,email\n1bad,X,nope\n")
    done = subprocess.run([sys.executable, "-m", "llmdeploy.cli", "workshop", "plan", "--stack", STACK,
                           "--project-dir", str(root), "--offline"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "roster:" in done.stderr and "email 'nope' is not an e-mail address" in done.stderr
    assert "Traceback" not in done.stderr
