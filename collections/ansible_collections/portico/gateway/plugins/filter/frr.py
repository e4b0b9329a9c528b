# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the frr role: pool prefixes, prefix-list entries and the checks of its preflight."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from ansible_collections.portico.gateway.plugins.plugin_utils.netaddr_filters import netaddr, needing_netaddr


def _network(text: Any) -> netaddr.IPNetwork | None:
    """A strict CIDR (host bits clear), or None."""
    if not isinstance(text, str) or "/" not in text:
        return None
    try:
        network = netaddr.IPNetwork(text.strip())
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return network if network.ip == network.network else None


def pool_prefixes(pools: Mapping[str, Any] | None) -> list[str]:
    """Every address of the inventory's ``portico_pools`` as the fewest CIDRs, sorted.

    Pool entries are CIDRs, single addresses or ``first-last`` ranges (as in the ipam module);
    ranges become the exact CIDRs that cover them, so nothing outside a pool is ever permitted.
    """
    cidrs: list[netaddr.IPNetwork] = []
    for name, pool in (pools or {}).items():
        if not isinstance(pool, Mapping):
            raise ValueError(f"pool_prefixes: pool {name}: expected a mapping with addresses")
        for index, entry in enumerate(pool.get("addresses") or []):
            text = str(entry).strip()
            try:
                if "-" in text:
                    first, last = (part.strip() for part in text.split("-", 1))
                    cidrs.extend(netaddr.iprange_to_cidrs(first, last))
                else:
                    cidrs.append(netaddr.IPNetwork(text).cidr)
            except (netaddr.AddrFormatError, ValueError, TypeError) as err:
                raise ValueError(f"pool_prefixes: pool {name}: addresses[{index}]: {text!r}: {err}") from None
    return [str(cidr) for cidr in netaddr.cidr_merge(cidrs)]


def invalid_prefixes(prefixes: Iterable[Any]) -> list[str]:
    """Entries that are not a CIDR with the host bits clear (for the role's asserts)."""
    return [str(p) for p in prefixes if _network(p) is None]


def invalid_addresses(addresses: Iterable[Any]) -> list[str]:
    """Entries that are not a plain IPv4 or IPv6 address."""
    bad = []
    for address in addresses:
        try:
            netaddr.IPAddress(str(address), flags=netaddr.INET_PTON)
        except (netaddr.AddrFormatError, ValueError):
            bad.append(str(address))
    return bad


def ip_version(address: Any) -> int:
    """4 or 6 for an address or CIDR, 0 when it is neither."""
    try:
        return netaddr.IPNetwork(str(address)).version
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return 0


def frr_prefix_list_entries(prefixes: Iterable[str], version: int, longer: str) -> list[str]:
    """FRR prefix-list entries of one family, in ``show running-config`` form, sorted.

    ``longer="hosts"``: only host routes inside each prefix (``P ge 32``); ``longer="any"``: the
    prefix and anything more specific (``P le 32``). A host prefix stays a plain exact entry
    (FRR refuses ``ge``/``le`` equal to the prefix length).
    """
    if longer not in ("hosts", "any"):
        raise ValueError(f"frr_prefix_list_entries: longer must be hosts or any, got {longer!r}")
    entries = []
    for network in sorted({n for n in (_network(p) for p in prefixes) if n is not None and n.version == version}):
        host = 32 if network.version == 4 else 128
        if network.prefixlen == host:
            entries.append(str(network))
        else:
            entries.append(f"{network} {'ge' if longer == 'hosts' else 'le'} {host}")
    return entries


class FilterModule:
    """Filters of the frr role."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return needing_netaddr({
            "pool_prefixes": pool_prefixes,
            "invalid_prefixes": invalid_prefixes,
            "invalid_addresses": invalid_addresses,
            "ip_version": ip_version,
            "frr_prefix_list_entries": frr_prefix_list_entries,
        })
