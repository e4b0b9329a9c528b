"""What both reference probers share with the daemon: its checks, built from the dataplane record
by its own reader, and counters printed as JSON on SIGUSR1 (bench/healthd.py reads them).

The probers run like the daemon, with the system python3 and the collection found through
PORTICO_PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.environ["PORTICO_PYTHONPATH"])

# pylint: disable=wrong-import-position
from ansible_collections.portico.gateway.plugins.module_utils.health.state import Check, checks_for
from ansible_collections.portico.gateway.plugins.module_utils.health.tracker import Dataplane

# Starts probing on the loop; returns what stops it.
Start = Callable[[asyncio.AbstractEventLoop], Callable[[], Any]]


def load_checks(dataplane_file: str) -> list[Check]:
    return [check for lb in Dataplane.read(dataplane_file).loadbalancers for check in checks_for(lb)]


class Counters:
    def __init__(self, checks: int) -> None:
        self.stats: dict[str, Any] = {"checks": checks, "ok": 0, "fail": 0, "lag_sum": 0.0, "lag_count": 0, "lag_max": 0.0}

    def count(self, ok: bool, lag: float) -> None:
        stats = self.stats
        stats["lag_sum"] += lag
        stats["lag_count"] += 1
        if lag > stats["lag_max"]:
            stats["lag_max"] = lag
        stats["ok" if ok else "fail"] += 1


async def _serve(start: Start, counters: Counters) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(counters.stats), flush=True))
    stop_all = start(loop)
    print(json.dumps({"ready": counters.stats["checks"]}), flush=True)
    await stop.wait()
    stop_all()


def serve(start: Start, counters: Counters) -> None:
    """Probe until SIGTERM; print {"ready": checks} once started, the counters on each SIGUSR1."""
    asyncio.run(_serve(start, counters))
