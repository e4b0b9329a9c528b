# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The name of every object in Portico's nftables table, built in one place.

The renderer names objects only through these functions, and code that reads a live
table (drift detection, the health checker, tests) asks here which object is which
instead of matching names again. Like kube-proxy's nftables proxier: fixed names are
constants, per-listener and per-family names are functions.

Ownership of elements: the health checker writes the elements of the slot maps and of
the ``no_backends`` sets (``is_health_owned``); the kernel fills the client-affinity sets
from traffic (``is_dynamic``); everything else belongs to the nft module.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, FrozenSet, Tuple

# The table: one per host, in the inet family; its comment carries the digest of the intent.
TABLE_FAMILY = "inet"
DEFAULT_TABLE = "portico"
DIGEST_PREFIX = "portico:"

# Base chains (hooks).
FILTER_PREROUTING = "filter_prerouting"
NAT_PREROUTING = "nat_prerouting"
NAT_OUTPUT = "nat_output"
NAT_POSTROUTING = "nat_postrouting"

SERVICE_CHAIN_PREFIX = "svc_"
SLOT_MAP_PREFIX = "slots_"
BACKEND_TABLE_PREFIX = "backends_"
AFFINITY_SET_PREFIX = "affm_"
AFFINITY_MEMBER_CHAIN_PREFIX = "affep_"
DROP_COUNTER_PREFIX = "drop_"
FAMILIES = (4, 6)


def table_comment(digest: str) -> str:
    """The table's comment: the digest of the rendered intent, so a reader knows what it holds."""
    return f"{DIGEST_PREFIX}{digest}"


def _listener(protocol: str, port: int) -> str:
    return f"{protocol}{port}"


def service_chain(lb_ident: str, protocol: str, port: int) -> str:
    """The chain one listener's traffic is dispatched to (DNAT to its backends)."""
    return f"{SERVICE_CHAIN_PREFIX}{lb_ident}_{_listener(protocol, port)}"


def slot_map(lb_ident: str, protocol: str, port: int) -> str:
    """One client-affinity listener's Maglev table: slot -> goto the backend's member chain
    (elements: health checker)."""
    return f"{SLOT_MAP_PREFIX}{lb_ident}_{_listener(protocol, port)}"


def backend_table(digest: str) -> str:
    """A Maglev table shared by every listener with the same backends and health check: slot ->
    backend address (the port is in the rule), or address . port when the backends' ports differ.
    Named by its content, so every gateway names it alike (elements: health checker)."""
    return f"{BACKEND_TABLE_PREFIX}{digest}"


def affinity_member(address: str, port: int) -> str:
    """Name part of one backend of a client-affinity listener: its address in hex and its port, so
    the names stay when other backends come and go (and two backends never share one)."""
    return f"{ipaddress.ip_address(address).packed.hex()}_{port}"


def affinity_set(lb_ident: str, protocol: str, port: int, member: str) -> str:
    """The clients one client-affinity listener sent to one backend, each until its timeout (elements: the kernel)."""
    return f"{AFFINITY_SET_PREFIX}{lb_ident}_{_listener(protocol, port)}_{member}"


def affinity_member_chain(lb_ident: str, protocol: str, port: int, member: str) -> str:
    """Remembers the client in the backend's affinity set, then DNATs to that backend."""
    return f"{AFFINITY_MEMBER_CHAIN_PREFIX}{lb_ident}_{_listener(protocol, port)}_{member}"


def vip_set(family: int) -> str:
    """Every VIP of a family: the filter's entry test."""
    return f"vips{family}"


def dispatch_map(family: int) -> str:
    """VIP . protocol . port -> goto the listener's service chain."""
    return f"dispatch{family}"


def allowed_set(family: int) -> str:
    """VIP . protocol . port . source range: what the filter admits."""
    return f"allowed{family}"


def no_backends_set(family: int) -> str:
    """Listeners without a serving backend: admitted sources get a reject (elements: health checker)."""
    return f"no_backends{family}"


