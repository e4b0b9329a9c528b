#!/usr/bin/env python3
"""Connection rate and bulk throughput through a Portico VIP beside plain routing.

Interleaved repetitions (order alternates) of:
  plain - no NAT table in the gateway; the client talks to the backend directly
          (192.0.2.14: same nginx/iperf3, see PLAIN_ADDR);
  vip   - Portico's ruleset with the 3-backend service 198.51.100.10 (tcp/80 and
          tcp/5201), Maglev slot map, filter chain, conntrack on;
  vip+metrics (--traffic-metrics) - the same plus the traffic counters' table
          (dataplane/traffic.py: per-listener and per-backend counters), reported against vip.
Each runs wrk (-c 32 -t 2, `Connection: close`: every request a new connection),
sequential connect/GET/close latency, and one iperf3 stream.

Run: sudo python3 bench/throughput.py [--quick] [--traffic-metrics]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.traffic import layout_of, table_script
from ansible_collections.portico.gateway.plugins.module_utils.model import ipam, loadbalancer
from lib.measure import client_syn_retransmits, iperf3_gbps, latency, median, ratio, spread, wrk_conn_rate
from lib.netns_topology import (
    GW_NS,
    HTTP_PORT,
    IPERF_PORT,
    PLAIN_ADDR,
    BenchError,
    check_prerequisites,
    flush_conntrack,
    lab_session,
    nft_apply,
    pin_cpu,
    run,
    run_cli,
)
from lib.rulesets import MEASURED_VIP, POOLS, UNLOAD_ALL, measured_lb, portico_ruleset

VARIANTS = ("plain", "vip")
METRICS = "vip+metrics"
UNLOAD_TRAFFIC = f"table inet {objects.TRAFFIC_TABLE}\ndelete table inet {objects.TRAFFIC_TABLE}\n"


@dataclass(frozen=True)
class Settings:
    reps: int
    seconds: int
    count: int
    traffic_metrics: bool = False

    @property
    def variants(self) -> tuple[str, ...]:
        return (*VARIANTS, METRICS) if self.traffic_metrics else VARIANTS


@dataclass(frozen=True)
class Sample:
    variant: str
    conn_per_s: float
    wrk_errors: int
    gbps: float
    p50_us: float
    p99_us: float
    syn_retransmits: int


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repetitions of 1 s runs")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5)")
    parser.add_argument("--seconds", type=int, default=None, help="wrk and iperf3 duration (default 3)")
    parser.add_argument("--count", type=int, default=None, help="connections per latency run (default 1000)")
    parser.add_argument("--traffic-metrics", action="store_true",
                        help="also measure the VIP with the traffic counters' table, against the VIP without")
    args = parser.parse_args(argv)
    return Settings(
        reps=args.reps or (2 if args.quick else 5),
        seconds=args.seconds or (1 if args.quick else 3),
        count=args.count or (200 if args.quick else 1000),
        traffic_metrics=args.traffic_metrics,
    )


def traffic_script() -> str:
    """The traffic counters' table for the measured service, rendered as portico-healthd does."""
    model = loadbalancer.parse_loadbalancers([measured_lb((IPERF_PORT,))], ipam.parse_pools(POOLS))
    return table_script(layout_of(model.loadbalancers))


def counted_connections() -> int:
    """New connections the traffic table counted for the measured service's HTTP listener."""
    name = objects.traffic_listener_counter(objects.TRAFFIC_NEW, MEASURED_VIP, "tcp", HTTP_PORT)
    listing = run(["nft", "-j", "list", "counter", "inet", objects.TRAFFIC_TABLE, name], ns=GW_NS).stdout
    return next(item["counter"]["packets"] for item in json.loads(listing)["nftables"] if "counter" in item)


def measure(variant: str, settings: Settings, vip_script: str) -> Sample:
    nft_apply(UNLOAD_ALL + UNLOAD_TRAFFIC)
    flush_conntrack()
    if variant != "plain":
        nft_apply(vip_script)
    if variant == METRICS:
        nft_apply(traffic_script())
    host = PLAIN_ADDR if variant == "plain" else MEASURED_VIP
    retrans = client_syn_retransmits()
    wrk = wrk_conn_rate(f"http://{host}:{HTTP_PORT}/", settings.seconds)
    if wrk.note:
        # Unlike the dispatch benchmark, conn/s is a headline figure here: no number is a failure.
        raise BenchError(f"{variant}: {wrk.note}")
    lat = latency(host, HTTP_PORT, settings.count, budget=20.0)
    gbps = iperf3_gbps(host, IPERF_PORT, settings.seconds)
    if variant == METRICS and counted_connections() < settings.count:
        raise BenchError(f"{variant}: the traffic table counted {counted_connections()} new connections, "
                         f"fewer than the {settings.count} of the latency run alone")
    return Sample(variant, wrk.conn_per_s, wrk.errors, gbps, lat.p50_us, lat.p99_us,
                  client_syn_retransmits() - retrans)


