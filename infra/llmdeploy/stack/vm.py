"""Target `vm`: a GPU (or CPU) VM whose user-data makes it an LLM endpoint, a reserved public IP, an
optional DNS record, generated API keys, and the readiness and smoke gates."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import remote
from pulumi_oci import core, dns, identity

from .. import addresses
from ..config import OSES, Secret, StackConfig
from ..bundle import Provisioning
from ..render import render
from ..shapes import Shape
from ..topology import nodes
from . import gates
from .api_keys import generate_api_keys, pulumi_webui_secret_key
from .autostop import AutostopArgs, AutostopIdentity
from .network import Network, NetworkArgs


@dataclass(frozen=True)
class SmokeLogin:
    """How the smoke test logs in: with the API key of that name, or (a stack with basic-auth users only) as
    basic_user with its password."""

    key_name: str
    basic_user: str = ""
    basic_password: Secret = Secret("")

    @classmethod
    def from_config(cls, cfg: StackConfig) -> SmokeLogin:
        if cfg.auth.api_keys:
            return cls(cfg.auth.api_keys[0].name)
        user = cfg.auth.basic_users[0]
        return cls("", user, cfg.auth.basic_passwords[user])


@dataclass(frozen=True)
class VmArgs:
    """What a VmEndpoint is built from: the machine, its user-data, its keys and the two gates' settings."""

    compartment_id: str
    availability_domain: str  # "": the region's first
    shape: Shape
    shape_ocpus: int
    shape_memory_gbs: int
    os: str
    image_id: pulumi.Input[str]  # "": the newest plain platform image of os; an Output: the image this program bakes
    boot_volume_gbs: int
    ssh_public_keys: tuple[str, ...]
    boot: Provisioning  # render(cfg).provisioning: the bootstrap user-data and the bundle, no secret in them
    domain: str
    dns_zone: str
    api_key_names: tuple[str, ...]
    readiness: gates.ReadinessArgs
    model_name: str
    smoke_login: SmokeLogin
    smoke_ca_bundle: str
    acme_roots: str  # gates.smoke_acme_roots
    network: NetworkArgs  # the VM's own network, when it is not given one to share
    # replicas > 1: what engine replicas 2..N boot, replica i at addresses.worker_ip(i) (empty: one VM)
    replica_boots: tuple[Provisioning, ...] = ()
    chat_host: str = ""  # the chat frontend's host name (chatUi), on the same VM; "": none
    autostop: AutostopArgs | None = None  # idleStopMinutes/ttlHours: the identity its agent acts as; None: off

    @property
    def chat_url(self) -> str:
        """The chat frontend's sign-in page, or "" without one."""
        return f"https://{self.chat_host}/_login" if self.chat_host else ""

    @classmethod
    def from_config(cls, cfg: StackConfig, ssh: gates.SshAuth, tenancy_id: str = "") -> VmArgs:
        """ValueError for a config the smoke test could not check (gates.smoke_acme_roots), for instance metadata
        over OCI's limit, or for autostop without the tenancy its dynamic group lives in."""
        if cfg.autostop.enabled and not tenancy_id:
            raise ValueError("idleStopMinutes/ttlHours: the autostop agent's dynamic group lives in the tenancy, whose "
                             "OCID is unknown (pulumi config set oci:tenancyOcid ocid1.tenancy.oc1..xxxx)")
        boot = checked_boot(cfg.stack or "the stack", render(cfg).provisioning)
        replicas = tuple(checked_boot(f"replica {n.index}", render(cfg, node=n).provisioning)
                         for n in nodes(cfg) if n.is_replica)
        return cls(
            compartment_id=cfg.compartment_id, availability_domain=cfg.availability_domain, shape=cfg.shape,
            shape_ocpus=cfg.shape_ocpus, shape_memory_gbs=cfg.shape_memory_gbs, os=cfg.os, image_id=cfg.image_id,
            boot_volume_gbs=cfg.boot_volume_gbs, ssh_public_keys=cfg.ssh_public_keys,
            boot=boot, domain=cfg.domain, dns_zone=cfg.dns_zone,
            api_key_names=tuple(k.name for k in cfg.auth.api_keys), readiness=gates.ReadinessArgs.from_config(cfg, ssh),
            model_name=cfg.model_name, smoke_login=SmokeLogin.from_config(cfg), smoke_ca_bundle=cfg.smoke_ca_bundle,
            acme_roots=gates.smoke_acme_roots(cfg), network=NetworkArgs.from_config(cfg),
            chat_host=cfg.chat.host if cfg.chat.enabled else "",
            replica_boots=replicas, autostop=AutostopArgs.from_config(cfg, tenancy_id))


