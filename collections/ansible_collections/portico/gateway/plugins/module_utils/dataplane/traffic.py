# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic counters: a second table, ``inet portico_traffic``, that only counts.

What it counts, with named counters looked up in maps:

* per listener (VIP . protocol . port): packets and bytes toward the backends (``in``, in
  prerouting just before DNAT, so the key is still the VIP), packets and bytes back to the
  clients (``out``, in postrouting after the reply's source is the VIP again), and new
  connections (``new``);
* per backend address: new connections DNATed to it, whatever the LB. Nodeport backends are
  shared by every Service of a cluster: keyed by address alone, these counters grow with the
  nodes, never with the Services.

Cost is what decides the shape (measured with bench/throughput.py --traffic-metrics): each
expression a packet walks costs, so the per-packet chains hold one lookup per family of the
model and nothing else, and new connections are counted in nat chains, which conntrack walks
for a flow's first packet only. No ``ct direction`` test: a reply never comes from a VIP's
listener port before source NAT, nor goes to one after it, so each lookup only finds its own
direction.

Drops stay where they are decided: the main table's per-VIP counters (``objects.drop_counter``).

Why a table of its own: it never decides anything (every chain accepts), so it cannot change
what the main table does; the health checker keeps it in step with the applied model by delta
(``delta_script``), so counters survive converges and daemon restarts, and the nft module's
drift check and transactions never see it. Cost: one map lookup per forwarded packet to or
from a listener, two more per new connection (bench/throughput.py --traffic-metrics).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer

_ADDRESS_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_MATCH = {4: "ip", 6: "ip6"}

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


@dataclass(frozen=True)
class TrafficLayout:
    """What the traffic table must hold for one model: listeners and backend addresses."""

    listeners: tuple[Listener, ...] = ()
    backends: tuple[str, ...] = ()

    def families(self) -> set[int]:
        """The address families with something to count: the chains look up only theirs."""
        return {listener.family for listener in self.listeners} | {ipaddress.ip_address(a).version for a in self.backends}

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
        """Map name -> {key: counter name}, for every map of the table (empty maps included)."""
        maps: dict[str, dict[tuple[Any, ...], str]] = {name: {} for name in structure_maps()}
        for listener in self.listeners:
            for kind in objects.TRAFFIC_LISTENER_KINDS:
                maps[objects.traffic_map(kind, listener.family)][_canonical(listener.key)] = \
                    objects.traffic_listener_counter(kind, *listener.key)
        for address in self.backends:
            family = ipaddress.ip_address(address).version
            maps[objects.traffic_map(objects.TRAFFIC_BACKEND_KIND, family)][(_canonical_address(address),)] = \
                objects.traffic_backend_counter(address)
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


def structure_maps() -> list[str]:
    return [objects.traffic_map(kind, family) for family in objects.FAMILIES
            for kind in (*objects.TRAFFIC_LISTENER_KINDS, objects.TRAFFIC_BACKEND_KIND)]


CHAINS = (objects.TRAFFIC_IN_CHAIN, objects.TRAFFIC_OUT_CHAIN, objects.TRAFFIC_NEW_CHAIN, objects.TRAFFIC_BACKEND_CHAIN)


def structure() -> frozenset[tuple[str, str]]:
    """(kind, name) of the table's chains and maps: a live table with others is rebuilt."""
    return frozenset({("chain", name) for name in CHAINS} | {("map", name) for name in structure_maps()})


def _canonical_address(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _canonical(key: Sequence[Any]) -> tuple[Any, ...]:
    vip, protocol, port = key
    return (_canonical_address(vip), protocol, int(port))


def _nft_key(key: tuple[Any, ...]) -> str:
    return " . ".join(str(part) for part in key)


# chain -> (hook line, rule per family: what is looked up, in which map kind).
_LISTENER = "daddr . meta l4proto . th dport"
_CHAIN_SHAPES = {
    # After the main table's filter (dstnat - 10: dropped packets are counted there), before DNAT
    # (dstnat): the destination is still the VIP.
    objects.TRAFFIC_IN_CHAIN: ("type filter hook prerouting priority dstnat - 5; policy accept;", _LISTENER, objects.TRAFFIC_IN),
    # After source NAT (srcnat): a reply's source is the VIP again.
    objects.TRAFFIC_OUT_CHAIN: ("type filter hook postrouting priority srcnat + 5; policy accept;",
                                "saddr . meta l4proto . th sport", objects.TRAFFIC_OUT),
    objects.TRAFFIC_NEW_CHAIN: ("type nat hook prerouting priority dstnat - 5; policy accept;", _LISTENER, objects.TRAFFIC_NEW),
    # Before the main table's source NAT: once a nat chain has mapped a flow, later ones are skipped.
    objects.TRAFFIC_BACKEND_CHAIN: ("type nat hook postrouting priority srcnat - 5; policy accept;", "daddr",
                                    objects.TRAFFIC_BACKEND_KIND),
}


# What a chain counts besides its lookup. A backend counts the connections a load balancer sent
# to it (DNATed), not the gateway's own health probes or other traffic routed to its address.
_CONDITIONS = {objects.TRAFFIC_BACKEND_CHAIN: "ct status dnat "}


def chain_rules(chain: str, families: Iterable[int]) -> list[str]:
    """The rules of one chain for the address families the model has (a lookup per packet per family otherwise)."""
    _hook, key, kind = _CHAIN_SHAPES[chain]
    condition = _CONDITIONS.get(chain, "")
    # The comment names the family, so a listing tells which lookups a chain has.
    return [f'{condition}counter name {_MATCH[family]} {key} map @{objects.traffic_map(kind, family)} comment "{_rule_comment(chain, family)}"'
            for family in sorted(families)]


def _rule_comment(chain: str, family: int) -> str:
    """The family, and whether the rule has a condition: a live rule without it is rewritten."""
    return f"ipv{family} {_CONDITIONS[chain].strip()}" if chain in _CONDITIONS else f"ipv{family}"


def _chains(families: Iterable[int]) -> str:
    """Every chain: accept policy and no verdicts, so counting never changes a packet's fate."""
    families = list(families)
    lines: list[str] = []
    for chain, (hook, _key, _kind) in _CHAIN_SHAPES.items():
        lines += [f"\tchain {chain} {{", f"\t\t{hook}", *(f"\t\t{rule}" for rule in chain_rules(chain, families)), "\t}", ""]
    return "\n".join(lines)


def _map_type(name: str) -> str:
    family = 6 if name.endswith("6") else 4
    if name.startswith(objects.TRAFFIC_BACKEND_KIND):
        return f"{_ADDRESS_TYPE[family]} : counter"
    return f"{_ADDRESS_TYPE[family]} . inet_proto . inet_service : counter"


def table_script(layout: TrafficLayout, table: str = objects.TRAFFIC_TABLE) -> str:
    """The whole table, created anew (counters start at zero): for a missing or foreign-shaped table."""
    full = f"{objects.TABLE_FAMILY} {table}"
    lines = ["# Generated by portico-healthd: Portico's traffic counters (only counts, never drops).",
             f"table {full}", f"delete table {full}", f"table {full} {{"]
    lines += [f"\tcounter {name} {{\n\t}}" for name in layout.counters()]
    for name, elements in layout.elements().items():
        lines.append(f"\tmap {name} {{\n\t\ttype {_map_type(name)}")
        if elements:
            lines.append("\t\telements = { " + ",\n\t\t\t     ".join(f'{_nft_key(k)} : "{v}"' for k, v in elements.items()) + " }")
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
    if isinstance(key, dict) and "concat" in key:
        return _canonical(key["concat"]), str(value)
    return (_canonical_address(str(key)),), str(value)


def delta_script(layout: TrafficLayout, live: LiveTraffic, table: str = objects.TRAFFIC_TABLE) -> str:
    """One transaction from ``live`` to ``layout``: counters that stay keep their values.

    Empty when nothing differs. Elements go before the counters they name are deleted, and come
    after the counters they name are added (nft refuses a map element naming no counter).
    """
    full = f"{objects.TABLE_FAMILY} {table}"
    wanted = layout.counters()
    lines = [f"add counter {full} {name}" for name in wanted if name not in live.counters]
    families = layout.families()
    if any(live.rules.get(chain, set()) != {_rule_comment(chain, f) for f in families} for chain in CHAINS):
        # A family came or went: its lookups are added or dropped; counters are objects and stay.
        for chain in CHAINS:
            lines.append(f"flush chain {full} {chain}")
            lines += [f"add rule {full} {chain} {rule}" for rule in chain_rules(chain, families)]
    for name, elements in layout.elements().items():
        current = live.elements.get(name, {})
        stale = [key for key, counter in current.items() if elements.get(key) != counter]
        if stale:
            lines.append(f"delete element {full} {name} {{ {', '.join(_nft_key(k) for k in stale)} }}")
        missing = [(key, counter) for key, counter in elements.items() if current.get(key) != counter]
        if missing:
            lines.append(f"add element {full} {name} {{ " + ", ".join(f'{_nft_key(k)} : "{c}"' for k, c in missing) + " }")
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
