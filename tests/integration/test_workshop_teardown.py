"""`llmdeploy workshop teardown` and `llmdeploy reap --expired`, against a local stand-in for OCI's Search,
Compute and Networking APIs (tests/support/oci_api.py) that checks every request's OCI signature and answers with
the documented shapes, and a fake `pulumi` (the CLI cannot be installed here) whose `destroy` deletes what the
stack's state knows, as the real one does.

Why: the point of teardown is to notice what `pulumi destroy` left behind (a resource created outside the state,
a failed delete), and the point of reap is to clean up resources no state knows. Both must find them by tag
through Search, wait out Search's lag instead of trusting its first answer, delete in the order OCI accepts, and
say honestly what they cannot delete.
"""
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.workshop import teardown
from support.fake_pulumi import FakePulumi, fake_pulumi
from support.oci_api import OciApi, oci_api
from support.oci_server import ApiKey, make_api_key
from support.workshop_stack import COMPARTMENT, STACK, people, workshop_project

PAST, FUTURE = "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"


def tags(stack: str = STACK, expires: str = FUTURE, **extra: str) -> dict[str, str]:
    return {"project": "llmdeploy", "stack": stack, "managed-by": "llmdeploy", "expires-at": expires, **extra}


@pytest.fixture
def key(tmp_path: Path) -> ApiKey:
    return make_api_key(tmp_path / "oci-key")


@pytest.fixture
def oci_config(tmp_path: Path, key: ApiKey) -> Path:
    return key.write_config(tmp_path / "oci-config")


@pytest.fixture
def api(key: ApiKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[OciApi]:
    monkeypatch.setattr(teardown, "POLL_SECONDS", 0.05)
    with oci_api([key]) as server:
        monkeypatch.setenv("LLMDEPLOY_OCI_ENDPOINT", server.url)
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return workshop_project(tmp_path, people(2))


@pytest.fixture
def pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: OciApi) -> Iterator[FakePulumi]:
    with fake_pulumi(tmp_path, monkeypatch, hook=f"{api.url}/_test/destroy") as fake:
        yield fake


def a_workshop(api: OciApi, stack: str = STACK, expires: str = FUTURE) -> dict[str, str]:
    """The network and two attendee VMs of a dedicated workshop, as the Pulumi program tags them."""
    vcn = api.add("Vcn", f"llmdeploy-{stack}-vcn", COMPARTMENT, tags(stack, expires))
    subnet = api.add("Subnet", f"llmdeploy-{stack}-subnet", COMPARTMENT, tags(stack, expires), uses=(vcn.id,))
    igw = api.add("InternetGateway", f"llmdeploy-{stack}-igw", COMPARTMENT, tags(stack, expires), uses=(vcn.id,))
    routes = api.add("RouteTable", f"llmdeploy-{stack}-routes", COMPARTMENT, tags(stack, expires),
                     uses=(vcn.id, igw.id))
    nsg = api.add("NetworkSecurityGroup", f"llmdeploy-{stack}-nsg", COMPARTMENT, tags(stack, expires), uses=(vcn.id,))
    ids = {"vcn": vcn.id, "subnet": subnet.id, "igw": igw.id, "routes": routes.id, "nsg": nsg.id}
    for who in ("u01", "u02"):
        vm = api.add("Instance", f"llmdeploy-{stack}-{who}-vm", COMPARTMENT, tags(stack, expires, attendee=who),
                     uses=(subnet.id, nsg.id), state="RUNNING", ad="Uocm:EU-FRANKFURT-1-AD-1")
        ip = api.add("PublicIp", f"llmdeploy-{stack}-{who}-ip", COMPARTMENT, tags(stack, expires, attendee=who))
        ids[f"{who}-vm"], ids[f"{who}-ip"] = vm.id, ip.id
    subnet.uses = (vcn.id, routes.id)
    return ids


# --- teardown -----------------------------------------------------------------------------------------------


