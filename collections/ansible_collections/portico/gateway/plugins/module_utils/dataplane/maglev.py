# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent hashing for backend tables (Maglev, with rendezvous repair).

The kernel hashes each flow (jhash, fixed seed) to a slot in [0, size); this
module decides which backend owns each slot.

* The base table is Maglev over the *configured* backends: weighted, balanced
  to within one slot per backend per weight unit, and identical on every
  controller and gateway (hashlib, never Python's salted ``hash``).
* When some backends are unhealthy, only their slots are reassigned, each to
  the healthy backend that wins a weighted rendezvous draw for that slot.
  So a backend failing moves only the flows it had, whatever else is down, and
  flows of backends that stay healthy keep their backend.

Standard library only: runs on gateways (nft module, health checker).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache, reduce
from typing import Collection, Sequence

# Primes spaced about 2x apart: a table size stays fixed while the backend count
# moves inside a band, which is what keeps remapping minimal.
TABLE_SIZES = (
    101, 211, 401, 809, 1601, 3203, 6421, 12809, 25601, 51203, 102407, 204803, 409609, 819229,
)
DEFAULT_SLOTS_PER_BACKEND = 100
NO_BACKEND = -1


@dataclass(frozen=True)
class MaglevBackend:
    key: str  # stable identity, e.g. "192.0.2.11:8080"
    weight: int = 1


def _hash64(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def table_size_for(backend_count: int, slots_per_backend: int = DEFAULT_SLOTS_PER_BACKEND) -> int:
    """Smallest listed prime giving at least ``slots_per_backend`` slots to each backend."""
    wanted = max(1, backend_count) * slots_per_backend
    for size in TABLE_SIZES:
        if size >= wanted:
            return size
    return TABLE_SIZES[-1]


def _preferences(key: str, size: int, seed: str) -> tuple[int, int]:
    offset = _hash64(seed, "offset", key) % size
    skip = _hash64(seed, "skip", key) % (size - 1) + 1
    return offset, skip


def _turns(weights: Sequence[int]) -> list[int]:
    """Per-round turns for each backend: weights divided by their common divisor."""
    divisor = reduce(math.gcd, [w for w in weights if w > 0], 0) or 1
    return [w // divisor for w in weights]


def base_table(backends: Sequence[MaglevBackend], size: int, seed: str = "") -> list[int]:
    """Maglev population: each round, every backend claims ``weight`` of its preferred free slots."""
    if size < 2 or any(size % d == 0 for d in range(2, int(math.isqrt(size)) + 1)):
        raise ValueError(f"table size {size} must be a prime")
    table = [NO_BACKEND] * size
    live = [i for i, b in enumerate(backends) if b.weight > 0]
    if not live:
        return table
    turns = _turns([backends[i].weight for i in live])
    prefs = [_preferences(backends[i].key, size, seed) for i in live]
    cursor = [0] * len(live)
    filled = 0
    while filled < size:
        for slot_owner, index in enumerate(live):
            for _turn in range(turns[slot_owner]):
                offset, skip = prefs[slot_owner]
                slot = (offset + cursor[slot_owner] * skip) % size
                while table[slot] != NO_BACKEND:
                    cursor[slot_owner] += 1
                    slot = (offset + cursor[slot_owner] * skip) % size
                table[slot] = index
                cursor[slot_owner] += 1
                filled += 1
                if filled == size:
                    return table
    return table


def _rendezvous_owner(slot: int, candidates: Sequence[int], backends: Sequence[MaglevBackend], seed: str) -> int:
    best, best_score = NO_BACKEND, -math.inf
    for index in candidates:
        draw = (_hash64(seed, "slot", str(slot), backends[index].key) + 1) / float(2**64 + 1)
        score = -backends[index].weight / math.log(draw)
        if score > best_score:
            best, best_score = index, score
    return best


@lru_cache(maxsize=1024)
def _cached_base_table(backends: tuple[MaglevBackend, ...], size: int, seed: str) -> tuple[int, ...]:
    # The health checker repairs the same base table on every state change of an LB.
    return tuple(base_table(backends, size, seed))


def lookup_table(
    backends: Sequence[MaglevBackend],
    size: int,
    healthy: Collection[str] | None = None,
    seed: str = "",
) -> list[int]:
    """Slot -> index into ``backends`` (NO_BACKEND when nothing can serve).

    ``healthy`` is the set of backend keys that pass health checks; None means all.
    """
    table = list(_cached_base_table(tuple(backends), size, seed))
    if healthy is None:
        return table
    serving = [i for i, b in enumerate(backends) if b.key in healthy and b.weight > 0]
    serving_set = set(serving)
    if len(serving_set) == sum(1 for b in backends if b.weight > 0):
        return table
    return [owner if owner in serving_set else _rendezvous_owner(slot, serving, backends, seed)
            for slot, owner in enumerate(table)]
