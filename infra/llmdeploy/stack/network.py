"""The VM's network: a VCN with one regional public subnet, and a network security group that lets in
TCP 22 (from the allowed CIDRs), 80 and 443, and nothing else. On the ray target (and with replicas > 1, for
the engine replicas) also a private subnet for the workers (out through a NAT gateway, no public IPs) and the
cluster's NSG, whose one ingress rule admits its own members only (Ray, NCCL and Gloo use fixed and ephemeral
ports alike)."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pulumi
from pulumi_oci import core

from ..addresses import SUBNET_CIDR, VCN_CIDR, WORKER_SUBNET_CIDR
from ..config import StackConfig

PUBLIC_PORTS = (80, 443)
SSH_PORT = 22
TCP, ICMP = "6", "1"


def dns_label(stack: str) -> str:
    """OCI DNS labels: at most 15 letters and digits, starting with a letter."""
    label = re.sub(r"[^a-z0-9]", "", stack.lower())
    return ("llm" + label)[:15] if not label[:1].isalpha() else label[:15]


def tcp_ingress(port: int) -> core.NetworkSecurityGroupSecurityRuleTcpOptionsArgs:
    return core.NetworkSecurityGroupSecurityRuleTcpOptionsArgs(
        destination_port_range=core.NetworkSecurityGroupSecurityRuleTcpOptionsDestinationPortRangeArgs(
            min=port, max=port))


def ssh_rule_key(cidr: str) -> str:
    """The SSH rule's name part, from its network (never its list position, so reordering sshAllowedCidrs
    replaces nothing): 10.0.0.0-8, 2001-db8---32 (a URN cannot hold "::"). Spellings of one network agree."""
    network = ipaddress.ip_network(cidr)
    return f"{network.network_address}-{network.prefixlen}".replace(":", "-")


@dataclass(frozen=True)
class NetworkArgs:
    compartment_id: str
    vcn_dns_label: str
    ssh_allowed_cidrs: tuple[str, ...]
    private_nodes: bool = False  # also the private subnet and the cluster NSG: Ray workers, or engine replicas

    @classmethod
    def from_config(cls, cfg: StackConfig) -> NetworkArgs:
        return cls(cfg.compartment_id, dns_label(cfg.stack), cfg.ssh_allowed_cidrs,
                   cfg.deployment.ray_cluster or cfg.replicas > 1)


class Network(pulumi.ComponentResource):
    subnet_id: pulumi.Output[str]
    nsg_id: pulumi.Output[str]
    worker_subnet_id: pulumi.Output[str] | None = None  # ray target, or replicas > 1
    cluster_nsg_id: pulumi.Output[str] | None = None  # ray target, or replicas > 1

    def __init__(self, name: str, args: NetworkArgs, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmdeploy:vm:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        compartment = args.compartment_id
        vcn = core.Vcn(f"{name}-vcn", compartment_id=compartment, cidr_blocks=[VCN_CIDR],
                       display_name=f"{name}-vcn", dns_label=args.vcn_dns_label, freeform_tags=tags, opts=child)
        gateway = core.InternetGateway(f"{name}-igw", compartment_id=compartment, vcn_id=vcn.id, enabled=True,
                                       display_name=f"{name}-igw", freeform_tags=tags, opts=child)
        routes = _default_route(f"{name}-routes", compartment, vcn, gateway.id, tags, child)
        # The subnet's own list only lets traffic out (the VCN's default list would also open SSH to
        # the world); what comes in is the NSG's business alone.
        egress_only = core.SecurityList(f"{name}-egress-only", compartment_id=compartment, vcn_id=vcn.id,
                                        display_name=f"{name}-egress-only", freeform_tags=tags, opts=child,
                                        egress_security_rules=[core.SecurityListEgressSecurityRuleArgs(
                                            destination="0.0.0.0/0", protocol="all")],
                                        ingress_security_rules=[])
        subnet = core.Subnet(f"{name}-subnet", compartment_id=compartment, vcn_id=vcn.id, cidr_block=SUBNET_CIDR,
                             route_table_id=routes.id, security_list_ids=[egress_only.id],
                             prohibit_public_ip_on_vnic=False, dns_label="endpoint",
                             display_name=f"{name}-subnet", freeform_tags=tags, opts=child)
        nsg = core.NetworkSecurityGroup(f"{name}-nsg", compartment_id=compartment, vcn_id=vcn.id,
                                        display_name=f"{name}-nsg", freeform_tags=tags, opts=child)
        self._rules(name, nsg, args.ssh_allowed_cidrs, child)
        self.subnet_id = subnet.id
        self.nsg_id = nsg.id
        outputs: dict[str, pulumi.Input[str]] = {"subnetId": subnet.id, "nsgId": nsg.id, "vcnId": vcn.id}
        if args.private_nodes:  # Ray workers, or engine replicas behind the head
            worker_subnet, cluster_nsg = self._ray_cluster(name, compartment, vcn, egress_only, tags, child)
            self.worker_subnet_id, self.cluster_nsg_id = worker_subnet.id, cluster_nsg.id
            outputs |= {"workerSubnetId": worker_subnet.id, "clusterNsgId": cluster_nsg.id}
        self.register_outputs(outputs)

    @staticmethod
    def _ray_cluster(name: str, compartment: str, vcn: core.Vcn, egress_only: core.SecurityList,
                     tags: dict[str, str], child: pulumi.ResourceOptions
                     ) -> tuple[core.Subnet, core.NetworkSecurityGroup]:
        """The workers' private subnet (pip and the weights come in through the NAT gateway) and the cluster
        NSG: TCP among its members only, so no Ray port is reachable from outside the cluster."""
        nat = core.NatGateway(f"{name}-nat", compartment_id=compartment, vcn_id=vcn.id, display_name=f"{name}-nat",
                              freeform_tags=tags, opts=child)
        routes = _default_route(f"{name}-private-routes", compartment, vcn, nat.id, tags, child)
        subnet = core.Subnet(f"{name}-workers", compartment_id=compartment, vcn_id=vcn.id,
                             cidr_block=WORKER_SUBNET_CIDR, route_table_id=routes.id,
                             security_list_ids=[egress_only.id], prohibit_public_ip_on_vnic=True,
                             dns_label="workers", display_name=f"{name}-workers", freeform_tags=tags, opts=child)
        nsg = core.NetworkSecurityGroup(f"{name}-cluster", compartment_id=compartment, vcn_id=vcn.id,
                                        display_name=f"{name}-cluster", freeform_tags=tags, opts=child)
        core.NetworkSecurityGroupSecurityRule(
            f"{name}-cluster-members", network_security_group_id=nsg.id, direction="INGRESS", protocol=TCP,
            source=nsg.id, source_type="NETWORK_SECURITY_GROUP",
            description="Ray (GCS, raylets, object managers, agents, workers), NCCL and Gloo among the cluster's VMs",
            opts=child)
        core.NetworkSecurityGroupSecurityRule(
            f"{name}-cluster-mtu", network_security_group_id=nsg.id, direction="INGRESS", protocol=ICMP,
            source=nsg.id, source_type="NETWORK_SECURITY_GROUP", description="path MTU discovery in the cluster",
            icmp_options=core.NetworkSecurityGroupSecurityRuleIcmpOptionsArgs(type=3, code=4), opts=child)
        core.NetworkSecurityGroupSecurityRule(f"{name}-cluster-egress", network_security_group_id=nsg.id,
                                              direction="EGRESS", protocol="all", destination="0.0.0.0/0",
                                              destination_type="CIDR_BLOCK", description="all outbound", opts=child)
        return subnet, nsg

    @staticmethod
    def _rules(name: str, nsg: core.NetworkSecurityGroup, ssh_cidrs: tuple[str, ...],
               child: pulumi.ResourceOptions) -> None:
        def ingress(rule: str, source: str, description: str, protocol: str,
                    tcp: core.NetworkSecurityGroupSecurityRuleTcpOptionsArgs | None = None,
                    icmp: core.NetworkSecurityGroupSecurityRuleIcmpOptionsArgs | None = None) -> None:
            core.NetworkSecurityGroupSecurityRule(
                f"{name}-{rule}", network_security_group_id=nsg.id, direction="INGRESS", source=source,
                source_type="CIDR_BLOCK", description=description, protocol=protocol, tcp_options=tcp,
                icmp_options=icmp, opts=child)

        rules: dict[str, str] = {}  # one rule per network: a CIDR listed twice would be two rules of one name
        for cidr in ssh_cidrs:
            rules.setdefault(ssh_rule_key(cidr), cidr)
        for key, cidr in rules.items():
            ingress(f"ssh-{key}", cidr, f"SSH from {cidr}", TCP, tcp=tcp_ingress(SSH_PORT))
        for port in PUBLIC_PORTS:
            ingress(f"tcp-{port}", "0.0.0.0/0", f"nginx on {port}", TCP, tcp=tcp_ingress(port))
        # "Fragmentation needed" must get through, or path MTU discovery breaks large responses.
        ingress("icmp-mtu", "0.0.0.0/0", "path MTU discovery", ICMP,
                icmp=core.NetworkSecurityGroupSecurityRuleIcmpOptionsArgs(type=3, code=4))
        core.NetworkSecurityGroupSecurityRule(f"{name}-egress", network_security_group_id=nsg.id, direction="EGRESS",
                                              protocol="all", destination="0.0.0.0/0",
                                              destination_type="CIDR_BLOCK", description="all outbound", opts=child)


def _default_route(name: str, compartment: str, vcn: core.Vcn, gateway_id: pulumi.Input[str],
                   tags: dict[str, str], child: pulumi.ResourceOptions) -> core.RouteTable:
    """A route table sending everything (0.0.0.0/0) to one gateway: the internet's, or the NAT's."""
    return core.RouteTable(name, compartment_id=compartment, vcn_id=vcn.id, display_name=name, freeform_tags=tags,
                           opts=child, route_rules=[core.RouteTableRouteRuleArgs(
                               network_entity_id=gateway_id, destination="0.0.0.0/0", destination_type="CIDR_BLOCK")])
