# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""When each health check runs: one absolute schedule per check, driven by loop timers.

A check is a timer, not a task: at the due time a callback starts the probe (a
``TcpConnectProbe`` for TCP, a task running ``run_probe`` for the other kinds), and
the probe's verdict arms the next timer. A coroutine per check costs a task wake-up,
a sleep future and ``wait_for``'s own task on every probe, which at 5,000 probes/s
was about as much CPU as the probes themselves.

The schedule is absolute (``next_due``): probes never drift however long they take,
and a late probe skips missed ticks instead of bunching them. Each check keeps a
stable phase within its interval (``first_due``), so 1,000 checks spread evenly.

Standard library only, Python 3.9+: runs on gateways with Debian's python3.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Callable

from ansible_collections.portico.gateway.plugins.module_utils.health.probes import (
    ProbeResult,
    ProbeTarget,
    TcpConnectProbe,
    describe_error,
    run_probe,
)

# key, verdict, and how late the probe started against its schedule (seconds)
ResultCallback = Callable[[str, ProbeResult, float], None]


def first_due(key: str, interval: float, now: float) -> float:
    """When a check first runs: a stable per-check phase spreads checks over the interval."""
    phase = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 1000 / 1000.0
    return now + phase * interval


def next_due(due: float, interval: float, now: float) -> float:
    """Absolute schedule: no drift however long probes take; missed ticks are skipped, not bunched."""
    due += interval
    if now > due:
        due += (int((now - due) / interval) + 1) * interval
    return due


class _Scheduled:
    __slots__ = ("key", "target", "interval", "due", "timer", "probe")

    def __init__(self, key: str, target: ProbeTarget, interval: float, due: float) -> None:
        self.key = key
        self.target = target
        self.interval = interval
        self.due = due
        self.timer: asyncio.TimerHandle | None = None
        self.probe: TcpConnectProbe | asyncio.Task[ProbeResult] | None = None


class ProbeScheduler:
    """Runs every check added with ``set`` until ``remove`` or ``close``; reports each
    verdict to ``on_result``. At most one probe per check is in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_result: ResultCallback) -> None:
        self._loop = loop
        self._on_result = on_result
        self._checks: dict[str, _Scheduled] = {}

    def __len__(self) -> int:
        return len(self._checks)

    def __contains__(self, key: object) -> bool:
        return key in self._checks

    def set(self, key: str, target: ProbeTarget, interval: float) -> None:
        """Add a check, or change an existing one's probe and interval from its next run on."""
        if interval <= 0:
            raise ValueError(f"{key}: interval must be positive, got {interval!r}")
        entry = self._checks.get(key)
        if entry is not None:
            entry.target, entry.interval = target, interval
            return
        entry = _Scheduled(key, target, interval, first_due(key, interval, self._loop.time()))
        self._checks[key] = entry
        entry.timer = self._loop.call_at(entry.due, self._start, entry)

    def remove(self, key: str) -> None:
        """Stop a check; a probe in flight is abandoned and its socket closed."""
        entry = self._checks.pop(key, None)
        if entry is not None:
            self._stop(entry)

    def close(self) -> None:
        for entry in self._checks.values():
            self._stop(entry)
        self._checks.clear()

    @staticmethod
    def _stop(entry: _Scheduled) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if entry.probe is not None:
            entry.probe.cancel()
            entry.probe = None

    def _start(self, entry: _Scheduled) -> None:
        entry.timer = None
        lag = max(0.0, self._loop.time() - entry.due)
        if entry.target.kind == "tcp":
            entry.probe = TcpConnectProbe(self._loop, entry.target, lambda result: self._finished(entry, result, lag))
        else:
            task = self._loop.create_task(run_probe(entry.target))
            task.add_done_callback(lambda done: self._task_finished(entry, done, lag))
            entry.probe = task

    def _task_finished(self, entry: _Scheduled, task: asyncio.Task[ProbeResult], lag: float) -> None:
        if task.cancelled():
            return
        error = task.exception()  # run_probe returns its failures; a bug must still not end the schedule
        result = task.result() if error is None else ProbeResult(ok=False, latency=0.0, detail=describe_error(error))
        self._finished(entry, result, lag)

    def _finished(self, entry: _Scheduled, result: ProbeResult, lag: float) -> None:
        if self._checks.get(entry.key) is not entry:  # removed (or replaced) while in flight
            return
        entry.probe = None
        entry.due = next_due(entry.due, entry.interval, self._loop.time())
        # Armed before the callback: a failing callback must not end the check's schedule.
        entry.timer = self._loop.call_at(entry.due, self._start, entry)
        self._on_result(entry.key, result, lag)
