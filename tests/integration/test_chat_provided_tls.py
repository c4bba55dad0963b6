"""chatUi with tlsMode provided: the certificate (made here with openssl) must name the chat host too."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmdeploy.config import ConfigError, parse
from support.certs import issue_leaf, make_ca
from support.project import minimal_raw


def test_a_provided_certificate_must_also_name_the_chat_host(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    only_api = issue_leaf(ca, tmp_path / "api", hostnames=["llm.example.org"], ips=[])
    both = issue_leaf(ca, tmp_path / "both", hostnames=["llm.example.org", "chat.llm.example.org"], ips=[])
    settings = dict(chatUi="open-webui", domain="llm.example.org", tlsMode="provided")

    def provided(leaf) -> dict[str, object]:  # type: ignore[no-untyped-def]
        return dict(tlsCertificate=leaf.fullchain.read_text(), tlsPrivateKey=leaf.key.read_text(), **settings)

    with pytest.raises(ConfigError) as caught:
        parse(minimal_raw(apiKeys=["instructor:admin"], **provided(only_api)))
    text = str(caught.value)
    assert "also names the chat host chat.llm.example.org" in text and "llm.example.org" in text
    assert parse(minimal_raw(apiKeys=["instructor:admin"], **provided(both))).chat.host == "chat.llm.example.org"