def test_teardown_destroys_then_finds_nothing_left(project: Path, oci_config: Path, api: OciApi, pulumi: FakePulumi,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a_workshop(api)
    other = api.add("Instance", "llmdeploy-other-vm", COMPARTMENT, tags("other"), state="RUNNING")
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--yes",
                 "--oci-config", str(oci_config), "--wait", "5"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "PASS  OCI Search lists no resource of stack 'ws'" in out
    assert "DNS records" in out  # the limitation is said, not hidden
    destroy = [c for c in pulumi.calls() if c["argv"][0] == "destroy"]
    assert len(destroy) == 1
    argv = destroy[0]["argv"]
    assert argv[:2] == ["destroy", "--yes"] and argv[argv.index("--stack") + 1] == STACK
    assert argv[argv.index("--cwd") + 1] == str(project)
    assert other.state == "RUNNING"  # another stack's resources are nobody's business here
    query = api.queries[-1]
    assert "(freeformTags.key = 'stack' && freeformTags.value = 'ws')" in query
    assert "(freeformTags.key = 'project' && freeformTags.value = 'llmdeploy')" in query
    assert "lifecycleState != 'TERMINATED'" in query and "lifecycleState != 'DELETED'" in query
    assert all(s.status == 200 for s in api.signed("POST"))  # every search was signed and accepted


def test_teardown_reports_what_destroy_left_behind(project: Path, oci_config: Path, api: OciApi, pulumi: FakePulumi,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ids = a_workshop(api)
    # Created by hand during the workshop (say, a debugging VM), so not in Pulumi's state:
    leak = api.add("Instance", "llmdeploy-ws-debug-vm", COMPARTMENT, tags(attendee="u01"), state="RUNNING",
                   in_state=False)
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--yes",
                 "--oci-config", str(oci_config), "--wait", "0.3"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "FAIL  1 resource(s) of stack 'ws' are still there:" in out
    assert leak.id in out and "llmdeploy-ws-debug-vm" in out and "RUNNING" in out
    assert ids["vcn"] not in out
    assert "reap --expired --delete" in out


def test_teardown_waits_for_search_to_catch_up(project: Path, oci_config: Path, api: OciApi, pulumi: FakePulumi,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    a_workshop(api)
    api.search_lag = 3  # deleted resources stay visible, in their old state, for three more searches
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--yes",
                 "--oci-config", str(oci_config), "--wait", "10"])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert "search still lists 9 resource(s) of stack 'ws'; asking again" in out
    assert api.searches == 4


def test_teardown_fails_when_destroy_fails_but_still_reports(project: Path, oci_config: Path, api: OciApi,
                                                              pulumi: FakePulumi,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    a_workshop(api)
    pulumi.answer("destroy.exit", "255")
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--yes",
                 "--oci-config", str(oci_config), "--wait", "0.2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "pulumi destroy exited with 255; checking what is left anyway" in err
    assert "FAIL  9 resource(s) of stack 'ws' are still there" in out


def test_teardown_without_yes_refuses_when_it_cannot_ask(project: Path, oci_config: Path, api: OciApi,
                                                         pulumi: FakePulumi, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project),
                 "--oci-config", str(oci_config)])
    _, err = capsys.readouterr()
    assert code == 2 and "pass --yes to confirm" in err
    assert pulumi.calls() == []


def test_teardown_verify_only_needs_no_pulumi(project: Path, oci_config: Path, api: OciApi,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    api.add("PublicIp", "llmdeploy-ws-ip", COMPARTMENT, tags())
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--verify-only",
                 "--oci-config", str(oci_config), "--wait", "0"])
    out, _ = capsys.readouterr()
    assert code == 1 and "llmdeploy-ws-ip" in out


def test_teardown_without_pulumi_is_a_clear_error(project: Path, oci_config: Path, api: OciApi,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--yes",
                 "--oci-config", str(oci_config)])
    out, err = capsys.readouterr()
    assert code == 2
    assert "the Pulumi CLI is not installed (no `pulumi` on PATH)" in err and "get.pulumi.com" in err
    assert "Traceback" not in out + err


def test_a_request_signed_with_an_unknown_key_is_refused_and_said(project: Path, tmp_path: Path, api: OciApi,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    stranger = make_api_key(tmp_path / "stranger", "stranger").write_config(tmp_path / "stranger-config")
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--verify-only",
                 "--oci-config", str(stranger), "--wait", "0"])
    _, err = capsys.readouterr()
    assert code == 1
    assert "OCI Search refused the query: 401 NotAuthenticated" in err
    assert api.seen[-1].verdict.startswith("unknown keyId")


