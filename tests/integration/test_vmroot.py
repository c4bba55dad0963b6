"""The harness that runs rendered steps against temp dirs must never fall through to this machine's folders."""
from __future__ import annotations

import subprocess
from pathlib import Path

from support.vmroot import bind_mounts


def test_a_failed_bind_mount_stops_the_command_before_it_touches_the_real_folder(tmp_path: Path) -> None:
    source, real = tmp_path / "private", tmp_path / "real"
    source.mkdir()
    real.mkdir()
    missing = tmp_path / "gone"  # a mount point a concurrent run removed
    # The failed mount first: in `set -e; a && b; command` a failing `a` is ignored and `command` runs unmounted.
    mounts = bind_mounts([(source, str(missing)), (source, str(real))])
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                             f"set -e\n{mounts}touch {real}/written"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 97, result.stderr
    assert not (real / "written").exists() and not (source / "written").exists()
