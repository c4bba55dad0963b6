"""The one module that reads pulumi.Config: every declared key, validated by config.parse before any
resource exists (a ConfigError stops `pulumi up` with the full list of problems)."""
from __future__ import annotations

import pulumi

from ..config import StackConfig, parse
from ..declared import declarations


def load() -> StackConfig:
    config = pulumi.Config()
    decls = declarations()
    # Secret values are read as text but only ever held in config.Secret; whatever derives from them
    # is wrapped in Output.secret by the components.
    raw = {key: value for key in decls if (value := config.get(key)) is not None}
    return parse(raw, stack=pulumi.get_stack(), decls=decls)