def test_reap_lists_expired_resources_and_deletes_nothing_without_delete(
        oci_config: Path, api: OciApi, capsys: pytest.CaptureFixture[str]) -> None:
    old = a_workshop(api, "old", expires=PAST)  # no Pulumi state involved at all
    a_workshop(api, "current", expires=FUTURE)
    api.add("Instance", "llmdeploy-bad-tag", COMPARTMENT, tags("odd", expires="next tuesday"), state="RUNNING")
    api.page_size = 4  # the answer spans several pages
    code = main(["reap", "--expired", "--oci-config", str(oci_config)])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "19 llmdeploy resource(s) in the tenancy (this region); 9 past their expires-at tag" in out
    for resource_id in old.values():
        assert resource_id in out
    assert "stack=current" not in out  # nothing of the stack that has not expired is listed
    assert "expires-at 'next tuesday' is not an ISO 8601 time with a zone; skipped" in out
    assert "nothing deleted: run again with --delete" in out
    assert api.signed("DELETE") == []
    assert len([s for s in api.signed("POST")]) >= 5  # 19 results, 4 per page


def test_reap_delete_deletes_in_the_order_oci_accepts(oci_config: Path, api: OciApi,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    old = a_workshop(api, "old", expires=PAST)
    keep = a_workshop(api, "current", expires=FUTURE)
    api.terminate_polls = 2  # instances take a few polls to reach TERMINATED
    code = main(["reap", "--expired", "--delete", "--oci-config", str(oci_config), "--wait", "10"])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert "9 of 9 deleted" in out
    for resource_id in old.values():
        assert api.resources[resource_id].state in ("TERMINATED", "DELETED")
    for resource_id in keep.values():
        assert api.resources[resource_id].state in ("AVAILABLE", "RUNNING")
    deletes = [s.path for s in api.signed("DELETE")]
    kinds = [p.split("/")[2] for p in deletes]
    assert kinds == ["instances", "instances", "publicIps", "publicIps", "networkSecurityGroups", "subnets",
                     "routeTables", "internetGateways", "vcns"]
    terminate = [s for s in api.signed("DELETE") if "/instances/" in s.path]
    assert all(s.query == {"preserveBootVolume": ["false"]} for s in terminate)
    assert all(s.status == 204 for s in api.signed("DELETE"))  # no 409: nothing was deleted while still in use


def test_reap_says_what_it_cannot_delete_and_what_failed(oci_config: Path, api: OciApi,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    vcn = api.add("Vcn", "llmdeploy-old-vcn", COMPARTMENT, tags("old", expires=PAST))
    # A subnet someone else made in that VCN, without our tags: the VCN cannot go yet.
    api.add("Subnet", "hand-made", COMPARTMENT, {}, uses=(vcn.id,))
    md = api.add("DataScienceModelDeployment", "llmdeploy-old-md", COMPARTMENT, tags("old", expires=PAST))
    code = main(["reap", "--expired", "--delete", "--oci-config", str(oci_config), "--wait", "1"])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "0 of 2 deleted" in out
    assert "FAILED     Vcn" in out and "409 Conflict" in out and "run reap again in a few minutes" in out
    assert "CANNOT     DataScienceModelDeployment" in out and md.id in out
    assert api.resources[vcn.id].state == "AVAILABLE"


def test_reap_in_one_compartment(oci_config: Path, api: OciApi, capsys: pytest.CaptureFixture[str]) -> None:
    here = api.add("PublicIp", "here", COMPARTMENT, tags("a", expires=PAST))
    there = api.add("PublicIp", "there", "ocid1.compartment.oc1..elsewhere", tags("b", expires=PAST))
    code = main(["reap", "--expired", "--compartment", COMPARTMENT, "--oci-config", str(oci_config)])
    out, _ = capsys.readouterr()
    assert code == 1 and here.id in out and there.id not in out
    assert f"compartmentId = '{COMPARTMENT}'" in api.queries[-1]


def test_reap_with_nothing_expired_exits_0(oci_config: Path, api: OciApi, capsys: pytest.CaptureFixture[str]) -> None:
    a_workshop(api, "current", expires=FUTURE)
    assert main(["reap", "--expired", "--delete", "--oci-config", str(oci_config)]) == 0
    assert "0 past their expires-at tag" in capsys.readouterr().out
    assert api.signed("DELETE") == []


def test_oci_endpoint_variable_is_not_leaking_between_tests() -> None:
    assert "LLMDEPLOY_OCI_ENDPOINT" not in os.environ