def checked_boot(machine: str, boot: Provisioning) -> Provisioning:
    """boot, or a ValueError (before any resource) when OCI would refuse its metadata."""
    problem = boot.metadata_problem(machine)
    if problem:
        raise ValueError(problem)
    return boot


def availability_domain(args: VmArgs) -> pulumi.Input[str]:
    if args.availability_domain:
        return args.availability_domain
    domains = identity.get_availability_domains_output(compartment_id=args.compartment_id)
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


def image_id(args: VmArgs) -> pulumi.Input[str]:
    """The image from config, or the newest plain platform image of the OS that runs on the shape."""
    if args.image_id:
        return args.image_id
    os_name, os_version = OSES[args.os]
    filters = [core.GetImagesFilterArgs(name="display_name", values=[plain_image_regex(args.os)], regex=True)]
    images = core.get_images_output(compartment_id=args.compartment_id, operating_system=os_name,
                                    operating_system_version=os_version, shape=args.shape.name,
                                    sort_by="TIMECREATED", sort_order="DESC", filters=filters)

    def newest(found: list[core.outputs.GetImagesImageResult]) -> str:
        if not found:
            raise ValueError(f"no {os_name} {os_version} platform image (named {PLATFORM_IMAGE_PREFIX[args.os]}-<date>-<n>, "
                             f"not Minimal or aarch64) runs on {args.shape.name} in this region; pick another os "
                             f"(pulumi config set os ubuntu-22.04) or set an image "
                             f"(pulumi config set imageId ocid1.image...)")
        return found[0].id

    return images.images.apply(newest)


def shape_config(args: VmArgs) -> core.InstanceShapeConfigArgs | None:
    if not args.shape.flex:
        return None
    return core.InstanceShapeConfigArgs(ocpus=float(args.shape_ocpus), memory_in_gbs=float(args.shape_memory_gbs))


def reserved_ip(name: str, compartment_id: str, instance: core.Instance, tags: dict[str, str],
                parent: pulumi.Resource) -> core.PublicIp:
    """A reserved public IP on the instance's primary private IP: it survives instance replacement."""
    vnic_id = core.get_vnic_attachments_output(compartment_id=compartment_id, instance_id=instance.id) \
        .vnic_attachments.apply(lambda attachments: attachments[0].vnic_id)
    private_ip_id = core.get_private_ips_output(vnic_id=vnic_id).private_ips.apply(lambda ips: ips[0].id)
    return core.PublicIp(f"{name}-ip", compartment_id=compartment_id, lifetime="RESERVED",
                         private_ip_id=private_ip_id, display_name=f"{name}-ip", freeform_tags=tags,
                         opts=pulumi.ResourceOptions(parent=parent))


