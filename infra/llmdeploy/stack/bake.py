"""BakedImage: the OCI image of a stack's install (bakeImage). A builder VM on the stack's shape and base image runs
the install steps alone (bake/install.py) with no secret of the stack, the scrub (bake/scrub.py) removes every
per-instance state, the builder powers itself off, and `core.Image` is taken from its disk, tagged with the project,
the install digest and the day. The image is retained when the builder goes: a second `pulumi up` with bakeImage
false terminates the builder (and its network) and leaves the image to the stacks that find it by its tags
(stack/baked_image.py). docs/baking.md (its OCI section) says why it takes two runs."""
from __future__ import annotations

import base64
import dataclasses
import io
import shlex
import tarfile
from dataclasses import dataclass

import pulumi
from pulumi_command import local, remote
from pulumi_oci import core

from ..bake.install import PER_INSTANCE_STEPS, install_steps
from ..bake.scrub import scrub_script
from ..bundle import Provisioning, delivery_script, digest, pack, payload
from ..config import Secret, StackConfig
from ..render import BOOTSTRAP_FILES, Rendered, VmFile, cloud_config
from ..secret_delivery import hf_env, open_webui_env
from ..vmpaths import BOOT_FINISHED, BUNDLE_DIGEST, FILES_DIR, LOG_DIR, STAGES_DIR, STEPS_DIR
from .api_keys import pulumi_webui_secret_key
from .gates import ssh_connection
from .network import Network
from .vm import VmArgs, launch_instance, reserved_ip

# The image's freeform tags that name its install (stack/baked_image.py looks images up by them). Keys without a
# dot: the provider's data-source filters address a map entry as freeform_tags.<key>.
INSTALL_TAG = "llmdeploy-install"
BAKED_ON_TAG = "llmdeploy-baked-on"
BASE_IMAGE_TAG = "llmdeploy-base-image"
BAKED_BY_TAG = "llmdeploy-baked-by"  # the stack that baked it (not `stack`: teardown finds a stack's leftovers by that)
STACK_LIFE_TAGS = ("stack", "attendee", "expires-at")
# Files only the per-instance steps read: nginx's site, its basic-auth hashes, certbot's hook. The builder's bundle
# leaves them out, so no password hash is ever on the builder's disk.
PER_INSTANCE_FILES = tuple(f"{FILES_DIR}/{name}" for name in ("nginx-site.conf", "htpasswd", "certbot-deploy-hook"))
POWEROFF_DELAY_S = 15  # after the scrub: time for the SSH session that scheduled it to end cleanly
# After SSH stops answering, before the image is taken: OCI records the instance STOPPED a little after the guest
# powers off, and an image of an instance it still counts RUNNING would restart the builder afterwards.
STOPPED_MARGIN_S = 120


def builder_provisioning(cfg: StackConfig, rendered: Rendered) -> Provisioning:
    """The builder's user-data and bundle: the stack's own, without the per-instance steps and their files, so that
    the bootstrap runs the install steps only. The install steps' scripts are the stack's, byte for byte: the
    digest that names the image is over them."""
    excluded = {f"{STEPS_DIR}/{step}.sh" for step in PER_INSTANCE_STEPS} | set(PER_INSTANCE_FILES)
    packed = pack(f for f in rendered.bundle_files if f.path not in excluded)
    boot = [VmFile(BUNDLE_DIGEST, digest(packed) + "\n") if f.path == BUNDLE_DIGEST else f
            for f in rendered.files if f.path in BOOTSTRAP_FILES]
    return Provisioning(cloud_config(cfg, boot), packed)


