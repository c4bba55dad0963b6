"""scripts/audit_local_vm.py run as a process says which VM is missing."""
import os
import subprocess
from pathlib import Path

from support.project import ROOT


def test_the_audit_script_says_which_vm_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "LLMDEPLOY_STATE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT / "infra")}
    result = subprocess.run(["python3", str(ROOT / "scripts" / "audit_local_vm.py"), "--stack", "nosuch"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "no local VM for stack 'nosuch'" in result.stderr and "Traceback" not in result.stderr
