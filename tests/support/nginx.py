"""Check and run a site config with the system's nginx, isolated in a work directory.

Why: the project renders nginx site configs (TLS, auth, proxying of SSE streams); tests prove
them with the real nginx (Debian's 1.22: `listen ... ssl http2;` syntax) rather than by reading
text. A minimal main nginx.conf written into the work directory includes the site config, and
keeps every file nginx writes (pid, logs, temp files) in that directory, so nothing touches the
system's nginx and runs can go side by side.

`nginx_test()` runs `nginx -t` only; `run_nginx()` runs nginx in the foreground (`daemon off`)
in its own process group, waits until it accepts TCP on the given ports and stops it by PID.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmdeploy.validate import nginx_command, write_nginx_main_conf

from .ports import LOOPBACK, port_open
from .procs import start_process, stop_process, wait_until



@dataclass(frozen=True)
class NginxProc:
    """A running nginx: master PID, its main config and where it logs."""

    pid: int
    conf: Path
    workdir: Path
    error_log: Path
    access_log: Path


def write_main_conf(site_conf_path: Path, workdir: Path) -> Path:
    """The product's own minimal main config (llmdeploy validate uses it too), state kept in workdir."""
    return write_nginx_main_conf(Path(site_conf_path), Path(workdir), root_user=os.geteuid() == 0)


_base_command = nginx_command


def nginx_test(site_conf_path: Path, workdir: Path, prefix: Sequence[str] = ()) -> tuple[bool, str]:
    """Run `nginx -t` on the site config (through `prefix`, see run_nginx); return (ok, nginx's output)."""
    conf = write_main_conf(site_conf_path, workdir)
    result = subprocess.run([*prefix, *_base_command(conf), "-t"], capture_output=True, text=True, timeout=60)
    return result.returncode == 0, (result.stderr + result.stdout).strip()


def _ports_probe(ports: list[int], host: str = LOOPBACK) -> str | None:
    closed = [p for p in ports if not port_open(p, host)]
    return f"no listener yet on {host} port(s) {closed}" if closed else None


@contextmanager
def run_nginx(
    site_conf_path: Path, workdir: Path, wait_ports: list[int], timeout: float = 15.0,
    prefix: Sequence[str] = (), host: str = LOOPBACK,
) -> Iterator[NginxProc]:
    """Check the config with `nginx -t` (RuntimeError with nginx's message if it fails), run
    nginx in the foreground until the with-block ends, and stop it by PID. `prefix` runs it through
    another command (`nsenter -t PID -n`: in a network namespace, reached from here at `host`)."""
    ok, output = nginx_test(site_conf_path, workdir, prefix)
    if not ok:
        raise RuntimeError(f"nginx -t failed for {site_conf_path}:\n{output}")
    conf = Path(workdir).resolve() / "nginx.conf"
    log_path = conf.parent / "nginx.out"
    proc = start_process([*prefix, *_base_command(conf), "-g", "daemon off;"], log_path, cwd=conf.parent)
    try:
        wait_until(lambda: _ports_probe(wait_ports, host), proc, timeout, "nginx", conf.parent / "error.log")
        yield NginxProc(
            pid=proc.pid,
            conf=conf,
            workdir=conf.parent,
            error_log=conf.parent / "error.log",
            access_log=conf.parent / "access.log",
        )
    finally:
        stop_process(proc)
