#!/usr/bin/env python3
"""New-connection cost through the gateway as the number of services grows.

For each N (filler services), interleaved per repetition, the gateway namespace runs:
  plain   - no NAT table at all: the client connects straight to the backend (192.0.2.14:80,
            same nginx; see PLAIN_ADDR for why not .11) - the reference;
  portico - Portico's rendered table (verdict-map dispatch, Maglev slot map for the
            measured 3-backend service 198.51.100.10:80);
  linear  - a kube-proxy-iptables-shaped chain of N `ip daddr . dport dnat` rules with
            the measured service's rule last.
Measures sequential connect/GET/close latency (p50/p99), wrk conn/s with
`Connection: close` (secondary: bimodal on these machines), and `nft -f` load time.

Run: sudo python3 bench/dispatch_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.measure import Latency, WrkResult, client_syn_retransmits, latency, median, ratio, spread, wrk_conn_rate
from lib.netns_topology import (
    HTTP_PORT,
    PLAIN_ADDR,
    NftLoad,
    check_prerequisites,
    flush_conntrack,
    lab_session,
    nft_apply,
    pin_cpu,
    run_cli,
)
from lib.rulesets import MEASURED_VIP, UNLOAD_ALL, PorticoRuleset, linear_ruleset, portico_ruleset

VARIANTS = ("plain", "portico", "linear")


@dataclass(frozen=True)
class Sample:
    variant: str
    services: int
    rep: int
    latency: Latency
    wrk: WrkResult | None
    load: NftLoad | None
    syn_retransmits: int  # during latency + wrk; should be 0 (see client_syn_retransmits)


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]
    reps: int
    count: int
    wrk_seconds: int
    budget: float


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, str | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: N in 0,1000, 2 reps, short runs (<1 min)")
    parser.add_argument("--sizes", default=None, help="comma-separated service counts (default 0,1000,10000,30000)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5)")
    parser.add_argument("--count", type=int, default=None, help="connections per latency run (default 2000)")
    parser.add_argument("--wrk-seconds", type=int, default=None, help="wrk duration, 0 = skip wrk (default 3)")
    parser.add_argument("--budget", type=float, default=480.0, help="stop starting new repetitions after this many seconds")
    parser.add_argument("--json", default=None, help="also write raw samples to this file")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = args.sizes or ("0,1000" if quick else "0,1000,10000,30000")
    settings = Settings(
        sizes=tuple(int(s) for s in sizes.split(",")),
        reps=args.reps or (2 if quick else 5),
        count=args.count or (300 if quick else 2000),
        wrk_seconds=args.wrk_seconds if args.wrk_seconds is not None else (1 if quick else 3),
        budget=args.budget,
    )
    return settings, args.json


def prepare(variant: str, services: int, portico: dict[int, PorticoRuleset], linear: dict[int, str]) -> NftLoad | None:
    """Make `variant` the only ruleset in the gateway; returns the load cost of its table."""
    nft_apply(UNLOAD_ALL)
    flush_conntrack()  # every run starts from an empty table, whatever the last one left
    if variant == "portico":
        return nft_apply(portico[services].script)
    if variant == "linear":
        return nft_apply(linear[services])
    return None


def measure_one(variant: str, services: int, rep: int, settings: Settings, load: NftLoad | None) -> Sample:
    host = PLAIN_ADDR if variant == "plain" else MEASURED_VIP
    # Budget per latency run keeps the 30k linear case bounded even if it is far slower than expected.
    retrans_before = client_syn_retransmits()
    lat = latency(host, HTTP_PORT, settings.count, budget=30.0)
    wrk = wrk_conn_rate(f"http://{host}:{HTTP_PORT}/", settings.wrk_seconds) if settings.wrk_seconds > 0 else None
    if wrk and wrk.note:
        print(f"  warning: {variant} N={services}: {wrk.note}", file=sys.stderr)
    return Sample(variant, services, rep, lat, wrk, load, client_syn_retransmits() - retrans_before)


def run_all(settings: Settings, wrk_available: bool) -> tuple[list[Sample], dict[int, PorticoRuleset]]:
    started = time.monotonic()
    portico: dict[int, PorticoRuleset] = {}
    linear: dict[int, str] = {}
    for services in settings.sizes:  # render once per N, outside the timed loop
        portico[services] = portico_ruleset(services)
        linear[services] = linear_ruleset(services)
        r = portico[services]
        print(f"rendered N={services}: lb_model {r.parse_seconds:.2f}s, render {r.render_seconds:.2f}s, "
              f"{len(r.script) / 1e6:.1f} MB", file=sys.stderr)
    if not wrk_available:
        settings = Settings(settings.sizes, settings.reps, settings.count, 0, settings.budget)
    samples: list[Sample] = []
    with lab_session():
        for rep in range(settings.reps):
            if rep > 0 and time.monotonic() - started > settings.budget:
                print(f"budget of {settings.budget:.0f}s reached: stopping after {rep} repetitions", file=sys.stderr)
                break
            for services in settings.sizes:
                # Rotate the order each repetition so drift (other jobs on the CPU) spreads evenly.
                order = VARIANTS[rep % 3:] + VARIANTS[:rep % 3]
                for variant in order:
                    load = prepare(variant, services, portico, linear)
                    sample = measure_one(variant, services, rep, settings, load)
                    samples.append(sample)
                    print(f"  rep {rep} N={services:>5} {variant:<7} p50 {sample.latency.p50_us:7.0f}us "
                          f"p99 {sample.latency.p99_us:7.0f}us "
                          f"conn/s {sample.wrk.conn_per_s if sample.wrk else math.nan:8.0f} "
                          f"load {sample.load.seconds if sample.load else 0:5.2f}s "
                          f"syn-retrans {sample.syn_retransmits}", file=sys.stderr)
            nft_apply(UNLOAD_ALL)
    return samples, portico


def _pick(samples: list[Sample], variant: str, services: int) -> list[Sample]:
    return [s for s in samples if s.variant == variant and s.services == services]


def latency_table(samples: list[Sample], sizes: Sequence[int]) -> list[str]:
    lines = ["New-connection latency, connect+GET+close, microseconds (median over repetitions of p50 / p99)",
             f"{'N':>6} | {'plain p50/p99':>13} | {'portico p50/p99':>15} | {'linear p50/p99':>14} | "
             f"{'linear/portico p99':>18} | {'portico/plain p99':>17} | {'linear/plain p99':>16}"]
    for n in sizes:
        p50 = {v: median([s.latency.p50_us for s in _pick(samples, v, n)]) for v in VARIANTS}
        p99 = {v: median([s.latency.p99_us for s in _pick(samples, v, n)]) for v in VARIANTS}
        cells = {v: f"{p50[v]:.0f}/{p99[v]:.0f}" for v in VARIANTS}
        lines.append(f"{n:>6} | {cells['plain']:>13} | {cells['portico']:>15} | {cells['linear']:>14} | "
                     f"{ratio(p99['linear'], p99['portico']):>18} | {ratio(p99['portico'], p99['plain']):>17} | "
                     f"{ratio(p99['linear'], p99['plain']):>16}")
    return lines


def rate_table(samples: list[Sample], sizes: Sequence[int]) -> list[str]:
    lines = ["wrk -c 32 -t 2 'Connection: close' new connections/s, median [min-max] (noise: see README)",
             f"{'N':>6} | {'plain':>19} | {'portico':>19} | {'linear':>19} | {'portico/plain':>13} | {'linear/plain':>12}"]
    for n in sizes:
        rates = {v: [s.wrk.conn_per_s for s in _pick(samples, v, n) if s.wrk] for v in VARIANTS}
        lines.append(f"{n:>6} | {spread(rates['plain']):>19} | {spread(rates['portico']):>19} | "
                     f"{spread(rates['linear']):>19} | {ratio(median(rates['portico']), median(rates['plain'])):>13} | "
                     f"{ratio(median(rates['linear']), median(rates['plain'])):>12}")
    return lines


def load_table(samples: list[Sample], sizes: Sequence[int], portico: dict[int, PorticoRuleset]) -> list[str]:
    lines = ["Ruleset build and load (nft -f wall time median [min-max]; nft userspace peak RSS, floor ~10 MiB)",
             f"{'N':>6} | {'lb_model s':>10} | {'render s':>8} | {'script MB':>9} | {'portico nft -f s':>18} | "
             f"{'RSS MiB':>7} | {'linear nft -f s':>18} | {'RSS MiB':>7}"]
    for n in sizes:
        loads = {v: [s.load for s in _pick(samples, v, n) if s.load] for v in ("portico", "linear")}
        secs = {v: spread([x.seconds for x in loads[v]], 2) for v in loads}
        rss = {v: median([x.max_rss_mib for x in loads[v]]) for v in loads}
        r = portico[n]
        lines.append(f"{n:>6} | {r.parse_seconds:>10.2f} | {r.render_seconds:>8.2f} | {len(r.script) / 1e6:>9.1f} | "
                     f"{secs['portico']:>18} | {rss['portico']:>7.0f} | {secs['linear']:>18} | {rss['linear']:>7.0f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path = parse_args(argv)
    check_prerequisites()
    import shutil  # local: only to decide whether the secondary wrk figure is possible
    wrk_available = shutil.which("wrk") is not None
    if not wrk_available:
        print("warning: wrk not found (apt-get install -y wrk): skipping conn/s", file=sys.stderr)
    started = time.monotonic()
    samples, portico = run_all(settings, wrk_available)
    sizes = settings.sizes
    reps = len({s.rep for s in samples})
    cpu = pin_cpu()
    print(f"\nPortico dispatch scale: {reps} interleaved repetitions, {settings.count} connections per latency run, "
          f"wrk {settings.wrk_seconds}s, client+backend {'on CPU ' + str(cpu) if cpu is not None else 'unpinned'}, "
          f"{time.monotonic() - started:.0f}s total\n")
    for table in (latency_table(samples, sizes), rate_table(samples, sizes), load_table(samples, sizes, portico)):
        print("\n".join(table) + "\n")
    retrans = {v: sum(s.syn_retransmits for s in samples if s.variant == v) for v in VARIANTS}
    print("Client SYN retransmits (should be 0; each is a >=10 ms outlier): "
          + ", ".join(f"{v} {n}" for v, n in retrans.items()))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump([asdict(s) for s in samples], handle, indent=1)
    return 0


if __name__ == "__main__":
    run_cli(main)
