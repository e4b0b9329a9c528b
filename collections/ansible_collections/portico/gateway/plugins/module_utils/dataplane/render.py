# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the LB model into Portico's own nftables table.

Shape (kube-proxy nftables mode, plus Maglev):

* ``nat_prerouting``: one verdict-map lookup ``daddr . l4proto . dport`` to a
  per-service-port chain, so per-packet cost is flat in the number of services.
* ``svc_<lb>_<proto><port>``: ``dnat`` through ``jhash(flow) mod M`` into a
  Maglev slot map filled by ``maglev.lookup_table``; one serving backend is a plain dnat.
* ``backends_<digest>``: the slot maps, one per distinct backend table, not per listener. Listeners
  whose serving backends are the same addresses with the same weights, probed by the same health
  check, share one (``BackendTable``): in nodeport mode every Service with the same nodes and the
  node check of kube-proxy. When every backend of a listener has the same target port the map holds
  addresses only and the rule adds the port (``map @backends_x : 30598``); backends with ports of
  their own keep ``address . port`` elements. Sharing needs one health verdict per backend for
  all its LBs: the health checker probes each check identity once, and LBs of one health group
  (``health_group``) always withhold the same backends.
* Client-IP affinity (Kubernetes' ``ClientIP``, as kube-proxy's nftables mode does it): one
  dynamic set per backend (``affm_*``) remembers the clients sent there, each for the timeout
  after its last new connection (``update`` in the backend's chain ``affep_*`` re-arms it). The
  service chain sends a remembered client to its backend, every other through a Maglev table of
  verdicts (``jhash saddr vmap``, slot -> goto a backend's chain). The kernel fills the sets, so
  a replaced table gets their live elements back (``remembered_clients_script``), and the health
  checker empties a backend's set when it withholds the backend.
* ``filter_prerouting`` (before DNAT): traffic to a VIP is accepted only on its
  declared ports from its source ranges; the rest is dropped and counted per VIP.
* ``nat_postrouting``: SNAT for LBs that asked for it (packet mark set by the
  service chain) and optional egress SNAT for the backend network.

The output is a complete, self-contained nft script that replaces only this
table in one transaction; other tables on the host are never touched.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Collection, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    DEFAULT_AFFINITY_TIMEOUT_S,
    Backend,
    LoadBalancer,
    Port,
    check_identity,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.maglev import (
    NO_BACKEND,
    MaglevBackend,
    lookup_table,
    table_size_for,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions

_FAMILY = {4: ("ip", "ipv4_addr", "icmp"), 6: ("ip6", "ipv6_addr", "ipv6-icmp")}
# nft refuses a longer comment, and with it the whole table: a Service in a 63-character namespace
# with a 63-character name has a longer LB name. The chain's own name identifies the LB anyway.
NFT_COMMENT_MAX = 128
# A backend as the slot maps hold it: (address, port).
Endpoint = Tuple[str, int]
# A member of a shared backend table: (address, port, weight); port 0 when the table holds addresses only.
Member = Tuple[str, int, int]
# Clients one backend's affinity set remembers at most: past that, new clients are still
# balanced, only not remembered until others expire.
AFFINITY_SET_SIZE = 65535


def health_group(lb: LoadBalancer) -> tuple[Any, ...]:
    """LBs with equal groups get one verdict per backend and withhold the same ones (the health
    checker plans a group as one): its serving addresses and weights, and its check identity."""
    serving = tuple(sorted((b.address, b.weight) for b in lb.backends if b.weight > 0))
    return (lb.family, serving, check_identity(lb))


@dataclass(frozen=True)
class BackendTable:
    """One Maglev slot map, shared by every listener of the same family whose serving backends are
    the same members (address, weight and, when their ports differ, port) with the same health
    check. Members are in address order, so the table does not depend on how an LB lists them."""

    family: int
    protocol: str  # "" when the table holds addresses only (the rule adds the one target port)
    members: Tuple[Member, ...]
    check: Tuple[Any, ...]

    @property
    def addresses_only(self) -> bool:
        return not self.protocol

    @property
    def name(self) -> str:
        return objects.backend_table(_content_digest(self))

    def key(self, member: Member) -> str:
        """The Maglev key of a member: equal on every gateway and for every listener of the table."""
        address = f"[{member[0]}]" if ":" in member[0] else member[0]
        return address if self.addresses_only else f"{address}:{member[1]}"

    def healthy_keys(self, withheld: Collection[str]) -> set[str] | None:
        if not withheld:
            return None
        return {self.key(m) for m in self.members if m[0] not in withheld}


@lru_cache(maxsize=65536)
def _content_digest(table: BackendTable) -> str:
    # Every gateway must name a table alike: hashlib over the content, never Python's salted hash.
    return hashlib.sha256(repr((table.family, table.protocol, table.members, table.check)).encode()).hexdigest()[:20]


@lru_cache(maxsize=65536)
def _backend_table(lb: LoadBalancer, port: Port) -> Optional[BackendTable]:
    serving = [b for b in lb.backends if b.weight > 0]
    if lb.session_affinity == "client_ip" or len(serving) < 2:
        return None
    one_port = len({b.target_port(port) for b in serving}) == 1
    members = sorted(((b.address, 0 if one_port else b.target_port(port), b.weight) for b in serving),
                     key=lambda m: (ipaddress.ip_address(m[0]), m[1]))
    return BackendTable(lb.family, "" if one_port else port.protocol, tuple(members), check_identity(lb))


@dataclass(frozen=True)
class ServicePort:
    """One listener of one LB: the unit that owns a chain and a backend table."""

    lb: LoadBalancer
    port: Port

    @property
    def chain(self) -> str:
        return objects.service_chain(self.lb.ident, self.port.protocol, self.port.port)

    @property
    def table(self) -> Optional[BackendTable]:
        """The shared backend table of a balanced listener without client affinity (else None)."""
        return _backend_table(self.lb, self.port)

    @property
    def slot_map(self) -> str:
        """The Maglev map this listener hashes into: its shared table's, or its own with client affinity."""
        table = self.table
        if table is not None:
            return table.name
        return objects.slot_map(self.lb.ident, self.port.protocol, self.port.port)

    @property
    def no_backends_set(self) -> str:
        return objects.no_backends_set(self.lb.family)

    def serving(self) -> list[Backend]:
        return [b for b in self.lb.backends if b.weight > 0]

    @property
    def listener_key(self) -> tuple[str, str, int]:
        """This listener as a ``no_backends`` element: (vip, protocol, port)."""
        return (self.lb.vip, self.port.protocol, self.port.port)

    @property
    def listener(self) -> str:
        """This listener as an element of the ``no_backends`` sets, in nft syntax."""
        return " . ".join(map(str, self.listener_key))

    def healthy_keys(self, withheld: Collection[str]) -> set[str] | None:
        """Maglev keys of the backends still in the table; None when none is withheld (all healthy)."""
        table = self.table
        if table is not None:
            return table.healthy_keys(withheld)
        if not withheld:
            return None
        return {b.key(self.port) for b in self.serving() if b.address not in withheld}

    def rejecting(self, withheld: Collection[str]) -> bool:
        """True when no backend is left to serve this listener: new connections are rejected."""
        return all(b.address in withheld for b in self.serving())

    def balanced(self) -> bool:
        """Whether traffic is spread through a slot map (more than one serving backend)."""
        return len(self.serving()) > 1

    @property
    def affinity(self) -> bool:
        """Client-IP affinity: a client keeps its backend for the timeout after its last new connection."""
        return self.lb.session_affinity == "client_ip"

    @property
    def affinity_timeout_s(self) -> int:
        return self.lb.session_affinity_timeout_s or DEFAULT_AFFINITY_TIMEOUT_S

    def slotted(self) -> bool:
        """Whether this listener has a slot map: when balanced, and with client affinity from the
        first backend on (its clients are remembered before a second one comes)."""
        return self.balanced() or (self.affinity and bool(self.serving()))

    def member_set(self, address: str, port: int) -> str:
        """The affinity set of the backend at address:port (its target port)."""
        return objects.affinity_set(self.lb.ident, self.port.protocol, self.port.port, objects.affinity_member(address, port))

    def member_chain(self, address: str, port: int) -> str:
        """The chain that remembers a client for the backend at address:port and DNATs to it."""
        return objects.affinity_member_chain(self.lb.ident, self.port.protocol, self.port.port, objects.affinity_member(address, port))

    def members(self) -> list[tuple[Backend, str, str]]:
        """Each serving backend of an affinity listener with its set and chain."""
        endpoints = [(b, b.target_port(self.port)) for b in self.serving()]
        return [(b, self.member_set(b.address, port), self.member_chain(b.address, port)) for b, port in endpoints]


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _elements(items: Iterable[str], indent: str = "\t\t") -> str:
    rows = list(items)
    if not rows:
        return ""
    joined = (",\n" + indent + "\t     ").join(rows)
    return f"{indent}elements = {{ {joined} }}\n"


def _set(name: str, type_line: str, items: Iterable[str], flags: str | None = None) -> str:
    body = f"\ttype {type_line}\n" if not type_line.startswith("typeof") else f"\t{type_line}\n"
    text = f"\tset {name} {{\n\t{body}"
    if flags:
        text += f"\t\tflags {flags}\n"
    return text + _elements(items) + "\t}\n"


def _map(name: str, type_line: str, items: Iterable[str]) -> str:
    keyword = type_line if type_line.startswith("typeof") else f"type {type_line}"
    return f"\tmap {name} {{\n\t\t{keyword}\n" + _elements(items) + "\t}\n"


def service_ports(lbs: Sequence[LoadBalancer]) -> list[ServicePort]:
    ordered = sorted(lbs, key=lambda lb: (lb.family, ipaddress.ip_address(lb.vip), lb.name))
    return [ServicePort(lb, port) for lb in ordered for port in sorted(lb.ports, key=lambda p: (p.protocol, p.port))]


def slot_endpoints(service: ServicePort, options: RenderOptions, healthy: Collection[str] | None = None) -> Sequence[Optional[Endpoint]]:
    """Slot -> backend (address, port); None for a slot nobody serves.

    Shared with the health checker so both write the same table for the same state.
    """
    if healthy is None:
        return _all_healthy_slot_endpoints(service, options)
    return _compute_slot_endpoints(service, options, healthy)


def slot_table(service: ServicePort, options: RenderOptions, healthy: Collection[str] | None = None) -> list[str]:
    """Slot -> backend endpoint ("addr . port" nft syntax); empty string for an unserved slot."""
    return ["" if owner is None else f"{owner[0]} . {owner[1]}" for owner in slot_endpoints(service, options, healthy)]


@lru_cache(maxsize=4096)
def _all_healthy_slot_endpoints(service: ServicePort, options: RenderOptions) -> tuple[Optional[Endpoint], ...]:
    # Rendering and the reviewer's view both need it; Maglev is the costly part of a converge.
    return tuple(_compute_slot_endpoints(service, options, None))


def _compute_slot_endpoints(service: ServicePort, options: RenderOptions, healthy: Collection[str] | None) -> list[Optional[Endpoint]]:
    backends = service.serving()
    table = service.table
    if table is not None:
        port = backends[0].target_port(service.port)
        return [None if owner is None else (owner[0], owner[1] or port) for owner in table_owners(table, options, healthy)]
    keyed = [MaglevBackend(key=b.key(service.port), weight=b.weight) for b in backends]
    size = table_size_for(len(keyed), options.slots_per_backend)
    owners = lookup_table(keyed, size, healthy=healthy, seed=f"{options.hash_seed:08x}")
    endpoints = [(b.address, b.target_port(service.port)) for b in backends]
    return [None if owner == NO_BACKEND else endpoints[owner] for owner in owners]


def table_owners(table: BackendTable, options: RenderOptions, healthy: Collection[str] | None = None) -> Sequence[Optional[Member]]:
    """Slot -> member of a shared table (None: nobody serves); ``healthy``: Maglev keys, None for all."""
    if healthy is None:
        return _all_healthy_table_owners(table, options)
    return _compute_table_owners(table, options, healthy)


@lru_cache(maxsize=4096)
def _all_healthy_table_owners(table: BackendTable, options: RenderOptions) -> tuple[Optional[Member], ...]:
    return tuple(_compute_table_owners(table, options, None))


def _compute_table_owners(table: BackendTable, options: RenderOptions, healthy: Collection[str] | None) -> list[Optional[Member]]:
    keyed = [MaglevBackend(key=table.key(m), weight=m[2]) for m in table.members]
    size = table_size_for(len(keyed), options.slots_per_backend)
    owners = lookup_table(keyed, size, healthy=healthy, seed=f"{options.hash_seed:08x}")
    return [None if owner == NO_BACKEND else table.members[owner] for owner in owners]


def _hash_expr(service: ServicePort, size: int, seed: int) -> str:
    family = _FAMILY[service.lb.family][0]
    if service.lb.session_affinity == "client_ip":
        keys = f"{family} saddr"
    else:
        keys = f"{family} saddr . th sport"
    return f"jhash {keys} mod {size} seed 0x{seed:08x}"


def _service_chain(service: ServicePort, options: RenderOptions) -> str:
    family = _FAMILY[service.lb.family][0]
    backends = service.serving()
    lines = [f"\tchain {service.chain} {{"]
    listener = f" {service.port.protocol}/{service.port.port}"
    lines.append(f'\t\tcomment "{service.lb.name[:NFT_COMMENT_MAX - len(listener)]}{listener}"')
    if options.snats(service.lb):
        lines.append(f"\t\tmeta mark set meta mark | 0x{options.snat_mark:08x}")
    if service.affinity:
        # A remembered client goes to its backend; the others are balanced on their address.
        for _backend, member_set, member_chain in service.members():
            lines.append(f"\t\t{family} saddr @{member_set} goto {member_chain}")
        size = table_size_for(len(backends), options.slots_per_backend)
        lines.append(f"\t\t{_hash_expr(service, size, options.hash_seed)} vmap @{service.slot_map}")
    elif not service.balanced():
        target = _endpoint(backends[0].address, backends[0].target_port(service.port))
        lines.append(f"\t\tmeta l4proto {service.port.protocol} dnat {family} to {target}")
    else:
        size = table_size_for(len(backends), options.slots_per_backend)
        table = service.table
        # A table of addresses only: every backend listens on the same port, which the rule adds.
        port = f" : {backends[0].target_port(service.port)}" if table is not None and table.addresses_only else ""
        lines.append(
            f"\t\tmeta l4proto {service.port.protocol} dnat {family} to "
            f"{_hash_expr(service, size, options.hash_seed)} map @{service.slot_map}{port}"
        )
    lines.append("\t}")
    return "\n".join(lines) + "\n"


def _member_chains(service: ServicePort) -> str:
    """An affinity listener's chain per backend: remember the client (re-arming its timeout), then DNAT."""
    family = _FAMILY[service.lb.family][0]
    text = []
    for backend, member_set, member_chain in service.members():
        target = _endpoint(backend.address, backend.target_port(service.port))
        text.append(f"\tchain {member_chain} {{\n"
                    f"\t\tupdate @{member_set} {{ {family} saddr }}\n"
                    f"\t\tmeta l4proto {service.port.protocol} dnat {family} to {target}\n"
                    "\t}\n\n")
    return "".join(text)


def _member_sets(service: ServicePort) -> str:
    """An affinity listener's set per backend: its clients, each for the timeout (elements: the kernel)."""
    addr_type = _FAMILY[service.lb.family][1]
    return "".join(f"\tset {member_set} {{\n\t\ttype {addr_type}\n\t\tsize {AFFINITY_SET_SIZE}\n"
                   f"\t\tflags dynamic,timeout\n\t\ttimeout {service.affinity_timeout_s}s\n\t}}\n"
                   for _backend, member_set, _chain in service.members())


def _slot_elements(service: ServicePort, options: RenderOptions, withheld: Collection[str]) -> list[tuple[Any, ...]]:
    """An affinity listener's slot -> ("goto", member chain)."""
    owners = slot_endpoints(service, options, service.healthy_keys(withheld))
    return [(slot, "goto", service.member_chain(*owner)) for slot, owner in enumerate(owners) if owner is not None]


def _table_elements(table: BackendTable, options: RenderOptions, withheld: Collection[str]) -> list[tuple[Any, ...]]:
    """A shared table's slot -> address, or address . port when its members' ports differ."""
    owners = table_owners(table, options, table.healthy_keys(withheld))
    if table.addresses_only:
        return [(slot, owner[0]) for slot, owner in enumerate(owners) if owner is not None]
    return [(slot, owner[0], owner[1]) for slot, owner in enumerate(owners) if owner is not None]


def _slot_items(service: ServicePort, options: RenderOptions, withheld: Collection[str]) -> list[str]:
    return [f"{slot} : {verdict} {chain}" for slot, verdict, chain in _slot_elements(service, options, withheld)]


def _table_items(table: BackendTable, options: RenderOptions, withheld: Collection[str]) -> list[str]:
    return [f"{element[0]} : {' . '.join(map(str, element[1:]))}" for element in _table_elements(table, options, withheld)]


def _slot_map(service: ServicePort, options: RenderOptions, withheld: Collection[str]) -> str:
    items = _slot_items(service, options, withheld)
    return _member_sets(service) + _map(service.slot_map, "typeof numgen inc mod 2 : verdict", items)


def _table_map(table: BackendTable, options: RenderOptions, withheld: Collection[str]) -> str:
    family = _FAMILY[table.family][0]
    value = f"{family} daddr" if table.addresses_only else f"{family} daddr . {table.protocol} dport"
    return _map(table.name, f"typeof numgen inc mod 2 : {value}", _table_items(table, options, withheld))


def grouped_withheld(lbs: Iterable[LoadBalancer], withheld: Mapping[str, Collection[str]]) -> dict[str, frozenset[str]]:
    """Per LB: what its health group withholds. The health checker gives LBs of one group the same
    set; should a state file say otherwise, a backend withheld for any of them is withheld for all,
    so the tables they share are one content."""
    by_group: dict[tuple[Any, ...], set[str]] = {}
    groups = {lb.name: health_group(lb) for lb in lbs}
    for name, group in groups.items():
        by_group.setdefault(group, set()).update(withheld.get(name, ()))
    return {name: frozenset(by_group[group]) for name, group in groups.items()}


def backend_tables(services: Iterable[ServicePort]) -> dict[str, tuple[BackendTable, ServicePort]]:
    """Each shared table by name, with the first listener (in render order) that uses it."""
    tables: dict[str, tuple[BackendTable, ServicePort]] = {}
    for service in services:
        table = service.table
        if table is not None and table.name not in tables:
            tables[table.name] = (table, service)
    return dict(sorted(tables.items()))


def _filter_chains(lbs: Sequence[LoadBalancer], options: RenderOptions) -> str:
    text = [
        f"\tchain {objects.FILTER_PREROUTING} {{",
        "\t\ttype filter hook prerouting priority dstnat - 10; policy accept;",
        # Established flows are never cut by a changed source range or port list.
        "\t\tct state established,related accept",
    ]
    families = [family for family in objects.FAMILIES if any(lb.family == family for lb in lbs)]
    for family in families:
        text.append(f"\t\t{_FAMILY[family][0]} daddr @{objects.vip_set(family)} jump {objects.vip_filter_chain(family)}")
    text.append("\t}\n")
    for family in families:
        fam, _addr_type, icmp = _FAMILY[family]
        admit, no_backends = objects.vip_admit_chain(family), objects.no_backends_set(family)
        text.append(f"\tchain {objects.vip_filter_chain(family)} {{")
        if family == 6:
            # Neighbour discovery must work for a VIP held on an interface (VRRP).
            text.append("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept")
        if options.allow_icmp:
            text.append(f"\t\tmeta l4proto {icmp} accept")
        text.append(f"\t\t{fam} daddr . meta l4proto . th dport . {fam} saddr @{objects.allowed_set(family)} goto {admit}")
        text.append(f"\t\tcounter name {fam} daddr map @{objects.vip_drops_map(family)} drop")
        text.append("\t}\n")
        # Only admitted sources learn that a listener has no (healthy) backend; the rest are dropped
        # above. The health checker adds and removes no_backends elements.
        text.append(f"\tchain {admit} {{")
        text.append(f"\t\tmeta l4proto tcp {fam} daddr . meta l4proto . th dport @{no_backends} reject with tcp reset")
        text.append(f"\t\t{fam} daddr . meta l4proto . th dport @{no_backends} reject")
        text.append("\t\taccept")
        text.append("\t}\n")
    return "\n".join(text) + "\n"


def _nat_chains(lbs: Sequence[LoadBalancer], options: RenderOptions) -> str:
    families = sorted({lb.family for lb in lbs})
    dispatch = [f"\t\t{_FAMILY[f][0]} daddr . meta l4proto . th dport vmap @{objects.dispatch_map(f)}" for f in families]
    text = [f"\tchain {objects.NAT_PREROUTING} {{", "\t\ttype nat hook prerouting priority dstnat; policy accept;",
            *dispatch, "\t}\n"]
    if options.local_dispatch:
        text += [f"\tchain {objects.NAT_OUTPUT} {{", "\t\ttype nat hook output priority -100; policy accept;", *dispatch, "\t}\n"]
    text += [f"\tchain {objects.NAT_POSTROUTING} {{", "\t\ttype nat hook postrouting priority srcnat; policy accept;"]
    mark = f"meta mark & 0x{options.snat_mark:08x} == 0x{options.snat_mark:08x}"
    if any(options.snats(lb) for lb in lbs):
        for family in families:
            nfproto = f"meta nfproto {'ipv4' if family == 4 else 'ipv6'}"
            fam = _FAMILY[family][0]
            if any(lb.snat_address and lb.family == family and options.snats(lb) for lb in lbs):
                text.append(f"\t\t{mark} {nfproto} snat {fam} to ct original {fam} daddr map @{objects.snat_map(family)}")
            source = options.snat_source4 if family == 4 else options.snat_source6
            if source:
                text.append(f"\t\t{mark} {nfproto} snat {fam} to {source}")
        text.append(f"\t\t{mark} masquerade")
    for rule in options.egress_snat:
        fam = _FAMILY[rule.family][0]
        match = f"{fam} saddr {rule.source} {fam} daddr != {rule.source}"
        if rule.out_interface:
            match = f'oifname "{rule.out_interface}" {match}'
        action = f"snat {fam} to {rule.to_address}" if rule.to_address else "masquerade"
        text.append(f"\t\t{match} {action}")
    text.append("\t}\n")
    return "\n".join(text) + "\n"


def _family_objects(
    family: int, lbs: Sequence[LoadBalancer], services: Sequence[ServicePort], withheld: Mapping[str, Collection[str]],
    options: RenderOptions,
) -> str:
    _fam, addr_type, _icmp = _FAMILY[family]
    mine = [s for s in services if s.lb.family == family]
    vips = sorted({lb.vip for lb in lbs if lb.family == family}, key=ipaddress.ip_address)
    if not vips:
        return ""
    listener = f"{addr_type} . inet_proto . inet_service"
    text = [_set(objects.vip_set(family), addr_type, vips)]
    text.append(_map(objects.dispatch_map(family), f"{listener} : verdict",
                     (f"{s.listener} : goto {s.chain}" for s in mine if s.serving())))
    text.append(_set(objects.allowed_set(family), f"{listener} . {addr_type}",
                     (f"{s.listener} . {cidr}" for s in mine for cidr in s.lb.source_ranges),
                     flags="interval"))
    text.append(_set(objects.no_backends_set(family), listener,
                     (s.listener for s in mine if s.rejecting(withheld.get(s.lb.name, ())))))
    text.append(_map(objects.vip_drops_map(family), f"{addr_type} : counter",
                     (f'{vip} : "{objects.drop_counter(vip)}"' for vip in vips)))
    snat = sorted({(lb.vip, lb.snat_address) for lb in lbs if lb.family == family and lb.snat_address and options.snats(lb)})
    if snat:
        text.append(_map(objects.snat_map(family), f"{addr_type} : {addr_type}", (f"{vip} : {to}" for vip, to in snat)))
    counters = "".join(f"\tcounter {objects.drop_counter(vip)} {{\n\t}}\n" for vip in vips)
    return "\n".join(text) + "\n" + counters + "\n"


def render_body(
    lbs: Sequence[LoadBalancer],
    options: RenderOptions,
    withheld: Mapping[str, Collection[str]] | None = None,
) -> str:
    """Everything inside ``table inet <name> { ... }`` except the comment line.

    ``withheld``: LB name -> backend addresses the health checker took out of rotation.
    """
    withheld = grouped_withheld(lbs, withheld or {})
    services = service_ports(lbs)
    parts = [_family_objects(family, lbs, services, withheld, options) for family in objects.FAMILIES]
    for table, first in backend_tables(services).values():
        parts.append(_table_map(table, options, withheld.get(first.lb.name, ())))
    for service in services:
        if service.affinity and service.slotted():
            parts.append(_slot_map(service, options, withheld.get(service.lb.name, ())))
    parts.append("\n")
    for service in services:
        if service.serving():
            parts.append(_service_chain(service, options) + "\n")
            if service.affinity:
                parts.append(_member_chains(service))
    parts.append(_filter_chains(lbs, options))
    parts.append(_nat_chains(lbs, options))
    return "".join(parts).rstrip() + "\n"


def digest_of(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _script(body: str, digest: str, options: RenderOptions) -> str:
    table = f"{objects.TABLE_FAMILY} {options.table}"
    return (
        "# Generated by portico.gateway.nft_loadbalancer - do not edit, changes are overwritten.\n"
        f"table {table}\n"
        f"delete table {table}\n"
        f"table {table} {{\n"
        f'\tcomment "{objects.table_comment(digest)}"\n'
        f"{body}"
        "}\n"
    )


@dataclass(frozen=True)
class RenderedTable:
    """Portico's table for one model: each script replaces only ``inet <table>``, atomically."""

    script: str  # what to apply now: the backends the health checker withholds are left out
    intent_script: str  # every backend healthy: what a boot restores
    digest: str  # of the intent, so health changes never look like a configuration change


def render_table(
    lbs: Sequence[LoadBalancer],
    options: RenderOptions,
    withheld: Mapping[str, Collection[str]] | None = None,
) -> RenderedTable:
    """The scripts and digest of Portico's table; one render when nothing is withheld."""
    intent_body = render_body(lbs, options)
    digest = digest_of(intent_body)
    intent = _script(intent_body, digest, options)
    if not any((withheld or {}).values()):
        return RenderedTable(intent, intent, digest)
    return RenderedTable(_script(render_body(lbs, options, withheld), digest, options), intent, digest)


def iter_health_elements(
    lbs: Sequence[LoadBalancer], options: RenderOptions, withheld: Mapping[str, Collection[str]] | None = None,
) -> Iterator[tuple[str, frozenset[tuple]]]:
    """(name, elements) of every health-owned set and map ``render_table`` writes for this health
    state, one at a time (a big table's slot maps need not all be held at once)."""
    withheld = grouped_withheld(lbs, withheld or {})
    rejecting: dict[str, set[tuple]] = {objects.no_backends_set(lb.family): set() for lb in lbs}
    services = service_ports(lbs)
    for table, first in backend_tables(services).values():
        yield table.name, frozenset(_table_elements(table, options, withheld.get(first.lb.name, ())))
    for service in services:
        mine = withheld.get(service.lb.name, ())
        if service.affinity and service.slotted():
            yield service.slot_map, frozenset(_slot_elements(service, options, mine))
        if service.rejecting(mine):
            rejecting[service.no_backends_set].add(service.listener_key)
    for name, elements in rejecting.items():
        yield name, frozenset(elements)


def health_elements(
    lbs: Sequence[LoadBalancer], options: RenderOptions, withheld: Mapping[str, Collection[str]] | None = None,
) -> objects.HealthElements:
    """The health-owned elements ``render_table`` writes for this health state, as plain values.

    Compared with the live table's (``nft.TableListing.health_elements``): the health checker may
    change these elements, anyone else doing so is drift.
    """
    return dict(iter_health_elements(lbs, options, withheld))


def health_elements_differ(
    live: objects.HealthElements, lbs: Sequence[LoadBalancer], options: RenderOptions,
    withheld: Mapping[str, Collection[str]] | None = None,
) -> bool:
    """Whether ``live`` is not what ``render_table`` writes for this health state."""
    seen = 0
    for name, elements in iter_health_elements(lbs, options, withheld):
        seen += 1
        if live.get(name) != elements:
            return True
    return seen != len(live)


def render_health_update(
    services: Sequence[ServicePort], options: RenderOptions, withheld: Mapping[str, Collection[str]],
) -> str:
    """One nft transaction that rewrites only these listeners' backend tables and reject state.

    Slot maps are rewritten whole (flush + add, atomic): slots of backends that stay
    healthy get the same owner, so their flows keep their backend. A shared table is written once,
    however many of the listeners use it (the caller passes whole health groups). A withheld
    backend of an affinity listener forgets its clients in the same transaction, so they are
    balanced over the healthy ones (and stay with those when it comes back, until their timeout).
    """
    table = f"{objects.TABLE_FAMILY} {options.table}"
    withheld = grouped_withheld({s.lb.name: s.lb for s in services}.values(), withheld)
    lines: list[str] = []
    for shared, first in backend_tables(services).values():
        lines.append(f"flush map {table} {shared.name}")
        items = _table_items(shared, options, withheld.get(first.lb.name, ()))
        if items:
            lines.append(f"add element {table} {shared.name} {{ {', '.join(items)} }}")
    for service in services:
        mine = withheld.get(service.lb.name, ())
        if service.affinity and service.slotted():
            lines.append(f"flush map {table} {service.slot_map}")
            items = _slot_items(service, options, mine)
            if items:
                lines.append(f"add element {table} {service.slot_map} {{ {', '.join(items)} }}")
        if service.affinity:
            lines.extend(f"flush set {table} {member_set}" for backend, member_set, _chain in service.members()
                         if backend.address in mine)
        # add-then-delete removes an element whether or not it was there.
        lines.append(f"add element {table} {service.no_backends_set} {{ {service.listener} }}")
        if not service.rejecting(mine):
            lines.append(f"delete element {table} {service.no_backends_set} {{ {service.listener} }}")
    return "\n".join(lines) + ("\n" if lines else "")


def remembered_clients_script(
    lbs: Sequence[LoadBalancer], options: RenderOptions, withheld: Mapping[str, Collection[str]] | None,
    remembered: Mapping[str, Iterable[tuple[str, int]]],
) -> str:
    """``add element`` commands that give a table being replaced the clients its affinity sets remember,
    for the same transaction (the kernel filled them; a new table starts with empty sets).

    ``remembered``: set name -> (client address, seconds left), as the live table lists them. Only
    sets the new table has, of backends that are not withheld, are refilled. nft lists whole
    seconds: each client gets one more (never forgotten early), at most the listener's timeout
    (which may have been shortened).
    """
    if not any(remembered.values()):
        return ""
    withheld = withheld or {}
    table = f"{objects.TABLE_FAMILY} {options.table}"
    lines: list[str] = []
    for service in service_ports([lb for lb in lbs if lb.session_affinity == "client_ip"]):
        mine = withheld.get(service.lb.name, ())
        for backend, member_set, _chain in service.members():
            clients = sorted(remembered.get(member_set, ()))
            if not clients or backend.address in mine:
                continue
            items = ", ".join(f"{client} expires {min(left + 1, service.affinity_timeout_s)}s" for client, left in clients)
            lines.append(f"add element {table} {member_set} {{ {items} }}")
    return "\n".join(lines) + ("\n" if lines else "")


def describe(lbs: Sequence[LoadBalancer], options: RenderOptions) -> str:
    """A reviewer's view of the dataplane: what check/diff mode shows instead of raw slot maps."""
    lines: list[str] = []
    for service in service_ports(lbs):
        lb, port = service.lb, service.port
        backends = service.serving()
        lines.append(f"{lb.name} {_endpoint(lb.vip, port.port)}/{port.protocol} ({lb.source}, pool {lb.pool or '-'})")
        if not backends:
            lines.append("  backends: none - new connections are rejected")
        elif not service.slotted():
            lines.append(f"  backend: {_endpoint(backends[0].address, backends[0].target_port(port))} (direct dnat)")
        else:
            table = slot_table(service, options)
            share = {target: table.count(target) for target in sorted(set(table))}
            if service.affinity:
                hashing = f"client ip, each client kept {service.affinity_timeout_s}s after its last new connection"
            else:
                hashing = "flow"
            shared = f", table {service.table.name}" if service.table is not None else ""
            lines.append(f"  maglev {len(table)} slots, hash {hashing}{shared}:")
            for backend in backends:
                key = f"{backend.address} . {backend.target_port(port)}"
                lines.append(f"    {_endpoint(backend.address, backend.target_port(port))} weight {backend.weight}: {share.get(key, 0)} slots")
        lines.append(f"  allow from: {', '.join(lb.source_ranges)}")
        source = options.snat_source4 if lb.family == 4 else options.snat_source6
        snat = f"snat to {lb.snat_address or source or 'egress address'}" if options.snats(lb) else "kept"
        lines.append(f"  client source ip: {snat}")
    for rule in options.egress_snat:
        lines.append(f"egress snat {rule.source} -> {rule.to_address or 'masquerade'}"
                     + (f" via {rule.out_interface}" if rule.out_interface else ""))
    return "\n".join(lines) + ("\n" if lines else "")
