"""Helpers of the bad-input tests: the llama.cpp stack they start from and the ConfigError they expect."""
from __future__ import annotations

from typing import Any

import pytest

from llmdeploy.config import ConfigError, parse
from support.project import minimal_raw

LLAMACPP = {"engine": "llamacpp", "shape": "VM.Standard.E4.Flex", "modelName": "m"}


def problem(key: str, **overrides: Any) -> str:
    """The message line about `key` when parse refuses overrides (fails if parse accepts them)."""
    with pytest.raises(ConfigError) as info:
        parse(minimal_raw(**overrides))
    lines = [line for line in str(info.value).splitlines() if line.startswith(f"  - {key}: got ")]
    assert lines, str(info.value)
    return lines[0]