def launch_instance(name: str, args: VmArgs, boot: Provisioning, subnet_id: pulumi.Input[str],
                    nsg_ids: list[pulumi.Input[str]],
                    hostname: str, tags: dict[str, str], opts: pulumi.ResourceOptions, shape: Shape | None = None,
                    private_ip: str | None = None) -> core.Instance:
    """An instance booting boot's user-data with no public IP of its own (a reserved one is attached, or none); shape
    and private_ip for a Ray worker (its own shape, a fixed address)."""
    shape = shape or args.shape
    return core.Instance(
        name, availability_domain=availability_domain(args), compartment_id=args.compartment_id,
        shape=shape.name, shape_config=shape_config(args) if shape.flex else None, display_name=name,
        source_details=core.InstanceSourceDetailsArgs(source_type="image", source_id=image_id(args),
                                                      boot_volume_size_in_gbs=str(args.boot_volume_gbs)),
        create_vnic_details=core.InstanceCreateVnicDetailsArgs(
            subnet_id=subnet_id, assign_public_ip="false", nsg_ids=nsg_ids, hostname_label=hostname,
            private_ip=private_ip),
        metadata=boot.metadata(),
        preserve_boot_volume=False, freeform_tags=tags, opts=opts)


def dns_record(name: str, args: VmArgs, ip: core.PublicIp, opts: pulumi.ResourceOptions) -> list[dns.Rrset]:
    """The A record of the domain, when the project manages the zone, and the chat frontend's beside it (its
    certificate names both)."""
    if not (args.dns_zone and args.domain):
        return []
    records = {"dns": args.domain, **({"chat-dns": args.chat_host} if args.chat_host else {})}
    return [dns.Rrset(f"{name}-{role}", zone_name_or_id=args.dns_zone, domain=host, rtype="A",
                      compartment_id=args.compartment_id, opts=opts,
                      items=[dns.RrsetItemArgs(domain=host, rdata=ip.ip_address, rtype="A", ttl=300)])
            for role, host in records.items()]


def replica_nsgs(args: VmArgs, network: Network) -> list[pulumi.Input[str]]:
    """The cluster NSG, for the head and its engine replicas (replicas > 1) to reach each other."""
    if not args.replica_boots:
        return []
    assert network.cluster_nsg_id is not None, "Network builds the cluster NSG when replicas > 1"
    return [network.cluster_nsg_id]


def head_private_ip(args: VmArgs) -> str | None:
    """With replicas, the head's fixed private IP: each replica's firewall admits its engine's callers from there
    only. None (OCI picks) for one VM."""
    return addresses.head_ip() if args.replica_boots else None


def launch_replicas(name: str, args: VmArgs, network: Network, tags: dict[str, str],
                    opts: pulumi.ResourceOptions) -> list[tuple[str, core.Instance]]:
    """Engine VMs 2..replicas: private IPs only (the workers' subnet, out through the NAT gateway), the engine
    alone, reached by the head's nginx through the cluster NSG (and, on the replica, from the head only). Returns
    (IP, instance) of each, for its readiness gate."""
    ips = addresses.worker_ips(len(args.replica_boots))
    replicas = []
    for index, (replica_ip, boot) in enumerate(zip(ips, args.replica_boots)):
        assert network.worker_subnet_id is not None
        replicas.append((replica_ip, launch_instance(f"{name}-replica-{index}", args, boot, network.worker_subnet_id,
                                                     replica_nsgs(args, network), f"replica{index}", tags, opts,
                                                     private_ip=replica_ip)))
    return replicas


