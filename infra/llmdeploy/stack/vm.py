"""Target `vm`: a GPU (or CPU) VM whose user-data makes it an LLM endpoint, a reserved public IP, an
optional DNS record, generated API keys, and the readiness and smoke gates."""
from __future__ import annotations

import pulumi
import pulumi_random as random
from pulumi_command import remote
from pulumi_oci import core, dns, identity

from .. import addresses
from ..config import OSES, StackConfig
from ..render import encode_user_data, render
from ..shapes import Shape
from ..secrets import KEY_PREFIX
from . import gates
from .network import Network

KEY_LENGTH = 43  # random part of a key: 43 letters and digits, about 256 bits


def availability_domain(cfg: StackConfig) -> pulumi.Input[str]:
    if cfg.availability_domain:
        return cfg.availability_domain
    domains = identity.get_availability_domains_output(compartment_id=cfg.compartment_id)
    return domains.availability_domains.apply(lambda ads: ads[0].name)


# OCI's plain platform images are named <OS>-<version>-<date>-<build> (Canonical-Ubuntu-22.04-2025.10.31-0); the
# Minimal, aarch64 and GPU builds add a word after the version. OCI builds GPU images of Oracle Linux only, so on
# every shape llmdeploy boots the plain image and installs NVIDIA's driver itself (step 25-nvidia).
PLATFORM_IMAGE_PREFIX = {"ubuntu-22.04": "Canonical-Ubuntu-22.04", "ubuntu-24.04": "Canonical-Ubuntu-24.04",
                         "debian-12": "Debian-12"}


def plain_image_regex(os_key: str) -> str:
    """The display name of the OS's plain platform image, anchored: the provider's regex filter matches anywhere."""
    # Only dots need escaping; Go's RE2 (the provider) and Python read this the same way.
    return "^" + PLATFORM_IMAGE_PREFIX[os_key].replace(".", r"\.") + r"-[0-9]{4}\.[0-9]{2}\.[0-9]{2}-[0-9]+$"


def image_id(cfg: StackConfig) -> pulumi.Input[str]:
    """The image from config, or the newest plain platform image of the OS that runs on the shape."""
    if cfg.image_id:
        return cfg.image_id
    os_name, os_version = OSES[cfg.os]
    filters = [core.GetImagesFilterArgs(name="display_name", values=[plain_image_regex(cfg.os)], regex=True)]
    images = core.get_images_output(compartment_id=cfg.compartment_id, operating_system=os_name,
                                    operating_system_version=os_version, shape=cfg.shape.name,
                                    sort_by="TIMECREATED", sort_order="DESC", filters=filters)

    def newest(found: list[core.outputs.GetImagesImageResult]) -> str:
        if not found:
            raise ValueError(f"no {os_name} {os_version} platform image (named {PLATFORM_IMAGE_PREFIX[cfg.os]}-<date>-<n>, "
                             f"not Minimal or aarch64) runs on {cfg.shape.name} in this region; pick another os "
                             f"(pulumi config set os ubuntu-22.04) or set an image "
                             f"(pulumi config set imageId ocid1.image...)")
        return found[0].id

    return images.images.apply(newest)


def shape_config(cfg: StackConfig) -> core.InstanceShapeConfigArgs | None:
    if not cfg.shape.flex:
        return None
    return core.InstanceShapeConfigArgs(ocpus=float(cfg.shape_ocpus), memory_in_gbs=float(cfg.shape_memory_gbs))


def reserved_ip(name: str, cfg: StackConfig, instance: core.Instance, tags: dict[str, str],
                parent: pulumi.Resource) -> core.PublicIp:
    """A reserved public IP on the instance's primary private IP: it survives instance replacement."""
    vnic_id = core.get_vnic_attachments_output(compartment_id=cfg.compartment_id, instance_id=instance.id) \
        .vnic_attachments.apply(lambda attachments: attachments[0].vnic_id)
    private_ip_id = core.get_private_ips_output(vnic_id=vnic_id).private_ips.apply(lambda ips: ips[0].id)
    return core.PublicIp(f"{name}-ip", compartment_id=cfg.compartment_id, lifetime="RESERVED",
                         private_ip_id=private_ip_id, display_name=f"{name}-ip", freeform_tags=tags,
                         opts=pulumi.ResourceOptions(parent=parent))


