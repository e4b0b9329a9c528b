# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the gateway's HA side says, for ``/metrics``: BGP sessions, VRRP state, conntrack fill.

Read by the health checker every ``HA_INTERVAL_S`` in a worker thread (``vtysh`` can take a
while on a busy bgpd), never on the probe loop; ``/metrics`` shows the last reading.

* ``portico_bgp_session_up{peer}``: 1 while the session is Established (FRR's ``show bgp
  summary json``; nothing when FRR is not installed or has no BGP instance);
* ``portico_vrrp_state{vrrp_instance,state}``: 1 for the state keepalived last reported for the
  instance (its notify script writes one file per instance), ``stop`` when keepalived is not
  running whatever the file says;
* ``portico_conntrack_entries`` and ``portico_conntrack_entries_max`` (``/proc``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.health.metrics import _labels

HA_INTERVAL_S = 10.0
VTYSH = "/usr/bin/vtysh"
VTYSH_TIMEOUT_S = 5
ESTABLISHED = "Established"
# keepalived's notify script (role keepalived) writes "<STATE> <priority>" here, one file per instance.
VRRP_STATE_DIR = "/run/portico/vrrp/instances"
KEEPALIVED_PID_FILE = "/run/keepalived.pid"
VRRP_STATES = ("master", "backup", "fault", "stop")
CONNTRACK_DIR = "/proc/sys/net/netfilter"


@dataclass
class HaReading:
    """One reading; None where the gateway has no such thing (no FRR, no keepalived)."""

    bgp: dict[str, str] | None = None  # peer -> session state
    vrrp: dict[str, str] = field(default_factory=dict)  # instance -> state (lower case)
    conntrack: tuple[int, int] | None = None  # entries, max
    taken: float = 0.0


def bgp_peers(summary: Any) -> dict[str, str]:
    """Peer -> state over every address family of ``show bgp summary json`` (or ``... all ...``, per VRF)."""
    peers: dict[str, str] = {}
    if not isinstance(summary, Mapping):
        return peers
    for family in summary.values():
        if not isinstance(family, Mapping):
            continue
        if isinstance(family.get("peers"), Mapping):
            for address, peer in family["peers"].items():
                if isinstance(peer, Mapping):
                    # A session is up in one family if it is up in any: FRR reports the same state.
                    if peers.get(address) != ESTABLISHED:
                        peers[address] = str(peer.get("state", "unknown"))
        else:
            for address, state in bgp_peers(family).items():
                peers.setdefault(address, state)
    return peers


def read_bgp(vtysh: str = VTYSH) -> dict[str, str] | None:
    """The BGP sessions as bgpd reports them; None without FRR, {} when bgpd does not answer."""
    if not os.path.exists(vtysh):
        return None
    try:
        result = subprocess.run([vtysh, "-c", "show bgp summary json"], capture_output=True, text=True,
                                timeout=VTYSH_TIMEOUT_S, check=False)
        return bgp_peers(json.loads(result.stdout)) if result.returncode == 0 else {}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


def keepalived_running(pid_file: str = KEEPALIVED_PID_FILE) -> bool:
    try:
        with open(pid_file, encoding="ascii") as handle:
            pid = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return False
    return pid > 0 and os.path.exists(f"/proc/{pid}")


def read_vrrp(state_dir: str = VRRP_STATE_DIR, running: bool | None = None) -> dict[str, str]:
    """Instance -> state from the notify script's files; every instance ``stop`` when keepalived is not running."""
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return {}
    if running is None:
        running = keepalived_running()
    states: dict[str, str] = {}
    for name in names:
        if name.startswith("."):
            continue
        try:
            with open(os.path.join(state_dir, name), encoding="utf-8") as handle:
                words = handle.read().split()
        except OSError:
            continue
        state = words[0].lower() if words else "unknown"
        states[name] = state if running else "stop"
    return states


def read_conntrack(directory: str = CONNTRACK_DIR) -> tuple[int, int] | None:
    try:
        values = []
        for name in ("nf_conntrack_count", "nf_conntrack_max"):
            with open(os.path.join(directory, name), encoding="ascii") as handle:
                values.append(int(handle.read().strip()))
    except (OSError, ValueError):
        return None
    return values[0], values[1]


def read_all(vtysh: str = VTYSH, state_dir: str = VRRP_STATE_DIR, conntrack_dir: str = CONNTRACK_DIR) -> HaReading:
    """One blocking reading of everything (for a worker thread)."""
    return HaReading(bgp=read_bgp(vtysh), vrrp=read_vrrp(state_dir), conntrack=read_conntrack(conntrack_dir),
                     taken=time.time())


def ha_text(reading: HaReading) -> str:
    """The families of one reading in the Prometheus text format (families without series are still declared)."""
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")

    family("portico_bgp_session_up", "gauge", "1 while the BGP session with the peer is Established.")
    for peer, state in sorted((reading.bgp or {}).items()):
        out.append(f"portico_bgp_session_up{_labels(peer=peer)} {int(state == ESTABLISHED)}")
    family("portico_vrrp_state", "gauge", "1 for the VRRP instance's current state (master, backup, fault, stop).")
    for instance, current in sorted(reading.vrrp.items()):
        states = VRRP_STATES if current in VRRP_STATES else (*VRRP_STATES, current)
        for state in states:
            out.append(f"portico_vrrp_state{_labels(vrrp_instance=instance, state=state)} {int(state == current)}")
    for index, (name, text) in enumerate((("portico_conntrack_entries", "Entries in the gateway's conntrack table."),
                                          ("portico_conntrack_entries_max", "Size of the conntrack table (nf_conntrack_max)."))):
        family(name, "gauge", text)
        if reading.conntrack is not None:
            out.append(f"{name} {reading.conntrack[index]}")
    family("portico_ha_reading_timestamp_seconds", "gauge", "When BGP, VRRP and conntrack were last read.")
    out.append(f"portico_ha_reading_timestamp_seconds {reading.taken:.3f}")
    return "\n".join(out) + "\n"
