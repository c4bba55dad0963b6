"""The config keys declared in Pulumi.yaml: the one place that names every key, its type and default.

The Pulumi CLI applies these defaults itself; `llmdeploy render` and the tests read them from here
so that both paths see the same values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .textfiles import FileProblem, load_yaml, read_text

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


def load_project(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Pulumi.yaml, checked to hold a name and a config mapping of key declarations (FileProblem if not)."""
    path = project_file(root)
    text = read_text(path, "project file")
    if text not in _PARSED:
        if len(_PARSED) >= 4:
            _PARSED.clear()
        _PARSED[text] = _checked_project(load_yaml(text, str(path)), path)
    return _PARSED[text]


# Parsed projects by their text (19 kB of YAML, some 20 ms to parse): an edited file is parsed afresh, and a copy
# of the same file in another folder (each stack's, each test's) is parsed once per process.
_PARSED: dict[str, dict[str, Any]] = {}


def _checked_project(data: Any, path: Path) -> dict[str, Any]:
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(config or {}, dict) \
            or not all(isinstance(spec, dict) and "type" in spec for spec in (config or {}).values()):
        raise FileProblem(f"{path} is not a Pulumi project file llmdeploy can use: it needs name: and a config: "
                          "mapping of keys, each with type:, default: and description: (restore it: git checkout "
                          "Pulumi.yaml)")
    return data


def project_name(root: Path = PROJECT_ROOT) -> str:
    return str(load_project(root)["name"])


def declarations(root: Path = PROJECT_ROOT) -> dict[str, Declaration]:
    out: dict[str, Declaration] = {}
    for key, spec in (load_project(root).get("config") or {}).items():
        out[key] = Declaration(key, spec["type"], spec.get("default"), spec.get("description", ""))
    return out
