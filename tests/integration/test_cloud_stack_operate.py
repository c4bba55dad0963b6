"""`llmdeploy status|logs|usage --stack NAME` of a cloud stack and `llmdeploy workshop usage`, through the code path a
cloud stack takes: host and user from the stack's outputs (the Pulumi CLI, here tests/support/fake_pulumi.py), the
private key from the stack's encrypted sshPrivateKey (`pulumi config get`), the host key trusted on first use and a
changed one refused. The VMs are real sshd (tests/support/sshd.py) holding usage logs in nginx's format; a workshop's
VMs are loopback addresses on one port, as cloud VMs are addresses on port 22.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
import pytest
import yaml

from llmdeploy.cli import main
from llmdeploy.secret_delivery import generate_api_key
from llmdeploy.vmpaths import USAGE_LOG
from support.fake_pulumi import FakePulumi, fake_pulumi
from support.ports import free_port
from support.sshd import ADMIN, Sshd, run_sshd
from support.workshop_stack import ROOT, STACK, attendee_entry, people, workshop_project

pytestmark = pytest.mark.integration

ENCRYPTED = {"secure": "v1:AAAAencryptedkey"}
FACTS = {"stack": "cloud", "engine": "llamacpp", "engine_unit": "llamacpp", "model_name": "tiny",
         "stages": ["10-apt", "90-ready"], "ready_marker": "/var/lib/llmdeploy/ready"}


def record(name: str, status: int, when: str = "", seconds: float = 0.01, sent: int = 500) -> str:
    """One line as nginx's llmdeploy_usage log_format writes it (templates/files/nginx-site.conf.j2)."""
    from datetime import datetime, timezone

    return json.dumps({"time": when or datetime.now(timezone.utc).isoformat(timespec="seconds"), "name": name,
                       "addr": "192.0.2.9", "host": "ep", "method": "POST", "path": "/v1/chat/completions",
                       "status": status, "request_bytes": 300, "response_bytes": sent, "request_time": seconds,
                       "upstream_time": "" if status in (401, 429) else str(seconds)})


def give_log(server: Sshd, lines: list[str]) -> None:
    server.vm.write(USAGE_LOG, "".join(line + "\n" for line in lines))


