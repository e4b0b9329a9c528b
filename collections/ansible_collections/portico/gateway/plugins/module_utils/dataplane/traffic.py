# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic counters: a second table, ``inet portico_traffic``, that only counts.

What it counts, with named counters looked up in maps:

* per listener (VIP . protocol . port): new connections (``new``), and the packets and bytes of
  its flows toward the backends (``in``: conntrack's original direction) and back to the clients
  (``out``: the reply direction);
* per backend address: new connections DNATed to it, whatever the LB. Nodeport backends are
  shared by every Service of a cluster: keyed by address alone, these counters grow with the
  nodes, never with the Services.

How, shaped by cost (bench/throughput.py --traffic-metrics: every expression a packet walks
costs, and so does every base chain it passes):

* a flow's first packet walks the nat chains only (conntrack skips them afterwards): there the
  listener is looked up once, by VIP . protocol . port, and its number is stored in the flow's
  ``ct mark``; new connections are counted by that mark; the backend chain counts by the address
  DNAT chose;
* every later packet walks one filter chain in forward with one lookup, ``ct mark . ct
  direction``, whatever the address family: the mark says the listener, the direction whether
  the packet goes toward the backends or back.

A listener's mark is derived from its key alone (``listener_marks``), so it is the same on every
gateway and across daemon restarts: conntrackd replicates the mark with the flow, and a gateway
that takes a flow over counts it under the same listener. Portico owns the ct mark of the flows
to its listeners; flows that began before the table existed carry no mark and are not counted.

Drops stay where they are decided: the main table's per-VIP counters (``objects.drop_counter``).

Why a table of its own: it never decides anything (every chain accepts), so it cannot change
what the main table does; the health checker keeps it in step with the applied model by delta
(``delta_script``), so counters survive converges and daemon restarts, and the nft module's
drift check and transactions never see it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer

_ADDRESS_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_MATCH = {4: "ip", 6: "ip6"}
# Marks are 31-bit and never 0 (an unmarked flow): room for any number of listeners a table holds.
_MARK_BITS = 0x7FFFFFFF

# A listener as the maps key it: (vip, protocol, port).
ListenerKey = tuple[str, str, int]


@dataclass(frozen=True)
class Listener:
    """One counted listener and the LB it belongs to (the ``lb`` label)."""

    lb: str
    vip: str
    protocol: str
    port: int

    @property
    def key(self) -> ListenerKey:
        return (self.vip, self.protocol, self.port)

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.vip).version


