"""The one module that reads pulumi.Config: every declared key, as text, for the program to validate with
config.parse before any resource exists (a ConfigError stops `pulumi up` with the full list of problems)."""
from __future__ import annotations

from typing import Any

import pulumi

from ..declared import declarations


def load_raw() -> dict[str, Any]:
    """The stack's values of every declared key, as the CLI passes them (strings). Secret values are read as
    text but only ever held in config.Secret; whatever derives from them is wrapped in Output.secret."""
    config = pulumi.Config()
    return {key: value for key in declarations() if (value := config.get(key)) is not None}
