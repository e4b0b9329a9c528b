"""Load and observation for the lab's fault tests (molecule/ha, molecule/bgp, and a fault matrix):
start measured traffic and watchers before a fault, collect them after, and judge the timeline.

- `ConnectionLoad`: long-lived TCP streams, a new TCP connection every N ms and a UDP request every
  N ms from the lab client through one VIP, all running across a fault (the lab probe in timeline
  and multi-stream mode); `finish()` returns one summary.
- `AddressWatch`: which gateways hold given addresses, sampled every 20 ms inside each gateway, so
  split brain (two holders) and holes (no holder) show with their times.
- `Capture`: tcpdump in a container for the length of a fault, read back as text.

All times are epochs (time.time()): the containers share the host's clock.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import labtools


def now() -> float:
    return time.time()


# --- Traffic --------------------------------------------------------------------------------------

@dataclass
class ConnectionLoad:
    """Measured traffic through one VIP while a fault happens.

    streams: long-lived TCP connections opened before start() returns (0: none);
    new_every_ms: one new TCP connection at a time, one due every so many ms (0: none);
    udp_every_ms: one UDP request every so many ms (0: none);
    timeout_s: per new connection or UDP request. The default (1 s) is below the first SYN
    retransmission, so a single lost SYN counts as a failure instead of a slow connect.
    """

    target: str
    seconds: float
    streams: int = 0
    new_every_ms: float = 20
    udp_every_ms: float = 0
    port: int = 80
    udp_port: int = 5353
    timeout_s: float = 1.0
    container: str = "client"
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False, repr=False)

    def start(self) -> ConnectionLoad:
        labtools.install_probe(self.container)
        if self.streams:
            # Held a little longer than the timelines, so they end after them.
            self._procs["streams"] = labtools.open_streams(self.container, self.target, self.streams,
                                                           self.seconds + 1, port=self.port)
        if self.new_every_ms:
            self._procs["tcp"] = labtools.probe(
                self.container, "--target", self.target, "--port", str(self.port), "--every", str(self.new_every_ms),
                "--duration", str(self.seconds), "--timeout", str(self.timeout_s))
        if self.udp_every_ms:
            self._procs["udp"] = labtools.probe(
                self.container, "--proto", "udp", "--target", self.target, "--port", str(self.udp_port),
                "--every", str(self.udp_every_ms), "--duration", str(self.seconds), "--timeout", str(self.timeout_s))
        return self

    def finish(self) -> dict[str, Any]:
        """{"tcp": {...}, "udp": {...}, "streams": {...}} for what ran, plus "summary" (numbers only)."""
        results = {name: labtools.finish(proc, timeout=self.seconds + 120) for name, proc in self._procs.items()}
        summary: dict[str, Any] = {}
        for name in ("tcp", "udp"):
            if name in results:
                timeline = results[name]
                summary[name] = {"sent": timeline["sent"], "failed": timeline["failed"],
                                 "max_gap_ms": timeline["max_gap_ms"], "errors": timeline["errors"]}
        if "streams" in results:
            held = results["streams"]
            summary["streams"] = {"opened": held["opened"], "reset": held["reset"],
                                  "max_stall_ms": max((r["max_gap_ms"] for r in held["results"]), default=0.0)}
        results["summary"] = summary
        return results


def failures_between(timeline: dict[str, Any], start: float, end: float) -> list[list[Any]]:
    """The failed requests of a probe timeline that started within [start, end] (epochs)."""
    return [failure for failure in timeline["failures"] if start <= failure[0] <= end]


# --- Address holders ------------------------------------------------------------------------------

# One line per sample: "<epoch> <address/len> <address/len> ...". date and ip are forked each
# round, so the real interval is 20 ms plus a few ms.
_SAMPLER = (
    'end=$(( $(date +%s) + {seconds} )); '
    'while [ "$(date +%s)" -lt "$end" ]; do '
    'echo "$(date +%s.%N) $(ip -o address show | awk \'{{print $4}}\' | tr "\\n" " ")"; '
    'sleep {every}; done'
)


class AddressWatch:
    """Which gateways hold which addresses over time, sampled inside every gateway.

    Usage: watch = AddressWatch(["gw1", "gw2"], seconds=30).start(); <fault>; watch.stop();
    then watch.alone_from(address, holder, after), watch.settled(...), watch.overlaps(...).
    """

    def __init__(self, gateways: list[str], seconds: float, every_s: float = 0.02) -> None:
        self.gateways = gateways
        self.seconds = seconds
        self.every_s = every_s
        # Per gateway: [(epoch, {"a.b.c.d/len", ...}), ...] in time order.
        self.samples: dict[str, list[tuple[float, frozenset[str]]]] = {gw: [] for gw in gateways}
        self._procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> AddressWatch:
        script = _SAMPLER.format(seconds=int(self.seconds + 1), every=self.every_s)
        for gateway in self.gateways:
            proc = subprocess.Popen(["podman", "exec", f"{labtools.PREFIX}{gateway}", "sh", "-c", script],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            thread = threading.Thread(target=self._read, args=(gateway, proc), daemon=True)
            thread.start()
            self._procs.append(proc)
            self._threads.append(thread)
        # Running once every gateway has reported a sample.
        labtools.wait_for(lambda: all(self.samples[gw] for gw in self.gateways), 10, "address samplers running")
        return self

    def _read(self, gateway: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamp, _, rest = line.strip().partition(" ")
            try:
                self.samples[gateway].append((float(stamp), frozenset(rest.split())))
            except ValueError:
                continue  # a line cut short when the sampler stopped

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for thread in self._threads:
            thread.join(timeout=10)

    def events(self, address: str) -> list[tuple[float, str, bool]]:
        """(epoch, gateway, holds) whenever a gateway's holding of the address changed (first sample included)."""
        changes: list[tuple[float, str, bool]] = []
        for gateway, samples in self.samples.items():
            previous = None
            for stamp, addresses in samples:
                held = address in addresses
                if held != previous:
                    changes.append((stamp, gateway, held))
                    previous = held
        return sorted(changes)

    def holder_timeline(self, address: str) -> list[tuple[float, frozenset[str]]]:
        """(epoch, holders) at every change of the set of gateways holding the address."""
        holders: dict[str, bool] = {}
        timeline: list[tuple[float, frozenset[str]]] = []
        for stamp, gateway, held in self.events(address):
            holders[gateway] = held
            current = frozenset(gw for gw, h in holders.items() if h)
            if not timeline or timeline[-1][1] != current:
                timeline.append((stamp, current))
        return timeline

    def alone_from(self, address: str, holder: str, after: float) -> float | None:
        """The first time at or after `after` at which `holder` alone held the address."""
        timeline = self.holder_timeline(address)
        for index, (stamp, holders) in enumerate(timeline):
            until = timeline[index + 1][0] if index + 1 < len(timeline) else float("inf")
            if holders == {holder} and until > after:
                return max(stamp, after)
        return None

    def settled(self, address: str, holder: str, after: float) -> float | None:
        """The first time at or after `after` from which only `holder` held the address until the end."""
        since = None
        for stamp, holders in self.holder_timeline(address):
            if holders != {holder}:
                since = None
            elif since is None:
                since = max(stamp, after)
        return since

    def overlaps(self, address: str, after: float = 0.0) -> list[tuple[float, float]]:
        """(start, end) of every interval after `after` in which two or more gateways held the address."""
        intervals: list[tuple[float, float]] = []
        timeline = self.holder_timeline(address)
        end_of_watch = max((s[-1][0] for s in self.samples.values() if s), default=after)
        for index, (stamp, holders) in enumerate(timeline):
            if len(holders) < 2:
                continue
            until = timeline[index + 1][0] if index + 1 < len(timeline) else end_of_watch
            if until >= after:
                intervals.append((max(stamp, after), until))
        return intervals


# --- Packet capture -------------------------------------------------------------------------------

class Capture:
    """tcpdump in a lab container (numeric, epoch timestamps), read back with stop()."""

    def __init__(self, container: str, interface: str, expression: str, seconds: float = 60) -> None:
        self.container = container
        self.path = f"/tmp/faultload-{interface}-{time.monotonic_ns()}"
        # Bounded by timeout; stop() ends it earlier through its pid.
        self.command = (f"timeout {int(seconds)} tcpdump -l -n -tt -i {interface} {expression} "
                        f"> {self.path}.txt 2>/dev/null & echo $! > {self.path}.pid; wait")
        self._proc: subprocess.Popen | None = None

    def start(self) -> Capture:
        self._proc = subprocess.Popen(["podman", "exec", f"{labtools.PREFIX}{self.container}", "sh", "-c",
                                       self.command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # tcpdump needs a moment before it sees packets
        return self

    def stop(self) -> str:
        labtools.sh(self.container, f"kill -INT $(cat {self.path}.pid) 2>/dev/null; sleep 0.3", check=False)
        if self._proc is not None:
            self._proc.wait(timeout=10)
        return labtools.sh(self.container, f"cat {self.path}.txt; rm -f {self.path}.txt {self.path}.pid", check=False)
