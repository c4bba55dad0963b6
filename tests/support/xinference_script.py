"""Run the rendered xinference-models.py with the rendered launch, autostart and register bodies, as the
40-engine step does: against the stand-in (tests/support/xinference_stub.py) or a real Xinference."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmdeploy.render import FILES_DIR, XINFERENCE_MODELS, Rendered


def run_models_script(rendered: Rendered, api: str, work: Path, *, readiness_minutes: int = 60, poll: float = 0.1,
                      uptime: float | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`uptime`: the seconds since boot the script reads (the VM's /proc/uptime), to test its launch deadline."""
    work.mkdir(parents=True, exist_ok=True)
    script = work / "xinference-models.py"
    script.write_text(rendered.file(XINFERENCE_MODELS).content)
    args = [sys.executable, str(script), "--api", api, "--readiness-minutes", str(readiness_minutes),
            "--poll", str(poll)]
    if uptime is not None:
        (work / "uptime").write_text(f"{uptime} {uptime}\n")
        args += ["--uptime-file", str(work / "uptime")]
    for name in ("launch", "autostart", "register"):
        path = f"{FILES_DIR}/xinference-{name}.json"
        if any(f.path == path for f in rendered.files):
            (work / f"{name}.json").write_text(rendered.file(path).content)
            args += [f"--{name}", str(work / f"{name}.json")]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
