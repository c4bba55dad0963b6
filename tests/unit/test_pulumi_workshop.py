"""Workshops in the Pulumi program, under mocks: a roster in, an endpoint (dedicated) or a key (shared) per
attendee out; names from attendee ids, so adding one attendee adds only that attendee's resources."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.stack import output_names as out
from llmdeploy.stack_yaml import read_stack
from support.delivery import provisioned, secrets_tar
from support.project import ROOT
from support.pulumi_mocks import Run, is_secret, run_program, unwrap

MAIN = ROOT / "infra" / "__main__.py"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"


def roster(tmp_path: Path, rows: list[str], header: str = "id,name,email,status,engine,ollamaModel,rateLimit") -> Path:
    path = tmp_path / "roster.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def run_workshop(path: Path, **overrides: Any) -> Run:
    values = read_stack(ROOT, "llamacpp-cpu") | {"sshPrivateKey": KEY, "workshopRoster": str(path),
                                                  "workshopDomain": "ws.example.org", "dnsZone": "example.org"}
    return run_program(MAIN, values | overrides, stack="ws", secret_keys=("sshPrivateKey",))


def instance_names(run: Run) -> set[str]:
    return {r.name for r in run.of_type("oci:Core/instance:Instance")}




ROWS = ["ada,Ada L,ada@example.org,,,,", "bob,Bob K,bob@example.org,revoked,,,",
        "cyd,Cyd M,cyd@example.org,,ollama,llama3.2:1b,"]


def test_dedicated_layout_gives_each_active_attendee_a_vm_in_one_network(tmp_path: Path) -> None:
    run = run_workshop(roster(tmp_path, ROWS), shape="VM.GPU.A10.1")
    assert instance_names(run) == {"llmdeploy-ws-ada-instance", "llmdeploy-ws-cyd-instance"}  # bob is revoked
    assert len(run.of_type("oci:Core/vcn:Vcn")) == 1 and len(run.of_type("oci:Core/subnet:Subnet")) == 1
    instances = {r.name: r for r in run.of_type("oci:Core/instance:Instance")}
    assert unwrap(instances["llmdeploy-ws-ada-instance"].inputs)["freeformTags"]["attendee"] == "ada"
    assert "40-engine-ollama" not in provisioned(run, instances["llmdeploy-ws-ada-instance"])
    cyd = provisioned(run, instances["llmdeploy-ws-cyd-instance"])
    assert "model=llama3.2:1b" in cyd and "OLLAMA_HOST=127.0.0.1:11434" in cyd  # the roster's override
    records = {unwrap(r.inputs)["domain"] for r in run.of_type("oci:Dns/rrset:Rrset")}
    assert records == {"ada.ws.example.org", "cyd.ws.example.org"}
    attendees = run.outputs[out.ATTENDEES]
    assert out.ATTENDEES in run.secret_outputs and set(attendees) == {"ada", "cyd"}
    assert attendees["ada"]["endpointUrl"] == "https://ada.ws.example.org"
    assert attendees["cyd"]["model"] == "llama3.2:1b" and attendees["ada"]["apiKey"].startswith("sk-llm-")
    assert attendees["ada"]["apiKey"] != attendees["cyd"]["apiKey"]
    assert run.outputs[out.WORKSHOP_ENDPOINTS] == {"ada": "https://ada.ws.example.org",
                                                   "cyd": "https://cyd.ws.example.org"}


def test_adding_an_attendee_adds_only_that_attendees_resources(tmp_path: Path) -> None:
    before = {r.name for r in run_workshop(roster(tmp_path, ROWS[:1])).resources}
    after = {r.name for r in run_workshop(roster(tmp_path, [*ROWS[:1], "dan,Dan P,dan@example.org,,,,"])).resources}
    assert before < after
    assert all(name.startswith("llmdeploy-ws-dan") for name in after - before), sorted(after - before)


def test_shared_layout_gives_each_attendee_a_key_and_a_rate_on_an_assigned_endpoint(tmp_path: Path) -> None:
    rows = [f"a{i},Attendee {i},a{i}@example.org,,,,{'5r/m' if i == 3 else ''}" for i in range(5)]
    run = run_workshop(roster(tmp_path, rows), workshopLayout="shared", workshopEndpoints=2,
                       workshopAttendeeRate="20r/m")
    assert instance_names(run) == {"llmdeploy-ws-ep0-instance", "llmdeploy-ws-ep1-instance"}
    attendees = run.outputs[out.ATTENDEES]
    assert {a["endpoint"] for a in attendees.values()} == {"ep0", "ep1"}
    assert sorted(a["endpoint"] for a in attendees.values()).count("ep0") == 3  # 3 and 2: balanced
    bundles = {}
    for ready in run.of_type("command:remote:Command"):
        tar = secrets_tar(unwrap(ready.inputs["stdin"]))
        bundles[ready.name.split("-")[2]] = tar.extractfile("api-keys.map").read().decode()  # type: ignore[union-attr]
    for attendee_id, entry in attendees.items():
        assert f'"Bearer {entry["apiKey"]}" {attendee_id};' in bundles[entry["endpoint"]]
    ep1 = provisioned(run, next(r for r in run.of_type("oci:Core/instance:Instance") if "ep1" in r.name))
    assert "rate=5r/m;" in ep1 and "a3 a3;" in ep1  # a3's own rate, in its own zone
    assert all(is_secret(r.inputs["stdin"]) for r in run.of_type("command:remote:Command"))


def key_names(run: Run, endpoint: str) -> dict[str, str]:
    """The key map delivered to an endpoint: key value -> key name."""
    ready = next(r for r in run.of_type("command:remote:Command") if r.name.split("-")[2] == endpoint)
    tar = secrets_tar(unwrap(ready.inputs["stdin"]))
    text = tar.extractfile("api-keys.map").read().decode()  # type: ignore[union-attr]
    return {line.split('"')[1].removeprefix("Bearer "): line.split('"')[2].strip(" ;") for line in text.splitlines()}


def test_an_attendee_gets_the_first_ordinary_key_of_their_vm_never_an_admin_one(tmp_path: Path) -> None:
    run = run_workshop(roster(tmp_path, ROWS[:1]), shape="VM.GPU.A10.1", apiKeys=["teacher:admin", "default"])
    ada = run.outputs[out.ATTENDEES]["ada"]
    assert key_names(run, "ada")[ada["apiKey"]] == "default"
    site = provisioned(run, next(r for r in run.of_type("oci:Core/instance:Instance") if "ada" in r.name))
    assert re.search(r"map \$llmdeploy_client \$llmdeploy_admin \{\s+default 0;\s+teacher 1;\s+\}", site)


def test_a_dedicated_workshop_whose_keys_are_all_admin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"apiKeys: got \['teacher:admin'\]; expected at least one key without :admin"):
        run_workshop(roster(tmp_path, ROWS[:1]), apiKeys=["teacher:admin"])


def test_a_roster_rate_cannot_make_a_shared_attendee_admin(tmp_path: Path) -> None:
    rows = ["ada,Ada L,ada@example.org,,,,5r/m:admin"]
    with pytest.raises(Exception, match="attendee ada's rateLimit '5r/m:admin' is not an nginx rate"):
        run_workshop(roster(tmp_path, rows), workshopLayout="shared")


@pytest.mark.parametrize("rows, layout, message", [
    (["ada,Ada,ada@example.org,,ollama,not a tag,"], "dedicated", "attendee ada"),
    (["ada,Ada,ada@example.org,,ollama,,"], "shared", "only the dedicated layout honours"),
    (["Ada!,Ada,ada@example.org,,,,"], "dedicated", "line 2: id 'Ada!'"),
])
def test_a_bad_roster_fails_before_any_resource(tmp_path: Path, rows: list[str], layout: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        run_workshop(roster(tmp_path, rows), workshopLayout=layout)
    from support import pulumi_mocks
    assert pulumi_mocks.LAST_MOCKS is not None and pulumi_mocks.LAST_MOCKS.resources == []


def test_a_missing_roster_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot read the roster"):
        run_workshop(tmp_path / "nope.csv")
