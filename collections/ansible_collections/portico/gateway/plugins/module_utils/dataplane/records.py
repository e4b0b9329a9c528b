# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files the nft module and the health checker exchange: one writer and one reader each.

Under ``<state_dir>/<table>`` (``DataplaneFiles``), written by ``nft_loadbalancer``:

* ``.dataplane.json``, the dataplane record: the LBs and render options last applied, the
  pools and the digest. Read by the health checker (what to check, how its tables are
  shaped) and by the module (what changed since, for the plan)::

      {"digest": "<hex>", "options": {<render options>}, "pools": {...},
       "loadbalancers": [<LoadBalancer.to_dict()>, ...]}

* ``.structure.json``: the table as applied (``nft.TableListing.structure``), for drift.
* ``.nft``: the intent script (every backend healthy), which a boot restores.
* ``.txt``: the reviewer's view of the table (the "before" of a diff).

The health state file (``/run/portico/healthd/state.json``), written by the health checker
under the dataplane lock with every table change, read back by the module so a converge keeps
dead backends out, by the health checker when it starts (fail-static) and by its status
command::

    {"version": 1, "updated": <epoch>, "loadbalancers": {
        "<lb name>": {"withheld": ["<backend address>", ...], "served": [...], ...}, ...},
     "backends": [...], "vips": {...}}

