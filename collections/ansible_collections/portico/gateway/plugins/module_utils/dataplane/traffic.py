# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic counters: a second table, ``inet portico_traffic``, that only counts.

What it counts, with named counters looked up in maps:

* per listener (VIP . protocol . port): packets and bytes toward the backends (``in``, in
  prerouting just before DNAT, so the key is still the VIP), packets and bytes back to the
  clients (``out``, in postrouting after the reply's source is the VIP again), and new
  connections (the first packet of a flow: conntrack state ``new``);
* per backend address: new connections DNATed to it, whatever the LB. Nodeport backends are
  shared by every Service of a cluster: keyed by address alone, these counters grow with the
  nodes, never with the Services.

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


def structure() -> frozenset[tuple[str, str]]:
    """(kind, name) of the table's chains and maps: a live table with others is rebuilt."""
    chains = {("chain", objects.TRAFFIC_IN_CHAIN), ("chain", objects.TRAFFIC_OUT_CHAIN)}
    return frozenset(chains | {("map", name) for name in structure_maps()})


def _canonical_address(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _canonical(key: Sequence[Any]) -> tuple[Any, ...]:
    vip, protocol, port = key
    return (_canonical_address(vip), protocol, int(port))


def _nft_key(key: tuple[Any, ...]) -> str:
    return " . ".join(str(part) for part in key)


def _chains() -> str:
    """Both chains: accept policy and no verdicts, so counting never changes a packet's fate."""
    listener = "daddr . meta l4proto . th dport"
    reply = "saddr . meta l4proto . th sport"
    inbound = [f"\tchain {objects.TRAFFIC_IN_CHAIN} {{",
               # After the main table's filter (dstnat - 10: dropped packets are counted there),
               # before DNAT (dstnat): the destination is still the VIP.
               "\t\ttype filter hook prerouting priority dstnat - 5; policy accept;"]
    outbound = [f"\tchain {objects.TRAFFIC_OUT_CHAIN} {{",
                # After source NAT (srcnat): a reply's source is the VIP again.
                "\t\ttype filter hook postrouting priority srcnat + 5; policy accept;"]
    for family in objects.FAMILIES:
        match = _MATCH[family]
        inbound.append(f"\t\tct direction original counter name {match} {listener} "
                       f"map @{objects.traffic_map(objects.TRAFFIC_IN, family)}")
        inbound.append(f"\t\tct state new counter name {match} {listener} "
                       f"map @{objects.traffic_map(objects.TRAFFIC_NEW, family)}")
        outbound.append(f"\t\tct status dnat ct direction reply counter name {match} {reply} "
                        f"map @{objects.traffic_map(objects.TRAFFIC_OUT, family)}")
        outbound.append(f"\t\tct status dnat ct state new counter name {match} daddr "
                        f"map @{objects.traffic_map(objects.TRAFFIC_BACKEND_KIND, family)}")
    return "\n".join(inbound + ["\t}", ""] + outbound + ["\t}", ""])


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
    lines.append(_chains())
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class LiveTraffic:
    """The traffic table as ``nft -j list table`` shows it: its counters (with values) and map elements."""

    structure: frozenset[tuple[str, str]] = frozenset()
    counters: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (packets, bytes)
    elements: dict[str, dict[tuple[Any, ...], str]] = field(default_factory=dict)

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
                if kind == "counter":
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
