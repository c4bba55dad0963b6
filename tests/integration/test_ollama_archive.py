"""Ollama's install, run for real: the top of the rendered 40-engine step (download and unpack the pinned
archive) against a local HTTP server holding release-shaped archives, with /usr/local on a tmpfs in a private
mount namespace so nothing lands on this machine.

- an upgrade removes the old version's lib/ollama first (upstream's install.sh does; stale cuda_v* libraries
  otherwise stay next to the new ones), and unpacks the .tgz of <= v0.13 and the .tar.zst of >= v0.14;
- the marker that says which archive is installed lives outside lib/ollama, and a re-run downloads nothing.
"""
from __future__ import annotations

import io
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmdeploy.config import parse
from llmdeploy.render import STEPS_DIR, render
from support.ports import free_port
from support.procs import start_process, stop_process
from support.project import minimal_raw
from support.vmroot import VmRoot, vm_root

OLD, NEW = "v0.12.6/ollama-linux-amd64.tgz", "v0.14.0/ollama-linux-amd64.tar.zst"
NEEDED = ("curl", "ca-certificates", "zstd")  # what the step apt-installs; it must not install them here


def archive(version: str, library: str) -> bytes:
    """A release-shaped tarball: bin/ollama and lib/ollama/<library>/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("bin/ollama", f"#!/bin/sh\necho {version}\n".encode()),
                           (f"lib/ollama/{library}/libggml-cuda.so", b"\x7fELF")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server of two releases (one gzip, one zstd, as Ollama ships them), stopped by PID."""
    root = tmp_path / "releases"
    for rel, version, library in ((OLD, "0.12.6", "cuda_v12"), (NEW, "0.14.0", "cuda_v13")):
        path = root / rel
        path.parent.mkdir(parents=True)
        raw = archive(version, library)
        compress = ["gzip", "-c"] if rel.endswith(".tgz") else ["zstd", "-q", "-c"]
        path.write_bytes(subprocess.run(compress, input=raw, capture_output=True, check=True).stdout)
    port = free_port()
    log = tmp_path / "http.log"
    proc = start_process([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                          "--directory", str(root)], log)
    try:
        for _ in range(100):
            if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode == 0:
                break
            subprocess.run(["sleep", "0.1"])
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop_process(proc)


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmRoot]:
    with vm_root(tmp_path / "vm") as root:
        yield root


def install_part(url: str) -> str:
    """The step up to where the service user is made: the download and unpacking."""
    rendered = render(parse(minimal_raw(engine="ollama", ollamaModel="llama3.1:8b", ollamaDownloadUrl=url),
                            stack="ollama-archive"))
    step = rendered.file(f"{STEPS_DIR}/40-engine.sh").content
    top = step[:step.index("\nid ollama ")]
    return top + "\n"


def test_an_upgrade_replaces_lib_ollama_and_a_rerun_downloads_nothing(vm: VmRoot, tmp_path: Path,
                                                                        releases: tuple[str, Path]) -> None:
    missing = [p for p in NEEDED if "ok installed" not in subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout]
    if missing:
        pytest.skip(f"needs {' '.join(missing)} installed (scripts/setup.sh)")
    base, log = releases
    lib = render(parse(minimal_raw(), stack="x")).file("/usr/local/lib/llmdeploy/lib.sh").content
    for name, text in (("lib.sh", lib), ("old.sh", install_part(f"{base}/{OLD}")),
                       ("new.sh", install_part(f"{base}/{NEW}"))):
        (tmp_path / name).write_text(text)
    t = shlex.quote(str(tmp_path))
    tree = "find /usr/local/lib/ollama -type f | sort; /usr/local/bin/ollama"
    script = (f"mount -t tmpfs tmpfs /usr/local && install -D -m 0644 {t}/lib.sh /usr/local/lib/llmdeploy/lib.sh && "
              f"bash {t}/old.sh && echo '=== old' && {tree} && "
              f"bash {t}/new.sh && echo '=== new' && {tree} && "
              f"bash {t}/new.sh && echo '=== marker' && cat /var/lib/llmdeploy/ollama-source")
    result = vm.run(script)
    assert result.returncode == 0, result.stdout + result.stderr
    old, new, marker = result.stdout.split("=== ")[1:]
    assert old.split("\n")[1:3] == ["/usr/local/lib/ollama/cuda_v12/libggml-cuda.so", "0.12.6"]
    assert new.split("\n")[1:3] == ["/usr/local/lib/ollama/cuda_v13/libggml-cuda.so", "0.14.0"]  # v12 gone
    assert marker.split("\n")[1] == f"{base}/{NEW}"
    downloads = [line for line in log.read_text().splitlines() if "GET /v0." in line]
    assert len(downloads) == 2, downloads  # the third run found the marker and downloaded nothing
    assert not Path("/usr/local/lib/ollama").exists()  # nothing of it reached this machine
