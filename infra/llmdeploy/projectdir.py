"""Which Pulumi project a command works on: --project-dir, else the nearest folder holding Pulumi.yaml at or
above the current one (as the Pulumi CLI finds its project), else a usage error. Never the checkout llmdeploy
runs from by default: outside a project that would render, validate or deploy another project's stacks."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import UsageError


def find_project_dir(arg: str | None, start: Path | None = None) -> Path:
    if arg:
        root = Path(arg).resolve()
        if not (root / "Pulumi.yaml").is_file():
            raise UsageError(f"--project-dir {arg}: no Pulumi.yaml there; point it at the folder that holds "
                             "the project's Pulumi.yaml")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    raise UsageError(f"no Pulumi.yaml in {here} or any folder above it: run llmdeploy inside your Pulumi project "
                     "(the folder of Pulumi.yaml and Pulumi.STACK.yaml), or pass --project-dir DIR")


def stack_arg(value: str) -> str:
    """--stack NAME, also given as its file (Pulumi.NAME.yaml, as a shell completes it): the name either way."""
    found = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", Path(value).name)
    return found.group(1) if found else value
