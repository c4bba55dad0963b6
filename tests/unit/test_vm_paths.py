"""Each of llmdeploy's paths on the VM is spelled one way: defined in infra/llmdeploy/vmpaths.py, read by templates
as {{ vm.* }} (or {{ paths.* }}, render.HostLayout's, for what tests move under a root), never written out."""
import ast
import re
from pathlib import Path

from llmdeploy import vmpaths
from support.project import ROOT

# llmdeploy's own places on the VM: a literal under any of them is a second definition.
OWN_ROOTS = tuple(sorted({vmpaths.STATE_DIR, vmpaths.LOG_DIR, vmpaths.ETC_DIR, vmpaths.LIBEXEC, vmpaths.FILES_DIR,
                          vmpaths.OPT_DIR, vmpaths.MINIFORGE_DIR, vmpaths.ACME_WEBROOT, vmpaths.CHAT_ROOT,
                          vmpaths.PROVISION, vmpaths.INSTALL_SECRETS, vmpaths.WAIT_READY, vmpaths.RECEIVE_BUNDLE,
                          vmpaths.BOOTSTRAP}))
# ...or a shell variable standing for one (lib.sh once exported LLMDEPLOY_STATE beside {{ vm.state_dir }}).
LITERAL = re.compile("|".join([re.escape(r) for r in OWN_ROOTS] + [r"\$\{?LLMDEPLOY_STATE\b"]))
# render.HostLayout's paths: templates take these from {{ paths.* }}, which tests relocate; {{ vm.* }} would not move.
LAYOUT_ONLY = ("acme_webroot", "chat_root", "secrets_dir", "tls_dir")
VM_PATH = re.compile(r"\{\{ *vm\.(\w+)(?: *\| *q)? *\}\}(/[\w.\-/]+)?")


def templates() -> list[Path]:
    return sorted((ROOT / "templates").rglob("*.j2"))


def test_the_roots_are_vmpaths_own() -> None:
    assert "/var/lib/llmdeploy" in OWN_ROOTS and "/opt/llmdeploy" in OWN_ROOTS and len(OWN_ROOTS) >= 10


def test_templates_write_no_vm_path_out() -> None:
    found = [f"{t.relative_to(ROOT)}:{n}: {m.group(0)}" for t in templates()
             for n, line in enumerate(t.read_text().splitlines(), 1) for m in LITERAL.finditer(line)]
    assert not found, "spell these as {{ vm.<name> }} (add the constant to vmpaths.py):\n" + "\n".join(found)


def test_templates_use_the_constant_a_path_has() -> None:
    """{{ vm.state_dir }}/ready is READY_MARKER written a second way; the HostLayout's paths come from {{ paths.* }}."""
    values = vmpaths.template_vars()
    found = []
    for t in templates():
        for m in VM_PATH.finditer(t.read_text()):
            name, rest = m.group(1), m.group(2) or ""
            assert name in values, f"{t.name}: no vmpaths constant {name.upper()}"
            if name in LAYOUT_ONLY:
                found.append(f"{t.name}: {m.group(0)} (use {{{{ paths.{name} }}}})")
            joined = values[name] + rest
            longer = [k for k, v in values.items() if len(v) > len(values[name]) and v.startswith(values[name] + "/")
                      and (joined == v or joined.startswith(v + "/"))]
            found += [f"{t.name}: {m.group(0)} (use {{{{ vm.{k} }}}})" for k in longer]
    assert not found, "\n".join(found)


def string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant in a module (f-string parts included), docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_package_writes_no_vm_path_out_but_in_vmpaths() -> None:
    package = ROOT / "infra" / "llmdeploy"
    found = []
    for module in sorted(package.rglob("*.py")):
        if module.name == "vmpaths.py" and module.parent == package:
            continue
        for line, value in string_literals(module):
            if not LITERAL.search(value):
                continue
            found.append(f"{module.relative_to(ROOT)}:{line}: {value!r}")
    assert not found, "import these from llmdeploy.vmpaths (add the constant there):\n" + "\n".join(found)


def test_the_check_finds_a_literal(tmp_path: Path) -> None:
    """The checks above can fail: a module and a template each with a path written out."""
    module = tmp_path / "m.py"
    module.write_text('"""/var/lib/llmdeploy in a docstring is prose."""\nSTAMP = f"{ROOT}/opt/llmdeploy/x"\n')
    assert [v for _, v in string_literals(module) if LITERAL.search(v)] == ["/opt/llmdeploy/x"]
    assert LITERAL.search('date -u +%FT%TZ >"/var/lib/llmdeploy/ready"')
    assert LITERAL.search('date -u +%FT%TZ >"$LLMDEPLOY_STATE/ready"')
    assert VM_PATH.search("{{ vm.state_dir | q }}/ready").group(2) == "/ready"
