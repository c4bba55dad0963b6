"""The README starts with the job and stays short; it and docs/*.md link only to files and headings that exist;
the stacks table lists every example stack; and every LLMDEPLOY_* variable the docs and example stacks name is
one the code reads."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from llmdeploy.declared import declarations
from llmdeploy.docs import CONFIG_DOC, START, config_table, readme_table, update_doc
from llmdeploy.stack_yaml import secret_env_name
from support.project import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def unfenced(text: str) -> str:
    """The text without fenced code blocks (a `# comment` there is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where a [x](y) is not a link."""
    return re.sub(r"`[^`\n]*`", "", unfenced(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in unfenced(page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target} (no such heading in {dest.name})")
    return broken


def test_the_link_checker_catches_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Deploying to OCI: `pulumi up`\n## Prerequisites\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#deploying-to-oci-pulumi-up) [ok](b.md#prerequisites) [ok](#top)\n# Top\n"
                    "[gone](c.md) [no heading](b.md#commands) `[code](x.md)` [web](https://example.org/x)\n")
    assert broken_links(page) == ["c.md (no such file)", "b.md#commands (no such heading in b.md)"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links {broken_links(page)}"


def test_the_readme_links_to_every_docs_page() -> None:
    linked = set(LINK.findall(README.read_text(encoding="utf-8")))
    pages = {f"docs/{p.name}" for p in PAGES[1:]}
    assert pages and not pages - {t.partition("#")[0] for t in linked}, pages - linked


def test_the_readme_starts_with_the_job_and_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 300
    head = "\n".join(lines[:20])
    assert "not yet been run against a real OCI tenancy" in head and "docs/tenancy.md" in head
    order = [next(i for i, line in enumerate(lines) if line.startswith(h))
             for h in ("## Deploy to OCI", "## Quick start", "## The example stacks")]
    assert order == sorted(order) and order[0] < 25 and order[-1] < 100
    assert "pulumi up" in "\n".join(lines[order[0]:order[1]])
    quick = lines[order[1]:order[2]]
    block = quick[quick.index("```bash") + 1:]
    assert [line.split()[:2] for line in block[:block.index("```")]] == [["make", "demo"], ["make", "test"]]


def test_the_stacks_table_lists_every_example_stack() -> None:
    readme = README.read_text(encoding="utf-8")
    table = readme.split("\n## The example stacks\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M)
    stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
    assert sorted(listed) == stacks


def test_every_llmdeploy_variable_the_docs_and_stacks_name_is_read_by_the_code() -> None:
    """The example stacks once said LLMDEPLOY_SECRET_HFTOKEN, where the code reads LLMDEPLOY_HF_TOKEN."""
    sources = [*(ROOT / "infra").rglob("*.py"), *(ROOT / "scripts").iterdir(), *(ROOT / "tests").rglob("*.py")]
    code = "\n".join(p.read_text(encoding="utf-8") for p in sources if p.is_file())
    secret_names = {secret_env_name(key) for key in declarations(ROOT)}
    texts = [*PAGES, *ROOT.glob("Pulumi.*.yaml")]
    unknown = sorted({f"{name} ({path.name})" for path in texts
                      for name in re.findall(r"\bLLMDEPLOY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))
                      if name not in secret_names and not re.search(rf"[\"'{{]{name}\b|\b{name}:-|\b{name}=", code)})
    assert not unknown, f"named in docs or stacks but read nowhere in the code: {unknown}"


def test_the_config_table_is_updated_in_its_docs_page(tmp_path: Path) -> None:
    """`llmdeploy config-table --update-docs` writes docs/configuration.md, not the README."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "docs").mkdir()
    page = (ROOT / CONFIG_DOC).read_text(encoding="utf-8")
    stale = page.replace(readme_table(page), "| key |\n|---|\n| stale |")
    (tmp_path / CONFIG_DOC).write_text(stale, encoding="utf-8")
    path, changed = update_doc(tmp_path, "config")
    assert (path, changed) == (tmp_path / CONFIG_DOC, True)
    assert readme_table(path.read_text(encoding="utf-8")) == config_table(tmp_path) and START in path.read_text()
    assert update_doc(tmp_path, "config")[1] is False
