# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Thin wrapper around the ``nft`` command: check, apply, read back.

Kept free of Ansible imports so the health checker daemon can use it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterator

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import DIGEST_PREFIX

# Objects whose elements the health checker owns: left out when looking for drift.
_HEALTH_OWNED_RE = re.compile(r"^\s*(map slots_|set no_backends)")
DEFAULT_LOCK_FILE = "/run/portico/dataplane.lock"
_COMMENT_RE = re.compile(r'^\s*comment "' + re.escape(DIGEST_PREFIX) + r'([0-9a-f]+)"', re.MULTILINE)


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

    def list_table(self, table: str, family: str = "inet") -> str | None:
        """Stateless listing (no counter values), or None when the table does not exist."""
        result = self._run("-s", "list", "table", family, table)
        if result.returncode != 0:
            if "No such file or directory" in result.stderr or "does not exist" in result.stderr:
                return None
            raise NftError(f"nft list table {family} {table} failed: {result.stderr.strip()}")
        return result.stdout

    def delete_table(self, table: str, family: str = "inet") -> None:
        result = self._run("delete", "table", family, table)
        if result.returncode != 0 and "No such file or directory" not in result.stderr:
            raise NftError(f"nft delete table {family} {table} failed: {result.stderr.strip()}")


def digest_in_listing(listing: str | None) -> str | None:
    """The digest Portico wrote into the table comment, if the table is Portico's."""
    if not listing:
        return None
    match = _COMMENT_RE.search(listing)
    return match.group(1) if match else None


def without_health_owned_elements(listing: str | None) -> str | None:
    """The listing minus the elements of slot maps and no_backends sets (health checker state)."""
    if listing is None:
        return None
    kept: list[str] = []
    inside_owned = skipping = False
    for line in listing.splitlines():
        stripped = line.strip()
        if _HEALTH_OWNED_RE.match(line):
            inside_owned = True
        elif inside_owned and stripped == "}" and not skipping:
            inside_owned = False
        if inside_owned and stripped.startswith("elements = {"):
            skipping = True
        if skipping:
            if stripped.endswith("}"):
                skipping = False
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def health_owned_elements(text: str | None) -> dict[str, frozenset[str]]:
    """Elements of the slot maps and no_backends sets, per object, from a script or a listing.

    Lets the module check that those elements match the health state it read under the lock:
    the health checker may change them, nobody else may.
    """
    found: dict[str, frozenset[str]] = {}
    name: str | None = None
    collecting: list[str] | None = None
    for line in (text or "").splitlines():
        stripped = line.strip()
        if _HEALTH_OWNED_RE.match(line):
            name = stripped.split()[1]
            found[name] = frozenset()
            continue
        if name is None:
            continue
        if collecting is None and stripped.startswith("elements = {"):
            collecting = []
            stripped = stripped[len("elements = {"):]
        if collecting is not None:
            done = stripped.endswith("}")
            collecting.extend(item.strip() for item in stripped.rstrip("}").split(",") if item.strip())
            if done:
                found[name] = frozenset(collecting)
                collecting, name = None, None
        elif stripped == "}":
            name = None
    return found


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
