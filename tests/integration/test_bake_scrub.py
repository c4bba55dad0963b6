"""The bake scrub script, as rendered, passes shellcheck both ways (weights kept or not)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from llmdeploy.bake.scrub import scrub_script


@pytest.mark.parametrize("keep_models", [True, False])
def test_the_scrub_script_passes_shellcheck(tmp_path: Path, keep_models: bool) -> None:
    path = tmp_path / "scrub.sh"
    path.write_text(scrub_script(keep_models=keep_models))
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed by scripts/setup.sh"
    subprocess.run([shellcheck, str(path)], check=True)