def share_client_key(first: Sshd, other: Sshd) -> None:
    """One stack key logs in to every VM of a stack."""
    pub = Path(f"{first.client_key}.pub").read_text()
    (other.vm.base / "home" / ".authorized_keys" / ADMIN).write_text(pub)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """llmdeploy's cache folder (where cloud host keys are recorded), this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(folder))
    monkeypatch.setenv("LLMDEPLOY_STATE_DIR", str(tmp_path / "vms"))  # no local VM of any stack
    monkeypatch.delenv("LLMDEPLOY_SSH_PRIVATE_KEY", raising=False)
    return folder


def cloud_project(tmp: Path) -> Path:
    """A vm-target stack 'cloud' whose sshPrivateKey is stored encrypted, as `pulumi config set --secret` stores it."""
    root = tmp / "cloud-project"
    root.mkdir()
    (root / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    body = {"config": {"oci:region": "eu-frankfurt-1", "llmdeploy:compartmentId": "ocid1.compartment.oc1..aaaatest",
                       "llmdeploy:engine": "llamacpp", "llmdeploy:sshPrivateKey": ENCRYPTED}}
    (root / "Pulumi.cloud.yaml").write_text(yaml.safe_dump(body))
    return root


@contextmanager
def cloud_stack(tmp: Path, monkeypatch: pytest.MonkeyPatch, port: int = 0) -> Iterator[tuple[Sshd, Path, FakePulumi]]:
    """A VM (real sshd, on `port` when given) and the stack whose outputs name it."""
    with run_sshd(tmp / "vm", port=port) as server, fake_pulumi(tmp, monkeypatch) as pulumi:
        pulumi.answer("outputs.json", {"endpointUrl": "https://127.0.0.1", "publicIp": server.host,
                                       "sshCommand": f"ssh -p {server.port} {ADMIN}@{server.host}"})
        pulumi.answer("config-sshPrivateKey", server.client_key.read_text())
        server.vm.write_vm_facts(FACTS)
        server.vm.set_unit("nginx", "active")
        server.vm.set_unit("llamacpp", "active", ["Dec 07 10:00:00 vm llama-server[42]: server is listening"])
        yield server, cloud_project(tmp), pulumi


def test_a_cloud_stack_is_reached_from_its_outputs_and_its_host_key_is_pinned_on_first_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with cloud_stack(tmp_path / "a", monkeypatch) as (server, project, pulumi):
        give_log(server, [record("default", 200), record("default", 200), record("-", 401)])
        stack = ["--stack", "cloud", "--project-dir", str(project)]
        assert main(["usage", *stack, "--json"]) == 0
        out, err = capsys.readouterr()
        assert {k["name"]: k["requests"] for k in json.loads(out)["keys"]} == {"default": 2, "(no valid key)": 1}
        known = cache / "cloud-known_hosts"
        assert known.read_text() == f"[{server.host}]:{server.port} {server.host_key_line}\n"
        assert "first login" in err and str(known) in err and "PRIVATE KEY" not in out + err
        # The key came from `pulumi config get` (its stdout), never a command line; outputs were read without secrets.
        calls = [c["argv"] for c in pulumi.calls()]
        assert calls[1][:3] == ["config", "get", "sshPrivateKey"] and "--show-secrets" not in calls[0]
        assert not any("PRIVATE KEY" in " ".join(argv) for argv in calls)

        assert main(["logs", *stack, "--engine", "-n", "5"]) == 0
        out, err = capsys.readouterr()
        assert "server is listening" in out and "first login" not in err  # pinned now: no new note
        main(["status", *stack, "--json"])
        assert json.loads(capsys.readouterr().out)["units"] == {"nginx": "active", "llamacpp": "active"}
        port = server.port
    # Another VM at the same address and port (its own host key): refused before logging in, with the fix.
    with cloud_stack(tmp_path / "b", monkeypatch, port=port) as (impostor, project, _):
        assert main(["status", "--stack", "cloud", "--project-dir", str(project)]) == 1
        err = capsys.readouterr().err
        assert "host key mismatch" in err and f"ssh-keygen -R '[127.0.0.1]:{port}' -f {known}" in err
        assert "Accepted publickey" not in impostor.log.read_text()


def test_a_stack_without_a_key_asks_for_one_and_a_given_key_and_host_key_win(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with cloud_stack(tmp_path, monkeypatch) as (server, project, _):
        stack_file = project / "Pulumi.cloud.yaml"
        body = yaml.safe_load(stack_file.read_text())
        del body["config"]["llmdeploy:sshPrivateKey"]  # pulumi up logs in with the ssh-agent
        stack_file.write_text(yaml.safe_dump(body))
        stack = ["--stack", "cloud", "--project-dir", str(project)]
        assert main(["status", *stack]) == 2
        assert "has no sshPrivateKey (pulumi up logs in with the ssh-agent): give the key" in capsys.readouterr().err
        wrong_pin = "SHA256:" + "A" * 43
        assert main(["logs", *stack, "--ssh-key", str(server.client_key), "--ssh-host-key", wrong_pin]) == 1
        assert "host key mismatch" in capsys.readouterr().err and not (cache / "cloud-known_hosts").exists()
        assert main(["logs", *stack, "--ssh-key", str(server.client_key), "--ssh-host-key", server.host_key_line]) == 0


@pytest.fixture
def workshop_vms(tmp_path: Path) -> Iterator[list[Sshd]]:
    """Two VMs on 127.0.0.2 and 127.0.0.3, one port, one client key."""
    port = free_port()
    with run_sshd(tmp_path / "vm-a", listen="127.0.0.2", port=port) as first, \
            run_sshd(tmp_path / "vm-b", listen="127.0.0.3", port=port) as second:
        share_client_key(first, second)
        yield [first, second]


def run_workshop_usage(project: Path, port: int, *more: str) -> list[str]:
    return ["workshop", "usage", "--stack", STACK, "--project-dir", str(project), "--ssh-port", str(port), *more]


def test_workshop_usage_dedicated_one_vm_each_idle_and_unreachable_rows(
        workshop_vms: list[Sshd], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    alice_vm, bob_vm = workshop_vms
    rows = [{"id": who, "name": who.title(), "email": f"{who}@example.org"} for who in ("alice", "bob", "dave")]
    project = workshop_project(tmp_path, rows, sshPrivateKey=ENCRYPTED)
    # alice used her VM's key ("default"), and someone tried a wrong key there; bob's VM saw only a wrong key.
    give_log(alice_vm, [record("default", 200, sent=2048)] * 4 + [record("default", 429)] + [record("-", 401)])
    give_log(bob_vm, [record("-", 401), record("default", 200, when="2020-01-01T00:00:00+00:00")])
    outputs = {"workshopEndpoints": {"alice": "https://127.0.0.2", "bob": "https://127.0.0.3",
                                     "dave": "https://127.0.0.4"}}  # nothing listens on dave's address
    with fake_pulumi(tmp_path, monkeypatch) as pulumi:
        pulumi.answer("outputs.json", outputs)
        pulumi.answer("config-sshPrivateKey", alice_vm.client_key.read_text())
        assert main(run_workshop_usage(project, alice_vm.port, "--json", "--since", "1h")) == 1
        found = {a["id"]: a for a in json.loads(capsys.readouterr().out)["attendees"]}
        assert main(run_workshop_usage(project, alice_vm.port)) == 1
        table = capsys.readouterr().out
    assert (found["alice"]["state"], found["alice"]["requests"], found["alice"]["ok"], found["alice"]["throttled"]) == \
        ("active", 5, 4, 1)
    assert found["alice"]["response_bytes"] == 4 * 2048 + 500
    assert (found["bob"]["state"], found["bob"]["requests"]) == ("idle", 0)  # the 2020 request is out of the window
    assert found["dave"]["state"] == "unreachable" and "127.0.0.4" in found["dave"]["problem"]
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["attendee", "endpoint", "state", "requests"]
    assert [line.split()[:4] for line in lines[1:4]] == [["alice", "alice", "active", "5"], ["bob", "bob", "idle", "0"],
                                                         ["dave", "dave", "unreachable", "?"]]
    assert "1 active, 1 idle, 1 unreachable" in table and "unreachable: dave: cannot connect to 127.0.0.4" in table
    assert "alice: requests by no attendee's key: (no valid key) 1" in table
    assert len((cache / "cloud-known_hosts").read_text().splitlines()) == 2  # both reachable VMs pinned


def test_workshop_usage_shared_one_login_keys_named_by_attendee(
        workshop_vms: list[Sshd], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    server = workshop_vms[0]
    project = workshop_project(tmp_path, people(3), workshopLayout="shared", workshopEndpoints=1)
    give_log(server, [record("u01", 200)] * 3 + [record("u03", 429)] * 2 + [record("u03", 200)])
    monkeypatch.setenv("LLMDEPLOY_SSH_PRIVATE_KEY", server.client_key.read_text())  # the key given in the environment
    # A saved `--show-secrets` outputs file holds every attendee's key: none of them may be printed.
    keys = {who: generate_api_key() for who in ("u01", "u02", "u03")}
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"workshopEndpoints": {"ep0": "https://127.0.0.2"}, "attendees": {
        who: attendee_entry(who, "https://127.0.0.2", key, endpoint="ep0") for who, key in keys.items()}}))
    assert main(run_workshop_usage(project, server.port, "--json", "--outputs", str(outputs))) == 0
    out, err = capsys.readouterr()
    found = {a["id"]: a for a in json.loads(out)["attendees"]}
    assert main(run_workshop_usage(project, server.port, "--outputs", str(outputs))) == 0
    shown = out + err + "".join(capsys.readouterr())
    for secret in [*keys.values(), server.client_key.read_text().strip().splitlines()[1]]:
        assert secret not in shown
    assert {who: (a["endpoint"], a["state"], a["requests"], a["throttled"]) for who, a in found.items()} == {
        "u01": ("ep0", "active", 3, 0), "u02": ("ep0", "idle", 0, 0), "u03": ("ep0", "active", 3, 2)}
    assert server.log.read_text().count("Accepted publickey") == 2  # one login per run for the endpoint's attendees
