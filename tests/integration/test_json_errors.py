"""Every refusal nginx makes on the API is an OpenAI-shaped JSON error ({"error": {"message", "type", "param",
"code"}}), with its status kept: 401 (a wrong key, and auth_basic's own refusal, which keeps WWW-Authenticate),
403 (a management route with an ordinary key) and 429 (a key over its rate). The rendered site in the real nginx
on loopback, asked with the real OpenAI SDK, whose errors carry the parsed body (`err.body`, `err.code`).
"""
from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator

import openai
import pytest
import requests

from llmdeploy.engines import ENGINE_ROUTES
from support.endpoint import PASSWORD, Endpoint
from support.route_recorder import route_recorder
from support.site import site_endpoint

pytestmark = pytest.mark.integration

WRONG_KEY = "sk-llm-" + "x" * 43


@pytest.fixture(scope="module")
def with_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """API keys and a basic-auth user (alice): auth_basic, not try_files, refuses here."""
    with route_recorder() as backend:
        with site_endpoint(tmp_path_factory.mktemp("basic"), backend.port, apiKeys=["default", "slow:1r/m"],
                           rateLimitBurst=1) as ep:
            yield ep


@pytest.fixture(scope="module")
def keys_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with route_recorder() as backend:
        with site_endpoint(tmp_path_factory.mktemp("keys"), backend.port, apiKeys=["default", "slow:1r/m"],
                           rateLimitBurst=1, basicAuthUsers=[], basicAuthPasswords="") as ep:
            yield ep


def sdk(ep: Endpoint, api_key: str) -> openai.OpenAI:
    verify = ssl.create_default_context(cafile=ep.ca)
    return openai.OpenAI(base_url=f"{ep.base}/v1", api_key=api_key, max_retries=0,
                         http_client=openai.DefaultHttpxClient(verify=verify, timeout=10))


def raw(ep: Endpoint, path: str = "/v1/models", method: str = "GET", **headers: str) -> requests.Response:
    return requests.request(method, f"{ep.base}{path}", headers=headers, verify=ep.ca, timeout=10)


def assert_openai_error(response: requests.Response, status: int, kind: str, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    error = json.loads(response.text)["error"]  # nginx's HTML page would not parse
    assert set(error) == {"message", "type", "param", "code"}, error
    assert (error["type"], error["code"], error["param"]) == (kind, code, None), error
    assert isinstance(error["message"], str) and error["message"], error
    return dict(error)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_auth_basic_refusals_are_json_401s_that_still_ask_for_a_password(with_basic: Endpoint) -> None:
    for headers in ({}, {"Authorization": f"Bearer {WRONG_KEY}"}, {"Authorization": basic("alice", "wrong")},
                    {"Authorization": basic("mallory", PASSWORD)}):
        response = raw(with_basic, **headers)
        error = assert_openai_error(response, 401, "authentication_error", "invalid_api_key")
        assert "basic-auth user and password" in str(error["message"])
        assert response.headers.get("www-authenticate") == 'Basic realm="llmdeploy"', headers
    # alice's right password still gets in; the engine's own answer is not rewritten.
    assert raw(with_basic, Authorization=basic("alice", PASSWORD)).status_code == 200


def test_the_sdk_parses_the_401_of_a_basic_auth_site(with_basic: Endpoint) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(with_basic, WRONG_KEY).models.list()
    err = caught.value
    assert err.status_code == 401
    assert isinstance(err.body, dict), err.body  # the SDK's body is the parsed "error" object, not HTML
    assert err.body["message"] == ("missing or invalid API key (Authorization: Bearer KEY) or basic-auth user "
                                   "and password")
    assert (err.code, err.type) == ("invalid_api_key", "authentication_error")


def test_a_wrong_key_on_a_keys_only_site_is_the_same_shape_without_www_authenticate(keys_only: Endpoint) -> None:
    response = raw(keys_only, Authorization=f"Bearer {WRONG_KEY}")
    error = assert_openai_error(response, 401, "authentication_error", "invalid_api_key")
    assert error["message"] == "missing or invalid API key (Authorization: Bearer KEY)"
    assert "www-authenticate" not in response.headers  # no browser password prompt for API clients
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(keys_only, WRONG_KEY).models.list()
    assert caught.value.code == "invalid_api_key"


@pytest.mark.parametrize("site", ["keys_only", "with_basic"])
def test_a_management_route_with_an_ordinary_key_is_a_json_403(site: str, request: pytest.FixtureRequest) -> None:
    ep: Endpoint = request.getfixturevalue(site)
    route = ENGINE_ROUTES["llamacpp"].management[0]
    method = next(m for m in route.methods if m != "HEAD")
    response = raw(ep, route.example(), method, Authorization=f"Bearer {ep.keys['default']}")
    assert_openai_error(response, 403, "permission_error", "admin_key_required")


@pytest.mark.parametrize("site", ["keys_only", "with_basic"])
def test_a_key_over_its_rate_is_a_json_429_the_sdk_reads(site: str, request: pytest.FixtureRequest) -> None:
    ep: Endpoint = request.getfixturevalue(site)
    client = sdk(ep, ep.keys["slow"])
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(5):  # 1r/m with a burst of 1: the second or third request is refused
            client.models.list()
    err = caught.value
    assert err.status_code == 429 and isinstance(err.body, dict), err.body
    assert (err.code, err.type) == ("rate_limit_exceeded", "rate_limit_error")
    assert "rate limit exceeded for this API key" in str(err.body["message"])
    assert err.response.headers["retry-after"] == "60"
