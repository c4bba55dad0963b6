"""The script that removes a machine's per-instance state before its disk becomes an image, run as root on the
machine (over SSH, from stdin) after the install steps and before it powers off. Local and OCI baking share it."""
from __future__ import annotations

from ..template_context import HostLayout
from ..templating import render_template
from ..vmpaths import template_vars

TEMPLATE = "bake-scrub.sh.j2"


def scrub_script(keep_models: bool = True, layout: HostLayout = HostLayout()) -> str:
    """The scrub, rendered. keep_models: the engine's weights stay in the image (a model is not per instance,
    and the download is the slowest step); without it they go too, and each boot downloads them again."""
    return render_template(TEMPLATE, {"vm": template_vars(), "paths": layout.paths, "keep_models": keep_models})