``withheld`` is what the dataplane must leave out for that LB; a backend the state file does
not mention is served (new backends start in rotation, like HAProxy's default).

Standard library only: runs in modules and in the health checker on gateways.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.objects import DEFAULT_TABLE
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import (
    RenderOptions,
    options_from_dict,
    options_to_dict,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer

DEFAULT_STATE_DIR = "/var/lib/portico/nftables"
DEFAULT_STATE_FILE = "/run/portico/healthd/state.json"
DEFAULT_LOCK_FILE = "/run/portico/dataplane.lock"
STATE_VERSION = 1


# --------------------------------------------------------------------------- files on disk

@dataclass(frozen=True)
class DataplaneFiles:
    """Where the nft module keeps what it applied for one table."""

    state_dir: str = DEFAULT_STATE_DIR
    table: str = DEFAULT_TABLE

    @property
    def _base(self) -> str:
        return os.path.join(self.state_dir, self.table)

    @property
    def record(self) -> str:
        return f"{self._base}.dataplane.json"

    @property
    def structure(self) -> str:
        return f"{self._base}.structure.json"

    @property
    def script(self) -> str:
        return f"{self._base}.nft"

    @property
    def view(self) -> str:
        return f"{self._base}.txt"

    @property
    def legacy(self) -> tuple[str, ...]:
        """Files earlier versions kept here that nothing reads any more: the applied model (now in the
        record) and the text listing (now the JSON structure). The module removes them."""
        return (f"{self._base}.json", f"{self._base}.listing")

    def current(self) -> tuple[str, ...]:
        return (self.record, self.structure, self.script, self.view)


def file_signature(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """Identity of a file version (inode, mtime, size); None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_text(path: str) -> str | None:
    """A file's text, None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_text_atomic(path: str, text: str) -> None:
    """Readers see the old file or the new one, never a part (rename in the same directory)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str, data: Any) -> None:
    # Compact: the C encoder, and the health state is rewritten with every health change.
    write_text_atomic(path, json.dumps(data, separators=(",", ":")))


# --------------------------------------------------------------------------- dataplane record

@dataclass(frozen=True)
class DataplaneRecord:
    """What the nft module applied: LB definitions, render options, pools, digest."""

    digest: str
    options: Mapping[str, Any]  # as options_to_dict wrote them
    pools: Mapping[str, Any]
    loadbalancers: tuple[Mapping[str, Any], ...]  # LoadBalancer.to_dict() of each applied LB
    signature: tuple[int, int, int] | None = None  # of the file it was read from

    @classmethod
    def of(cls, lbs: Sequence[LoadBalancer], options: RenderOptions, digest: str, pools: Mapping[str, Any]) -> DataplaneRecord:
        return cls(digest=digest, options=options_to_dict(options), pools=pools,
                   loadbalancers=tuple(lb.to_dict() for lb in lbs))

    def to_json(self) -> str:
        return json.dumps({"digest": self.digest, "options": self.options, "pools": self.pools,
                           "loadbalancers": list(self.loadbalancers)}, indent=1, sort_keys=True)

    def render_options(self) -> RenderOptions:
        return options_from_dict(self.options)

    def by_name(self) -> dict[str, Mapping[str, Any]]:
        return {lb["name"]: lb for lb in self.loadbalancers}


def read_record(path: str) -> DataplaneRecord | None:
    """The dataplane record, None when there is none; ValueError when it is not one."""
    signature = file_signature(path)
    if signature is None:
        return None
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    lbs, options, pools = raw.get("loadbalancers", []), raw.get("options", {}), raw.get("pools", {})
    if not isinstance(lbs, list) or not all(isinstance(lb, dict) and "name" in lb for lb in lbs):
        raise ValueError(f"{path}: loadbalancers: expected a list of LB definitions")
    if not isinstance(options, dict) or not isinstance(pools, dict):
        raise ValueError(f"{path}: options and pools must be JSON objects")
    return DataplaneRecord(digest=str(raw.get("digest", "")), options=options, pools=pools,
                           loadbalancers=tuple(lbs), signature=signature)


# --------------------------------------------------------------------------- table structure

def read_structure(path: str) -> list[Any] | None:
    """The table structure recorded at the last apply; None when unknown (missing or unreadable)."""
    text = read_text(path)
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return data if isinstance(data, list) else None


def write_structure(path: str, structure: list[Any]) -> None:
    write_text_atomic(path, json.dumps(structure, separators=(",", ":"), sort_keys=True))


# --------------------------------------------------------------------------- health state

def health_state(loadbalancers: Mapping[str, Mapping[str, Any]], **details: Any) -> dict[str, Any]:
    """A health state document: per LB name at least ``withheld`` and ``served``; ``details``
    (backends, vips, ...) are the health checker's own, for its status command."""
    return {"version": STATE_VERSION, "updated": time.time(), "loadbalancers": dict(loadbalancers), **details}


def lb_health(withheld: Iterable[str], served: Iterable[str], **details: Any) -> dict[str, Any]:
    """One LB's entry in the health state."""
    return {"withheld": sorted(withheld), "served": sorted(served), **details}


def write_health_state(path: str, state: Mapping[str, Any]) -> None:
    write_json_atomic(path, {**state, "updated": time.time()})


def load_health_state(path: str) -> dict[str, Any]:
    """The health state document; OSError or ValueError when missing, unreadable or foreign."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a version {STATE_VERSION} health state")
    if not isinstance(data.get("loadbalancers", {}), dict):
        raise ValueError(f"{path}: loadbalancers: expected a JSON object")
    return data


def recorded_lb_health(state: Mapping[str, Any]) -> dict[str, tuple[set[str], set[str]]]:
    """LB name -> (withheld, served) addresses as a health state records them."""
    result: dict[str, tuple[set[str], set[str]]] = {}
    for name, entry in state.get("loadbalancers", {}).items():
        if isinstance(entry, dict):
            result[name] = ({a for a in entry.get("withheld", []) if isinstance(a, str)},
                            {a for a in entry.get("served", []) if isinstance(a, str)})
    return result


def read_withheld(path: str, lbs: Iterable[LoadBalancer]) -> dict[str, set[str]]:
    """What the health checker withholds, for the LBs being rendered; empty when unknown.

    A missing, unreadable or foreign file means "nothing withheld": the dataplane then
    serves every configured backend, which is also what happens with no health checker.
    """
    try:
        recorded = recorded_lb_health(load_health_state(path))
    except (OSError, ValueError):
        return {}
    result: dict[str, set[str]] = {}
    for lb in lbs:
        if lb.name not in recorded or lb.health_check.type == "none":
            continue
        addresses = {b.address for b in lb.backends}
        withheld = recorded[lb.name][0] & addresses
        if withheld:
            result[lb.name] = withheld
    return result
