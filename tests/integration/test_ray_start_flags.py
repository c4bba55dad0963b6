"""Every flag of the rendered `ray start` commands (the head's and a worker's ExecStart, as the ray target's
user-data writes them) exists in the pinned Ray's own `ray start --help`, and none is marked deprecated there.

Why: Ray has removed a `ray start` flag before (--dashboard-grpc-port: `ray start` then refused to start,
NVIDIA-NeMo/Run#325), and --dashboard-agent-grpc-port was reported deprecated. The help of the Ray venv that
scripts/install_engines.py installs at Pulumi.yaml's rayPackage pin is the authority; this test fails as soon
as a pin bump removes or deprecates a flag the units pass. Light: one `ray start --help` (about 5 s).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

from support.project import ROOT
from llmdeploy.render import FILES_DIR, render
from llmdeploy.topology import WORKER, node
from llmdeploy.stack_yaml import load_stack_config

sys.path.insert(0, str(ROOT / "scripts"))
import install_engines  # noqa: E402

RAY = install_engines.ENGINES_DIR / "ray" / "bin" / "ray"
OPTION = re.compile(r"^  (--[a-z0-9-]+)(?: [A-Z]+)?\s*(.*)$")


def help_options(text: str) -> dict[str, str]:
    """{--flag: its help text} from click's help output (an option's text may wrap onto indented lines)."""
    options: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        match = OPTION.match(line)
        if match:
            current = match.group(1)
            options[current] = match.group(2)
        elif current and line.startswith("    "):
            options[current] += " " + line.strip()
        else:
            current = ""
    return options


def rendered_flags(unit: str) -> list[str]:
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1] == "start", argv
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def test_rendered_ray_start_flags_exist_in_the_pinned_ray() -> None:
    assert RAY.is_file(), f"no Ray in {RAY.parent.parent}: run python3 scripts/install_engines.py ray"
    pinned = install_engines.ray_serve_requirement().rsplit("==", 1)[1]
    version = subprocess.run([str(RAY), "--version"], capture_output=True, text=True, timeout=120, check=True)
    assert pinned in version.stdout, f"the Ray venv is not the pinned {pinned}: {version.stdout}"
    result = subprocess.run([str(RAY), "start", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    options = help_options(result.stdout)
    assert {"--head", "--block", "--num-cpus"} <= set(options), "help not parsed"

    cfg = load_stack_config(ROOT, "ray-a10")
    head = render(cfg).file(f"{FILES_DIR}/ray-head.service").content
    worker = render(cfg, node=node(cfg, WORKER, 0)).file(f"{FILES_DIR}/ray-worker.service").content
    for name, unit in (("head", head), ("worker", worker)):
        flags = rendered_flags(unit)
        assert "--dashboard-agent-grpc-port" in flags  # the flag the issue asked about is checked, not skipped
        missing = [f for f in flags if f not in options]
        assert not missing, f"the {name}'s ray start passes flags Ray {pinned} does not have: {missing}"
        deprecated = {f: options[f] for f in flags if "deprecat" in options[f].lower()}
        assert not deprecated, f"the {name}'s ray start passes flags Ray {pinned} marks deprecated: {deprecated}"


def test_help_parser_sees_a_removed_or_deprecated_flag() -> None:
    """The check above can fail: a flag missing from the help, or marked deprecated there, is reported."""
    text = ("Options:\n  --head                          provide this argument for the head node\n"
            "  --dashboard-agent-grpc-port INTEGER\n                                  (deprecated) the port for\n"
            "                                  dashboard agents\n  --block\n")
    options = help_options(text)
    assert set(options) == {"--head", "--dashboard-agent-grpc-port", "--block"}
    assert "deprecated" in options["--dashboard-agent-grpc-port"]
    assert "--dashboard-grpc-port" not in options
