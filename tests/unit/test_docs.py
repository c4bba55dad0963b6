"""The generated tables of docs/ (the configuration reference from Pulumi.yaml, the route table from routes.py)
stay equal to their sources, Pulumi.yaml's declarations and the typed config stay in step, and the Layout table
of docs/tests.md names every module."""
from __future__ import annotations

import re

from llmdeploy.config import parse
from llmdeploy.declared import declarations, project_name
from llmdeploy.docs import CONFIG_DOC, ROUTES_DOC, ROUTES_END, ROUTES_START, config_table, readme_table, route_table
from support.project import ROOT, minimal_raw


def test_the_config_table_of_docs_configuration_matches_pulumi_yaml() -> None:
    page = (ROOT / CONFIG_DOC).read_text(encoding="utf-8")
    assert readme_table(page) == config_table(ROOT), "run: llmdeploy config-table --update-docs"


def test_the_route_table_of_docs_security_matches_routes_py() -> None:
    page = (ROOT / ROUTES_DOC).read_text(encoding="utf-8")
    assert readme_table(page, ROUTES_START, ROUTES_END) == route_table(), "run: llmdeploy route-table --update-docs"


def test_the_route_table_has_the_ray_targets_row_with_no_management_routes() -> None:
    row = next(line for line in route_table().splitlines() if line.startswith("| ray (Ray Serve LLM) |"))
    assert "`POST /v1/chat/completions`" in row
    assert row.endswith("| any other route under `/v1/` |")


def test_every_declared_key_has_type_description_and_default() -> None:
    for key, decl in declarations(ROOT).items():
        assert decl.type in ("string", "integer", "boolean", "array"), key
        assert decl.description, f"{key} has no description"
        assert decl.default is not None, f"{key} has no default: the Pulumi CLI would demand it on every stack"


def test_typed_config_reads_every_declared_key() -> None:
    """A key declared but never read, or read but never declared, fails here. config.py reads them with its
    section modules (conf/) and each engine's (engines/)."""
    package = ROOT / "infra" / "llmdeploy"
    readers = [package / "config.py", *sorted((package / "conf").glob("*.py")), *sorted((package / "engines").glob("*.py"))]
    source = "".join(p.read_text(encoding="utf-8") for p in readers)
    unread = [k for k in declarations(ROOT) if f'"{k}"' not in source]
    assert not unread, f"declared in Pulumi.yaml but not read by config.py, conf/ or engines/: {unread}"
    parse(minimal_raw())  # the declared defaults alone (plus the two required values) are valid


def test_project_name_is_the_config_namespace() -> None:
    assert project_name(ROOT) == "llmdeploy"


def layout_rows() -> list[tuple[list[str], list[str]]]:
    """docs/tests.md's Layout table: per row, the folders its first cell names, and every name in backticks."""
    page = (ROOT / "docs" / "tests.md").read_text(encoding="utf-8")
    table = page.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines()[3:]:
        cells = line.split(" | ")
        if not line.startswith("| ") or len(cells) < 2:
            continue
        folders = [name for name in re.findall(r"`([^`]+)`", cells[0]) if name.endswith("/")]
        rows.append((folders, re.findall(r"`([^`]+)`", line)))
    return rows


def named_paths() -> set[str]:
    """Each name in the table as a path from the root: as written, or inside one of its row's folders."""
    return {f"{folder}{name}" for folders, names in layout_rows() for folder in ["", *folders] for name in names}


def test_every_file_the_layout_table_names_exists() -> None:
    missing = []
    for folders, names in layout_rows():
        for name in names:
            if not re.search(r"(/|\.(py|j2|sh|pem|yaml|csv|toml|json|txt)|Makefile|run)$", name):
                continue  # a class, a command or a tool, not a path
            spelled = name.replace("<stack>", "local")
            if not any((ROOT / folder / spelled).exists() for folder in ["", *folders]):
                missing.append(name)
    assert not missing, f"docs/tests.md's Layout names paths that do not exist: {missing}"


def test_the_layout_table_covers_every_module_script_template_and_test_folder() -> None:
    package = ROOT / "infra" / "llmdeploy"
    expected = [p for p in package.rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts]
    expected += [p for p in (ROOT / "scripts").iterdir() if p.is_file()]
    expected += [p for p in (ROOT / "templates").iterdir() if p.is_file()]
    expected += [p for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"]
    named = named_paths()
    unnamed = [str(p.relative_to(ROOT)) for p in expected
               if str(p.relative_to(ROOT)) + ("/" if p.is_dir() else "") not in named]
    assert not unnamed, f"docs/tests.md's Layout table has no row naming: {unnamed}"


def test_no_layout_row_is_a_wall_of_text() -> None:
    """A row per module or subpackage: the infra/llmdeploy/ row was once one 1,700-character cell."""
    page = (ROOT / "docs" / "tests.md").read_text(encoding="utf-8")
    rows = [line for line in page.split("\n## Layout\n", 1)[1].splitlines() if line.startswith("| ")]
    assert len(rows) > 20 and not [row[:60] for row in rows if len(row) > 300]
