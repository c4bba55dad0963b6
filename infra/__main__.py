"""The Pulumi program (`pulumi up` runs this with infra/ on sys.path): read and validate the stack's
config, build the target's component, export the outputs that scripts and handouts read."""
import pulumi

from llmdeploy.config import ConfigError, StackConfig, parse
from llmdeploy.declared import declarations
from llmdeploy.endpoints import load_plans
from llmdeploy.roster import RosterError
from llmdeploy.stack import output_names
from llmdeploy.stack.baked_image import boot_image, workshop_boot_images
from llmdeploy.stack.datascience import DataScienceArgs, DataScienceEndpoint
from llmdeploy.stack.local import LocalVmEndpoint
from llmdeploy.stack.pulumi_config import load_raw, ssh_auth, tenancy_ocid
from llmdeploy.stack.tags import freeform_tags
from llmdeploy.stack.ray import RayArgs, RayClusterEndpoint
from llmdeploy.stack.vm import PublicEndpoint, VmArgs, VmEndpoint
from llmdeploy.stack.workshop import Workshop, WorkshopArgs


def curl_example(url: str, model: str) -> str:
    return (f"curl {url}/v1/chat/completions -H \"Authorization: Bearer $LLMDEPLOY_API_KEY\" "
            f"-H 'Content-Type: application/json' "
            f"-d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'")


def workshop(name: str, cfg: StackConfig) -> None:
    try:
        plans = load_plans(cfg)  # every attendee's config validated before any resource
        args = WorkshopArgs.from_plans(cfg, plans, pulumi.get_project(), ssh_auth(cfg), tenancy_ocid(cfg))
        args = workshop_boot_images(name, args, plans, pulumi.get_project())  # bakeImage, bakedImage
    except (ConfigError, RosterError, ValueError) as exc:
        raise pulumi.RunError(str(exc)) from None
    ws = Workshop(name, args)
    pulumi.export(output_names.ATTENDEES, ws.attendees)
    pulumi.export(output_names.WORKSHOP_ENDPOINTS, ws.endpoint_urls)


def main() -> None:
    raw = load_raw()
    try:
        cfg = parse(raw, stack=pulumi.get_stack(), decls=declarations())
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    name = f"{pulumi.get_project()}-{cfg.stack}"
    tags = freeform_tags(cfg, pulumi.get_project())
    pulumi.export(output_names.MODEL_NAME, cfg.model_name)
    if cfg.workshop.roster:
        workshop(name, cfg)
    elif cfg.target in ("vm", "ray"):
        try:  # before any resource
            args = boot_image(name, cfg, VmArgs.from_config(cfg, ssh_auth(cfg), tenancy_ocid(cfg)), pulumi.get_project()) \
                if cfg.target == "vm" else RayArgs.from_config(cfg, ssh_auth(cfg))
        except ValueError as exc:
            raise pulumi.RunError(str(exc)) from None
        vm: PublicEndpoint = VmEndpoint(name, args, tags) if isinstance(args, VmArgs) else \
            RayClusterEndpoint(name, args, tags)
        pulumi.export(output_names.ENDPOINT_URL, vm.endpoint_url)
        pulumi.export(output_names.OPENAI_BASE_URL, vm.endpoint_url.apply(lambda url: f"{url}/v1"))
        pulumi.export(output_names.API_KEYS, vm.api_keys)
        pulumi.export(output_names.PUBLIC_IP, vm.public_ip)
        pulumi.export(output_names.SSH_COMMAND, vm.public_ip.apply(lambda ip: f"ssh {cfg.admin_user}@{ip}"))
        pulumi.export(output_names.CURL_EXAMPLE, vm.endpoint_url.apply(lambda url: curl_example(url, cfg.model_name)))
        pulumi.export(output_names.CA_CERTIFICATE, vm.ca_certificate)
        pulumi.export(output_names.SMOKE_REPORT, vm.smoke_report)
        if vm.chat_url:
            pulumi.export(output_names.CHAT_URL, vm.chat_url)
    elif cfg.target == "datascience":
        md = DataScienceEndpoint(name, DataScienceArgs.from_config(cfg), tags)
        pulumi.export(output_names.ENDPOINT_URL, md.endpoint_url)
        pulumi.export(output_names.SMOKE_REPORT, md.smoke_report)
    elif cfg.target == "local":
        # A QEMU VM on this machine: `llmdeploy local up` on create, `llmdeploy local down` on delete.
        lv = LocalVmEndpoint(name, cfg, raw)
        pulumi.export(output_names.ENDPOINT_URL, lv.endpoint_url)
        pulumi.export(output_names.OPENAI_BASE_URL, lv.endpoint_url.apply(lambda url: f"{url}/v1"))
        pulumi.export(output_names.API_KEYS, lv.api_keys)
        pulumi.export(output_names.SMOKE_REPORT, lv.smoke_report)
    else:
        raise pulumi.RunError(f"target: got '{cfg.target}'; expected vm, ray, datascience or local")


main()
