"""The bake core: which steps are the install, the digest that names it, and the scrub script."""
from __future__ import annotations

import dataclasses

from llmdeploy.bake.install import PER_INSTANCE_STEPS, install_digest, install_steps
from llmdeploy.bake.scrub import scrub_script
from llmdeploy.render import STEPS_DIR, VmFile, render
from llmdeploy.config import parse
from llmdeploy.stack_yaml import load_stack_config, read_stack
from llmdeploy.vmpaths import AUTOSTOP_TTL, SECRETS_DIR, STAGES_DIR, TLS_DIR
from support.project import ROOT


def test_the_install_is_every_step_before_the_per_instance_ones() -> None:
    rendered = render(load_stack_config(ROOT, "local"))
    steps = install_steps(rendered)
    assert "40-engine" in steps and not set(steps) & set(PER_INSTANCE_STEPS)
    assert list(steps) == [s for s in rendered.steps if s not in PER_INSTANCE_STEPS]


def test_the_digest_changes_with_an_install_script_or_the_base_image_and_not_with_a_per_instance_step() -> None:
    rendered = render(load_stack_config(ROOT, "local"))
    base = install_digest(rendered, "debian-12-x")
    assert len(base) == 16 and base == install_digest(rendered, "debian-12-x")
    assert install_digest(rendered, "debian-12-y") != base

    def changed(step: str) -> str:
        path = f"{STEPS_DIR}/{step}.sh"
        files = tuple(VmFile(f.path, f.content + "# changed\n", f.mode) if f.path == path else f for f in rendered.files)
        return install_digest(dataclasses.replace(rendered, files=files), "debian-12-x")

    assert changed("40-engine") != base
    assert changed("60-nginx") == base


def test_autostop_is_per_instance_so_it_changes_no_digest_and_a_builder_never_runs_it() -> None:
    raw = read_stack(ROOT, "local")
    plain = render(parse(raw, "local"))
    stopping = render(parse({**raw, "idleStopMinutes": 30}, "local"))
    assert "35-autostop" in stopping.steps and "35-autostop" not in install_steps(stopping)
    assert install_digest(stopping, "b") == install_digest(plain, "b")


def test_the_digest_differs_between_engines() -> None:
    digests = {stack: install_digest(render(load_stack_config(ROOT, stack)), "b")
               for stack in ("local", "local-vllm", "local-xinference")}
    assert len(set(digests.values())) == 3


def test_the_scrub_script_names_every_per_instance_path() -> None:
    for keep in (True, False):
        script = scrub_script(keep_models=keep)
        for must in (SECRETS_DIR, TLS_DIR, STAGES_DIR, "/etc/ssh/ssh_host_", "/etc/letsencrypt", "--machine-id",
                     "authorized_keys", "/var/log/nginx", AUTOSTOP_TTL):
            assert must in script
        assert ("/var/lib/llmdeploy/models" in script) is (not keep)
