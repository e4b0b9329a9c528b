# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address pools: the one owner of pool definitions and VIP membership.

Standard library only: this file is shipped to gateways together with the
modules, and gateways get no pip packages.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

POOL_FIELDS = frozenset({"addresses", "namespaces", "avoid_buggy_ips", "auto_assign"})


class PoolError(ValueError):
    """A pool definition is wrong; the message names pool and field."""


@dataclass(frozen=True)
class AddressRange:
    """An inclusive first-last range of one address family."""

    first: IPAddress
    last: IPAddress

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        return address.version == self.first.version and self.first <= address <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


@dataclass(frozen=True)
class Pool:
    name: str
    ranges: tuple[AddressRange, ...]
    namespaces: tuple[str, ...] = ()
    avoid_buggy_ips: bool = False
    auto_assign: bool = True

    def contains(self, address: IPAddress) -> bool:
        return any(address in block for block in self.ranges)


def _parse_range(pool: str, index: int, text: Any) -> AddressRange:
    where = f"pool {pool}: addresses[{index}]"
    if not isinstance(text, str) or not text.strip():
        raise PoolError(f"{where}: expected a CIDR or a first-last range, got {text!r}")
    text = text.strip()
    try:
        if "-" in text:
            first_text, last_text = (part.strip() for part in text.split("-", 1))
            first = ipaddress.ip_address(first_text)
            last = ipaddress.ip_address(last_text)
            if first.version != last.version:
                raise PoolError(f"{where}: {text!r} mixes IPv4 and IPv6")
            if first > last:
                raise PoolError(f"{where}: {text!r} ends before it starts")
            return AddressRange(first, last)
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        if isinstance(err, PoolError):
            raise
        raise PoolError(f"{where}: {text!r} is not a CIDR or range ({err})") from None
    return AddressRange(network.network_address, network.broadcast_address)


def parse_pool(name: str, raw: Any) -> Pool:
    if not isinstance(raw, Mapping):
        raise PoolError(f"pool {name}: expected a mapping with 'addresses', got {type(raw).__name__}")
    unknown = sorted(set(raw) - POOL_FIELDS)
    if unknown:
        raise PoolError(f"pool {name}: {unknown[0]}: unknown field (known: {', '.join(sorted(POOL_FIELDS))})")
    addresses = raw.get("addresses")
    if not isinstance(addresses, list) or not addresses:
        raise PoolError(f"pool {name}: addresses: expected a non-empty list of CIDRs or ranges")
    ranges = tuple(_parse_range(name, index, item) for index, item in enumerate(addresses))
    namespaces = raw.get("namespaces", [])
    if not isinstance(namespaces, list) or not all(isinstance(ns, str) for ns in namespaces):
        raise PoolError(f"pool {name}: namespaces: expected a list of namespace names")
    for flag in ("avoid_buggy_ips", "auto_assign"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise PoolError(f"pool {name}: {flag}: expected true or false, got {raw[flag]!r}")
    return Pool(
        name=name,
        ranges=ranges,
        namespaces=tuple(namespaces),
        avoid_buggy_ips=raw.get("avoid_buggy_ips", False),
        auto_assign=raw.get("auto_assign", True),
    )


def _overlap(a: AddressRange, b: AddressRange) -> bool:
    return a.first.version == b.first.version and a.first <= b.last and b.first <= a.last


def parse_pools(raw: Any) -> dict[str, Pool]:
    """Parse the inventory's pool mapping; pools must not overlap each other."""
    if raw in (None, ""):
        return {}
    if not isinstance(raw, Mapping):
        raise PoolError(f"pools: expected a mapping of pool name to definition, got {type(raw).__name__}")
    pools = {str(name): parse_pool(str(name), body) for name, body in raw.items()}
    _refuse_overlaps(pools.values())
    return pools


def _refuse_overlaps(pools: Iterable[Pool]) -> None:
    seen: list[tuple[str, AddressRange]] = []
    for pool in pools:
        for block in pool.ranges:
            for other_name, other in seen:
                if _overlap(block, other):
                    raise PoolError(f"pool {pool.name}: addresses: {block} overlaps pool {other_name} ({other})")
            seen.append((pool.name, block))


def pool_of(address: IPAddress, pools: Mapping[str, Pool]) -> Pool | None:
    for pool in pools.values():
        if pool.contains(address):
            return pool
    return None
