"""The README's configuration table is generated from Pulumi.yaml; keep them equal, and keep
Pulumi.yaml's declarations and the typed config in step."""
from __future__ import annotations

from llmdeploy.config import parse
from llmdeploy.declared import declarations, project_name
from llmdeploy.docs import ROUTES_END, ROUTES_START, config_table, readme_table, route_table
from support.project import ROOT, minimal_raw


def test_readme_config_table_matches_pulumi_yaml() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table(readme) == config_table(ROOT), "run: llmdeploy config-table --update-readme"


def test_readme_route_table_matches_routes_py() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table(readme, ROUTES_START, ROUTES_END) == route_table(), "run: llmdeploy route-table --update-readme"


def test_every_declared_key_has_type_description_and_default() -> None:
    for key, decl in declarations(ROOT).items():
        assert decl.type in ("string", "integer", "boolean", "array"), key
        assert decl.description, f"{key} has no description"
        assert decl.default is not None, f"{key} has no default: the Pulumi CLI would demand it on every stack"


def test_typed_config_reads_every_declared_key() -> None:
    """A key declared but never read, or read but never declared, fails here."""
    source = (ROOT / "infra" / "llmdeploy" / "config.py").read_text(encoding="utf-8")
    unread = [k for k in declarations(ROOT) if f'"{k}"' not in source]
    assert not unread, f"declared in Pulumi.yaml but not read by config.py: {unread}"
    parse(minimal_raw())  # the declared defaults alone (plus the two required values) are valid


def test_project_name_is_the_config_namespace() -> None:
    assert project_name(ROOT) == "llmdeploy"
