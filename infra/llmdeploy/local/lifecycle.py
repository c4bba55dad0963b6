"""`llmdeploy local up | status | down`: the whole stack in a QEMU VM on this machine, or in a systemd
container (--runtime nspawn: native speed, see runtime.py for what each proves).

up: validate the stack, build (once) or reuse the cached image, start the host-side servers the guest
needs (the model server; pebble for letsencrypt), render the stack's user-data with what only this
command knows, boot the guest (the runtime chosen by choice.py unless --runtime names one, and said why: QEMU with KVM where
it really works, else the container where root can run it, else QEMU/TCG) with a NoCloud seed,
deliver the API keys and hfToken over SSH (stdin, never user-data) as soon as it can log in (the engine
step waits for the token), follow provisioning stage by stage, run the smoke test, and print the endpoint,
the key and a curl line. Anything that fails on the way is stopped and removed again
(unless --keep-on-failure), so nothing is left half-created.

down: stop the guest and the host-side servers by their PIDs and remove the VM's folder (its disk overlay,
seed, keys; a container's root copy, veth pair, namespace and NAT rules). The image cache stays.
"""
from __future__ import annotations

import re
import secrets as _random
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..bake.store import DEFAULT_MAX_AGE_DAYS
from ..config import ConfigError, StackConfig, parse
from ..declared import declarations
from ..errors import UsageError
from ..pem import first_certificate
from ..private_files import write_private
from ..render import HostLayout, render
from ..smoke.redact import Redactor
from ..smoke.report import check_line
from ..sshclient import Session
from ..stack_yaml import from_environment, read_stack
from . import LocalError, checks, choice, hostsrv, image, procs, qemu, runtime
from .guestlogin import confirm_host_key, first_login, login
from .localconfig import ModelSource, host_ca_certs, local_config, model_source, torch_wheel_dirs
from .progress import BootProgress, Clock, Say, clock
from .readiness import wait_ready
from .runtime import Runtime
from .secretsdelivery import basic_login, deliver_secrets, wait_for_credentials
from .ssh import make_key_pair
from .state import VmState, new_state, remove_folder, stack_lock
from .vmstatus import HOST_SERVERS, print_summary, running

PROCESS_NAMES = (*runtime.RUNTIMES, *HOST_SERVERS)
BASE_GUEST_PORTS = (22, 80, 443)


@dataclass
class UpOptions:
    stack: str = "local"
    project_dir: Path = Path(".")
    accel: str = "auto"
    runtime: str = choice.AUTO  # or one of runtime.RUNTIMES
    model_file: str | None = None
    forward: list[int] = field(default_factory=list)
    keep_on_failure: bool = False
    config_from_env: bool = False  # the config as `pulumi up` resolved it (stack_yaml.from_environment)
    torch_wheels: list[str] = field(default_factory=list)
    baked: str = "auto"  # bake/store.py: auto (a matching bake if there is one), no (--no-baked), require (--baked)
    max_baked_age_days: float = DEFAULT_MAX_AGE_DAYS  # an older bake is not booted: it misses the updates since


def _tool_problems(cfg: StackConfig, guest: Runtime | None) -> list[str]:
    needed = {"pebble": "pebble", "pebble-challtestsrv": "pebble"} if cfg.tls.mode == "letsencrypt" else {}
    return sorted({pkg for tool, pkg in needed.items() if shutil.which(tool) is None} |
                  set(guest.tool_problems() if guest else ()))


def _require_tools(missing: list[str]) -> None:
    if missing:
        raise LocalError(f"missing on this machine: {', '.join(missing)}; install with apt-get install "
                         f"{' '.join(missing)} (scripts/setup.sh installs them)")


def stack_values(opts: UpOptions) -> dict[str, Any]:
    """The stack's config values, read once: as `pulumi up` resolved and passed them (--config-from-env), or from
    Pulumi.<stack>.yaml (StackFileError: exit 2)."""
    if opts.config_from_env:
        return from_environment(opts.project_dir)
    return read_stack(opts.project_dir, opts.stack)


