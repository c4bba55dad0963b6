"""The ray target's rendered files against real Ray 2.60 (the `ray` venv of scripts/install_engines.py):

- serve-app.yaml is a config Ray's own ServeDeploySchema accepts, with the proxy on the head, on 127.0.0.1:8000;
- ray-cluster-status, run against a real head started with raycluster.head_command and token auth from a file
  (RAY_AUTH_TOKEN_PATH), in a network namespace of its own: it names the worker that has not joined and the app
  that is not deployed (exit 1), and says the dashboard does not answer with another token (403, exit 2).

Heavy (a Ray head starts and stops: about 30 s); run it under flock /tmp/llmdeploy-heavy.lock.
"""
from __future__ import annotations

import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from support.project import ROOT
from llmdeploy import raycluster
from llmdeploy.render import FILES_DIR, RAY_STATUS, render
from llmdeploy.stack_yaml import load_stack_config

sys.path.insert(0, str(ROOT / "scripts"))
import install_engines  # noqa: E402

RAY_VENV = install_engines.ENGINES_DIR / "ray"


@pytest.fixture(scope="module")
def ray_python() -> Path:
    if not (RAY_VENV / install_engines.STAMP).is_file():
        install_engines.install("ray")
    return RAY_VENV / "bin" / "python"


def test_the_serve_config_is_one_ray_accepts(ray_python: Path, tmp_path: Path) -> None:
    config = tmp_path / "serve-app.yaml"
    config.write_text(render(load_stack_config(ROOT, "ray-a10")).file(f"{FILES_DIR}/serve-app.yaml").content)
    check = ("import sys, yaml; from ray.serve.schema import ServeDeploySchema; "
             "s = ServeDeploySchema.parse_obj(yaml.safe_load(open(sys.argv[1]))); "
             "print(s.proxy_location.value, s.http_options.host, s.http_options.port, s.applications[0].import_path)")
    result = subprocess.run([str(ray_python), "-c", check, str(config)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["HeadOnly", "127.0.0.1", "8000", "ray.serve.llm:build_openai_app"]


# Inside `unshare --net` (only loopback): the head as its unit starts it, then the rendered check three ways.
SCENARIO = r"""
set -u
ip link set lo up
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WORK/token" RAY_USAGE_STATS_ENABLED=0
setsid $HEAD_COMMAND >"$WORK/head.log" 2>&1 & pid=$!
# By its process group, never `ray stop`: that stops every Ray on this machine, other tests' clusters too.
trap 'kill -TERM -- -"$pid" 2>/dev/null; for _ in $(seq 20); do kill -0 -- -"$pid" 2>/dev/null || exit; sleep 0.5; done; kill -KILL -- -"$pid" 2>/dev/null' EXIT
check() { python3 "$WORK/status.py" --dashboard http://127.0.0.1:8265 "$@"; echo "rc=$?"; }
# Until the dashboard answers and lists the head itself as ALIVE.
for _ in $(seq 120); do
  seen=$(python3 "$WORK/status.py" --dashboard http://127.0.0.1:8265 --token-file "$WORK/token" --expect 127.0.0.1)
  case "$seen" in *"not joined"*|*"does not answer"*) sleep 1 ;; *) break ;; esac
done
printf '=== missing\n'; check --token-file "$WORK/token" --expect 127.0.0.1 10.42.2.10
printf '=== wrong-token\n'; check --token-file "$WORK/wrong" --expect 127.0.0.1
"""


def test_the_cluster_check_names_what_is_missing_on_a_real_head(ray_python: Path, tmp_path: Path) -> None:
    cfg = load_stack_config(ROOT, "ray-a10")
    (tmp_path / "status.py").write_text(render(cfg).file(RAY_STATUS).content)
    for name in ("token", "wrong"):
        (tmp_path / name).write_text(secrets.token_hex(32) + "\n")
        (tmp_path / name).chmod(0o600)
    ray = str(ray_python.parent / "ray")
    head = shlex.join(raycluster.head_command(ray, "127.0.0.1", num_cpus=1))
    result = subprocess.run(["unshare", "--net", "bash", "-c", SCENARIO], capture_output=True, text=True,
                            timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WORK": str(tmp_path),
                                              "HEAD_COMMAND": head, "RAY": ray, "HOME": str(tmp_path)})
    out = result.stdout
    log = (tmp_path / "head.log").read_text()[-2000:] if (tmp_path / "head.log").exists() else ""
    assert "=== missing" in out, f"{out}\n{result.stderr[-2000:]}\n{log}"
    missing = out.split("=== missing\n", 1)[1].split("=== wrong-token\n", 1)[0]
    assert missing.splitlines() == ["1 of 2 Ray nodes not joined: 10.42.2.10; Serve app 'llm' is NOT_DEPLOYED: "
                                    "serve deploy has not run yet (ray-serve-app.service)", "rc=1"], log
    wrong = out.split("=== wrong-token\n", 1)[1]
    # The head took its token from RAY_AUTH_TOKEN_PATH: another token is refused.
    assert "does not answer" in wrong and "403" in wrong and wrong.strip().endswith("rc=2")
