# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address pools: the one owner of pool definitions, VIP membership and allocation.

Standard library only: this file is shipped to gateways together with the
modules, and gateways get no pip packages.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import SERVICE_KIND, entry_key, object_key
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem, from_data

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

POOL_FIELDS = frozenset({"addresses", "namespaces", "avoid_buggy_ips", "auto_assign"})


def parse_address(text: Any) -> IPAddress:
    """An IP address in the one spelling nftables, FRR and keepalived accept: no IPv6 zone
    (``fe80::1%eth0``), which Python's parser allows but none of them does. ValueError otherwise."""
    value = str(text).strip()
    if "%" in value:
        raise ValueError(f"{value!r} carries a zone (%...): not an address a load balancer can use")
    return ipaddress.ip_address(value)


def parse_network(text: Any, strict: bool = False) -> IPNetwork:
    """A CIDR without an IPv6 zone (see ``parse_address``). ValueError otherwise."""
    value = str(text).strip()
    if "%" in value:
        raise ValueError(f"{value!r} carries a zone (%...): not a network a load balancer can use")
    return ipaddress.ip_network(value, strict=strict)


class PoolError(ValueError):
    """A pool definition is wrong (pools are all-or-nothing: an address in a wrong pool is worse
    than no address)."""

    def __init__(self, problem: Problem):
        super().__init__(problem.render())
        self.problem = problem


def _pool_problem(pool: str, field_path: str, message: str) -> PoolError:
    return PoolError(Problem(f"pool {pool}", field_path, message))


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
    where = f"addresses[{index}]"
    if not isinstance(text, str) or not text.strip():
        raise _pool_problem(pool, where, f"expected a CIDR or a first-last range, got {text!r}")
    text = text.strip()
    try:
        if "-" in text:
            first_text, last_text = (part.strip() for part in text.split("-", 1))
            first = parse_address(first_text)
            last = parse_address(last_text)
            if first.version != last.version:
                raise _pool_problem(pool, where, f"{text!r} mixes IPv4 and IPv6")
            if first > last:
                raise _pool_problem(pool, where, f"{text!r} ends before it starts")
            return AddressRange(first, last)
        network = parse_network(text, strict=True)
    except ValueError as err:
        if isinstance(err, PoolError):
            raise
        raise _pool_problem(pool, where, f"{text!r} is not a CIDR or range ({err})") from None
    return AddressRange(network.network_address, network.broadcast_address)