class PublicEndpoint(pulumi.ComponentResource):
    """An endpoint behind a reserved public IP with nginx in front: the vm target's VM, the ray target's head."""

    endpoint_url: pulumi.Output[str]
    chat_url: str
    public_ip: pulumi.Output[str]
    api_keys: pulumi.Output[dict[str, str]]
    ca_certificate: pulumi.Output[str]
    smoke_report: pulumi.Output[str]

    def _publish(self, name: str, args: VmArgs, ip: core.PublicIp, ready: remote.Command,
                 more_ready: Sequence[remote.Command] = ()) -> None:
        """The URL, the CA readiness printed, the smoke gate after readiness (and more_ready: each engine
        replica's); then the component's outputs."""
        host = args.domain or None
        self.public_ip = ip.ip_address
        self.endpoint_url = ip.ip_address.apply(lambda addr: f"https://{host or addr}")
        self.chat_url = args.chat_url
        self.ca_certificate = ready.stdout.apply(gates.ca_from_readiness)
        check = gates.smoke(name, self.endpoint_url, "openai", args.model_name, self._smoke_env(args),
                             [ready, *more_ready], self)
        self.smoke_report = check.stdout
        self.register_outputs({"endpointUrl": self.endpoint_url, "publicIp": self.public_ip,
                               "apiKeys": self.api_keys, "caCertificate": self.ca_certificate})

    def _smoke_env(self, args: VmArgs) -> dict[str, pulumi.Input[str]]:
        env: dict[str, pulumi.Input[str]] = {"LLMDEPLOY_CA_PEM": self.ca_certificate,
                                             "LLMDEPLOY_ACME_ROOTS_PEM": args.acme_roots,
                                             "LLMDEPLOY_SMOKE_CA_BUNDLE": args.smoke_ca_bundle}
        login = args.smoke_login
        if login.key_name:
            env["LLMDEPLOY_API_KEY"] = self.api_keys.apply(lambda keys: keys[login.key_name])
            if args.chat_url:  # chatUi: the chat host's sign-in too, with the same key
                env["LLMDEPLOY_SMOKE_CHAT_URL"] = args.chat_url
        else:  # basic-auth users only
            env["LLMDEPLOY_BASIC_USER"] = login.basic_user
            env["LLMDEPLOY_BASIC_PASSWORD"] = pulumi.Output.secret(login.basic_password.reveal())
        return env


class VmEndpoint(PublicEndpoint):
    replica_ips: list[str]  # the engine replicas' private IPs (replicas > 1), behind this VM's nginx
    instance_id: pulumi.Output[str]

    def __init__(self, name: str, args: VmArgs, tags: dict[str, str], network: Network | None = None,
                 opts: pulumi.ResourceOptions | None = None, own_autostop: bool = True) -> None:
        """own_autostop False: the caller (a workshop) makes one autostop identity for all its VMs."""
        super().__init__("llmdeploy:vm:VmEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = network or Network(f"{name}-net", args.network, tags, opts=child)  # a workshop shares one
        instance = launch_instance(f"{name}-instance", args, args.boot, network.subnet_id,
                                   [network.nsg_id, *replica_nsgs(args, network)], "llm", tags, child,
                                   private_ip=head_private_ip(args))
        replicas = launch_replicas(name, args, network, tags, child)
        self.instance_id = instance.id  # a workshop's autostop identity names every endpoint's instance
        if args.autostop is not None and own_autostop:  # the identity its autostop agent acts as: itself only
            AutostopIdentity(name, args.autostop, [instance.id], tags, child)
        self.replica_ips = [replica_ip for replica_ip, _ in replicas]
        ip = reserved_ip(name, args.compartment_id, instance, tags, self)
        # Each replica's own gate (through the head): `pulumi up` fails while any replica's engine does not answer.
        replicas_ready = [gates.replica_readiness(f"{name}-replica-{index}", args.readiness, replica_ip,
                                                  ip.ip_address, [replica, instance, ip], [replica.id], self,
                                                  boot.bundle)
                          for index, ((replica_ip, replica), boot) in enumerate(zip(replicas, args.replica_boots))]
        waits_for: list[pulumi.Resource] = [instance, ip, *dns_record(name, args, ip, child)]
        keys = generate_api_keys(name, list(args.api_key_names), self)
        self.api_keys = keys.values
        # Open WebUI's WEBUI_SECRET_KEY (chatUi open-webui), delivered with the API keys.
        webui_key = pulumi_webui_secret_key(name, self) if args.readiness.secrets.webui else ""
        ready = gates.readiness(name, args.readiness, ip.ip_address, self.api_keys, waits_for,
                                [instance.id, *keys.ids], self, args.boot.bundle, webui_secret_key=webui_key)
        self._publish(name, args, ip, ready, replicas_ready)