def check_stack(opts: UpOptions, values: Mapping[str, Any]) -> StackConfig:
    """The stack as given, validated before anything is created (ConfigError: exit 2)."""
    cfg = parse(values, stack=opts.stack, decls=declarations(opts.project_dir))
    if not cfg.deployment.local_vm:
        raise UsageError(f"stack '{opts.stack}' has target '{cfg.target}'; `llmdeploy local up` runs stacks with "
                         f"target local (pulumi config set target local --stack {opts.stack}, or use the example: "
                         "llmdeploy local up --stack local)")
    for port in opts.forward:
        if not 1 <= port <= 65535 or port in BASE_GUEST_PORTS:
            raise UsageError(f"--forward {port}: expected a guest port from 1 to 65535 other than 22, 80 and 443 "
                             "(those are always forwarded)")
    if opts.accel not in ("auto", "kvm", "tcg"):
        raise UsageError(f"--accel {opts.accel}: expected auto, kvm or tcg")
    if opts.runtime not in (choice.AUTO, *runtime.RUNTIMES):
        raise UsageError(f"--runtime {opts.runtime}: expected auto (the default: chosen for this machine), qemu (a "
                         "VM) or nspawn (a systemd container, native speed)")
    if opts.runtime == "nspawn" and opts.accel != "auto":
        raise UsageError(f"--accel {opts.accel}: applies to --runtime qemu only (a container runs natively)")
    # With auto, the guest's own tools are checked once it is chosen (choose_guest).
    _require_tools(_tool_problems(cfg, None if opts.runtime == choice.AUTO else runtime.get(opts.runtime, opts.accel)))
    return cfg


def choose_guest(opts: UpOptions, cfg: StackConfig, say: Say, probes: choice.Probes | None = None) -> Runtime:
    """The runtime to boot (choice.py's rule unless --runtime names one), said with its reason."""
    if probes is None:
        probes = choice.machine_probes(lambda: image.probe_kernel(lambda line: say(line.strip())))
    chosen = choice.choose(opts.runtime, opts.accel, probes)
    say(chosen.line)
    probed = opts.runtime == choice.AUTO and opts.accel == "auto" and chosen.runtime == "qemu"
    decided = qemu.Accel(chosen.accel, "KVM works here" if chosen.accel == "kvm" else
                         "KVM does not work here; software emulation, slow") if probed else None
    guest = runtime.get(chosen.runtime, opts.accel, decided)
    _require_tools(_tool_problems(cfg, guest))
    return guest


def _sets_torch_index(values: Mapping[str, Any], root: Path) -> bool:
    """Whether the stack names its own torchIndexUrl (a mirror). Pulumi passes the declared default too."""
    return values.get("torchIndexUrl") not in (None, "", declarations(root)["torchIndexUrl"].default)


# ---------------------------------------------------------------------------------------------- up

def local_up(opts: UpOptions, stream: TextIO | None = None) -> VmState:
    out: TextIO = stream or sys.stdout  # a new name: the closures below need it narrowed
    values = stack_values(opts)
    cfg0 = check_stack(opts, values)
    model = model_source(cfg0, opts.model_file)
    # The guest's pip gets CPU torch from this machine (its find-links, or --torch-wheels), not download.pytorch.org.
    wheels = torch_wheel_dirs(cfg0, opts.torch_wheels, _sets_torch_index(values, opts.project_dir))
    elapsed = Clock()

    def say(text: str) -> None:
        print(f"[{clock(elapsed())}] {text}", file=out, flush=True)

    with stack_lock(opts.stack):
        existing = _ready_or_cleared(opts.stack, say, out)
        if existing is not None:
            return existing
        guest = choose_guest(opts, cfg0, say)
        img, built = guest.ensure_image(say)
        if not built:
            say(f"image: {img.folder} (cached)")
        img = _baked_or_base(opts, values, cfg0, model, wheels, img, guest, say)
        state = new_state(opts.stack)
        state.runtime = guest.name
        try:
            _up(UpRun(opts, values, cfg0, model, wheels, img, guest, state, elapsed, out))
        except BaseException as exc:
            state.phase = "failed"
            state.save()
            if opts.keep_on_failure:
                say(f"kept the failed VM for inspection: llmdeploy local logs --stack {opts.stack}; "
                    f"llmdeploy local ssh --stack {opts.stack}; then llmdeploy local down --stack {opts.stack}")
            else:
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                say(f"{why}: stopping the VM and the servers it used, removing its disk")
                teardown(state)
            raise
    return state


