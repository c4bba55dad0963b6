"""The config keys declared in Pulumi.yaml: the one place that names every key, its type and default.

The Pulumi CLI applies these defaults itself; `llmdeploy render` and the tests read them from here
so that both paths see the same values.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Declaration:
    key: str
    type: str  # string | integer | boolean | array
    default: Any
    description: str

    @property
    def secret(self) -> bool:
        return self.description.startswith("(secret)")


def project_file(root: Path = PROJECT_ROOT) -> Path:
    return root / "Pulumi.yaml"


@lru_cache(maxsize=4)
def load_project(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    with project_file(root).open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def project_name(root: Path = PROJECT_ROOT) -> str:
    return str(load_project(root)["name"])


def declarations(root: Path = PROJECT_ROOT) -> dict[str, Declaration]:
    out: dict[str, Declaration] = {}
    for key, spec in (load_project(root).get("config") or {}).items():
        out[key] = Declaration(key, spec["type"], spec.get("default"), spec.get("description", ""))
    return out


def defaults(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    return {k: d.default for k, d in declarations(root).items()}
