"""module_utils.health.scheduler against real sockets on loopback (127.0.0.1 only).

Each test runs its own event loop for a bounded time and records every verdict the
scheduler reports, so schedule, lag and clean-up are observed, not assumed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.health.probes import ProbeResult, ProbeTarget
from ansible_collections.portico.gateway.plugins.module_utils.health.scheduler import ProbeScheduler

V4 = "127.0.0.1"


@dataclass
class Recorder:
    results: list[tuple[float, str, ProbeResult, float]] = field(default_factory=list)  # (when, key, result, lag)
    hook: Callable[[str, ProbeResult], None] | None = None

    def __call__(self, key: str, result: ProbeResult, lag: float) -> None:
        self.results.append((time.monotonic(), key, result, lag))
        if self.hook is not None:
            self.hook(key, result)

    def of(self, key: str) -> list[tuple[float, str, ProbeResult, float]]:
        return [r for r in self.results if r[1] == key]


def listener(backlog: int = 1024) -> socket.socket:
    """A listener nobody accepts from: the kernel completes handshakes into its queue."""
    sock = socket.socket()
    sock.bind((V4, 0))
    sock.listen(backlog)
    return sock


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((V4, 0))
        return sock.getsockname()[1]


def run_for(seconds: float, setup: Callable[[ProbeScheduler], None], recorder: Recorder,
            during: Callable[[ProbeScheduler], None] | None = None, at: float = 0.0) -> int:
    """Run a scheduler for `seconds`; `during` runs once at `at` seconds.
    Returns how many more descriptors are open after close() than before the first check."""
    async def main() -> int:
        before = len(os.listdir("/proc/self/fd"))
        scheduler = ProbeScheduler(asyncio.get_running_loop(), recorder)
        setup(scheduler)
        if during is not None:
            await asyncio.sleep(at)
            during(scheduler)
            await asyncio.sleep(seconds - at)
        else:
            await asyncio.sleep(seconds)
        scheduler.close()
        await asyncio.sleep(0.05)  # let cancelled tasks unwind
        return len(os.listdir("/proc/self/fd")) - before
    return asyncio.run(main())


def test_checks_run_on_an_absolute_schedule_with_their_own_phase():
    recorder = Recorder()
    with listener() as server:
        target = ProbeTarget("tcp", V4, server.getsockname()[1], 0.04)
        run_for(1.0, lambda s: [s.set(f"check-{n}", target, 0.05) for n in range(20)], recorder)
    for n in range(20):
        runs = recorder.of(f"check-{n}")
        assert 17 <= len(runs) <= 21, (n, len(runs))  # 1 s / 50 ms, minus the phase offset
        assert all(r[2].ok and r[2].detail == "ok" for r in runs)
        gaps = [b[0] - a[0] for a, b in zip(runs, runs[1:])]
        assert 0.045 < sorted(gaps)[len(gaps) // 2] < 0.055, gaps  # median period is the interval
    first = sorted(recorder.of(f"check-{n}")[0][0] for n in range(20))
    assert first[-1] - first[0] > 0.02, "every check started at the same instant: no phase spread"


def test_verdicts_name_refused_and_timed_out_connects():
    recorder = Recorder()
    with listener(backlog=0) as full, socket.socket() as queued:
        queued.connect(full.getsockname())  # the queue is full: further SYNs are dropped
        targets = {"refused": ProbeTarget("tcp", V4, closed_port(), 0.1),
                   "hangs": ProbeTarget("tcp", V4, full.getsockname()[1], 0.1)}
        run_for(0.45, lambda s: [s.set(k, t, 0.15) for k, t in targets.items()], recorder)
    assert {r[2].detail for r in recorder.of("refused")} == {"connection refused"}
    hangs = recorder.of("hangs")
    assert hangs and {r[2].detail for r in hangs} == {"timeout"}
    assert all(0.09 <= r[2].latency < 0.2 for r in hangs), hangs


def test_a_late_loop_skips_missed_ticks_instead_of_bunching_them():
    recorder = Recorder()
    blocked: list[float] = []

    def block_once(_key: str, _result: ProbeResult) -> None:
        if not blocked:
            blocked.append(time.monotonic())
            time.sleep(0.3)  # the loop is stuck for six intervals

    recorder.hook = block_once
    with listener() as server:
        target = ProbeTarget("tcp", V4, server.getsockname()[1], 0.04)
        run_for(0.8, lambda s: s.set("late", target, 0.05), recorder)
    after = [r for r in recorder.of("late") if r[0] > blocked[0] + 0.3]
    within = [r for r in after if r[0] < blocked[0] + 0.4]
    assert len(within) <= 3, f"{len(within)} probes in the 100 ms after the stall: missed ticks were bunched"
    assert max(r[3] for r in after[:1]) > 0.0, "the first probe after the stall reports its lag"
    assert len(after) >= 6, "the schedule went on after the stall"


def test_a_failing_callback_does_not_end_the_schedule():
    recorder = Recorder()

    def explode(_key: str, _result: ProbeResult) -> None:
        raise RuntimeError("bookkeeping bug")

    recorder.hook = explode
    with listener() as server:
        target = ProbeTarget("tcp", V4, server.getsockname()[1], 0.04)
        run_for(0.5, lambda s: s.set("fragile", target, 0.05), recorder)
    assert len(recorder.of("fragile")) >= 7


def test_changing_a_check_takes_effect_at_its_next_run_and_removing_stops_it():
    recorder = Recorder()
    with listener() as server:
        up = ProbeTarget("tcp", V4, server.getsockname()[1], 0.04)
        down = ProbeTarget("tcp", V4, closed_port(), 0.04)

        def change(scheduler: ProbeScheduler) -> None:
            scheduler.set("edited", down, 0.1)
            scheduler.remove("removed")
            assert "removed" not in scheduler and "edited" in scheduler and len(scheduler) == 1

        run_for(0.8, lambda s: (s.set("edited", up, 0.05), s.set("removed", up, 0.05)), recorder, change, at=0.4)
    changed_at = recorder.of("removed")[-1][0]
    before = [r for r in recorder.of("edited") if r[0] <= changed_at]
    after = [r for r in recorder.of("edited") if r[0] > changed_at + 0.06]
    assert before and all(r[2].ok for r in before)
    assert after and all(r[2].detail == "connection refused" for r in after)
    assert 2 <= len(after) <= 4, "the new 100 ms interval applies"
    assert len(recorder.of("removed")) <= 9


def test_close_abandons_probes_in_flight_and_leaks_no_socket():
    recorder = Recorder()
    with listener(backlog=0) as full, socket.socket() as queued:
        queued.connect(full.getsockname())
        hangs = ProbeTarget("tcp", V4, full.getsockname()[1], 5.0)
        silent_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent_udp.bind((V4, 0))
        no_reply = ProbeTarget("udp", V4, silent_udp.getsockname()[1], 5.0)
        leaked = run_for(0.3, lambda s: [s.set(f"{kind}-{n}", t, 0.01) for n in range(10)
                                         for kind, t in (("tcp", hangs), ("udp", no_reply))], recorder)
        silent_udp.close()
    assert not recorder.results, "a probe abandoned by close() must not report"
    assert leaked == 0


def test_other_kinds_run_through_the_same_schedule():
    recorder = Recorder()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
        echo.bind((V4, 0))
        echo.setblocking(False)
        target = ProbeTarget("udp", V4, echo.getsockname()[1], 0.04)

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            while True:
                data, peer = await loop.sock_recvfrom(echo, 2048) if hasattr(loop, "sock_recvfrom") else (None, None)
                if data is None:
                    return
                echo.sendto(data, peer)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            server = loop.create_task(serve())
            scheduler = ProbeScheduler(loop, recorder)
            scheduler.set("udp", target, 0.05)
            await asyncio.sleep(0.5)
            scheduler.close()
            server.cancel()

        if not hasattr(asyncio.AbstractEventLoop, "sock_recvfrom"):
            pytest.skip("loop.sock_recvfrom needs Python 3.11")
        asyncio.run(main())
    runs = recorder.of("udp")
    assert 7 <= len(runs) <= 11 and all(r[2].ok for r in runs), runs


def test_a_non_positive_interval_is_refused_with_the_check_named():
    async def main() -> None:
        scheduler = ProbeScheduler(asyncio.get_running_loop(), Recorder())
        with pytest.raises(ValueError, match="web|192.0.2.11"):
            scheduler.set("web|192.0.2.11", ProbeTarget("tcp", V4, 80, 0.1), 0)
    asyncio.run(main())
