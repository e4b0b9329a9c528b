# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VIP announcement: one route per announced VIP in a kernel table (FRR imports it), and hooks.

A VIP is announced while it has a healthy backend. Hook executables in the hooks directory
run as ``<hook> announce|withdraw <vip>`` on every change (VRRP priority, alerts). The route
follows the dataplane: a VIP whose LB still waits for its table update keeps its state.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import AbstractSet

LOG = logging.getLogger("portico-healthd")
HOOK_TIMEOUT_S = 5


def announcement(healthy: AbstractSet[str], before: AbstractSet[str] | None, pending: AbstractSet[str]) -> set[str]:
    """The VIPs to announce: ``healthy`` ones, except that a ``pending`` VIP (its LB's table update
    is not committed yet) keeps what it had, so no VIP is withdrawn before its reject set is in
    place nor announced before its backends are."""
    if before is None or not pending:
        return set(healthy)
    return (set(healthy) - set(pending)) | (set(before) & set(pending))


def hook_runs(wanted: AbstractSet[str], before: AbstractSet[str] | None, known: AbstractSet[str]) -> list[tuple[str, str]]:
    """(verb, vip) hook calls for a change from ``before`` to ``wanted``, announcements first.

    At start (``before`` None) every ``known`` VIP's hooks run once, so hook state converges
    after a restart too.
    """
    withdrawn = (set(before) if before is not None else set(known)) - set(wanted)
    return ([("announce", vip) for vip in sorted(set(wanted) - set(before or ()))]
            + [("withdraw", vip) for vip in sorted(withdrawn)])


class Announcer:
    """Routes in the announcement table and hooks; blocking (the daemon runs it in a worker thread)."""

    def __init__(self, ip: str, table: int, protocol: int, hooks_dir: str) -> None:
        self.ip = ip
        self.table = table
        self.protocol = protocol
        self.hooks_dir = hooks_dir

    def sync_routes(self, wanted: AbstractSet[str], before: AbstractSet[str] | None) -> None:
        """Keep one route per announced VIP in the announcement table (FRR imports that table)."""
        if not self.table:
            return
        if before is None:
            before = self.routes_in_table()
        for vip in sorted(set(wanted) - set(before)):
            self._route("replace", vip)
        for vip in sorted(set(before) - set(wanted)):
            self._route("del", vip)

    def _route(self, verb: str, vip: str) -> None:
        prefix = f"{vip}/128" if ":" in vip else f"{vip}/32"
        family = "-6" if ":" in vip else "-4"
        cmd = [self.ip, family, "route", verb, prefix, "dev", "lo", "table", str(self.table), "proto", str(self.protocol)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as err:
            LOG.error("%s: %s", " ".join(cmd), err)
            return
        if proc.returncode != 0:
            LOG.error("%s: %s", " ".join(cmd), proc.stderr.strip())

    def routes_in_table(self) -> set[str]:
        found: set[str] = set()
        for family in ("-4", "-6"):
            proc = subprocess.run([self.ip, "-j", family, "route", "show", "table", str(self.table),
                                   "proto", str(self.protocol)], capture_output=True, text=True, check=False)
            if proc.returncode == 0 and proc.stdout.strip():
                found |= {route["dst"].split("/")[0] for route in json.loads(proc.stdout) if "dst" in route}
        return found

    def run_hooks(self, verb: str, vip: str) -> None:
        try:
            hooks = sorted(os.listdir(self.hooks_dir))
        except FileNotFoundError:
            return
        for name in hooks:
            path = os.path.join(self.hooks_dir, name)
            if not os.access(path, os.X_OK) or os.path.isdir(path):
                continue
            try:
                proc = subprocess.run([path, verb, vip], capture_output=True, text=True, timeout=HOOK_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                LOG.error("hook %s %s %s timed out", name, verb, vip)
                continue
            except OSError as err:
                LOG.error("hook %s cannot run: %s", name, err)
                continue
            if proc.returncode != 0:
                LOG.error("hook %s %s %s failed (%d): %s", name, verb, vip, proc.returncode, proc.stderr.strip())