def _baked_or_base(opts: UpOptions, values: Mapping[str, Any], cfg0: StackConfig, model: ModelSource,
                   wheels: list[Path], img: image.Image, guest: Runtime, say: Say) -> image.Image:
    """A bake of this stack's install (llmdeploy bake), if one matches and is young enough; else the base image."""
    from ..bake import store

    if opts.baked == store.NO:
        return store.choose(store.NO, "", guest.name, opts.stack, img, opts.max_baked_age_days, say)
    digest = store.local_digest(opts.project_dir, opts.stack, values, cfg0, model, wheels, img)
    return store.choose(opts.baked, digest, guest.name, opts.stack, img, opts.max_baked_age_days, say)


def _ready_or_cleared(stack: str, say: Say, out: TextIO) -> VmState | None:
    """The stack's VM if it is up and ready; else None, once what an earlier one left behind is removed."""
    existing = VmState.load(stack)
    if existing is None:
        return None
    if running(existing):
        if existing.phase == "ready":
            say(f"the VM of stack '{stack}' is already up")
            print_summary(existing, out)
            return existing
        raise LocalError(f"a VM of stack '{stack}' is running but not ready ({existing.phase}); "
                         f"remove it first: llmdeploy local down --stack {stack}")
    say(f"removing what a previous VM of stack '{stack}' left behind")
    teardown(existing)
    return None


@dataclass
class GuestSources:
    """What the guest fetches from this machine (host_servers fills it in; seed writes it into the config)."""

    model_url: str = ""
    hf_endpoint: str = ""
    torch_index: str = ""
    acme_url: str = ""
    extra_cas: list[str] = field(default_factory=list)
    instance_services: str = ""  # the autostop agent's stand-in OCI APIs


@dataclass
class UpRun:
    """What the steps of `up` share; each step fills in what later ones need (sources, cfg, session)."""

    opts: UpOptions
    values: Mapping[str, Any]  # the stack's config values, read once (stack_values)
    cfg0: StackConfig  # ... as given; cfg adds what only `local up` knows (its key, the host servers' URLs)
    model: ModelSource
    wheels: list[Path]
    img: image.Image
    guest: Runtime
    state: VmState
    elapsed: Clock
    out: TextIO
    sources: GuestSources = field(default_factory=GuestSources)
    cfg: StackConfig | None = None
    user_data: str = ""
    bundle: bytes = b""  # the provisioning bundle, delivered over SSH with the secrets
    session: Session | None = None  # the first login, from boot until the secrets are delivered

    def say(self, text: str) -> None:
        print(f"[{clock(self.elapsed())}] {text}", file=self.out, flush=True)

    def record(self, event: str) -> None:
        self.state.timeline[event] = round(self.elapsed(), 1)

    @property
    def config(self) -> StackConfig:
        assert self.cfg is not None, "the seed step sets the config"
        return self.cfg


def _up(run: UpRun) -> None:
    """The steps in order, numbered like the VM's own; each records <step>:start and <step>:done."""
    _prepare(run)
    try:
        for name, step in UP_STEPS:
            run.record(f"{name}:start")
            step(run)
            run.record(f"{name}:done")
    finally:
        if run.session is not None:
            run.session.close()


def _prepare(run: UpRun) -> None:
    """The VM's identity, SSH key pair and forwarded ports, before anything starts."""
    state, opts = run.state, run.opts
    state.project_dir = str(opts.project_dir)
    state.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    state.instance_id = f"llmdeploy-{opts.stack}-{_random.token_hex(4)}"
    run.record("image_ready")
    guest_ports = [*BASE_GUEST_PORTS, *opts.forward]
    state.ports = {str(g): h for g, h in zip(guest_ports, qemu.free_ports(len(guest_ports)))}
    state.save()
    run.guest.prepare(state)


def _host_servers(run: UpRun) -> None:
    """The host-side servers the guest reaches (QEMU: at 10.0.2.2; the container: at its veth pair's host side):
    the model server (also the torch index and the Hub stand-in), and pebble for letsencrypt."""
    run.sources = GuestSources(model_url=run.model.url, extra_cas=host_ca_certs())
    if run.model.serve is not None or run.wheels:
        _model_server(run)
    if run.cfg0.tls.mode == "letsencrypt":
        _pebble(run)
    if run.cfg0.autostop.enabled:
        _instance_services(run)


