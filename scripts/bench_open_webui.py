#!/usr/bin/env python3
"""Open WebUI's start time and memory as the VM runs it (chatUi open-webui): the rendered unit's environment and
command (tests/support/openwebui.py) from scripts/install_engines.py's venv, with a real llama.cpp on the tiny model
behind it. Prints the seconds from start to /health 200, and the PSS of its process group idle after the admin's
sign-in and after a few chats. Heavy: run under `flock /tmp/llmdeploy-heavy.lock`.

    python3 scripts/bench_open_webui.py [--chats 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "infra"), str(ROOT)]

import requests  # noqa: E402

from llmdeploy.render import render, web_user_email  # noqa: E402
from llmdeploy.secret_delivery import generate_api_key, random_webui_secret_key, secrets_bundle  # noqa: E402
from tests.support.endpoint import deliver_secrets, endpoint_config, loopback_host_layout  # noqa: E402
from tests.support.llamaserver import llama_server  # noqa: E402
from tests.support.openwebui import open_webui  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.tinymodel import write_tiny_gguf  # noqa: E402


def pss_mb(pgid: int) -> float:
    """The proportional set size of every process in the group (Open WebUI and the workers it starts)."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            rollup = (proc / "smaps_rollup").read_text()
        except (OSError, IndexError, ValueError):
            continue
        total_kb += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total_kb / 1024


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=5, help="chat completions through Open WebUI (default 5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-open-webui-") as tmp:
        work = Path(tmp)
        cfg = endpoint_config(chatUi="open-webui", domain="llm.test", apiKeys=["ops:admin", "alice"],
                              basicAuthUsers=[], basicAuthPasswords="")
        with llama_server(write_tiny_gguf(work / "tiny.gguf"), alias=cfg.model_name, n_ctx=2048) as llama:
            rendered = render(cfg, loopback_host_layout(work / "root", llama.port, chat_port=free_port()))
            keys = {k.name: generate_api_key() for k in cfg.auth.api_keys}
            deliver_secrets(rendered, secrets_bundle(cfg, keys, webui_secret_key=random_webui_secret_key()), work)
            started = time.monotonic()
            with open_webui(rendered, work) as webui:
                print(f"start to /health 200: {time.monotonic() - started:.1f} s", flush=True)
                signin = requests.post(f"{webui.url}/api/v1/auths/signin", json={"email": "", "password": ""},
                                       headers={"X-User-Email": web_user_email("alice")}, timeout=30)
                token = signin.json()["token"]
                time.sleep(5)
                print(f"PSS idle: {pss_mb(webui.pid):.0f} MB", flush=True)
                for n in range(args.chats):
                    answer = requests.post(f"{webui.url}/api/chat/completions", timeout=120,
                                           headers={"Authorization": f"Bearer {token}"},
                                           json={"model": cfg.model_name, "stream": False, "max_tokens": 32,
                                                 "messages": [{"role": "user", "content": f"question {n}"}]})
                    answer.raise_for_status()
                print(f"PSS after {args.chats} chats: {pss_mb(webui.pid):.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
