"""The secret check behind `llmdeploy validate`: it fails when a secret is in user-data. The validators that run
real tools are in tests/integration/test_validators.py."""
from llmdeploy.config import parse
from llmdeploy.render import render
from llmdeploy.validate import check_no_secrets
from support.project import minimal_raw


def test_secret_check_fails_when_a_secret_is_in_user_data() -> None:
    cfg = parse(minimal_raw(hfToken="hf_0123456789abcdefSECRET"))
    rendered = render(cfg)
    assert check_no_secrets(cfg, rendered)[0]
    leaky = type(rendered)(rendered.user_data + "# hf_0123456789abcdefSECRET\n", rendered.files, rendered.steps)
    ok, detail = check_no_secrets(cfg, leaky)
    assert not ok and "hfToken" in detail and "hf_0123" not in detail
