"""Which provisioning steps are the install (what a baked image keeps) and the digest that names an install.

The steps are idempotent, so an image taken after a first run, scrubbed (scrub.py), boots into a second run that
finds the packages, venvs, containers and weights in place and only redoes the per-instance steps' work: keys,
secrets, TLS, ACME, nginx, readiness. The digest covers the install steps' rendered scripts, which carry every pin
and download URL they use, and the base image they ran on: the same digest means the same install. Per-instance
steps and files (nginx's site, hostnames, keys) are left out, so a workshop's VMs share one image."""
from __future__ import annotations

import hashlib

from ..render import Rendered
from ..vmpaths import STEPS_DIR

# The steps that make a machine per instance: they run on every boot of a baked image and are never baked.
# 35-autostop too: its agent acts as the instance (idleStopMinutes, ttlHours), and a builder must never stop itself.
PER_INSTANCE_STEPS = ("35-autostop", "50-tls", "60-nginx", "70-acme", "90-ready")
# Bumped when what a baked image holds changes meaning (the scrub list, this digest's inputs).
BAKE_FORMAT = "llmdeploy-bake-2"


def install_steps(rendered: Rendered) -> tuple[str, ...]:
    """The machine's steps that install, in run order: everything but the per-instance ones."""
    return tuple(step for step in rendered.steps if step not in PER_INSTANCE_STEPS)


def install_digest(rendered: Rendered, base_image: str) -> str:
    """The install's name: SHA-256 over the format, the base image's identity and each install step's name and
    rendered script, as 16 hex digits (64 bits: image names stay short, and a collision needs 2^32 installs)."""
    h = hashlib.sha256(f"{BAKE_FORMAT}\0{base_image}\0".encode())
    for step in install_steps(rendered):
        h.update(f"{step}\0".encode())
        h.update(rendered.file(f"{STEPS_DIR}/{step}.sh").content.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