def _model_server(run: UpRun) -> None:
    state, model, wheels, src = run.state, run.model, run.wheels, run.sources
    folder = state.dir / "model"
    folder.mkdir(mode=0o700, exist_ok=True)
    if model.serve is not None:
        (folder / model.filename).symlink_to(model.serve)
    # With an hfToken it stands in for Hugging Face (hfEndpoint): no download without that bearer token.
    token = run.cfg0.hf_token.reveal()
    server = hostsrv.start_model_server(folder, state.dir / "model-server.log", token=token,
                                        host=run.guest.bind_host(state), guest_host=run.guest.guest_host(state),
                                        wheel_dirs=tuple(wheels))
    state.pids["model_server"], state.markers["model_server"] = server.pid, str(folder)
    state.save()
    if model.serve is not None:
        src.model_url = server.guest_url(model.filename)
        src.hf_endpoint = server.guest_endpoint if token else ""
        gated = f"; hfEndpoint {src.hf_endpoint}: downloads need the stack's hfToken" if token else ""
        run.say(f"model server: {model.serve.name} at {src.model_url} (pid {server.pid}){gated}")
    if wheels:
        src.torch_index = server.guest_simple_index
        run.say(f"torch index: {src.torch_index}, the CPU torch wheels of {', '.join(map(str, wheels))}")


def _pebble(run: UpRun) -> None:
    state = run.state
    acme_folder = state.dir / "acme"
    pebble = hostsrv.start_pebble(acme_folder, http_port=state.port(80), bind=run.guest.bind_host(state),
                                  guest_host=run.guest.guest_host(state))
    state.pids["pebble"], state.markers["pebble"] = pebble.pid, str(acme_folder / "pebble-config.json")
    state.pids["challtestsrv"], state.markers["challtestsrv"] = pebble.challtestsrv_pid, pebble.challtestsrv_marker
    state.save()
    run.sources.acme_url = pebble.directory_url
    run.sources.extra_cas.append(pebble.listener_ca_pem.strip())
    state.ca_file.write_text(pebble.root_pem)
    run.say(f"ACME server: pebble at {pebble.directory_url} (pid {pebble.pid}), validating through port "
            f"{state.port(80)}")


def _instance_services(run: UpRun) -> None:
    """The stand-in for OCI's metadata, auth and Compute APIs that the autostop agent calls (instance_services.py)."""
    state = run.state
    server = hostsrv.start_instance_services(state.dir / "instance-services", state.stack, state.instance_id,
                                             bind=run.guest.bind_host(state), guest_host=run.guest.guest_host(state))
    state.pids["instance_services"], state.markers["instance_services"] = server.pid, server.marker
    state.save()
    run.sources.instance_services = server.guest_url
    run.sources.extra_cas.append(server.ca_pem.strip())
    run.say(f"OCI instance services stand-in: {server.guest_url} (pid {server.pid}); a verified stop of "
            f"{state.instance_id} stops the guest")


def _seed(run: UpRun) -> None:
    """The stack's config with what only `local up` knows, rendered into the guest's user-data."""
    state, src = run.state, run.sources
    public_key = make_key_pair(state.ssh_key, f"llmdeploy-local-{run.opts.stack}")
    try:
        run.cfg = cfg = local_config(run.opts.project_dir, run.opts.stack, values=run.values,
                                     ssh_public_key=public_key, model_url=src.model_url,
                                     extra_ca_certs=src.extra_cas, acme_directory_url=src.acme_url,
                                     hf_endpoint=src.hf_endpoint, torch_index_url=src.torch_index)
    except ConfigError as exc:
        raise LocalError(f"the stack with llmdeploy local's own values is not valid: {exc}") from None
    state.vcpus, state.memory_mb = cfg.local_vm.vcpus, cfg.local_vm.memory_mb
    state.admin_user, state.engine, state.engine_port = cfg.admin_user, cfg.engine, cfg.engine_port
    state.model_name, state.tls_mode, state.domain = cfg.model_name, cfg.tls.mode, cfg.domain
    state.endpoint = f"https://{state.host}:{state.port(443)}"
    # nginx redirects plain HTTP to the HTTPS port this machine forwards, not to 443.
    rendered = render(cfg, HostLayout(https_port=state.port(443), instance_services=src.instance_services))
    state.stages = list(rendered.steps)
    run.user_data, run.bundle = rendered.user_data, rendered.bundle
    write_private(state.dir / "user-data", rendered.user_data)
    state.save()