def vip_drops_map(family: int) -> str:
    """VIP -> its drop counter."""
    return f"vip_drops{family}"


def snat_map(family: int) -> str:
    """VIP -> the SNAT address of LBs that name one."""
    return f"snat_to{family}"


def vip_filter_chain(family: int) -> str:
    return f"vip_filter{family}"


def vip_admit_chain(family: int) -> str:
    return f"vip_admit{family}"


def drop_counter(vip: str) -> str:
    """Named counter of the packets dropped for one VIP (the address in hex: a valid identifier)."""
    return DROP_COUNTER_PREFIX + ipaddress.ip_address(vip).packed.hex()


# The elements the health checker owns, per set or map, as plain values: a slot map's
# (slot, address) or (slot, address, port) of a shared backend table, (slot, "goto", member chain) of a
# client-affinity listener's slot map, a
# no_backends set's (vip, protocol, port). The renderer says what they
# should be for a health state, a listing of the live table what they are.
HealthElements = Dict[str, FrozenSet[Tuple]]
HEALTH_OWNED_SETS = frozenset(no_backends_set(family) for family in FAMILIES)


def is_health_owned(kind: str, name: str) -> bool:
    """Whether the health checker owns this set's or map's elements (``kind``: ``set`` or ``map``)."""
    if kind == "map":
        return name.startswith((SLOT_MAP_PREFIX, BACKEND_TABLE_PREFIX))
    return kind == "set" and name in HEALTH_OWNED_SETS


def is_dynamic(kind: str, name: str) -> bool:
    """Whether the kernel fills this set from traffic (client affinity): its elements are nobody's
    configuration, so they are never drift and never compared."""
    return kind == "set" and name.startswith(AFFINITY_SET_PREFIX)


# The traffic table (dataplane.traffic): counters only, kept by the health checker.
TRAFFIC_TABLE = "portico_traffic"
# Per new connection (nat chains: only a flow's first packet walks them): to a listener (which also
# marks the flow with its listener's ct mark), to a backend.
TRAFFIC_NEW_CHAIN = "count_new"
TRAFFIC_BACKEND_CHAIN = "count_backend"
# Per packet (filter, forward): a marked flow's packets and bytes, each direction.
TRAFFIC_FLOW_CHAIN = "count_flow"
# Per listener: packets/bytes toward the backends and back, new connections; per backend address:
# new connections.
TRAFFIC_IN = "in"
TRAFFIC_OUT = "out"
TRAFFIC_NEW = "new"
TRAFFIC_LISTENER_KINDS = (TRAFFIC_IN, TRAFFIC_OUT, TRAFFIC_NEW)
TRAFFIC_BACKEND_KIND = "backend"
# The conntrack direction each packet-counting kind counts.
TRAFFIC_DIRECTIONS = {TRAFFIC_IN: "original", TRAFFIC_OUT: "reply"}
# Listener (VIP . protocol . port) -> its flows' ct mark, per family; ct mark -> new connections;
# ct mark . ct direction -> packets and bytes.
TRAFFIC_NEW_MAP = "new"
# ("flow" is an nft keyword.)
TRAFFIC_FLOW_MAP = "flows"


def traffic_mark_map(family: int) -> str:
    """Listener -> the ct mark of its flows, per family."""
    return f"mark{family}"


def traffic_backend_map(family: int) -> str:
    """Backend address -> its counter of new connections, per family."""
    return f"{TRAFFIC_BACKEND_KIND}{family}"


def traffic_listener_counter(kind: str, vip: str, protocol: str, port: int) -> str:
    """One listener's counter of one kind: named by the listener, so it outlives renames of its LB."""
    return f"{kind}_{ipaddress.ip_address(vip).packed.hex()}_{protocol}{port}"


def traffic_backend_counter(address: str) -> str:
    """New connections sent to one backend address, over every LB that has it."""
    return f"{TRAFFIC_BACKEND_KIND}_{ipaddress.ip_address(address).packed.hex()}"
