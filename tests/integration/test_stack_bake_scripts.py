"""The builder's shell scripts (stack/bake.py), run for real: shellcheck passes them, and the power-off wait
returns once a real TCP port stops answering and fails while it answers."""
from __future__ import annotations

import socket
import subprocess

from llmdeploy.stack.bake import install_command, powered_off_script, wait_install_script


def test_the_builders_scripts_pass_shellcheck() -> None:
    scripts = {"wait": wait_install_script(("10-apt", "40-engine"), 600), "off": powered_off_script(),
               "gate": "#!/bin/bash\n" + install_command(("10-apt",), 600) + "\n"}
    for name, text in scripts.items():
        text = text if text.startswith("#!") else "#!/bin/bash\n" + text
        done = subprocess.run(["shellcheck", "-s", "bash", "-"], input=text, text=True, capture_output=True)
        assert done.returncode == 0, (name, done.stdout)


def test_the_power_off_wait_returns_once_ssh_stops_answering_and_fails_while_it_answers() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    env = {"LLMDEPLOY_BUILDER_IP": "127.0.0.1", "PATH": "/usr/bin:/bin"}
    script = powered_off_script(port=port, margin_s=0, tries=2).replace("sleep 5", "sleep 0.1")
    try:
        answering = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        listener.close()
    assert answering.returncode == 1 and "still answers" in answering.stderr
    script = powered_off_script(port=port, margin_s=0, tries=5).replace("sleep 5", "sleep 0.1")
    closed = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert closed.returncode == 0 and "has powered off" in closed.stdout
