"""`llmdeploy bake --stack X` for the local runtimes: boot the stack's guest as `local up` does, let it provision,
scrub it (scrub.py, as root over SSH, then power off), and keep what is left beside the base image (store.py):
the systemd container's root tree, renamed into place, or the VM's overlay qcow2 (backed by the base image's disk).

The bake provisions as `local up` does, secrets included (a stack whose engine waits for its hfToken cannot
install without it), and then removes them; so the bake is scanned on this machine (scan.py: the nspawn tree, or the
VM's disk loop-mounted read-only) for every secret the bake delivered and every key, and a bake with a finding is
deleted, not kept. Re-baking an install whose digest has a bake already does nothing. Anything that fails removes
the guest and the unfinished bake."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..config import StackConfig, parse
from ..declared import declarations
from ..errors import UsageError
from ..local import LocalError, lifecycle, procs
from ..local.guestlogin import login
from ..local.lifecycle import UpOptions, UpRun
from ..local.localconfig import model_source, torch_wheel_dirs
from ..local.progress import Clock, clock
from ..local.state import VmState, new_state, stack_lock
from ..local.vmstatus import running
from ..polling import wait_for
from . import scan, store
from .scrub import scrub_script

POWEROFF_S = 120.0  # the guest's orderly shutdown after the scrub
# The steps of `local up` a bake runs: up to readiness (no smoke test: nothing is served from a bake).
BAKE_STEPS = ("1-host-servers", "2-seed", "3-boot", "4-host-key", "5-secrets", "6-ready")


@dataclass
class BakeResult:
    folder: Path
    digest: str
    baked_now: bool


def check_bake_stack(opts: UpOptions) -> tuple[dict[str, Any], StackConfig]:
    """The stack's values and config, refused (UsageError) unless it is a local stack."""
    values = dict(lifecycle.stack_values(opts))
    cfg = parse(values, stack=opts.stack, decls=declarations(opts.project_dir))
    if not cfg.deployment.local_vm:
        raise UsageError(f"stack '{opts.stack}' has target '{cfg.target}'; `llmdeploy bake` bakes stacks with target "
                         "local here (e.g. --stack local); an OCI stack's image is baked by its Pulumi program "
                         "(docs/baking.md)")
    return values, lifecycle.check_stack(opts, values)


def bake(opts: UpOptions, keep_models: bool = True, stream: TextIO | None = None) -> BakeResult:
    out: TextIO = stream or sys.stdout
    elapsed = Clock()

    def say(text: str) -> None:
        print(f"[{clock(elapsed())}] {text}", file=out, flush=True)

    values, cfg0 = check_bake_stack(opts)
    model = model_source(cfg0, opts.model_file)
    wheels = torch_wheel_dirs(cfg0, opts.torch_wheels, lifecycle._sets_torch_index(values, opts.project_dir))
    guest = lifecycle.choose_guest(opts, cfg0, say)
    img, _ = guest.ensure_image(say)
    digest = store.local_digest(opts.project_dir, opts.stack, values, cfg0, model, wheels, img)
    found = store.find(digest, guest.name, img)
    if found is not None:
        say(f"already baked: {found.folder} holds install {digest} (baked {found.manifest.get('created')}); "
            "nothing to do")
        return BakeResult(found.folder, digest, False)
    with stack_lock(opts.stack):
        existing = VmState.load(opts.stack)
        if existing is not None and running(existing):
            raise LocalError(f"stack '{opts.stack}' has a local VM up; the bake boots its own: llmdeploy local down "
                             f"--stack {opts.stack} first")
        if existing is not None:
            lifecycle.teardown(existing)
        state = new_state(opts.stack)
        state.runtime = guest.name
        folder = store.folder_for(digest, guest.name)
        work = folder.with_name(f".baking-{folder.name}")
        try:
            run = UpRun(opts, values, cfg0, model, wheels, img, guest, state, elapsed, out)
            say(f"baking install {digest} of stack '{opts.stack}' ({guest.label})")
            _provision(run)
            seen = _secrets_seen(run)
            _scrub_and_power_off(run, keep_models)
            _harvest(run, work)
            _check_clean(run, work, seen)
            store.write_manifest(work, {"digest": digest, "stack": opts.stack, "runtime": guest.name,
                                        "engine": cfg0.engine, "base_image": img.folder.name,
                                        "keep_models": keep_models, "bake_seconds": round(elapsed(), 1)})
            shutil.rmtree(folder, ignore_errors=True)
            work.rename(folder)
        except BaseException:
            say("bake failed: stopping the guest and removing the unfinished bake")
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            lifecycle.teardown(state)
    say(f"baked in {clock(elapsed())}: {folder} (install {digest}); `llmdeploy local up --stack {opts.stack} "
        f"--runtime {guest.name}` boots from it")
    return BakeResult(folder, digest, True)


