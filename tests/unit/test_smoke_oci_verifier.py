"""The OCI signature verifier of the stand-in (tests/support/oci_server.py) on its own, and the SSE parser;
the signed checks against the stand-in's server are in tests/integration/test_smoke_oci.py."""
import email.utils
import json
import time
from pathlib import Path

import oci
import pytest
import requests

from llmdeploy.smoke.oci_ds import chat_body, predict_url, sse_data
from support.oci_server import ApiKey, SignatureError, make_api_key, verify_request

MODEL = "odsc-llm"


@pytest.fixture
def key(tmp_path: Path) -> ApiKey:
    return make_api_key(tmp_path / "keys", "alice")


def test_the_verifier_insists_on_signed_body_headers_a_fresh_date_and_a_known_key(key: ApiKey, tmp_path: Path) -> None:
    signer = oci.signer.Signer(key.tenancy, key.user, key.fingerprint, str(key.private_key))
    body = json.dumps(chat_body(MODEL, False)).encode()
    keys = {key.key_id: key.public_pem}

    def signed(auth: object, **headers: str) -> requests.PreparedRequest:
        return requests.Request("POST", "https://localhost:1/x/predict", data=body, auth=auth,
                                headers={"Content-Type": "application/json", **headers}).prepare()

    good = signed(signer)
    assert verify_request("POST", good.path_url, dict(good.headers), body, keys) == key.key_id
    no_body_headers = signed(signer.without_content_headers)
    with pytest.raises(SignatureError, match="required headers not signed: content-length content-type "
                                             "x-content-sha256"):
        verify_request("POST", no_body_headers.path_url, dict(no_body_headers.headers), body, keys)
    stale = signed(signer, date=email.utils.formatdate(time.time() - 3600, usegmt=True))
    with pytest.raises(SignatureError, match="more than 300s away"):
        verify_request("POST", stale.path_url, dict(stale.headers), body, keys)
    with pytest.raises(SignatureError, match="unknown keyId"):
        verify_request("POST", good.path_url, dict(good.headers), body, {})
    with pytest.raises(SignatureError, match="signature does not verify"):  # another path than the one signed
        verify_request("POST", "/y/predict", dict(good.headers), body, keys)


def test_sse_parser_takes_crlf_line_ends_multi_line_data_and_a_stream_without_done() -> None:
    raw = [b'data: {"a": 1}\r\n\r\ndata: {"b"', b': 2}\r\n\r\n: a comment\n\ndata: line one\ndata: line two\n\n',
           b'data: {"last": true}']
    assert list(sse_data(raw)) == ['{"a": 1}', '{"b": 2}', "line one\nline two", '{"last": true}']
    assert predict_url("https://md.example/ocid1.x/") == "https://md.example/ocid1.x/predict"
    assert predict_url("https://md.example/ocid1.x/predict") == "https://md.example/ocid1.x/predict"
