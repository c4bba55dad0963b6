"""Network namespaces for multi-node tests: each one held by a process, wired with veth pairs, stopped by PID.

Why: a Ray cluster (or any set of "VMs") on one machine needs one network stack per node, so that every node binds
its own fixed ports (Ray listens on all interfaces) and reaches the others over a real link. A namespace is made by
`unshare --net sleep infinity`, which lives as long as that process and every process entered into it: stopping
the holder and the processes run in it (all by PID) frees it, so nothing named is left in /run/netns. Commands
run in a namespace through `nsenter -t PID -n`, which execs them (the Popen's PID is the command's own).
"""
from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .procs import start_process, stop_process


@dataclass(frozen=True)
class Netns:
    """A network namespace, held by the process `pid`; `ip` is its address on the link(s) made for it."""

    name: str
    pid: int
    ip: str = ""

    def command(self, cmd: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", *cmd]

    def run(self, cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(cmd), capture_output=True, text=True, timeout=60, check=True,
                              **kwargs)  # type: ignore[call-overload]

    def inode(self) -> int:
        return os.stat(f"/proc/{self.pid}/ns/net").st_ino


def pids_in(inode: int) -> list[int]:
    """Every process whose network namespace is `inode` (what is left running in a namespace)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == inode:
                    found.append(int(entry.name))
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
    return found


@contextmanager
def netns(name: str, log_dir: Path) -> Iterator[Netns]:
    """A fresh namespace with loopback up; at exit, anything still running in it is killed by PID, then the
    holder is stopped."""
    holder = start_process(["unshare", "--net", "sleep", "infinity"], log_dir / f"netns-{name}.log")
    ns = Netns(name, holder.pid)
    try:
        _wait_unshared(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        yield ns
    finally:
        try:
            leftover = [p for p in pids_in(ns.inode()) if p != holder.pid]
        except FileNotFoundError:
            leftover = []
        for pid in leftover:  # a daemon that escaped its process group: by PID, never by name
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        stop_process(holder, grace=1.0)


def _wait_unshared(ns: Netns) -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    for _ in range(200):
        try:
            if ns.inode() != own:
                return
        except FileNotFoundError:
            pass
        subprocess.run(["sleep", "0.01"], check=False)
    raise RuntimeError(f"netns {ns.name}: unshare (PID {ns.pid}) did not enter a new namespace")


def subnet() -> str:
    """A /24 prefix unlikely to be in use by another test on this machine (routes on the host side are shared)."""
    return f"10.{random.randint(100, 199)}.{random.randint(0, 255)}"


def link(a: Netns | None, b: Netns, a_ip: str, b_ip: str, tag: str) -> str:
    """A veth pair between a and b (None: the host's own namespace), addressed a_ip/24 and b_ip/24; returns the
    name of a's end. The kernel drops the pair with either namespace, but may free a namespace late (a socket
    closing): delete a host-side end yourself."""
    left, right = f"lv{os.getpid() % 100000}{tag}", f"rv{os.getpid() % 100000}{tag}"
    subprocess.run(["ip", "link", "add", left, "type", "veth", "peer", "name", right], check=True)
    for end, ns, ip in ((left, a, a_ip), (right, b, b_ip)):
        if ns is not None:
            subprocess.run(["ip", "link", "set", end, "netns", str(ns.pid)], check=True)
        run = ns.run if ns is not None else _host_run
        run(["ip", "addr", "add", f"{ip}/24", "dev", end])
        run(["ip", "link", "set", end, "up"])
    return left


def _host_run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=True)


def _front(stack: ExitStack, head: Netns, avoid: str = "") -> str:
    """A link from the host to `head` (host .1, head .2 of a fresh /24); the head's address seen from here."""
    front = subnet()
    while front == avoid:
        front = subnet()
    host_end = link(None, head, f"{front}.1", f"{front}.2", "f")
    stack.callback(subprocess.run, ["ip", "link", "del", host_end], capture_output=True, check=False)
    return f"{front}.2"


@contextmanager
def head_node(log_dir: Path) -> Iterator[tuple[Netns, str]]:
    """One namespace reachable from the host; yields (it, its address seen from the host, also its own)."""
    with ExitStack() as stack:
        head = stack.enter_context(netns("head", log_dir))
        front = _front(stack, head)
        yield Netns(head.name, head.pid, front), front


@contextmanager
def two_nodes(log_dir: Path) -> Iterator[tuple[Netns, Netns, str]]:
    """A head and a worker namespace on one link (x.x.x.1 and .2), and the head reachable from the host on a
    second link (host .1, head .2 of another /24). Yields (head, worker, the head's address seen from the host)."""
    with ExitStack() as stack:
        head = stack.enter_context(netns("head", log_dir))
        worker = stack.enter_context(netns("worker", log_dir))
        cluster = subnet()
        link(head, worker, f"{cluster}.1", f"{cluster}.2", "c")
        front = _front(stack, head, avoid=cluster)
        yield Netns(head.name, head.pid, f"{cluster}.1"), Netns(worker.name, worker.pid, f"{cluster}.2"), front