def _preferred_mark(key: ListenerKey) -> int:
    digest = hashlib.sha256(f"{key[0]} {key[1]} {key[2]}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & _MARK_BITS or 1


def listener_marks(listeners: Sequence[Listener]) -> dict[ListenerKey, int]:
    """Listener -> ct mark: a hash of its key, the next free value on a collision (in the order
    given, which is sorted, so every gateway with the same listeners picks the same marks)."""
    marks: dict[ListenerKey, int] = {}
    taken: set[int] = set()
    for listener in listeners:
        mark = _preferred_mark(listener.key)
        while mark in taken:
            mark = (mark + 1) & _MARK_BITS or 1
        taken.add(mark)
        marks[listener.key] = mark
    return marks


@dataclass(frozen=True)
class TrafficLayout:
    """What the traffic table must hold for one model: listeners and backend addresses."""

    listeners: tuple[Listener, ...] = ()
    backends: tuple[str, ...] = ()

    def families(self) -> set[int]:
        """The address families with something to count: the chains look up only theirs."""
        return {listener.family for listener in self.listeners} | {ipaddress.ip_address(a).version for a in self.backends}

    def marks(self) -> dict[ListenerKey, int]:
        return listener_marks(self.listeners)

    def counters(self) -> dict[str, tuple[str, Any]]:
        """Counter name -> (kind, listener or backend address), for every counter of the layout."""
        names: dict[str, tuple[str, Any]] = {}
        for listener in self.listeners:
            for kind in objects.TRAFFIC_LISTENER_KINDS:
                names[objects.traffic_listener_counter(kind, *listener.key)] = (kind, listener)
        for address in self.backends:
            names[objects.traffic_backend_counter(address)] = (objects.TRAFFIC_BACKEND_KIND, address)
        return names

    def elements(self) -> dict[str, dict[tuple[Any, ...], str]]:
        """Map name -> {key: value}, for every map of the table (empty maps included).

        Values as ``nft -j`` lists them: a counter's name, or a mark in decimal.
        """
        maps: dict[str, dict[tuple[Any, ...], str]] = {name: {} for name in structure_maps()}
        marks = self.marks()
        for listener in self.listeners:
            mark = marks[listener.key]
            maps[objects.traffic_mark_map(listener.family)][_canonical(listener.key)] = str(mark)
            maps[objects.TRAFFIC_NEW_MAP][(mark,)] = objects.traffic_listener_counter(objects.TRAFFIC_NEW, *listener.key)
            for kind, direction in objects.TRAFFIC_DIRECTIONS.items():
                maps[objects.TRAFFIC_FLOW_MAP][(mark, direction)] = objects.traffic_listener_counter(kind, *listener.key)
        for address in self.backends:
            family = ipaddress.ip_address(address).version
            maps[objects.traffic_backend_map(family)][(_canonical_address(address),)] = objects.traffic_backend_counter(address)
        return maps


def layout_of(lbs: Sequence[LoadBalancer]) -> TrafficLayout:
    """The listeners and backend addresses of a model (an address once, whatever shares it)."""
    listeners: dict[ListenerKey, Listener] = {}
    backends: set[str] = set()
    for lb in lbs:
        for port in lb.ports:
            listener = Listener(lb.name, str(ipaddress.ip_address(lb.vip)), port.protocol, port.port)
            listeners.setdefault(listener.key, listener)
        backends.update(str(ipaddress.ip_address(b.address)) for b in lb.backends if b.weight > 0)
    ordered = sorted(listeners.values(), key=lambda item: (item.family, ipaddress.ip_address(item.vip), item.protocol, item.port))
    return TrafficLayout(tuple(ordered), tuple(sorted(backends, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))))


# Map name -> its type line (key : value).
_MAP_TYPES = {
    **{objects.traffic_mark_map(f): f"{_ADDRESS_TYPE[f]} . inet_proto . inet_service : mark" for f in objects.FAMILIES},
    objects.TRAFFIC_NEW_MAP: "mark : counter",
    objects.TRAFFIC_FLOW_MAP: "mark . ct_dir : counter",
    **{objects.traffic_backend_map(f): f"{_ADDRESS_TYPE[f]} : counter" for f in objects.FAMILIES},
}


def structure_maps() -> list[str]:
    return list(_MAP_TYPES)


CHAINS = (objects.TRAFFIC_NEW_CHAIN, objects.TRAFFIC_BACKEND_CHAIN, objects.TRAFFIC_FLOW_CHAIN)


def structure() -> frozenset[tuple[str, str]]:
    """(kind, name) of the table's chains and maps: a live table with others is rebuilt."""
    return frozenset({("chain", name) for name in CHAINS} | {("map", name) for name in structure_maps()})


