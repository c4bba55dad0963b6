"""The NoCloud seed: an ISO 9660 image labelled `cidata` holding user-data and meta-data, attached to the
VM as a read-only disk. cloud-init finds it by its label."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from ..errors import Failure


class SeedError(Failure):
    pass


def meta_data(instance_id: str, hostname: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def build_seed(iso: Path, user_data: str, instance_id: str, hostname: str) -> Path:
    """Write the seed ISO (0600: the user-data names the stack's users and keys) and return its path."""
    if shutil.which("genisoimage") is None:
        raise SeedError("genisoimage is not installed: apt-get install genisoimage (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="llmdeploy-seed-") as tmp:
        folder = Path(tmp)
        (folder / "user-data").write_text(user_data, encoding="utf-8")
        (folder / "meta-data").write_text(meta_data(instance_id, hostname), encoding="utf-8")
        iso.unlink(missing_ok=True)
        proc = subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
                               str(folder / "user-data"), str(folder / "meta-data")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SeedError(f"genisoimage failed: {proc.stderr.strip()}")
    iso.chmod(0o600)
    return iso