def _boot(run: UpRun) -> None:
    """Start the guest with the seed, and log in once its sshd and the admin user exist."""
    state = run.state
    hostname = "llmdeploy-" + re.sub(r"[^a-z0-9-]", "-", run.opts.stack.lower())[:40].strip("-")
    run.guest.boot(state, run.img, run.user_data, hostname, run.say, run.elapsed)
    run.session = first_login(state, run.guest, run.img, run.say, run.elapsed)


def _host_key(run: UpRun) -> None:
    assert run.session is not None
    confirm_host_key(run.state, run.session, run.say)


def _secrets(run: UpRun) -> None:
    """As soon as the host key is confirmed, while cloud-init provisions: the engine step waits for hfToken."""
    assert run.session is not None
    try:
        deliver_secrets(run.state, run.config, run.session, run.say, run.bundle)
    finally:
        run.session.close()
        run.session = None


def _ready(run: UpRun) -> None:
    """The VM's llmdeploy-wait-ready decides, as in `pulumi up`; the stages are shown as they finish."""
    state = run.state
    state.phase = "provisioning"
    state.save()
    progress = BootProgress(state.stages, run.elapsed, run.out,
                            lambda name, t: state.timeline.update({name: round(t, 1)}))
    stdout = wait_ready(lambda: login(state), progress, run.config.readiness_timeout_minutes * 60,
                        alive=lambda: run.guest.gone(state))
    run.record("ready_marker")
    run.say("provisioning finished: every stage done")
    ca = first_certificate(stdout)
    if state.tls_mode == "self-signed" and ca:
        state.ca_file.write_text(ca)
    state.save()


def _smoke(run: UpRun) -> None:
    """The smoke test, then hand over. nginx reloads asynchronously: wait until it takes the new key."""
    state, out = run.state, run.out
    basic = basic_login(run.config)
    wait_for_credentials(state, checks.credentials(state, basic))
    run.say(f"smoke test: {state.endpoint} and SSH")
    redactor = Redactor([*state.api_keys().values(), *(basic[1:] if basic else ())])
    report = checks.run_smoke(state, emit=lambda r: print("    " + check_line(r, redactor), file=out, flush=True),
                              basic=basic)
    run.record("smoke_done")
    if not report.passed:
        failure = report.first_failure
        raise LocalError(f"smoke test failed: {failure.name if failure else '?'}: "
                         f"{redactor.text(failure.summary) if failure else ''}")
    state.phase = "ready"
    state.save()
    run.say(f"ready in {clock(run.elapsed())} (boot to passing smoke test: "
            f"{clock(state.timeline['smoke_done'] - state.timeline[run.guest.started_event])})")
    print_summary(state, out)


# The steps of `up`, in order (the VM's own provisioning steps run inside 6-ready).
UP_STEPS: tuple[tuple[str, Callable[[UpRun], None]], ...] = (
    ("1-host-servers", _host_servers), ("2-seed", _seed), ("3-boot", _boot), ("4-host-key", _host_key),
    ("5-secrets", _secrets), ("6-ready", _ready), ("7-smoke", _smoke))


# ---------------------------------------------------------------------------------------------- down, status

def teardown(state: VmState) -> list[str]:
    """Stop every process of the VM by PID and remove its folder; returns what was stopped."""
    stopped = []
    guest = runtime.of(state)
    if guest.stop(state):
        stopped.append(f"{guest.name} (pid {state.pids.get(guest.name)})")
    for name in HOST_SERVERS:
        pid = state.pids.get(name)
        if pid and procs.stop_process(pid, state.markers.get(name, "\0never")):
            stopped.append(f"{name} (pid {pid})")
    remove_folder(state.stack)
    return stopped


def down(stack: str, out: TextIO | None = None) -> bool:
    """True if there was a VM to remove."""
    out = out or sys.stdout
    with stack_lock(stack):
        state = VmState.load(stack)
        if state is None:
            print(f"no local VM for stack '{stack}'", file=out)
            return False
        stopped = teardown(state)
    print(f"stopped {', '.join(stopped) or 'nothing (no process was running)'}; removed {state.folder}", file=out)
    return True


