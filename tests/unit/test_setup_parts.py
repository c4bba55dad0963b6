"""scripts/setup.sh in two parts: `demo` (what `make demo` needs: the package in .venv and the Debian packages of
`llmdeploy local up`'s runtimes) and `test` (everything). The demo's part must hold every package the local
runtimes check for, and none of the test suite's heavy things (the engines' venvs, the browser, pyright, sslyze)."""
from __future__ import annotations

import re

from llmdeploy.local import image, nspawn, runtime
from support.project import ROOT

SETUP = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def apt_list(name: str) -> set[str]:
    body = re.search(rf"^{name}=\(\n(.*?)^\)", SETUP, re.M | re.S)
    assert body, f"scripts/setup.sh has no {name}=( ... )"
    return {line.split()[0] for line in body.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")}


def demo_part() -> str:
    """What `setup.sh demo` runs: everything before the line that ends the demo's part."""
    end = '[ "$PART" = test ] || exit 0'
    assert end in SETUP
    return SETUP[:SETUP.index(end)]


def test_the_demo_part_installs_every_package_the_local_runtimes_need() -> None:
    needed = {*runtime.QEMU_TOOLS.values(), *image.HOST_TOOLS.values(), *nspawn.HOST_TOOLS.values(),
              "pebble",  # the demo stack's certificate comes from pebble (Pulumi.local.yaml: tlsMode letsencrypt)
              "python3-venv", "openssh-client"} - {"coreutils"}  # coreutils: on every Debian
    assert needed <= apt_list("DEMO_APT"), f"missing from DEMO_APT: {needed - apt_list('DEMO_APT')}"
    assert 'if [ "$PART" = demo ]; then apt_install "${DEMO_APT[@]}"; else' in demo_part()


def test_the_demo_part_leaves_the_test_suites_heavy_things_out() -> None:
    demo, heavy = demo_part(), ("install_engines.py", "pyright", "sslyze", "npm")
    assert not [word for word in heavy if re.search(rf"^[^#]*{word}", demo, re.M)]  # outside comments
    assert not {"chromium", "chromium-driver", "nginx", "cloud-init"} & apt_list("DEMO_APT")
    assert {"chromium", "nginx", "cloud-init", "shellcheck"} <= apt_list("TEST_APT")
    assert re.search(r'^\s*"\$VENV/bin/python" scripts/install_engines.py', SETUP[len(demo):], re.M)


def test_the_package_goes_into_the_virtualenv_not_the_machines_python() -> None:
    assert not re.search(r"^[^#]*python3 -m pip install", SETUP, re.M)
    assert re.search(r'^\s*\[ -x "\$VENV/bin/python" \] \|\| python3 -m venv "\$VENV"', SETUP, re.M)
    assert re.search(r'^\s*"\$VENV/bin/pip" install .*-e "\.\$EXTRAS"', SETUP, re.M)
    assert "VENV=.venv" in SETUP and ".venv/" in (ROOT / ".gitignore").read_text().splitlines()


def test_make_demo_sets_up_only_the_demo_and_make_test_everything() -> None:
    rules = dict(re.findall(r"^([a-z-]+):(.*)$", MAKEFILE, re.M))
    assert rules["demo"].split() == ["setup-demo"] and rules["test"].split() == ["setup"]
    assert "\tbash scripts/setup.sh demo\n" in MAKEFILE and "\tbash scripts/setup.sh test\n" in MAKEFILE
    assert "\t$(PYTHON) -m pytest -q\n" in MAKEFILE and "PYTHON := $(VENV)/bin/python" in MAKEFILE
    assert "make test" in (ROOT / ".ci" / "run").read_text()
