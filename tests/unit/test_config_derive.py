"""config.derive(): a variant of a parsed config (a workshop endpoint's) is exactly what parsing the edited
values gives, bad overrides fail with parse's own message, and the values it keeps never print."""
from __future__ import annotations

from typing import Any

import pytest

from llmdeploy.config import ConfigError, derive, parse
from llmdeploy.declared import declarations
from llmdeploy.stack_yaml import read_stack
from support.project import EXAMPLE_STACKS, ROOT

HF_TOKEN = "hf_derivetesttokenvalue0123456789"
# A different engine and model, a secret, a list and a number: each kind of value parse coerces.
OVERRIDES: dict[str, Any] = {"engine": "llamacpp", "shape": "VM.Standard.E4.Flex", "shapeOcpus": "4",
                             "shapeMemoryGbs": 32, "modelName": "", "modelParamsBillions": "", "modelQuantBits": 0,
                             "hfToken": HF_TOKEN, "apiKeys": ["alice:30r/m", "ops:60r/m:admin"],
                             "domain": "alice.workshop.example.org"}


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_derive_is_parsing_the_edited_values(stack: str) -> None:
    raw = read_stack(ROOT, stack)
    cfg = parse(raw, stack=stack, decls=declarations(ROOT))
    overrides = {**OVERRIDES, "target": cfg.target} if cfg.target == "vm" else {"apiKeys": ["alice:30r/m"]}
    if cfg.chat.ui == "biochatter-light":  # its OpenAI path needs the model served as gpt-3.5-turbo
        overrides["modelName"] = cfg.model_name
    if cfg.chat.ui == "open-webui" and cfg.target != "vm":  # its admin is an admin key's user (OVERRIDES has one)
        overrides["apiKeys"] = ["alice:30r/m", "ops:admin"]
    derived = derive(cfg, overrides)
    assert derived == parse({**raw, **overrides}, stack=stack, decls=declarations(ROOT))
    assert derived != cfg and derived.stack == stack
    # Derived again from the derived config: the overrides it was built with are part of what it came from.
    assert derive(derived, {"rateLimit": "5r/s"}) == parse({**raw, **overrides, "rateLimit": "5r/s"}, stack=stack)


def test_derive_keeps_what_it_does_not_override() -> None:
    cfg = parse(read_stack(ROOT, "ollama-a10"), stack="ollama-a10")
    derived = derive(cfg, {"domain": "bob.workshop.example.org"})
    assert derived.domain == "bob.workshop.example.org"
    assert (derived.engine, derived.model, derived.auth, derived.tls) == (cfg.engine, cfg.model, cfg.auth, cfg.tls)


@pytest.mark.parametrize("bad", [{"engine": "bogus"}, {"shapeOcpus": "many"}, {"apiKeys": "not a list ["},
                                 {"hfTokn": "typo"}])
def test_a_bad_override_fails_with_parses_message(bad: dict[str, Any]) -> None:
    raw = read_stack(ROOT, "llamacpp-cpu")
    cfg = parse(raw, stack="llamacpp-cpu")
    with pytest.raises(ConfigError) as from_parse:
        parse({**raw, **bad}, stack="llamacpp-cpu")
    with pytest.raises(ConfigError) as from_derive:
        derive(cfg, bad)
    assert str(from_derive.value) == str(from_parse.value)
    assert "in stack 'llamacpp-cpu'" in str(from_derive.value) and next(iter(bad)) in str(from_derive.value)


def test_the_values_a_config_keeps_for_derive_never_print() -> None:
    cfg = parse({**read_stack(ROOT, "llamacpp-cpu"), "hfToken": HF_TOKEN}, stack="llamacpp-cpu")
    assert HF_TOKEN not in repr(cfg) and HF_TOKEN not in repr(cfg.parsed_from)
    assert derive(cfg, {}).hf_token.reveal() == HF_TOKEN  # kept, not dropped
