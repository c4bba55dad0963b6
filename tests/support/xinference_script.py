"""Run the rendered xinference-models.py with the rendered launch, autostart and register bodies, as the
40-engine step does: against the stand-in (tests/support/xinference_stub.py) or a real Xinference."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmdeploy.render import FILES_DIR, XINFERENCE_MODELS, Rendered


def run_models_script(rendered: Rendered, api: str, work: Path, *, readiness_minutes: int = 60, poll: float = 0.1,
                      gate: tuple[int, int] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`gate`: the (epoch deadline, PID) a waiting llmdeploy-wait-ready leaves for the script, or None for no gate.
    The gate file always lies in `work`: the script never reads this machine's own /var/lib/llmdeploy."""
    work.mkdir(parents=True, exist_ok=True)
    script = work / "xinference-models.py"
    script.write_text(rendered.file(XINFERENCE_MODELS).content)
    gate_file = work / "gate-deadline"
    if gate is not None:
        gate_file.write_text(f"{gate[0]} {gate[1]}\n")
    args = [sys.executable, str(script), "--api", api, "--readiness-minutes", str(readiness_minutes),
            "--poll", str(poll), "--gate-deadline-file", str(gate_file)]
    for name in ("launch", "autostart", "register"):
        path = f"{FILES_DIR}/xinference-{name}.json"
        if any(f.path == path for f in rendered.files):
            (work / f"{name}.json").write_text(rendered.file(path).content)
            args += [f"--{name}", str(work / f"{name}.json")]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
