#!/usr/bin/env python3
"""Sequential new-connection latency, run inside the client namespace.

Each sample is one full short-lived HTTP exchange - connect, send GET, read to EOF,
close - timed with perf_counter_ns, so it includes the gateway's first-packet work
(NAT rule walk or map lookup, conntrack entry creation). Prints one JSON object.
Bounded by --count and --budget seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from collections.abc import Sequence

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def one_exchange(host: str, port: int, timeout: float) -> int:
    start = time.perf_counter_ns()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(REQUEST)
        head = sock.recv(4096)
        while sock.recv(4096):
            pass
    finally:
        sock.close()
    elapsed = time.perf_counter_ns() - start
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(f"unexpected response {head[:40]!r}")
    return elapsed


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile; robust for the small sample counts of a quick run."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def measure(host: str, port: int, count: int, budget: float, warmup: int, timeout: float) -> dict[str, object]:
    errors, first_error = 0, ""
    for _ in range(warmup):  # ARP, route cache, nginx worker wake-up
        with contextlib.suppress(OSError, ValueError):
            one_exchange(host, port, timeout)
    samples: list[int] = []
    deadline = time.monotonic() + budget
    while len(samples) + errors < count and time.monotonic() < deadline:
        try:
            samples.append(one_exchange(host, port, timeout))
        except (OSError, ValueError) as error:
            errors += 1
            first_error = first_error or repr(error)
    samples.sort()
    return {
        "count": len(samples),
        "errors": errors,
        "first_error": first_error,
        "p50_us": percentile(samples, 0.50) / 1000,
        "p90_us": percentile(samples, 0.90) / 1000,
        "p99_us": percentile(samples, 0.99) / 1000,
        "mean_us": (sum(samples) / len(samples) / 1000) if samples else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-exchange socket timeout, seconds")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.host, args.port, args.count, args.budget, args.warmup, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
