"""The baseline prober: the daemon's own ProbeScheduler (same probe code, phase spread, absolute
due times, missed ticks skipped), and nothing else: no rise/fall, no nft, no metrics.

Usage: PORTICO_PYTHONPATH=<collections> python3 bare.py <dataplane record>
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from common import Counters, load_checks, serve

from ansible_collections.portico.gateway.plugins.module_utils.health.scheduler import ProbeScheduler


def main(dataplane_file: str) -> None:
    checks = load_checks(dataplane_file)
    counters = Counters(len(checks))

    def start(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        scheduler = ProbeScheduler(loop, lambda key, result, lag: counters.count(result.ok, lag))
        for check in checks:
            scheduler.set(check.key, check.target, check.interval)
        return scheduler.close

    serve(start, counters)


if __name__ == "__main__":
    main(sys.argv[1])
