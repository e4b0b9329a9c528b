"""A reference for the scheduler itself: the design the scheduler replaced, a coroutine per check
sleeping until its due time and a TCP connect under wait_for. Same schedule, same socket options
as the daemon's probes, so the difference is the per-probe cost of tasks and futures.

Usage: PORTICO_PYTHONPATH=<collections> python3 coroutine.py <dataplane record>
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import Callable

from common import Counters, load_checks, serve

from ansible_collections.portico.gateway.plugins.module_utils.health.probes import ProbeTarget
from ansible_collections.portico.gateway.plugins.module_utils.health.scheduler import first_due, next_due
from ansible_collections.portico.gateway.plugins.module_utils.health.state import Check

LINGER_RST = struct.pack("ii", 1, 0)


async def connect(loop: asyncio.AbstractEventLoop, target: ProbeTarget) -> None:
    sock = socket.socket(socket.AF_INET6 if ":" in target.address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        await loop.sock_connect(sock, (target.address, target.port))
    finally:
        sock.close()


async def probe_forever(check: Check, counters: Counters) -> None:
    loop = asyncio.get_running_loop()
    due = first_due(check.key, check.interval, loop.time())
    while True:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(0.0, loop.time() - due)
        try:
            await asyncio.wait_for(connect(loop, check.target), check.target.timeout)
            ok = True
        except (TimeoutError, OSError):
            ok = False
        counters.count(ok, lag)
        due = next_due(due, check.interval, loop.time())


def main(dataplane_file: str) -> None:
    checks = load_checks(dataplane_file)
    counters = Counters(len(checks))

    def start(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        tasks = [loop.create_task(probe_forever(check, counters)) for check in checks]

        def stop() -> None:
            for task in tasks:
                task.cancel()
        return stop

    serve(start, counters)


if __name__ == "__main__":
    main(sys.argv[1])