def _canonical_address(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _canonical(key: Sequence[Any]) -> tuple[Any, ...]:
    vip, protocol, port = key
    return (_canonical_address(vip), protocol, int(port))


def _canonical_part(part: Any) -> Any:
    """One part of a listed key: addresses in their canonical text, numbers and names as they are."""
    if isinstance(part, str):
        try:
            return _canonical_address(part)
        except ValueError:
            return part
    return part


def _nft_key(key: tuple[Any, ...]) -> str:
    return " . ".join(str(part) for part in key)


def _nft_value(name: str, value: str) -> str:
    """A counter is named in quotes, a mark is a number."""
    return value if _MAP_TYPES[name].endswith(": mark") else f'"{value}"'


_HOOKS = {
    # Before DNAT (dstnat): the destination is still the VIP.
    objects.TRAFFIC_NEW_CHAIN: "type nat hook prerouting priority dstnat - 5; policy accept;",
    # Before the main table's source NAT: once a nat chain has mapped a flow, later ones are skipped.
    objects.TRAFFIC_BACKEND_CHAIN: "type nat hook postrouting priority srcnat - 5; policy accept;",
    # Both directions of a routed flow pass forward, each packet once.
    objects.TRAFFIC_FLOW_CHAIN: "type filter hook forward priority filter - 5; policy accept;",
}


def _chain_rules(chain: str, families: Iterable[int]) -> list[tuple[str, str]]:
    """(rule, comment) of one chain for the address families the model has."""
    families = sorted(families)
    if chain == objects.TRAFFIC_NEW_CHAIN:
        marking = [(f"ct mark set {_MATCH[f]} daddr . meta l4proto . th dport map @{objects.traffic_mark_map(f)}", f"ipv{f} mark")
                   for f in families]
        return marking + ([(f"counter name ct mark map @{objects.TRAFFIC_NEW_MAP}", "new")] if families else [])
    if chain == objects.TRAFFIC_BACKEND_CHAIN:
        # A backend counts the connections a load balancer sent to it (DNATed), not the gateway's
        # own health probes or other traffic routed to its address.
        return [(f"ct status dnat counter name {_MATCH[f]} daddr map @{objects.traffic_backend_map(f)}", f"ipv{f} ct status dnat")
                for f in families]
    return [(f"counter name ct mark . ct direction map @{objects.TRAFFIC_FLOW_MAP}", "flows")] if families else []


def chain_rules(chain: str, families: Iterable[int]) -> list[str]:
    """The rules of one chain; each one's comment says what it is, so a listing tells which rules a live chain has."""
    return [f'{rule} comment "{comment}"' for rule, comment in _chain_rules(chain, families)]


def rule_comments(chain: str, families: Iterable[int]) -> set[str]:
    """The comments of a chain's rules: a live chain with others is rewritten."""
    return {comment for _rule, comment in _chain_rules(chain, families)}


def _chains(families: Iterable[int]) -> str:
    """Every chain: accept policy and no verdicts, so counting never changes a packet's fate."""
    families = list(families)
    lines: list[str] = []
    for chain in CHAINS:
        lines += [f"\tchain {chain} {{", f"\t\t{_HOOKS[chain]}", *(f"\t\t{rule}" for rule in chain_rules(chain, families)), "\t}", ""]
    return "\n".join(lines)


def _elements_text(name: str, elements: Mapping[tuple[Any, ...], str]) -> str:
    return ", ".join(f"{_nft_key(k)} : {_nft_value(name, v)}" for k, v in elements.items())


def table_script(layout: TrafficLayout, table: str = objects.TRAFFIC_TABLE) -> str:
    """The whole table, created anew (counters start at zero): for a missing or foreign-shaped table."""
    full = f"{objects.TABLE_FAMILY} {table}"
    lines = ["# Generated by portico-healthd: Portico's traffic counters (only counts, never drops).",
             f"table {full}", f"delete table {full}", f"table {full} {{"]
    lines += [f"\tcounter {name} {{\n\t}}" for name in layout.counters()]
    for name, elements in layout.elements().items():
        lines.append(f"\tmap {name} {{\n\t\ttype {_MAP_TYPES[name]}")
        if elements:
            lines.append(f"\t\telements = {{ {_elements_text(name, elements)} }}")
        lines.append("\t}")
    lines.append(_chains(layout.families()))
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class LiveTraffic:
    """The traffic table as ``nft -j list table`` shows it: its counters (with values) and map elements."""

    structure: frozenset[tuple[str, str]] = frozenset()
    counters: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (packets, bytes)
    elements: dict[str, dict[tuple[Any, ...], str]] = field(default_factory=dict)
    rules: dict[str, set[str]] = field(default_factory=dict)  # chain -> its rules' comments

    @classmethod
    def from_json(cls, text: str | bytes) -> LiveTraffic:
        """ValueError when it is not an ``nft -j`` listing."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
            raise ValueError("expected {\"nftables\": [...]}")
        live = cls()
        shape: set[tuple[str, str]] = set()
        for item in data["nftables"]:
            if not isinstance(item, dict):
                continue
            for kind, body in item.items():
                if kind == "rule":
                    live.rules.setdefault(body.get("chain", ""), set()).add(str(body.get("comment", "")))
                elif kind == "counter":
                    live.counters[body["name"]] = (int(body.get("packets", 0)), int(body.get("bytes", 0)))
                elif kind in ("chain", "map"):
                    shape.add((kind, body["name"]))
                    if kind == "map":
                        live.elements[body["name"]] = dict(_element(elem) for elem in body.get("elem", ()))
        live.structure = frozenset(shape)
        return live


def _element(elem: Any) -> tuple[tuple[Any, ...], str]:
    key, value = elem
    parts = key["concat"] if isinstance(key, dict) and "concat" in key else [key]
    return tuple(_canonical_part(part) for part in parts), str(value)


def delta_script(layout: TrafficLayout, live: LiveTraffic, table: str = objects.TRAFFIC_TABLE) -> str:
    """One transaction from ``live`` to ``layout``: counters that stay keep their values.

    Empty when nothing differs. Elements go before the counters they name are deleted, and come
    after the counters they name are added (nft refuses a map element naming no counter).
    """
    full = f"{objects.TABLE_FAMILY} {table}"
    wanted = layout.counters()
    lines = [f"add counter {full} {name}" for name in wanted if name not in live.counters]
    families = layout.families()
    if any(live.rules.get(chain, set()) != rule_comments(chain, families) for chain in CHAINS):
        # A family came or went: its lookups are added or dropped; counters are objects and stay.
        for chain in CHAINS:
            lines.append(f"flush chain {full} {chain}")
            lines += [f"add rule {full} {chain} {rule}" for rule in chain_rules(chain, families)]
    for name, elements in layout.elements().items():
        current = live.elements.get(name, {})
        stale = [key for key, value in current.items() if elements.get(key) != value]
        if stale:
            lines.append(f"delete element {full} {name} {{ {', '.join(_nft_key(k) for k in stale)} }}")
        missing = {key: value for key, value in elements.items() if current.get(key) != value}
        if missing:
            lines.append(f"add element {full} {name} {{ {_elements_text(name, missing)} }}")
    lines += [f"delete counter {full} {name}" for name in live.counters if name not in wanted]
    return "\n".join(lines) + ("\n" if lines else "")


def sync_script(layout: TrafficLayout, live: LiveTraffic | None, table: str = objects.TRAFFIC_TABLE) -> str:
    """What brings the live table (None: missing) to ``layout``: a delta when its shape is ours, else the whole table."""
    if live is None or live.structure != structure():
        return table_script(layout, table)
    return delta_script(layout, live, table)


@dataclass(frozen=True)
class Sample:
    """One counter's value with what it counts."""

    kind: str
    subject: Any  # a Listener, or a backend address
    packets: int
    bytes: int


def samples(layout: TrafficLayout, counters: Mapping[str, tuple[int, int]]) -> list[Sample]:
    """The layout's counters with their live values (a counter not in the table yet is left out)."""
    found = []
    for name, (kind, subject) in layout.counters().items():
        if name in counters:
            packets, octets = counters[name]
            found.append(Sample(kind, subject, packets, octets))
    return found


def drop_samples(vips: Iterable[str], counters: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """VIP -> (packets, bytes) dropped by the main table's filter, from its named drop counters."""
    return {vip: counters[objects.drop_counter(vip)] for vip in vips if objects.drop_counter(vip) in counters}