def parse_pool(name: str, raw: Any) -> Pool:
    if not isinstance(raw, Mapping):
        raise _pool_problem(name, "", f"expected a mapping with 'addresses', got {type(raw).__name__}")
    unknown = sorted(set(raw) - POOL_FIELDS)
    if unknown:
        raise _pool_problem(name, str(unknown[0]), f"unknown field (known: {', '.join(sorted(POOL_FIELDS))})")
    addresses = raw.get("addresses")
    if not isinstance(addresses, list) or not addresses:
        raise _pool_problem(name, "addresses", "expected a non-empty list of CIDRs or ranges")
    ranges = tuple(_parse_range(name, index, item) for index, item in enumerate(addresses))
    namespaces = raw.get("namespaces", [])
    if not isinstance(namespaces, list) or not all(isinstance(ns, str) for ns in namespaces):
        raise _pool_problem(name, "namespaces", "expected a list of namespace names")
    for flag in ("avoid_buggy_ips", "auto_assign"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise _pool_problem(name, flag, f"expected true or false, got {raw[flag]!r}")
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
        raise PoolError(Problem("pools", "", f"expected a mapping of pool name to definition, got {type(raw).__name__}"))
    pools = {str(name): parse_pool(str(name), body) for name, body in raw.items()}
    _refuse_overlaps(pools.values())
    return pools


def _refuse_overlaps(pools: Iterable[Pool]) -> None:
    seen: list[tuple[str, AddressRange]] = []
    for pool in pools:
        for block in pool.ranges:
            for other_name, other in seen:
                if _overlap(block, other):
                    raise _pool_problem(pool.name, "addresses", f"{block} overlaps pool {other_name} ({other})")
            seen.append((pool.name, block))


def pool_of(address: IPAddress, pools: Mapping[str, Pool]) -> Pool | None:
    for pool in pools.values():
        if pool.contains(address):
            return pool
    return None


# ---------------------------------------------------------------------------
# Allocation: one VIP per IP family per Kubernetes Service (or other source object: a Portico
# LoadBalancer resource; one allocation over every kind, so the same rules hold between them).
#
# Stability rules (why the code is shaped like this):
# * a Service being released (deleted, or out of Portico's scope, while its VIP may still be
#   announced) holds its status addresses until the release is done: nobody else gets them;
# * an address a Service already holds (in its status) is kept while it is still
#   valid for it, so restarts, new pools and unrelated Services never move it;
# * claims are processed in phases (release holds, status, requests, new) and inside a
#   phase by age (metadata.creationTimestamp, then uid): the older Service wins a contest,
#   and the result does not depend on the API's list order or on names;
# * a status hold is the outcome of an earlier run; when two Services ask for the same
#   address by request, that outcome is not what decides: the older requester gets it, even
#   from a newer one that holds it (a hold won by an older Portico, which sorted by name);
# * new addresses come from a hash of the Service's identity probed forward through
#   the pool, so two controllers with the same inputs pick the same address.
# ---------------------------------------------------------------------------

AllocationInput = Mapping[str, Any]
DEFAULT_POOL_FIELD = "metadata.annotations['portico.io/pool']"
DEFAULT_REQUESTED_FIELD = "metadata.annotations['portico.io/loadBalancerIPs']"
DEFAULT_STATUS_FIELD = "status.loadBalancer.ingress"


@dataclass
class Allocation:
    """The outcome for one Service: its VIPs (family order) and LB dicts, or why it got none."""

    cluster: str
    namespace: str
    name: str
    uid: str
    ips: list[str] = field(default_factory=list)
    loadbalancers: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    release: bool = False  # not served: ``ips`` are only held until the release is done
    kind: str = SERVICE_KIND

    @property
    def key(self) -> str:
        return object_key(self.cluster, self.namespace, self.name, self.kind)


@dataclass
class _Claimant:
    """Allocation's working view of one entry (a Service, or another kind of source object)."""

    key: str
    entry: AllocationInput
    namespace: str
    families: tuple[int, ...]
    status: tuple[IPAddress, ...]
    requested: dict[int, IPAddress]
    pools: dict[int, str | None]  # per family: the pool asked for (None: any the namespace may use)
    pool_fields: dict[int, str]  # per family: the field that asks for it
    requested_fields: dict[int, str]  # per family: the field that asks for an address
    optional: frozenset[int]  # families served only when a pool has an address for them
    sharing_key: str | None
    ports: frozenset[tuple[str, int]]
    age: tuple[int, str, str, str]  # sort key: creationTimestamp (missing last), uid, key
    release: bool = False  # only holds its status addresses until it is released
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    chosen: dict[int, tuple[IPAddress, str]] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)  # optional families left out (no address for them)
    lbs: list[Mapping[str, Any]] = field(default_factory=list)  # the entry's LB definitions, checked

    def fail(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.key, where, message))

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(Problem(self.key, where, message))

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def is_buggy_ip(address: IPAddress) -> bool:
    """IPv4 addresses ending in .0 or .255: some clients and routers mishandle them."""
    return address.version == 4 and int(address) % 256 in (0, 255)


def pool_allows_namespace(pool: Pool, namespace: str) -> bool:
    return not pool.namespaces or namespace in pool.namespaces


def pool_usable(pool: Pool, address: IPAddress) -> bool:
    """The pool holds the address and may hand it out (``avoid_buggy_ips``)."""
    return pool.contains(address) and not (pool.avoid_buggy_ips and is_buggy_ip(address))


