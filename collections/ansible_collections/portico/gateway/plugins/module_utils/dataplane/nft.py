# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Thin wrapper around the ``nft`` command: check, apply, read back, and the dataplane lock.

A live table is read as ``nft -j`` JSON (``TableListing``); which object is which comes from
``objects``, never from matching names again. Kept free of Ansible imports so the health
checker daemon can use it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import DEFAULT_LOCK_FILE

# Values that change without anyone changing the table: kernel handles and traffic counters.
_VOLATILE_KEYS = frozenset(("handle", "packets", "bytes"))


class NftError(RuntimeError):
    """nft refused a script or a command; the message carries nft's own diagnostics."""


@dataclass
class Nft:
    binary: str = "nft"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], capture_output=True, text=True, check=False)

    def _run_script(self, script: str, check_only: bool) -> None:
        fd, path = tempfile.mkstemp(prefix="portico-", suffix=".nft")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(script)
            args = ("-c", "-f", path) if check_only else ("-f", path)
            result = self._run(*args)
            if result.returncode != 0:
                verb = "check" if check_only else "apply"
                raise NftError(f"nft {verb} failed: {result.stderr.strip() or result.stdout.strip()}")
        finally:
            os.unlink(path)

    def check(self, script: str) -> None:
        """``nft -c``: the kernel validates the whole transaction without committing it."""
        self._run_script(script, check_only=True)

    def apply(self, script: str) -> None:
        """``nft -f``: one atomic transaction; a failure leaves the old ruleset in place."""
        self._run_script(script, check_only=False)

    def list_table(self, table: str, family: str = objects.TABLE_FAMILY) -> TableListing | None:
        """The live table as ``nft -j`` reports it, or None when the table does not exist."""
        # Bytes, not text: json reads them as they are, and a big table's listing is not copied.
        result = subprocess.run([self.binary, "-j", "list", "table", family, table], capture_output=True, check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")
            if "No such file or directory" in stderr or "does not exist" in stderr:
                return None
            raise NftError(f"nft list table {family} {table} failed: {stderr.strip()}")
        try:
            return TableListing.from_json(result.stdout)
        except ValueError as err:
            raise NftError(f"nft list table {family} {table}: unreadable JSON: {err}") from None

    def remembered_clients(self, table: str, family: str = objects.TABLE_FAMILY) -> dict[str, list[tuple[str, int]]]:
        """The clients the live table's affinity sets remember: set name -> (address, whole seconds
        left); empty when the table does not exist. Only the sets are listed, not the (big) maps."""
        result = subprocess.run([self.binary, "-j", "list", "sets", "table", family, table], capture_output=True, check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")
            if "No such file or directory" in stderr or "does not exist" in stderr:
                return {}
            raise NftError(f"nft list sets table {family} {table} failed: {stderr.strip()}")
        try:
            data = json.loads(result.stdout)
            items = data["nftables"]
        except (ValueError, KeyError, TypeError) as err:
            raise NftError(f"nft list sets table {family} {table}: unreadable JSON: {err}") from None
        remembered: dict[str, list[tuple[str, int]]] = {}
        for item in items:
            body = item.get("set") if isinstance(item, dict) else None
            if isinstance(body, dict) and objects.is_dynamic("set", body.get("name", "")):
                remembered[body["name"]] = [client for client in map(_remembered_client, body.get("elem", ())) if client]
        return remembered

    def delete_table(self, table: str, family: str = objects.TABLE_FAMILY) -> None:
        result = self._run("delete", "table", family, table)
        if result.returncode != 0 and "No such file or directory" not in result.stderr:
            raise NftError(f"nft delete table {family} {table} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class TableListing:
    """One table as ``nft -j list table`` lists it, split by owner.

    ``items``: every object (``{kind: body}``, metainfo left out) without the elements of the
    health-owned sets and maps; ``health``: those elements, in the renderer's shape
    (``render.health_elements``). Splitting at read time frees the bulk of a big table, the slot
    map elements, as soon as they are converted. The elements of the client-affinity sets are
    dropped: the kernel writes them from traffic, so they are nobody's state to compare.
    """

    items: tuple[Mapping[str, Any], ...]
    health: objects.HealthElements

    @classmethod
    def from_json(cls, text: str | bytes) -> TableListing:
        # Each slot map element holds a ``{"concat": [address, port]}``: read as a tuple it takes a
        # third of the memory (``structure`` spells it as nft does again).
        data = json.loads(text, object_hook=_compact_concat)
        if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
            raise ValueError("expected {\"nftables\": [...]}")
        items: list[Mapping[str, Any]] = []
        health: dict[str, frozenset[tuple]] = {}
        for item in data["nftables"]:
            if not isinstance(item, dict) or "metainfo" in item:
                continue
            for kind, body in item.items():
                if kind in ("set", "map") and objects.is_health_owned(kind, body.get("name", "")):
                    health[body["name"]] = frozenset(_element_values(elem) for elem in body.pop("elem", ()))
                elif objects.is_dynamic(kind, body.get("name", "")):
                    body.pop("elem", None)
            items.append(item)
        return cls(tuple(items), health)

    def structure(self) -> list[dict[str, Any]]:
        """What the nft module owns, comparable between two listings of the same table.

        Left out: kernel handles, counter values, and the elements of the health-owned sets and
        maps. Set elements are sorted (a set has no order). Plain JSON data, so a recorded
        structure read back from a file compares equal.
        """
        kept: list[dict[str, Any]] = []
        for item in self.items:
            for kind, body in item.items():
                body = _without_volatile(body)
                if "elem" in body:
                    body["elem"] = sorted(body["elem"], key=lambda elem: json.dumps(elem, sort_keys=True))
                kept.append({kind: body})
        return kept

    def health_elements(self) -> objects.HealthElements:
        """Elements of the health-owned sets and maps, in the renderer's shape (``render.health_elements``)."""
        return self.health


def _compact_concat(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "concat" in obj and isinstance(obj["concat"], list):
        return tuple(obj["concat"])
    return obj


def _without_volatile(value: Any) -> Any:
    """Plain JSON data as nft printed it, without the keys that change by themselves."""
    if isinstance(value, dict):
        return {key: _without_volatile(item) for key, item in value.items() if key not in _VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_volatile(item) for item in value]
    if isinstance(value, tuple):
        return {"concat": [_without_volatile(item) for item in value]}
    return value


def _atoms(value: Any) -> tuple[Any, ...]:
    """One key or value of an element as a flat tuple: concatenations split, IPv6 canonical."""
    if isinstance(value, tuple):
        if all(isinstance(part, (str, int)) and not (isinstance(part, str) and ":" in part) for part in value):
            return value
        return tuple(atom for part in value for atom in _atoms(part))
    if isinstance(value, dict):
        if "elem" in value:  # an element with options (timeout, counter): its value only
            return _atoms(value["elem"].get("val"))
        for verdict in ("goto", "jump"):  # a verdict map's value: {"goto": {"target": chain}}
            if isinstance(value.get(verdict), dict):
                return (verdict, value[verdict].get("target"))
    if isinstance(value, str) and ":" in value:
        with contextlib.suppress(ValueError):
            return (str(ipaddress.ip_address(value)),)
    return (value,)


def _remembered_client(elem: Any) -> tuple[str, int] | None:
    """An affinity set element (``{"elem": {"val": address, "expires": seconds}}``) as (address, seconds left)."""
    if isinstance(elem, dict) and isinstance(elem.get("elem"), dict):
        value, left = elem["elem"].get("val"), elem["elem"].get("expires", 0)
    else:
        value, left = elem, 0
    if not isinstance(value, str) or not isinstance(left, int):
        return None
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(value)), left
    return None


def _element_values(elem: Any) -> tuple[Any, ...]:
    """A set element, or a map element ``[key, value]``, as one flat tuple."""
    if isinstance(elem, list) and len(elem) == 2:
        return _atoms(elem[0]) + _atoms(elem[1])
    return _atoms(elem)


@contextlib.contextmanager
def dataplane_lock(path: str = DEFAULT_LOCK_FILE) -> Iterator[None]:
    """Serialise writers of Portico's table (the nft module and the health checker)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
