# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health updates into the dataplane: one nft transaction per update, under the dataplane lock.

The lock is the one the nft module holds from reading the health state to finishing its
apply, so the two never write the table at the same time, and the state file is written in
the same locked step as the transaction: the module never sees a table and a state file that
disagree. Before applying, the record's signature is compared with the one the model was read
from: when the module has replaced the table since, the update is "stale" and the daemon
reloads the model first.
"""

from __future__ import annotations

import subprocess
from typing import Any, Collection, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import Nft, NftError, dataplane_lock
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import write_health_state
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import render_health_update
from ansible_collections.portico.gateway.plugins.module_utils.health.tracker import Dataplane

OK = "ok"
STALE = "stale"


def update_script(dataplane: Dataplane, withheld: Mapping[str, Collection[str]]) -> str:
    """The nft transaction that rewrites the backend tables of the LBs in ``withheld``, and only theirs."""
    services = [s for name in sorted(withheld) for s in dataplane.services.get(name, [])]
    return render_health_update(services, dataplane.options, withheld)


def table_exists(nft: Nft, table: str) -> bool:
    """Whether the main table is in the kernel: ``nft list tables`` names tables only, so the
    answer costs the same for a table of any size."""
    result = subprocess.run([nft.binary, "list", "tables", objects.TABLE_FAMILY], capture_output=True, text=True, check=False, timeout=10)
    if result.returncode != 0:
        raise NftError(f"nft list tables failed: {result.stderr.strip()}")
    return f"table {objects.TABLE_FAMILY} {table}" in result.stdout.splitlines()


class Applier:
    """Commits updates; blocking (Maglev repair is CPU work: the daemon runs it in a worker thread)."""

    def __init__(self, nft: Nft, dataplane_file: str, lock_file: str, state_file: str) -> None:
        self.nft = nft
        self.dataplane_file = dataplane_file
        self.lock_file = lock_file
        self.state_file = state_file

    def table_exists(self, table: str) -> bool:
        return table_exists(self.nft, table)

    def commit(self, dataplane: Dataplane, withheld: Mapping[str, Collection[str]], state: Mapping[str, Any]) -> str:
        """Apply and record under the lock: ``OK``, ``STALE`` (the model changed: nothing done) or nft's error."""
        script = update_script(dataplane, withheld)
        with dataplane_lock(self.lock_file):
            if dataplane.outdated(self.dataplane_file):
                return STALE
            if script:
                try:
                    self.nft.apply(script)
                except NftError as err:
                    return str(err)
            write_health_state(self.state_file, state)
        return OK