def family_ranges(pool: Pool, family: int) -> tuple[AddressRange, ...]:
    """The pool's ranges of one family, sorted, so YAML order does not change probing."""
    return tuple(sorted((r for r in pool.ranges if r.first.version == family), key=lambda r: int(r.first)))


def _count_mod(first: int, last: int, residue: int) -> int:
    """How many integers n in [first, last] have n % 256 == residue."""
    return (last - residue) // 256 - (first - 1 - residue) // 256


def pool_capacity(pool: Pool, family: int) -> int:
    """Addresses of one family the pool may hand out."""
    total = 0
    for block in family_ranges(pool, family):
        first, last = int(block.first), int(block.last)
        total += last - first + 1
        if family == 4 and pool.avoid_buggy_ips:
            total -= _count_mod(first, last, 0) + _count_mod(first, last, 255)
    return total


def probe_start(seed: str, size: int) -> int:
    """Deterministic start offset for a seed: the same on every controller and Python."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return int.from_bytes(digest[:16], "big") % size


def probe_seed(key: str, family: int, pool_name: str) -> str:
    return f"{key}|IPv{family}|{pool_name}"


def hash_probe(pool: Pool, family: int, seed: str, is_free: Callable[[IPAddress], bool]) -> IPAddress | None:
    """First usable, free address at or after the seed's start offset (wrapping), or None.

    Callers check capacity first when the pool may be full: the walk is bounded by the
    pool size, which is harmless for sparse IPv6 pools because a free address comes quickly.
    """
    ranges = family_ranges(pool, family)
    sizes = [int(r.last) - int(r.first) + 1 for r in ranges]
    offsets = list(itertools.accumulate(sizes))
    total = offsets[-1] if offsets else 0
    if not total:
        return None
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    start = probe_start(seed, total)
    for step in range(total):
        index = (start + step) % total
        block = bisect.bisect_right(offsets, index)
        base = offsets[block - 1] if block else 0
        address = make(int(ranges[block].first) + index - base)
        if pool_usable(pool, address) and is_free(address):
            return address
    return None


@dataclass(frozen=True)
class _Holder:
    key: str
    sharing_key: str | None
    ports: frozenset[tuple[str, int]]


class _Ledger:
    """Who holds which address, and how full each pool is (pools never overlap)."""

    def __init__(self, pools: Mapping[str, Pool], reserved: Iterable[IPAddress]):
        self.pools = pools
        self.reserved = frozenset(reserved)
        self.holders: dict[IPAddress, list[_Holder]] = {}
        self.by_sharing_key: dict[str, set[IPAddress]] = {}
        self.used: dict[tuple[str, int], int] = {}
        for address in self.reserved:
            self._count(address)

    def _count(self, address: IPAddress) -> None:
        pool = pool_of(address, self.pools)
        if pool is not None and pool_usable(pool, address):
            slot = (pool.name, address.version)
            self.used[slot] = self.used.get(slot, 0) + 1

    def conflict(self, address: IPAddress, claimant: _Claimant) -> str | None:
        """Why the claimant may not use the address, or None if it may (free or shareable)."""
        if address in self.reserved:
            return "is the vip of a static load balancer"
        for holder in self.holders.get(address, ()):
            if holder.key == claimant.key:
                continue
            if not claimant.sharing_key or holder.sharing_key != claimant.sharing_key:
                return f"is taken by {holder.key} (no common sharing key)"
            overlap = sorted(holder.ports & claimant.ports)
            if overlap:
                clash = ", ".join(f"{proto}/{port}" for proto, port in overlap)
                return f"is taken by {holder.key} (sharing key matches but both use {clash})"
        return None

    def is_unheld(self, address: IPAddress) -> bool:
        return address not in self.reserved and not self.holders.get(address)

    def take(self, address: IPAddress, claimant: _Claimant) -> None:
        holders = self.holders.setdefault(address, [])
        if any(h.key == claimant.key for h in holders):
            return
        if not holders and address not in self.reserved:
            self._count(address)
        holders.append(_Holder(claimant.key, claimant.sharing_key, claimant.ports))
        if claimant.sharing_key:
            self.by_sharing_key.setdefault(claimant.sharing_key, set()).add(address)

    def has_unheld(self, pool: Pool, family: int) -> bool:
        return self.used.get((pool.name, family), 0) < pool_capacity(pool, family)


def _ip_or_none(value: Any) -> IPAddress | None:
    try:
        return parse_address(value)
    except ValueError:
        return None


def _items(entry: AllocationInput, name: str, problems: list[Problem], key: str) -> list[Any]:
    """A list field of an entry; anything else is a problem (entries can be edited by hand)."""
    value = entry.get(name)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        problems.append(Problem(key, name, f"expected a list, got {value!r}"))
        return []
    return list(value)


def _text_or_none(entry: AllocationInput, name: str, problems: list[Problem], key: str) -> str | None:
    value = entry.get(name)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        problems.append(Problem(key, name, f"expected a string, got {value!r}"))
        return None
    return value


def _ports_of(lbs: Sequence[Any]) -> frozenset[tuple[str, int]]:
    """(protocol, port) listeners of the Service: every LB of one Service has the same ports."""
    ports = lbs[0].get("ports") if lbs and isinstance(lbs[0], Mapping) else None
    result: set[tuple[str, int]] = set()
    for port in ports if isinstance(ports, list) else []:
        if isinstance(port, Mapping) and isinstance(port.get("port"), int):
            result.add((str(port.get("protocol", "tcp")).lower(), int(port["port"])))
    return frozenset(result)


def _age(entry: AllocationInput, key: str) -> tuple[int, str, str, str]:
    """Oldest first: the API's creationTimestamp (RFC 3339 in UTC, second precision, so text
    order is time order), then the uid, then the key for entries without either."""
    created = str(entry.get("creation_timestamp") or "")
    return (0 if created else 1, created, str(entry.get("uid") or ""), key)


def _family_addresses(entry: AllocationInput, families: Sequence[int], problems: list[Problem], key: str) -> list[Mapping[str, Any]]:
    """The entry's per-family ``addresses`` (pool and/or address of one family, each with the field
    that set it), as kinds other than Services give them."""
    items = []
    for index, item in enumerate(_items(entry, "addresses", problems, key)):
        if not isinstance(item, Mapping) or item.get("family") not in (4, 6):
            problems.append(Problem(key, f"addresses[{index}]", f"expected {{family: 4 or 6, pool, ip}}, got {item!r}"))
        elif item["family"] in families:
            items.append(item)
    return items


def _claimant_of(entry: AllocationInput) -> _Claimant:
    key = entry_key(entry)
    shape: list[Problem] = []
    # An entry that only carries a status (a Gateway API route or class) takes no address.
    status_only = entry.get("status_only") is True
    families = () if status_only else tuple(f for f in _items(entry, "ip_families", shape, key) or [4] if f in (4, 6))
    status = tuple(ip for ip in (_ip_or_none(v) for v in _items(entry, "status_ips", shape, key)) if ip is not None)
    lbs = _items(entry, "loadbalancers", shape, key)
    if not all(isinstance(lb, Mapping) for lb in lbs):
        shape.append(Problem(key, "loadbalancers", "expected a list of LB definitions"))
        lbs = []
    pool = _text_or_none(entry, "pool", shape, key)
    pool_field = str(entry.get("pool_field") or DEFAULT_POOL_FIELD)
    requested_field = str(entry.get("requested_ips_field") or DEFAULT_REQUESTED_FIELD)
    per_family = _family_addresses(entry, families, shape, key)
    claimant = _Claimant(
        key=key,
        entry=entry,
        namespace=str(entry.get("namespace", "")),
        families=families,
        status=status,
        requested={},
        pools={family: pool for family in families},
        pool_fields={family: pool_field for family in families},
        requested_fields={family: requested_field for family in families},
        optional=frozenset(f for f in _items(entry, "optional_families", shape, key) if f in families[1:]),
        sharing_key=_text_or_none(entry, "sharing_key", shape, key),
        ports=_ports_of(lbs),
        age=_age(entry, key),
        release=entry.get("release") is True,
        problems=from_data(_items(entry, "problems", shape, key), key) + shape,
        warnings=from_data(_items(entry, "warnings", shape, key), key),
    )
    claimant.lbs = lbs
    if claimant.release:
        return claimant
    requests = [(value, requested_field) for value in _items(entry, "requested_ips", claimant.problems, key)]
    for item in per_family:
        family = item["family"]
        if item.get("pool") not in (None, ""):
            claimant.pools[family] = str(item["pool"])
            claimant.pool_fields[family] = str(item.get("pool_field") or pool_field)
        if item.get("ip") not in (None, ""):
            requests.append((item["ip"], str(item.get("ip_field") or requested_field)))
    for value, where in requests:
        address = _ip_or_none(value)
        if address is None:
            claimant.fail(where, f"{value!r} is not an IP address")
        elif address.version in families and address.version not in claimant.requested:
            claimant.requested[address.version] = address
            claimant.requested_fields[address.version] = where
    if not claimant.failed and not status_only and len(lbs) != len(families):
        claimant.fail("loadbalancers", f"expected one per IP family ({len(families)}), got {len(lbs)}")
    return claimant


def _why_not(claimant: _Claimant, address: IPAddress, pools: Mapping[str, Pool]) -> tuple[Pool | None, str | None]:
    """The pool the claimant would take the address from, or why it may not have it."""
    pool = pool_of(address, pools)
    if pool is None:
        return None, f"{address} is not in any pool ({', '.join(sorted(pools)) or 'no pools defined'})"
    wanted = claimant.pools.get(address.version)
    if wanted and pool.name != wanted:
        return None, f"{address} is in pool {pool.name!r}, not in the requested pool {wanted!r}"
    if not pool_allows_namespace(pool, claimant.namespace):
        return None, f"{address} is in pool {pool.name!r}, which namespace {claimant.namespace!r} may not use"
    if not pool_usable(pool, address):
        return None, f"{address} is a .0/.255 address that pool {pool.name!r} avoids (avoid_buggy_ips)"
    return pool, None


def _check_pool_annotation(claimant: _Claimant, pools: Mapping[str, Pool]) -> None:
    """The pools asked for exist and the namespace may use them (each asking field once)."""
    asked = sorted({(claimant.pools[f], claimant.pool_fields[f]) for f in claimant.families if claimant.pools[f]})
    for name, where in asked:
        pool = pools.get(name)
        if pool is None:
            known = ", ".join(sorted(pools)) or "none defined"
            claimant.fail(where, f"unknown pool {name!r} (pools: {known})")
        elif not pool_allows_namespace(pool, claimant.namespace):
            claimant.fail(where, f"pool {pool.name!r} may not be used by namespace {claimant.namespace!r}")


def _hold_for_release(claimant: _Claimant, pools: Mapping[str, Pool], ledger: _Ledger) -> None:
    """A Service being released keeps its addresses out of reach until the release is done."""
    for address in claimant.status:
        if pool_of(address, pools) is not None and address not in ledger.reserved:
            ledger.take(address, claimant)


class _OlderRequests:
    """Who asks for which address by request, oldest first, and whether they may have it."""

    def __init__(self, ordered: Sequence[_Claimant], pools: Mapping[str, Pool]):
        self.by_address: dict[IPAddress, list[_Claimant]] = {}
        for claimant in ordered:
            for address in claimant.requested.values():
                if not claimant.failed and _why_not(claimant, address, pools)[1] is None:
                    self.by_address.setdefault(address, []).append(claimant)

    def preempting(self, address: IPAddress, holder: _Claimant) -> _Claimant | None:
        """An older Service that requests the address the holder holds by its own request, and
        may not share it with the holder: the contest goes to that one."""
        if holder.requested.get(address.version) != address:
            return None  # a hold that was never asked for by address is never taken away
        for other in self.by_address.get(address, ()):
            if other.age >= holder.age:
                return None
            if not _may_share(other, holder):
                return other
        return None


def _may_share(one: _Claimant, other: _Claimant) -> bool:
    return bool(one.sharing_key) and one.sharing_key == other.sharing_key and not one.ports & other.ports


def _keep_status(claimant: _Claimant, family: int, pools: Mapping[str, Pool], ledger: _Ledger,
                 older: _OlderRequests) -> None:
    held = [ip for ip in claimant.status if ip.version == family]
    wanted = claimant.requested.get(family)
    reasons: list[str] = []
    for address in held:
        pool, reason = _why_not(claimant, address, pools)
        if reason is None and wanted is not None and address != wanted:
            reason = f"{address} differs from the requested {wanted}"
        if reason is None:
            reason = ledger.conflict(address, claimant)
            reason = f"{address} {reason}" if reason else None
        if reason is None:
            rival = older.preempting(address, claimant)
            reason = f"{address} is also requested by {rival.key}, which is older" if rival else None
        if reason is None and pool is not None:
            ledger.take(address, claimant)
            claimant.chosen[family] = (address, pool.name)
            return
        reasons.append(reason or "")
    if reasons:
        where = str(claimant.entry.get("status_ips_field") or DEFAULT_STATUS_FIELD)
        claimant.warn(where, f"{'; '.join(reasons)}: choosing another address")


def _take_requested(claimant: _Claimant, family: int, pools: Mapping[str, Pool], ledger: _Ledger) -> None:
    address = claimant.requested[family]
    pool, reason = _why_not(claimant, address, pools)
    if reason is None:
        conflict = ledger.conflict(address, claimant)
        reason = f"{address} {conflict}" if conflict else None
    if reason is not None or pool is None:
        claimant.fail(claimant.requested_fields[family], reason or f"{address} is not in any pool")
        return
    ledger.take(address, claimant)
    claimant.chosen[family] = (address, pool.name)


def _candidate_pools(claimant: _Claimant, family: int, pools: Mapping[str, Pool]) -> list[Pool]:
    wanted = claimant.pools[family]
    if wanted:
        pool = pools[wanted]
        return [pool] if family_ranges(pool, family) else []
    return [
        pools[name] for name in sorted(pools)
        if pools[name].auto_assign and pool_allows_namespace(pools[name], claimant.namespace)
        and family_ranges(pools[name], family)
    ]


def _join_sharing_partner(claimant: _Claimant, family: int, candidates: Sequence[Pool], ledger: _Ledger) -> bool:
    """A Service with a sharing key lands on an address its partners already use, when compatible."""
    if not claimant.sharing_key:
        return False
    names = {pool.name for pool in candidates}
    shared = sorted((ip for ip in ledger.by_sharing_key.get(claimant.sharing_key, ()) if ip.version == family), key=int)
    for address in shared:
        pool = pool_of(address, ledger.pools)
        if pool is not None and pool.name in names and pool_usable(pool, address) and ledger.conflict(address, claimant) is None:
            ledger.take(address, claimant)
            claimant.chosen[family] = (address, pool.name)
            return True
    return False


def _no_address(claimant: _Claimant, family: int, where: str, message: str) -> None:
    """A family that gets no address: the claimant fails, unless the family is optional (then it
    is served without it, and told so)."""
    if family in claimant.optional:
        claimant.dropped.add(family)
        claimant.warn(where, f"{message}: served on IPv{claimant.families[0]} only")
    else:
        claimant.fail(where, message)


def _assign_new(claimant: _Claimant, family: int, pools: Mapping[str, Pool], ledger: _Ledger) -> None:
    candidates = _candidate_pools(claimant, family, pools)
    wanted = claimant.pools[family]
    field_path = claimant.pool_fields[family] if wanted else "pools"
    if not candidates:
        if wanted:
            _no_address(claimant, family, field_path, f"pool {wanted!r} has no IPv{family} addresses")
        else:
            _no_address(claimant, family, field_path,
                        f"no auto-assign pool with IPv{family} addresses may be used by namespace {claimant.namespace!r}")
        return
    if _join_sharing_partner(claimant, family, candidates, ledger):
        return
    for pool in candidates:
        if not ledger.has_unheld(pool, family):
            continue
        address = hash_probe(pool, family, probe_seed(claimant.key, family, pool.name), ledger.is_unheld)
        if address is not None:
            ledger.take(address, claimant)
            claimant.chosen[family] = (address, pool.name)
            return
    names = ", ".join(repr(pool.name) for pool in candidates)
    _no_address(claimant, family, field_path, f"no free IPv{family} address left in pool{'s' if len(candidates) > 1 else ''} {names}")


def _result_of(claimant: _Claimant) -> Allocation:
    entry = claimant.entry
    allocation = Allocation(
        cluster=str(entry.get("cluster", "")), namespace=claimant.namespace, name=str(entry.get("name", "")),
        uid=str(entry.get("uid", "")), problems=claimant.problems, warnings=claimant.warnings, release=claimant.release,
        kind=str(entry.get("kind") or SERVICE_KIND),
    )
    if claimant.failed:
        return allocation
    if claimant.release:
        allocation.ips = [str(address) for address in claimant.status]
        return allocation
    for family, lb in zip(claimant.families, claimant.lbs):
        if family in claimant.dropped:
            continue
        address, pool_name = claimant.chosen[family]
        allocation.ips.append(str(address))
        # ``parts``: several LBs on the family's one address (a Gateway's listeners, each with its
        # own backends); the LB itself then only states the ports, for address sharing.
        parts = lb.get("parts")
        for part in parts if isinstance(parts, list) else [lb]:
            allocation.loadbalancers.append({**part, "vip": str(address), "pool": pool_name})
    return allocation


def allocate(
    services: Sequence[AllocationInput],
    pools: Mapping[str, Pool],
    reserved: Iterable[str] = (),
) -> list[Allocation]:
    """Assign one VIP per IP family to each Service entry (see module comment); pure.

    ``services`` are the inventory plugin's ``portico_k8s_services`` entries; ``reserved``
    are addresses never handed out (the VIPs of static load balancers). An entry with
    ``status_only`` takes no address (its object only gets a status); an LB with ``parts`` gives
    its address to each of them instead of being one itself. Returns one
    Allocation per entry, in input order. A Service that cannot be served gets problems
    and no addresses; the others are unaffected.
    """
    claimants = [_claimant_of(entry) for entry in services]
    reserved_ips = {ip for ip in (_ip_or_none(v) for v in reserved) if ip is not None}
    ledger = _Ledger(pools, reserved_ips)
    seen: set[str] = set()
    for claimant in sorted(claimants, key=lambda c: c.key):
        if claimant.key in seen:
            claimant.fail("metadata.name", "listed twice")
        seen.add(claimant.key)
        if not claimant.failed and not claimant.release:
            _check_pool_annotation(claimant, pools)
    for claimant in claimants:
        if claimant.release and not claimant.failed:
            _hold_for_release(claimant, pools, ledger)
    ordered = sorted((c for c in claimants if not c.release), key=lambda c: c.age)
    older = _OlderRequests(ordered, pools)
    for claimant in ordered:
        for family in () if claimant.failed else claimant.families:
            _keep_status(claimant, family, pools, ledger, older)
    for claimant in ordered:
        if claimant.failed:
            # Not served now, but its addresses stay out of reach for this run (after the
            # healthy Services kept theirs): a Service fixed later finds its address again.
            for address in claimant.status:
                if pool_of(address, pools) is not None and ledger.conflict(address, claimant) is None:
                    ledger.take(address, claimant)
    for phase in (_take_requested, _assign_new):
        for claimant in ordered:
            for family in claimant.families:
                if claimant.failed or family in claimant.chosen or family in claimant.dropped:
                    continue
                if phase is _take_requested and family not in claimant.requested:
                    continue
                phase(claimant, family, pools, ledger)
    return [_result_of(claimant) for claimant in claimants]
