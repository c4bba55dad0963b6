"""A rendered GPU stack, for the GPU provisioning tests."""
from __future__ import annotations

from llmdeploy.config import parse
from llmdeploy.render import Rendered, render
from support.project import minimal_raw

LIBEXEC = "/usr/local/lib/llmdeploy"  # where the helper scripts are installed


def rendered(**overrides: object) -> Rendered:
    return render(parse(minimal_raw(**overrides), stack="gpu"))
