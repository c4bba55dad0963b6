"""The OCI Data Science checks against a local HTTPS server that verifies every request's OCI signature with
the public key, as OCI does (tests/support/oci_server.py): no OCI endpoint is reachable here. The keys and
the OCI config file are throwaway ones written to the test's temporary directory."""
import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import oci
import pytest
import requests

from llmdeploy.smoke.oci_ds import chat_body, predict_url, run_oci_ds_checks
from llmdeploy.result import FAIL, PASS
from support.oci_server import ANSWER, ApiKey, OciServer, make_api_key, oci_server

MODEL = "odsc-llm"
REFUSED = ("401 NotAuthenticated: The required information to complete authentication was not provided or was "
           "incorrect. (the signature was refused: wrong key or fingerprint for the user, or this machine's clock "
           "is off)")


@pytest.fixture
def key(tmp_path: Path) -> ApiKey:
    return make_api_key(tmp_path / "keys", "alice")


@pytest.fixture
def server(tmp_path: Path, key: ApiKey) -> Iterator[OciServer]:
    with oci_server(tmp_path / "server", MODEL, [key]) as s:
        yield s


def checks(server: OciServer, config: Path, **kwargs: object) -> dict[str, object]:
    results = run_oci_ds_checks(server.url, MODEL, config_file=str(config), ca_bundle=server.ca, timeout=10,
                                **kwargs)  # type: ignore[arg-type]
    return {r.name: r for r in results}


def test_a_good_signature_passes_predict_and_the_stream(server: OciServer, key: ApiKey, tmp_path: Path) -> None:
    other = make_api_key(tmp_path / "keys", "someone-else")
    config = other.write_config(tmp_path / "config")  # DEFAULT is a key the server does not know ...
    with config.open("a") as f:  # ... the profile asked for is alice's
        f.write(key.write_config(tmp_path / "alice", profile="smoke").read_text())
    results = checks(server, config, profile="smoke")
    assert [(name, r.status) for name, r in results.items()] == [  # type: ignore[attr-defined]
        ("oci-ds: signer", PASS), ("oci-ds: predict (chat)", PASS), ("oci-ds: predict stream (SSE)", PASS)]
    assert key.fingerprint in results["oci-ds: signer"].summary  # type: ignore[attr-defined]
    assert results["oci-ds: predict (chat)"].summary == f"200 from {MODEL}: {ANSWER!r}"  # type: ignore[attr-defined]
    stream = results["oci-ds: predict stream (SSE)"]
    assert stream.summary.startswith("5 tokens in 8 events, first after")  # type: ignore[attr-defined]
    assert stream.metrics["ttft_s"] > 0 and stream.metrics["tokens_per_s"] > 0  # type: ignore[attr-defined]
    assert [s.verdict for s in server.seen] == [key.key_id, key.key_id]
    assert [s.path for s in server.seen] == ["/ocid1.datasciencemodeldeployment.oc1.iad.aaaatest/predict"] * 2
    assert [s.headers["enable-streaming"] for s in server.seen] == ["false", "true"]
    assert {s.headers["route"] for s in server.seen} == {"/v1/chat/completions"}
    sent = results["oci-ds: predict (chat)"].evidence["request"]["headers"]  # type: ignore[attr-defined]
    assert 'headers="date (request-target) host content-length content-type x-content-sha256"' in sent["authorization"]
    assert sent["authorization"].endswith('signature="<redacted>"')


def test_a_request_signed_with_another_key_fails_with_a_clear_401(server: OciServer, key: ApiKey,
                                                                    tmp_path: Path) -> None:
    impostor = make_api_key(tmp_path / "keys", "impostor")
    config = ApiKey(key.tenancy, key.user, key.fingerprint, impostor.private_key, impostor.public_pem) \
        .write_config(tmp_path / "config")  # alice's ids, someone else's private key
    results = checks(server, config)
    predict, stream = results["oci-ds: predict (chat)"], results["oci-ds: predict stream (SSE)"]
    assert predict.status == FAIL and predict.summary == REFUSED  # type: ignore[attr-defined]
    assert stream.status == FAIL and stream.summary == REFUSED  # type: ignore[attr-defined]
    assert predict.evidence["response"]["status"] == 401  # type: ignore[attr-defined]
    assert [s.verdict for s in server.seen] == [f"signature does not verify with the public key of {key.key_id}"] * 2


def test_a_body_changed_after_signing_is_refused(server: OciServer, key: ApiKey, tmp_path: Path) -> None:
    server.tamper_body = True  # a middlebox rewrites the prompt on its way
    results = checks(server, key.write_config(tmp_path / "config"), stream=False)
    assert list(results) == ["oci-ds: signer", "oci-ds: predict (chat)"]
    assert results["oci-ds: predict (chat)"].summary == REFUSED  # type: ignore[attr-defined]
    assert server.seen[0].verdict == "x-content-sha256 does not match the body received"
    # An attacker who also recomputes x-content-sha256 breaks the signature, which covers that header.
    server.tamper_body = False
    signer = oci.signer.Signer(key.tenancy, key.user, key.fingerprint, str(key.private_key))
    request = requests.Request("POST", predict_url(server.url), data=json.dumps(chat_body(MODEL, False)).encode(),
                               headers={"Content-Type": "application/json"}, auth=signer).prepare()
    assert isinstance(request.body, bytes)
    request.body = request.body.replace(b"friendly", b"FRIENDLY")
    request.headers["x-content-sha256"] = base64.b64encode(hashlib.sha256(request.body).digest()).decode()
    with requests.Session() as s:
        s.trust_env = False
        resp = s.send(request, verify=server.ca, timeout=10)
    assert resp.status_code == 401 and resp.json()["code"] == "NotAuthenticated"
    assert server.seen[-1].verdict == f"signature does not verify with the public key of {key.key_id}"


def test_a_wrong_model_name_and_a_deployment_that_does_not_stream_are_named(server: OciServer, key: ApiKey,
                                                                            tmp_path: Path) -> None:
    results = run_oci_ds_checks(server.url, "no-such-model", config_file=str(key.write_config(tmp_path / "config")),
                                ca_bundle=server.ca, timeout=10)
    predict = next(r for r in results if r.name == "oci-ds: predict (chat)")
    assert predict.status == FAIL and predict.summary == "404 NotFoundError: The model `no-such-model` does not exist."
    server.container_streams = False
    results = run_oci_ds_checks(server.url, MODEL, config_file=str(key.write_config(tmp_path / "config")),
                                ca_bundle=server.ca, timeout=10)
    assert [r.status for r in results] == [PASS, PASS, FAIL]
    assert results[2].summary == ("409 ExternalServerIncorrectState: Unexpected nonstreaming response detected from "
                                  "the deployed model. (the deployment did not stream: its container must answer "
                                  '`"stream": true` with server-sent events)')


def test_instance_principal_without_a_metadata_service_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from support.ports import free_port
    monkeypatch.setenv("OCI_METADATA_BASE_URL", f"http://127.0.0.1:{free_port()}/opc/v2")
    start = time.monotonic()
    results = run_oci_ds_checks("https://localhost:1/ocid1.x", MODEL, instance_principal=True, timeout=5)
    assert [r.name for r in results] == ["oci-ds: signer"]
    assert results[0].status == FAIL
    assert results[0].summary.startswith("instance principal unavailable: the instance metadata service at "
                                         "http://127.0.0.1:")
    assert time.monotonic() - start < 10  # the SDK alone retries for about 90 s