def launch(name: str, cfg: StackConfig, user_data: str, subnet_id: pulumi.Input[str],
           nsg_ids: list[pulumi.Input[str]], hostname: str, tags: dict[str, str], opts: pulumi.ResourceOptions,
           shape: Shape | None = None, private_ip: str | None = None) -> core.Instance:
    """An instance booting user_data, without a public IP of its own (a reserved one is attached, or none)."""
    shape = shape or cfg.shape
    return core.Instance(
        name, availability_domain=availability_domain(cfg), compartment_id=cfg.compartment_id,
        shape=shape.name, shape_config=shape_config(cfg) if shape.flex else None, display_name=name,
        source_details=core.InstanceSourceDetailsArgs(source_type="image", source_id=image_id(cfg),
                                                      boot_volume_size_in_gbs=str(cfg.boot_volume_gbs)),
        create_vnic_details=core.InstanceCreateVnicDetailsArgs(
            subnet_id=subnet_id, assign_public_ip="false", nsg_ids=nsg_ids, hostname_label=hostname,
            private_ip=private_ip),
        metadata={"ssh_authorized_keys": "\n".join(cfg.ssh_public_keys), "user_data": encode_user_data(user_data)},
        preserve_boot_volume=False, freeform_tags=tags, opts=opts)


def dns_record(name: str, cfg: StackConfig, ip: core.PublicIp, opts: pulumi.ResourceOptions) -> list[dns.Rrset]:
    """The A record of cfg.domain, when the project manages the zone."""
    if not (cfg.dns_zone and cfg.domain):
        return []
    return [dns.Rrset(f"{name}-dns", zone_name_or_id=cfg.dns_zone, domain=cfg.domain, rtype="A",
                      compartment_id=cfg.compartment_id, opts=opts,
                      items=[dns.RrsetItemArgs(domain=cfg.domain, rdata=ip.ip_address, rtype="A", ttl=300)])]


def api_keys(name: str, cfg: StackConfig, opts: pulumi.ResourceOptions
             ) -> tuple[list[random.RandomPassword], pulumi.Output[dict[str, str]]]:
    """A generated key per apiKeys name (secret), and the passwords behind them (their IDs trigger readiness)."""
    passwords = {k.name: random.RandomPassword(f"{name}-key-{k.name}", length=KEY_LENGTH, special=False,
                                               opts=opts) for k in cfg.auth.api_keys}
    # Output.all() with no arguments gives a list, not a dict: a basic-auth-only stack has no keys.
    keys: pulumi.Output[dict[str, str]] = pulumi.Output.all(**{n: p.result for n, p in passwords.items()}).apply(
        lambda found: {n: KEY_PREFIX + v for n, v in found.items()}) if passwords else pulumi.Output.from_input({})
    return list(passwords.values()), pulumi.Output.secret(keys)


def smoke_environment(cfg: StackConfig, keys: pulumi.Output[dict[str, str]], ca_certificate: pulumi.Output[str],
                      acme_roots: str) -> dict[str, pulumi.Input[str]]:
    """What the smoke gate needs: the CAs to trust and the first key (or basic-auth password), as secrets."""
    env: dict[str, pulumi.Input[str]] = {"LLMDEPLOY_CA_PEM": ca_certificate, "LLMDEPLOY_ACME_ROOTS_PEM": acme_roots,
                                         "LLMDEPLOY_SMOKE_CA_BUNDLE": cfg.smoke_ca_bundle}
    if cfg.auth.api_keys:
        first_key = cfg.auth.api_keys[0].name
        env["LLMDEPLOY_API_KEY"] = keys.apply(lambda found: found[first_key])
    else:  # basic-auth users only
        user = cfg.auth.basic_users[0]
        env["LLMDEPLOY_BASIC_USER"] = user
        env["LLMDEPLOY_BASIC_PASSWORD"] = pulumi.Output.secret(cfg.auth.basic_passwords[user].reveal())
    return env


