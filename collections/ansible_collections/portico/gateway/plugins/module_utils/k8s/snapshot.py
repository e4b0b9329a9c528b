# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the k8s_services inventory source read last, kept so a focused run reuses it.

The watcher (``bin/portico-watch``) knows which Services changed and says so in
``PORTICO_CHANGED``; with a state directory, the inventory plugin then translates only those
(and any whose Service changed in what translation reads, as a safety net) and reuses the
entries of the rest from here. The Services themselves are listed fresh every run (their
status, claim and deletion are always current); their EndpointSlices only for the Services
translated again. A Node key, another Node list, other options or a missing or unreadable file
mean a full read. One file per inventory source, written atomically.

Standard library only, like every module_util.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SNAPSHOT_FORMAT = "portico.io/k8s-snapshot/v1"
NODE_KEY_MARK = "//"  # cluster//node: a Node changed


def focus_of(changed: Any, full: bool) -> frozenset[str] | None:
    """The changed keys of a focused run (``PORTICO_CHANGED`` as given, a JSON list), or None
    for a full read (asked for, nothing named, unreadable, or a Node among the keys)."""
    if full or not changed:
        return None
    try:
        keys = json.loads(changed) if isinstance(changed, str) else changed
    except ValueError:
        return None
    if not isinstance(keys, list) or not keys or not all(isinstance(key, str) for key in keys):
        return None
    if any(NODE_KEY_MARK in key for key in keys):
        return None
    return frozenset(keys)


def nodes_digest(nodes: Iterable[Mapping[str, Any]]) -> str:
    """What translation reads from the Nodes (their entries), order aside."""
    text = json.dumps(sorted(json.dumps(node, sort_keys=True) for node in nodes))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


@dataclass
class ClusterSnapshot:
    nodes_digest: str
    entries: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # key -> (digest, packed entry)


@dataclass
class Snapshot:
    """Per cluster: the Nodes' digest and every served Service's (digest, entry); the backend
    sets the packed entries refer to."""

    fingerprint: str
    clusters: dict[str, ClusterSnapshot] = field(default_factory=dict)
    backend_sets: dict[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT, "fingerprint": self.fingerprint, "backend_sets": self.backend_sets,
            "clusters": {name: {"nodes_digest": c.nodes_digest, "entries": {k: list(v) for k, v in c.entries.items()}}
                         for name, c in self.clusters.items()},
        }

    @classmethod
    def from_data(cls, data: Any, fingerprint: str) -> Snapshot | None:
        if not isinstance(data, Mapping) or data.get("format") != SNAPSHOT_FORMAT or data.get("fingerprint") != fingerprint:
            return None
        try:
            clusters = {
                str(name): ClusterSnapshot(str(c["nodes_digest"]), {str(k): (str(v[0]), dict(v[1])) for k, v in c["entries"].items()})
                for name, c in data["clusters"].items()
            }
            return cls(fingerprint, clusters, dict(data.get("backend_sets") or {}))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return None


def snapshot_path(state_dir: str, source: str) -> str:
    """One file per inventory source (sources are told apart by their path)."""
    name = hashlib.sha256(os.path.abspath(source).encode("utf-8")).hexdigest()[:16]
    return os.path.join(state_dir, f"k8s_services-{name}.json")


def load(path: str, fingerprint: str) -> Snapshot | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return Snapshot.from_data(json.load(handle), fingerprint)
    except (OSError, ValueError):
        return None


def save(path: str, snapshot: Snapshot) -> None:
    """Atomically (a reader never sees half a file); a failure only costs the next run a full read."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".k8s_services-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # dumps, not dump: only a one-shot encode uses the C encoder (ten times faster here).
            handle.write(json.dumps(snapshot.to_data(), separators=(",", ":")))
        os.replace(temporary, path)
    except OSError:
        return