def _provision(run: UpRun) -> None:
    lifecycle._prepare(run)
    steps = dict(lifecycle.UP_STEPS)
    try:
        for name in BAKE_STEPS:
            run.record(f"{name}:start")
            steps[name](run)
            run.record(f"{name}:done")
    finally:
        if run.session is not None:
            run.session.close()
            run.session = None


def _secrets_seen(run: UpRun) -> list[str]:
    """What the bake delivered or saw that no image may hold: API keys, hfToken, the guest's SSH host key."""
    cfg = run.config
    seen = [*run.state.api_keys().values(), cfg.hf_token.reveal()]
    seen += [p.reveal() for p in cfg.auth.basic_passwords.values()]
    host_key = run.state.host_key.split()
    if len(host_key) >= 2:
        seen.append(host_key[1])  # the public half names this instance: it must not come back either
    return [s for s in seen if s]


def _scrub_and_power_off(run: UpRun, keep_models: bool) -> None:
    """The scrub as root, then power off, in one login (the scrub removes the key that logs in)."""
    state = run.state
    session = login(state)
    try:
        result = session.run("sudo -n bash -s", stdin=(scrub_script(keep_models) +
                                                        "\nsystemctl --no-block poweroff\n").encode(), timeout=600)
    finally:
        session.close()
    if not result.ok:
        raise LocalError(f"the scrub failed (exit {result.exit_code}): {(result.stderr or result.stdout)[-2000:]}")
    run.say("scrubbed: keys, secrets, TLS, identity, markers and logs removed; powering off")
    if not wait_for(lambda: not run.guest.alive(state), within=POWEROFF_S, every=1):
        raise LocalError(f"the guest did not power off within {POWEROFF_S:.0f}s after the scrub")


def _harvest(run: UpRun, work: Path) -> None:
    """Move the scrubbed guest's disk into the unfinished bake's folder."""
    from ..local import nspawn

    state = run.state
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o755)
    if run.guest.name == "nspawn":
        spec = nspawn.ContainerSpec.load(state.dir / nspawn.SPEC_FILE)
        nspawn.kill_container(Path(spec.root))  # nothing may run in it any more
        shutil.move(spec.root, work / "rootfs")
        (work / "rootfs").chmod(0o755)
    else:
        procs.stop_process(state.pids.get("qemu"), state.markers.get("qemu", "\0never"))
        shutil.move(str(state.overlay), work / "disk.qcow2")  # its backing file: the base image's disk


def _check_clean(run: UpRun, work: Path, seen: list[str]) -> None:
    """Scan the bake (scan.py): the tree itself, or the VM's disk mounted read-only (root only: a loop mount)."""
    root = work / "rootfs"
    if root.is_dir():
        findings = scan.scan_tree(root, seen)
    elif os.geteuid() != 0:
        run.say("scan: the VM's disk is not scanned (mounting it needs root); the scrub ran in the guest")
        return
    else:
        findings = _scan_disk(work, seen)
    if findings:
        raise LocalError("the scrubbed image still holds per-instance state; nothing was kept:\n  " +
                         "\n  ".join(findings[:30]))
    run.say(f"scan: no secret, key or identity in the baked image ({len(seen)} secrets looked for)")


def _scan_disk(work: Path, seen: list[str]) -> list[str]:
    """The qcow2 chain flattened to a raw file (sparse: seconds) and loop-mounted read-only for the scan."""
    raw, mount = work / "scan.raw", work / "scan.mnt"
    mount.mkdir()
    try:
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(work / "disk.qcow2"), str(raw)], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "loop,ro,noload", str(raw), str(mount)], check=True, capture_output=True)
        try:
            return scan.scan_tree(mount, seen)
        finally:
            subprocess.run(["umount", str(mount)], check=False, capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise LocalError(f"scanning the VM's disk failed: {' '.join(exc.cmd)}: "
                         f"{exc.stderr.decode(errors='replace').strip()[-500:]}") from None
    finally:
        raw.unlink(missing_ok=True)
        if not os.path.ismount(mount):
            mount.rmdir()
