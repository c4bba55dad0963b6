"""The Jinja2 environment every template renders in, and VmFile, one file the machine gets. Engines and render.py
build their files with these."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import jinja2

from .declared import PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "templates"


@dataclass(frozen=True)
class VmFile:
    path: str
    content: str
    mode: str = "0644"

    @property
    def is_shell(self) -> bool:
        return self.content.startswith("#!/bin/bash") or self.content.startswith("# shellcheck shell=bash")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
                             # bash's ${#array[@]} would open a Jinja comment under the default {# #}.
                             comment_start_string="[#", comment_end_string="#]")
    env.filters["q"] = lambda value: shlex.quote(str(value))
    # nginx map sources that equal a map keyword must be escaped with a backslash.
    env.filters["map_source"] = lambda name: f"\\{name}" if name in ("default", "hostnames", "include", "volatile") else name
    return env


ENV = _environment()


def render_template(name: str, context: dict[str, Any]) -> str:
    return ENV.get_template(name).render(**context)
