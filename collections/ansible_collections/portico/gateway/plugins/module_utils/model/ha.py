# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HA settings of all gateways, checked together before any host is touched.

A gateway's own role can check its own variables; only a view over every gateway sees a VRID that
two VRRP groups share, two gateways with one BGP router-id, or a pair that disagrees about which
addresses move together. Input per host: the inventory variables ``portico_ha_mode``,
``keepalived_instances``, ``frr_asn``, ``frr_router_id``, ``frr_peers``, ``nftables_snat_source4/6``.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem

HA_MODES = ("single", "vrrp", "bgp")
MAX_ASN = 4294967295


@dataclass(frozen=True)
class VrrpInstance:
    host: str
    name: str
    interface: str
    vrid: int
    priority: int
    addresses: tuple[str, ...]


@dataclass
class HaReport:
    problems: list[Problem] = field(default_factory=list)
    instances: list[VrrpInstance] = field(default_factory=list)

    def add(self, subject: str, where: str, message: str) -> None:
        """``subject``: a gateway host, or a VRRP group (``VRRP instance <name>``)."""
        self.problems.append(Problem(subject, where, message))

    def across(self, message: str) -> None:
        """A problem of several gateways together (the message names them)."""
        self.problems.append(Problem("", "", message))


def _int_in(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high and str(number) == str(value).strip() else None


def _canonical_addresses(host: str, where: str, raw: Any, report: HaReport) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        report.add(host, where, f"expected a list of addresses with prefix length, got {raw!r}")
        return ()
    found: list[str] = []
    for index, text in enumerate(raw):
        try:
            found.append(str(ipaddress.ip_interface(str(text))))
        except ValueError:
            report.add(host, f"{where}[{index}]", f"{text!r} is not an address with prefix length")
    return tuple(sorted(found))


def _vrrp_instances(host: str, raw: Any, default_priority: Any, report: HaReport) -> list[VrrpInstance]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        report.add(host, "keepalived_instances", f"expected a list, got {type(raw).__name__}")
        return []
    instances: list[VrrpInstance] = []
    for index, item in enumerate(raw):
        where = f"keepalived_instances[{index}]"
        if not isinstance(item, Mapping):
            report.add(host, where, "expected a mapping")
            continue
        name = str(item.get("name") or "")
        if name:
            where = f"{where} ({name})"
        else:
            report.add(host, where, "name is required")
        vrid = _int_in(item.get("vrid"), 1, 255)
        if vrid is None:
            report.add(host, f"{where}.vrid", f"expected an integer 1-255, got {item.get('vrid')!r}")
        priority = _int_in(item.get("priority", default_priority), 1, 254)
        if priority is None:
            report.add(host, f"{where}.priority", f"expected an integer 1-254, got {item.get('priority')!r}")
        interface = str(item.get("interface") or "")
        if not interface:
            report.add(host, f"{where}.interface", "is required")
        addresses = _canonical_addresses(host, f"{where}.addresses", item.get("addresses", []), report)
        if name and vrid is not None and priority is not None and interface:
            instances.append(VrrpInstance(host, name, interface, vrid, priority, addresses))
    seen: dict[tuple[str, int], str] = {}
    for instance in instances:
        key = (instance.interface, instance.vrid)
        if key in seen and seen[key] != instance.name:
            report.add(host, "keepalived_instances",
                       f"duplicate VRID {instance.vrid} on {instance.interface}: instances {seen[key]} and {instance.name}")
        seen.setdefault(key, instance.name)
    return instances


def _check_vrrp_across_hosts(instances: Sequence[VrrpInstance], report: HaReport) -> None:
    by_vrid: dict[tuple[str, int], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    by_name: dict[str, list[VrrpInstance]] = defaultdict(list)
    for instance in instances:
        by_vrid[(instance.interface, instance.vrid)][instance.name].append(instance.host)
        by_name[instance.name].append(instance)
    for (interface, vrid), names in sorted(by_vrid.items()):
        if len(names) > 1:
            users = "; ".join(f"instance {name} on {', '.join(sorted(hosts))}" for name, hosts in sorted(names.items()))
            report.across(f"duplicate VRID {vrid} on {interface}: {users} (each VRRP group needs its own VRID)")
    for name, members in sorted(by_name.items()):
        first = members[0]
        for other in members[1:]:
            if other.vrid != first.vrid or other.interface != first.interface:
                report.add(
                    f"VRRP instance {name}", "", f"{first.host} uses VRID {first.vrid} on {first.interface}, "
                    f"{other.host} uses VRID {other.vrid} on {other.interface}; the members of one group must agree")
            if other.addresses != first.addresses:
                report.add(
                    f"VRRP instance {name}", "", f"{first.host} and {other.host} list different addresses; "
                    "the addresses that move together must be the same on every member")
        if len(members) > 1:
            top = max(member.priority for member in members)
            tied = sorted(member.host for member in members if member.priority == top)
            if len(tied) > 1:
                report.add(
                    f"VRRP instance {name}", "", f"{', '.join(tied)} share the highest priority {top}; "
                    "give the intended master a higher priority")


def _bgp_settings(host: str, hostvars: Mapping[str, Any], report: HaReport) -> str | None:
    asn = hostvars.get("frr_asn")
    if _int_in(asn, 1, MAX_ASN) is None:
        report.add(host, "frr_asn", f"expected an AS number 1-{MAX_ASN}, got {asn!r}")
    router_id = hostvars.get("frr_router_id")
    try:
        router_id = str(ipaddress.IPv4Address(str(router_id)))
    except ValueError:
        report.add(host, "frr_router_id", f"expected an IPv4 address, got {router_id!r}")
        router_id = None
    peers = hostvars.get("frr_peers")
    if not isinstance(peers, list) or not peers:
        report.add(host, "frr_peers", "BGP mode needs at least one peer")
        return router_id
    addresses: set[str] = set()
    for index, peer in enumerate(peers):
        where = f"frr_peers[{index}]"
        if not isinstance(peer, Mapping):
            report.add(host, where, "expected a mapping")
            continue
        try:
            address = str(ipaddress.ip_address(str(peer.get("address"))))
            where = f"{where} ({address})"
        except ValueError:
            report.add(host, f"{where}.address", f"expected an IP address, got {peer.get('address')!r}")
            address = ""
        if "asn" not in peer or peer.get("asn") in (None, ""):
            report.add(host, where, "asn is required (the peer's AS number)")
        elif _int_in(peer.get("asn"), 1, MAX_ASN) is None:
            report.add(host, f"{where}.asn", f"expected an AS number 1-{MAX_ASN}, got {peer.get('asn')!r}")
        if address and address in addresses:
            report.add(host, where, "listed twice")
        addresses.add(address)
    return router_id


def _check_unique(report: HaReport, what: str, owners: Mapping[str, list[str]]) -> None:
    for value, hosts in sorted(owners.items()):
        if len(hosts) > 1:
            report.across(f"{what} clash: {', '.join(sorted(hosts))} all use {value}")


def check_gateways(gateways: Mapping[str, Mapping[str, Any]]) -> HaReport:
    """``gateways``: host name -> that host's variables. Returns every problem found, in host order."""
    report = HaReport()
    router_ids: dict[str, list[str]] = defaultdict(list)
    snat_sources: dict[str, list[str]] = defaultdict(list)
    for host in sorted(gateways):
        hostvars = gateways[host]
        mode = hostvars.get("portico_ha_mode", "single")
        if mode not in HA_MODES:
            report.add(host, "portico_ha_mode", f"expected one of {', '.join(HA_MODES)}, got {mode!r}")
            continue
        instances = _vrrp_instances(host, hostvars.get("keepalived_instances") if mode != "single" else None,
                                    hostvars.get("keepalived_priority", 100), report)
        report.instances.extend(instances)
        if mode == "vrrp" and not any(isinstance(i, Mapping) and i.get("vips")
                                      for i in hostvars.get("keepalived_instances") or []):
            report.add(host, "keepalived_instances", "VRRP mode needs an instance with vips: true to carry the VIPs")
        if mode == "bgp":
            router_id = _bgp_settings(host, hostvars, report)
            if router_id:
                router_ids[router_id].append(host)
            for name in ("nftables_snat_source4", "nftables_snat_source6"):
                if hostvars.get(name):
                    snat_sources[str(hostvars[name])].append(host)
    _check_vrrp_across_hosts(report.instances, report)
    _check_unique(report, "BGP router-id", router_ids)
    _check_unique(report, "SNAT return address (nftables_snat_source4/6)", snat_sources)
    return report