def replica_nsgs(cfg: StackConfig, network: Network) -> list[pulumi.Input[str]]:
    """The cluster NSG, for the head and its engine replicas (replicas > 1) to reach each other."""
    if cfg.replicas < 2:
        return []
    assert network.cluster_nsg_id is not None, "Network builds the cluster NSG when replicas > 1"
    return [network.cluster_nsg_id]


def launch_replicas(name: str, cfg: StackConfig, network: Network, tags: dict[str, str],
                    opts: pulumi.ResourceOptions) -> list[str]:
    """Engine VMs 2..replicas: private IPs only (the workers' subnet, out through the NAT gateway), the engine
    alone, reached by the head's nginx through the cluster NSG. They need no secret (hfToken is refused with
    replicas), so nothing is delivered to them; nginx passes over one until it answers. Returns their IPs."""
    ips = addresses.worker_ips(cfg.replicas - 1)
    for index, replica_ip in enumerate(ips):
        assert network.worker_subnet_id is not None
        launch(f"{name}-replica-{index}", cfg, render(cfg, worker=index).user_data, network.worker_subnet_id,
               replica_nsgs(cfg, network), f"replica{index}", tags, opts, private_ip=replica_ip)
    return ips


class PublicEndpoint(pulumi.ComponentResource):
    """An endpoint behind a reserved public IP with nginx in front: the vm target's VM, the ray target's head."""

    endpoint_url: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    api_keys: pulumi.Output[dict[str, str]]
    ca_certificate: pulumi.Output[str]
    smoke_report: pulumi.Output[str]

    def _publish(self, name: str, cfg: StackConfig, ip: core.PublicIp, ready: remote.Command, acme_roots: str) -> None:
        """The URL, the CA readiness printed, the smoke gate after readiness; then the component's outputs."""
        host = cfg.domain or None
        self.public_ip = ip.ip_address
        self.endpoint_url = ip.ip_address.apply(lambda addr: f"https://{host or addr}")
        self.ca_certificate = ready.stdout.apply(gates.ca_from_readiness)
        env = smoke_environment(cfg, self.api_keys, self.ca_certificate, acme_roots)
        check = gates.smoke(name, self.endpoint_url, "openai", cfg.model_name, env, [ready], self)
        self.smoke_report = check.stdout
        self.register_outputs({"endpointUrl": self.endpoint_url, "publicIp": self.public_ip,
                               "apiKeys": self.api_keys, "caCertificate": self.ca_certificate})


class VmEndpoint(PublicEndpoint):
    replica_ips: list[str]  # the engine replicas' private IPs (replicas > 1), behind this VM's nginx

    def __init__(self, name: str, cfg: StackConfig, tags: dict[str, str], network: Network | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        gates.check_connection_settings(cfg)  # before anything is registered
        acme_roots = gates.smoke_acme_roots(cfg)
        super().__init__("llmdeploy:vm:VmEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = network or Network(f"{name}-net", cfg, tags, opts=child)  # a workshop shares one
        instance = launch(f"{name}-instance", cfg, render(cfg).user_data, network.subnet_id,
                          [network.nsg_id, *replica_nsgs(cfg, network)], "llm", tags, child)
        self.replica_ips = launch_replicas(name, cfg, network, tags, child)
        ip = reserved_ip(name, cfg, instance, tags, self)
        waits_for: list[pulumi.Resource] = [instance, ip, *dns_record(name, cfg, ip, child)]
        passwords, self.api_keys = api_keys(name, cfg, child)
        ready = gates.readiness(name, cfg, ip.ip_address, self.api_keys, waits_for,
                                [instance.id, *[p.id for p in passwords]], self)
        self._publish(name, cfg, ip, ready, acme_roots)
