"""Load generators run in the client namespace, and the statistics the reports use."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .netns_topology import CLIENT_NS, BenchError, pinned, run

_LATENCY_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcp_latency.py")
# More failures than this on a path that should work means the lab or the ruleset is broken.
MAX_ERROR_FRACTION = 0.01


@dataclass(frozen=True)
class Latency:
    count: int
    errors: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float


@dataclass(frozen=True)
class WrkResult:
    conn_per_s: float
    errors: int
    note: str = ""


def client_syn_retransmits() -> int:
    """TcpExt.TCPSynRetrans of the client namespace: a SYN that needed a retransmit
    (dropped, or PAWS-rejected by a backend TIME_WAIT socket) shows up as a ~10+ ms
    outlier, so runs report how many they had."""
    lines = run(["cat", "/proc/net/netstat"], ns=CLIENT_NS).stdout.splitlines()
    for header, values in zip(lines[::2], lines[1::2]):
        if header.startswith("TcpExt:"):
            fields = dict(zip(header.split()[1:], values.split()[1:]))
            return int(fields.get("TCPSynRetrans", 0))
    return 0


def latency(host: str, port: int, count: int, budget: float) -> Latency:
    """Sequential connect/GET/close timings from the client namespace."""
    proc = run(
        pinned([sys.executable, _LATENCY_SCRIPT, host, str(port), "--count", str(count), "--budget", str(budget)]),
        ns=CLIENT_NS, timeout=budget + 30,
    )
    data = json.loads(proc.stdout)
    done = int(data["count"]) + int(data["errors"])
    if data["count"] == 0 or data["errors"] > MAX_ERROR_FRACTION * max(done, 1):
        raise BenchError(f"{host}:{port}: {data['errors']} of {done} connections failed, first: {data['first_error']}")
    return Latency(
        count=int(data["count"]), errors=int(data["errors"]), p50_us=float(data["p50_us"]),
        p90_us=float(data["p90_us"]), p99_us=float(data["p99_us"]), mean_us=float(data["mean_us"]),
    )


def _wrk_errors(output: str) -> int:
    total = 0
    socket_errors = re.search(r"Socket errors:(.*)", output)
    if socket_errors:
        total += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    return total + (int(non_2xx.group(1)) if non_2xx else 0)


def wrk_conn_rate(url: str, seconds: int, connections: int = 32, threads: int = 2) -> WrkResult:
    """New connections/s: with `Connection: close` every request is a fresh connection."""
    cmd = ["wrk", "-c", str(connections), "-t", str(threads), "-d", f"{seconds}s", "--timeout", "2s",
           "-H", "Connection: close", url]
    try:
        proc = run(pinned(cmd), ns=CLIENT_NS, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired:
        return WrkResult(math.nan, 0, "wrk timed out")
    rate = re.search(r"Requests/sec:\s*([\d.]+)", proc.stdout)
    if proc.returncode != 0 or not rate:
        return WrkResult(math.nan, 0, f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[:200]}")
    return WrkResult(float(rate.group(1)), _wrk_errors(proc.stdout))


def iperf3_gbps(host: str, port: int, seconds: int) -> float:
    """One TCP stream's received throughput; one retry because the server serves one test at a time."""
    cmd = ["iperf3", "-4", "-c", host, "-p", str(port), "-t", str(seconds), "-J", "--connect-timeout", "3000"]
    last = ""
    for _ in range(2):
        proc = run(pinned(cmd), ns=CLIENT_NS, timeout=seconds + 30, check=False)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            data = {"error": proc.stderr.strip() or "no JSON output"}
        if "error" not in data:
            return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
        last = str(data["error"])
    raise BenchError(f"iperf3 to {host}:{port} failed: {last}")


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def spread(values: Sequence[float], digits: int = 0) -> str:
    """'median [min-max]' for a report cell."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    fmt = f"{{:.{digits}f}}"
    return f"{fmt.format(statistics.median(finite))} [{fmt.format(min(finite))}-{fmt.format(max(finite))}]"


def ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"