def builder_secrets(hf_token: Secret, webui_secret_key: str) -> bytes:
    """What llmdeploy-install-secrets gets on the builder: hfToken only where bakeHfToken allows it, and a key of the
    builder's own for Open WebUI (its install step waits for one). No API key, no TLS key, no password."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in (("hf.env", hf_env(hf_token.reveal()) if hf_token else ""),
                           ("open-webui.env", open_webui_env(webui_secret_key) if webui_secret_key else "")):
            if text:
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o600, 0
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def wait_install_script(steps: tuple[str, ...], timeout_s: int) -> str:
    """Root's side of the builder's gate: wait for the bootstrap to finish (cloud-init's boot-finished), fail with
    the step's log when a step failed, and check that every install step left its marker."""
    names = " ".join(steps)
    return f"""set -euo pipefail
deadline=$(( $(date +%s) + {int(timeout_s)} ))
until [ -e {BOOT_FINISHED} ]; do
  failed=$(find {STAGES_DIR} -name '*.failed' -print -quit 2>/dev/null || true)
  if [ -n "$failed" ]; then
    step=$(basename "$failed" .failed)
    echo "bake: the install FAILED at $step ($(cat "$failed")); last lines of {LOG_DIR}/$step.log:" >&2
    tail -n 40 "{LOG_DIR}/$step.log" >&2 || true
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "bake: the install did not finish within {int(timeout_s)} s (readinessTimeoutMinutes)" >&2
    exit 1
  fi
  sleep 5
done
for step in {names}; do
  if [ ! -f "{STAGES_DIR}/$step.done" ]; then
    echo "bake: step $step never completed; see {LOG_DIR}/$step.log on the builder" >&2
    exit 1
  fi
done
echo "bake: install steps done: {names}"
"""


def install_command(steps: tuple[str, ...], timeout_s: int, keep_models: bool = True) -> str:
    """The builder's gate, as its admin user with the payload on stdin: the bundle and the builder's secrets
    (bundle.delivery_script), the install steps' end, the scrub as root (from a pipe, not the session's stdin),
    then a power-off a few seconds later, so that this session ends before the machine does."""
    wait = shlex.quote(wait_install_script(steps, timeout_s))
    scrub = base64.b64encode(scrub_script(keep_models).encode()).decode()
    return (f"{delivery_script()} && sudo -n bash -c {wait} </dev/null && "
            f"printf '%s' {scrub} | base64 -d | sudo -n bash -s && "
            f"sudo -n systemd-run --quiet --on-active={POWEROFF_DELAY_S} /bin/systemctl poweroff </dev/null && "
            f"echo 'bake: scrubbed; the builder powers off in {POWEROFF_DELAY_S} s'")


def powered_off_script(port: int = 22, margin_s: int = STOPPED_MARGIN_S, tries: int = 120) -> str:
    """This machine's side: wait until the builder's SSH port stops answering three times in a row (it has powered
    off), then margin_s more; fail after `tries` checks 5 s apart. LLMDEPLOY_BUILDER_IP names the builder."""
    return f"""set -u
# A connection attempt of 5 s at most (Python, as the program itself: coreutils' timeout is not on every machine).
probe='import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()'
closed=0
for _ in $(seq 1 {int(tries)}); do
  if python3 -c "$probe" "$LLMDEPLOY_BUILDER_IP" {int(port)} 2>/dev/null; then
    closed=0
  else
    closed=$((closed + 1))
  fi
  if [ "$closed" -ge 3 ]; then
    sleep {int(margin_s)}
    echo "bake: the builder at $LLMDEPLOY_BUILDER_IP has powered off"
    exit 0
  fi
  sleep 5
done
echo "bake: the builder at $LLMDEPLOY_BUILDER_IP still answers on port {int(port)}; the scrub's power-off did not" \\
  "happen (see the install's output above)" >&2
exit 1
"""


@dataclass(frozen=True)
class BuilderArgs:
    vm: VmArgs  # the stack's machine; the builder boots base_image with `provisioning`
    digest: str  # bake/install.install_digest of the stack's install over base_image
    base_image: str
    provisioning: Provisioning  # builder_provisioning: the install steps only
    steps: tuple[str, ...]  # the install steps, whose markers the gate checks
    hf_token: Secret  # empty unless bakeHfToken
    webui: bool  # chatUi open-webui: its install step waits for a secret key (the builder's own)
    project: str
    baked_on: str  # YYYY-MM-DD, for the image's name and tag (OCI's timeCreated is what the age check reads)

    @classmethod
    def from_config(cls, cfg: StackConfig, vm: VmArgs, rendered: Rendered, base_image: str, install_digest: str,
                    project: str, today: str) -> BuilderArgs:
        return cls(vm, install_digest, base_image, builder_provisioning(cfg, rendered), install_steps(rendered),
                   cfg.hf_token if cfg.bake.hf_token else Secret(""), cfg.chat.ui == "open-webui", project, today)

    @property
    def image_name(self) -> str:
        return f"{self.project}-{self.digest}-{self.baked_on}"

    def image_tags(self, tags: dict[str, str]) -> dict[str, str]:
        """The stack's tags but those that tie a resource to one stack's life (stack, attendee, expires-at): the
        image outlives the builder and serves every stack of the same install, so `workshop teardown` must not
        count it as the stack's leftover, nor the reaper expire it with the course. BAKED_BY_TAG says who baked it."""
        kept = {k: v for k, v in tags.items() if k not in STACK_LIFE_TAGS}
        return {**kept, INSTALL_TAG: self.digest, BAKED_ON_TAG: self.baked_on, BASE_IMAGE_TAG: self.base_image,
                BAKED_BY_TAG: tags.get("stack", "")}


class BakedImage(pulumi.ComponentResource):
    image_id: pulumi.Output[str]

    def __init__(self, name: str, args: BuilderArgs, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmdeploy:bake:BakedImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        vm = dataclasses.replace(args.vm, image_id=args.base_image, replica_boots=())
        # A network of its own, so that the second run's removal of the builder takes nothing of the endpoints'.
        network = Network(f"{name}-net", dataclasses.replace(vm.network, private_nodes=False), tags, opts=child)
        builder = launch_instance(f"{name}-builder", vm, args.provisioning, network.subnet_id, [network.nsg_id],
                                  "builder", tags, child)
        ip = reserved_ip(f"{name}-builder", vm.compartment_id, builder, tags, self)
        webui_key: pulumi.Input[str] = pulumi_webui_secret_key(f"{name}-builder", self) if args.webui else ""
        bundle = args.provisioning.bundle
        stdin = pulumi.Output.from_input(webui_key).apply(
            lambda key: payload(bundle, builder_secrets(args.hf_token, key)).decode())
        timeout = vm.readiness.timeout_minutes
        install = remote.Command(
            f"{name}-install", connection=ssh_connection(vm.readiness.user, vm.readiness.ssh, ip.ip_address),
            create=install_command(args.steps, timeout * 60), stdin=pulumi.Output.secret(stdin),
            triggers=[builder.id], logging=remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[builder, ip],
                                        custom_timeouts=pulumi.CustomTimeouts(create=f"{timeout + 15}m")))
        off = local.Command(f"{name}-powered-off", create=powered_off_script(), interpreter=["/bin/bash", "-c"],
                            environment={"LLMDEPLOY_BUILDER_IP": ip.ip_address}, triggers=[install.id],
                            logging=local.Logging.STDOUT_AND_STDERR,
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[install]))
        image = core.Image(
            name, compartment_id=vm.compartment_id, instance_id=builder.id, display_name=args.image_name,
            freeform_tags=args.image_tags(tags),
            # Retained: the second run, without the builder, must not delete it. Its day and name stay the first
            # run's (the tag records when it was baked, not when pulumi up last ran).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[off], retain_on_delete=True,
                                        ignore_changes=["freeformTags", "displayName"],
                                        custom_timeouts=pulumi.CustomTimeouts(create="120m")))
        self.image_id = image.id
        self.register_outputs({"imageId": image.id, "installDigest": args.digest})
