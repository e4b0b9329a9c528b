# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``portico-healthd status``: the daemon's state, live over HTTP or from its last state file."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import load_health_state
from ansible_collections.portico.gateway.plugins.module_utils.health.settings import Settings

STATUS_PATH = "/status"


def fetch_status(settings: Settings) -> tuple[dict[str, Any], bool]:
    """Live state from the daemon, else the last state file (then the daemon is not running).

    OSError or ValueError when neither is there.
    """
    if settings.metrics_port:
        try:
            return _get_json(settings.metrics_address, settings.metrics_port, STATUS_PATH), True
        except (OSError, ValueError, http.client.HTTPException):
            pass
    return load_health_state(settings.state_file), False


def _get_json(address: str, port: int, path: str) -> Any:
    """GET a JSON document from the daemon's own HTTP endpoint (plain HTTP on a local address)."""
    connection = http.client.HTTPConnection(address, port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise ValueError(f"GET {path}: HTTP {response.status}")
        return json.loads(response.read())
    finally:
        connection.close()


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def format_status(state: Mapping[str, Any], live: bool, now: float | None = None) -> str:
    """The state as a table: VIPs (healthy/total, announced), then backends."""
    now = time.time() if now is None else now
    lines = [f"portico-healthd: {'running' if live else 'NOT RUNNING (last recorded state)'}, "
             f"all_down={state.get('all_down', '?')}, updated {time.strftime('%H:%M:%S', time.localtime(state['updated']))}"]
    lines.append("")
    width = max([len(vip) for vip in state.get("vips", {})] + [16])
    lines.append(f"{'VIP':<{width}} {'HEALTHY':>7}  ANNOUNCED")
    for vip, info in state.get("vips", {}).items():
        lines.append(f"{vip:<{width}} {info['healthy']:>3}/{info['total']:<3}  {'yes' if info['announced'] else 'WITHDRAWN'}")
    lines.append("")
    lines.append(f"{'LB':<30} {'BACKEND':<28} {'KIND':<5} {'STATE':<5} {'FOR':>8} {'LATENCY':>9}  LAST")
    for b in state.get("backends", []):
        lines.append(f"{b['lb']:<30} {b['endpoint']:<28} {b['kind']:<5} {'up' if b['up'] else 'DOWN':<5} "
                     f"{_age(now - b['since']):>8} {b['latency'] * 1000:>7.1f}ms  {b['detail']}")
    return "\n".join(lines) + "\n"
