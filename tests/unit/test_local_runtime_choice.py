"""`llmdeploy local up` picks its runtime for the machine (llmdeploy.local.choice): QEMU with KVM where KVM works,
else the systemd container as root with systemd-nspawn, else QEMU/TCG said to be slow; --runtime overrides; and
`up` prints which one it chose and why. The probes are injected: no hypervisor, no root needed."""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from llmdeploy.cli import build_parser
from llmdeploy.local import choice, lifecycle, qemu, runtime
from support.project import ROOT

NO_KVM = "KVM does not work here (KVM internal error)"


def probes(kvm: tuple[bool, str] = (False, NO_KVM), root: bool = True, missing: tuple[str, ...] = ()) -> choice.Probes:
    return choice.Probes(kvm=lambda: kvm, is_root=lambda: root, nspawn_missing=lambda: list(missing))


def never() -> choice.Probes:
    def refuse() -> object:
        raise AssertionError("an explicit --runtime or --accel must not probe the machine")
    return choice.Probes(kvm=refuse, is_root=refuse, nspawn_missing=refuse)  # type: ignore[arg-type]


def test_working_kvm_picks_qemu_with_kvm_even_as_root_with_nspawn() -> None:
    chosen = choice.choose("auto", "auto", probes(kvm=(True, "KVM boots a kernel")))
    assert (chosen.runtime, chosen.accel) == ("qemu", "kvm")
    assert chosen.line == "runtime: QEMU with KVM: KVM works here (KVM boots a kernel)"


def test_without_kvm_root_with_systemd_nspawn_gets_the_container() -> None:
    chosen = choice.choose("auto", "auto", probes())
    assert (chosen.runtime, chosen.accel) == ("nspawn", "native")
    assert chosen.line.startswith(f"runtime: systemd container (nspawn): {NO_KVM}; as root with systemd-nspawn")
    assert "--runtime qemu" in chosen.line  # how to get the VM instead


def test_without_kvm_and_not_root_qemu_tcg_says_it_will_be_slow() -> None:
    chosen = choice.choose("auto", "auto", probes(root=False))
    assert (chosen.runtime, chosen.accel) == ("qemu", "tcg")
    assert chosen.line.startswith(f"runtime: QEMU with TCG: {NO_KVM}, and no systemd container (not root")
    assert "this will be slow" in chosen.line


def test_without_kvm_as_root_lacking_nspawn_names_the_package_and_falls_back_to_tcg() -> None:
    chosen = choice.choose("auto", "auto", probes(missing=("systemd-container",)))
    assert (chosen.runtime, chosen.accel) == ("qemu", "tcg")
    assert "apt-get install systemd-container" in chosen.reason and "slow" in chosen.reason


@pytest.mark.parametrize(("wanted", "accel", "expected"), [
    ("qemu", "auto", ("qemu", "auto", "runtime: QEMU: asked for with --runtime qemu")),
    ("qemu", "tcg", ("qemu", "tcg", "runtime: QEMU with TCG: asked for with --runtime qemu")),
    ("nspawn", "auto", ("nspawn", "native", "runtime: systemd container (nspawn): asked for with --runtime nspawn")),
    ("auto", "tcg", ("qemu", "tcg", "runtime: QEMU with TCG: --accel tcg asks for QEMU")),
    ("auto", "kvm", ("qemu", "kvm", "runtime: QEMU with KVM: --accel kvm asks for QEMU")),
])
def test_an_explicit_runtime_or_accel_overrides_without_probing(wanted: str, accel: str,
                                                                 expected: tuple[str, str, str]) -> None:
    chosen = choice.choose(wanted, accel, never())
    assert (chosen.runtime, chosen.accel, chosen.line) == expected


def test_the_command_line_default_is_auto_and_runtime_names_are_checked() -> None:
    args = build_parser().parse_args(["local", "up"])
    assert args.runtime == "auto" and args.accel == "auto"
    assert build_parser().parse_args(["local", "up", "--runtime", "qemu"]).runtime == "qemu"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["local", "up", "--runtime", "docker"])


class ChoiceMade(Exception):
    """Stops `up` right after the choice, before anything is built or booted."""


@pytest.mark.parametrize(("found", "wanted", "printed", "kind", "accel"), [
    (probes(), "auto", "runtime: systemd container (nspawn): " + NO_KVM, runtime.NspawnRuntime, None),
    (probes(root=False), "auto", "runtime: QEMU with TCG: " + NO_KVM, runtime.QemuRuntime, "tcg"),
    (probes(kvm=(True, "KVM boots a kernel")), "auto", "runtime: QEMU with KVM: KVM works here", runtime.QemuRuntime,
     "kvm"),
    (never(), "qemu", "runtime: QEMU: asked for with --runtime qemu", runtime.QemuRuntime, None),
])
def test_up_prints_the_chosen_runtime_and_boots_that_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         found: choice.Probes, wanted: str, printed: str,
                                                         kind: type, accel: str | None) -> None:
    monkeypatch.setenv("LLMDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMDEPLOY_STATE_DIR", str(tmp_path / "vms"))
    monkeypatch.setattr(choice, "machine_probes", lambda kernel: found)
    booted: list[runtime.Runtime] = []

    def ensure_image(self: runtime.Runtime, say: object) -> None:
        booted.append(self)
        raise ChoiceMade

    for cls in (runtime.QemuRuntime, runtime.NspawnRuntime):
        monkeypatch.setattr(cls, "tool_problems", lambda self: [])
        monkeypatch.setattr(cls, "ensure_image", ensure_image)
    out = io.StringIO()
    with pytest.raises(ChoiceMade):
        lifecycle.local_up(lifecycle.UpOptions(stack="local", project_dir=ROOT, runtime=wanted), stream=out)
    assert printed in out.getvalue()
    assert [type(guest) for guest in booted] == [kind]
    decided = getattr(booted[0], "decided", None)
    assert (decided.name if decided else None) == accel  # a probed choice is not probed again at boot


def test_the_chosen_runtimes_missing_packages_are_named_before_anything_is_built(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.QemuRuntime, "tool_problems", lambda self: ["qemu-system-x86"])
    opts = lifecycle.UpOptions(stack="local", project_dir=ROOT)
    cfg = lifecycle.check_stack(opts, lifecycle.stack_values(opts))  # auto: the guest's tools wait for the choice
    with pytest.raises(lifecycle.LocalError, match="apt-get install qemu-system-x86"):
        lifecycle.choose_guest(opts, cfg, lambda line: None, probes(root=False))


@pytest.mark.parametrize(("result", "expected"), [
    (subprocess.TimeoutExpired(["qemu"], 15.0), "KVM does not work here (a kernel booted under KVM did not reach its "
                                                "panic within 15 s)"),
    (subprocess.CompletedProcess(["qemu"], 1, "", "error: KVM internal error. Suberror: 1\nemulation failure\n"),
     "KVM does not work here (KVM internal error)"),
    (subprocess.CompletedProcess(["qemu"], 1, "", ""), "KVM does not work here (QEMU exited without output)"),
])
def test_a_failed_kvm_probe_says_why_in_words(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              result: object, expected: str) -> None:
    """The probe's answer is printed as the runtime choice's reason (it once read 'KVM does not work here ( (no result
    after 30s))')."""
    dev = tmp_path / "kvm"
    dev.write_text("")  # stands in for /dev/kvm: present, readable and writable

    def run(*args: object, **kwargs: object) -> object:
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(qemu.subprocess, "run", run)
    assert qemu.probe_kvm(tmp_path / "vmlinuz", dev=dev) == (False, expected)
