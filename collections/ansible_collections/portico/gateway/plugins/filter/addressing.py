# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Addressing filters of the gateway roles: VIP prefixes, pod routes, per-gateway return addresses."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import loadbalancer_items
from ansible_collections.portico.gateway.plugins.plugin_utils.netaddr_filters import netaddr, needing_netaddr


def vip_prefixes(loadbalancers: Any) -> list[str]:
    """Host prefixes (/32, /128) of the distinct VIPs of normalised LBs (a list, or the LB model
    document ``portico_lb_model``), sorted."""
    vips = {netaddr.IPAddress(lb["vip"]) for lb in loadbalancer_items(loadbalancers)}
    return [f"{vip}/{32 if vip.version == 4 else 128}" for vip in sorted(vips)]


def pod_routes(nodes: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Routes {to: pod CIDR, via: node address} from the k8s_services plugin's node list.

    Direct-mode backends are pod IPs: the gateway must reach each node's pod CIDR through that
    node. Each CIDR goes via the node's first internal address of the same family.
    """
    routes: list[dict[str, str]] = []
    for node in nodes:
        addresses = [netaddr.IPAddress(a) for a in node.get("internal_ips") or []]
        for cidr in node.get("pod_cidrs") or []:
            network = netaddr.IPNetwork(cidr)
            via = next((a for a in addresses if a.version == network.version), None)
            if via is not None:
                routes.append({"to": str(network.cidr), "via": str(via)})
    return sorted(routes, key=lambda r: (netaddr.IPNetwork(r["to"]).version, netaddr.IPNetwork(r["to"])))


def return_path_instances(
    hosts: Iterable[str], addresses4: Iterable[str], addresses6: Iterable[str], me: str,
    interface: str = "backend", vrid_base: int = 60, prefix4: int = 24, prefix6: int = 64,
    owner_priority: int = 150, peer_priority: int = 100,
) -> list[dict[str, Any]]:
    """One VRRP instance per active/active gateway for its SNAT return address (keepalived_instances entries).

    Each gateway owns its address (highest priority) and backs up every peer's, so when a gateway
    dies a peer answers for the address its connections were SNATed to. The instances are kept
    out of the sync group: a gateway is master of its own and backup of the others at once. The owner
    takes its address back without preempt delay: once its routes are announced it SNATs new
    connections to that address, and their replies must reach it, not the peer.
    VRIDs follow the group order, so appending a gateway keeps every existing VRID.
    """
    instances: list[dict[str, Any]] = []
    for index, (host, address4, address6) in enumerate(zip(hosts, addresses4, addresses6)):
        addresses = [f"{netaddr.IPAddress(address4)}/{prefix4}"] if address4 else []
        addresses += [f"{netaddr.IPAddress(address6)}/{prefix6}"] if address6 else []
        instances.append({"name": f"RETURN_{host}", "interface": interface, "vrid": vrid_base + index,
                          "priority": owner_priority if host == me else peer_priority,
                          "addresses": addresses, "sync_group": False, "preempt_delay_s": 0})
    return instances


class FilterModule:
    """Addressing filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return needing_netaddr({"vip_prefixes": vip_prefixes, "pod_routes": pod_routes,
                                "return_path_instances": return_path_instances})