def run_all(settings: Settings) -> list[Sample]:
    vip_script = portico_ruleset(0, extra_ports=(IPERF_PORT,)).script
    samples: list[Sample] = []
    with lab_session(with_iperf3=True):
        for rep in range(settings.reps):
            # Alternate which variant goes first so slow drift cancels out.
            for variant in settings.variants if rep % 2 == 0 else settings.variants[::-1]:
                sample = measure(variant, settings, vip_script)
                samples.append(sample)
                print(f"  rep {rep} {variant:<11} conn/s {sample.conn_per_s:8.0f} (errors {sample.wrk_errors}) "
                      f"{sample.gbps:6.2f} Gbit/s p50 {sample.p50_us:5.0f}us p99 {sample.p99_us:6.0f}us "
                      f"syn-retrans {sample.syn_retransmits}", file=sys.stderr)
        nft_apply(UNLOAD_ALL + UNLOAD_TRAFFIC)
    return samples


def report(samples: list[Sample], settings: Settings) -> list[str]:
    def row(label: str, getter: Callable[[Sample], float], digits: int) -> str:
        values = {v: [getter(s) for s in samples if s.variant == v] for v in VARIANTS}
        return (f"{label:<34} | {spread(values['plain'], digits):>23} | {spread(values['vip'], digits):>23} | "
                f"{ratio(median(values['vip']), median(values['plain'])):>8}")

    reps = len(samples) // len(settings.variants)
    cpu = pin_cpu()
    placement = f"client+backend on CPU {cpu}" if cpu is not None else "unpinned"
    return [
        f"Portico VIP vs plain routing: {reps} interleaved repetitions, {settings.seconds}s runs, {placement}, "
        "median [min-max]",
        f"{'metric':<34} | {'plain routing':>23} | {'Portico VIP':>23} | {'VIP/plain':>8}",
        row("new conn/s (wrk -c32 -t2, close)", lambda s: s.conn_per_s, 0),
        row("bulk Gbit/s (iperf3, 1 stream)", lambda s: s.gbps, 2),
        row(f"connect+GET+close p50 us (n={settings.count})", lambda s: s.p50_us, 0),
        row(f"connect+GET+close p99 us (n={settings.count})", lambda s: s.p99_us, 0),
        "wrk socket errors: " + ", ".join(f"{v} {sum(s.wrk_errors for s in samples if s.variant == v)}" for v in settings.variants)
        + "; client SYN retransmits: "
        + ", ".join(f"{v} {sum(s.syn_retransmits for s in samples if s.variant == v)}" for v in settings.variants),
    ] + (metrics_report(samples) if settings.traffic_metrics else [])


def metrics_report(samples: list[Sample]) -> list[str]:
    """The traffic counters' cost: the VIP with them against the VIP without, same run (target: conn/s >= 0.95x)."""
    def row(label: str, getter: Callable[[Sample], float], digits: int) -> str:
        values = {v: [getter(s) for s in samples if s.variant == v] for v in ("vip", METRICS)}
        return (f"{label:<34} | {spread(values['vip'], digits):>23} | {spread(values[METRICS], digits):>23} | "
                f"{ratio(median(values[METRICS]), median(values['vip'])):>8}")

    return [
        "",
        "Traffic metrics on vs off (the same VIP, same run), median [min-max]",
        f"{'metric':<34} | {'VIP':>23} | {'VIP + traffic metrics':>23} | {'on/off':>8}",
        row("new conn/s (wrk -c32 -t2, close)", lambda s: s.conn_per_s, 0),
        row("bulk Gbit/s (iperf3, 1 stream)", lambda s: s.gbps, 2),
        row("connect+GET+close p50 us", lambda s: s.p50_us, 0),
        row("connect+GET+close p99 us", lambda s: s.p99_us, 0),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    check_prerequisites(("wrk", "iperf3"))
    started = time.monotonic()
    samples = run_all(settings)
    print("\n" + "\n".join(report(samples, settings)) + f"\n(total {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
