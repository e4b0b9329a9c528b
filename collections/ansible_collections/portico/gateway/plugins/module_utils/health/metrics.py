# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health checker's counters and their Prometheus text exposition (format 0.0.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet

from ansible_collections.portico.gateway.plugins.module_utils.health.probes import ProbeResult
from ansible_collections.portico.gateway.plugins.module_utils.health.tracker import HealthTracker

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CONTENT_TYPE = "text/plain; version=0.0.4"


@dataclass
class Metrics:
    probes: dict[str, int] = field(default_factory=lambda: {"ok": 0, "fail": 0})
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    latency_count: int = 0
    transitions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    nft_updates: int = 0
    nft_errors: int = 0
    nft_last_seconds: float = 0.0
    reloads: int = 0
    table_present: bool | None = None  # None until the first look
    lag_max: float = 0.0
    lag_sum: float = 0.0
    lag_count: int = 0

    def probe(self, result: ProbeResult) -> None:
        self.probes["ok" if result.ok else "fail"] += 1
        self.latency_sum += result.latency
        self.latency_count += 1
        for index, bound in enumerate(LATENCY_BUCKETS):
            if result.latency <= bound:
                self.latency_buckets[index] += 1

    def lag(self, seconds: float) -> None:
        self.lag_sum += seconds
        self.lag_count += 1
        self.lag_max = max(self.lag_max, seconds)

    def transition(self, lb: str, endpoint: str, state: str) -> None:
        key = (lb, endpoint, state)
        self.transitions[key] = self.transitions.get(key, 0) + 1

    def keep_transitions_of(self, live: AbstractSet[tuple[str, str]]) -> None:
        """Forget the transitions of backends no longer checked (``live``: (LB, endpoint) pairs)."""
        self.transitions = {t: n for t, n in self.transitions.items() if (t[0], t[1]) in live}


def _labels(**labels: str) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def metrics_text(m: Metrics, tracker: HealthTracker) -> str:
    """Every metric family, per backend and per VIP from what the tracker knows now."""
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")

    checks, health = tracker.checks, tracker.health
    family("portico_healthd_backend_up", "gauge", "1 when the backend passes its health check.")
    vip_of = {lb.name: lb.vip for lb in tracker.dataplane.loadbalancers}
    for key, check in sorted(checks.items()):
        labels = _labels(lb=check.lb, backend=check.endpoint, vip=vip_of.get(check.lb, ""))
        out.append(f"portico_healthd_backend_up{labels} {int(health[key].up)}")
    family("portico_healthd_backend_probe_latency_seconds", "gauge", "Latency of the last probe.")
    for key, check in sorted(checks.items()):
        out.append(f"portico_healthd_backend_probe_latency_seconds{_labels(lb=check.lb, backend=check.endpoint)} "
                   f"{health[key].latency:.6f}")
    family("portico_healthd_transitions_total", "counter", "Backend state changes.")
    for (lb, endpoint, state), count in sorted(m.transitions.items()):
        out.append(f"portico_healthd_transitions_total{_labels(lb=lb, backend=endpoint, to=state)} {count}")
    family("portico_healthd_probes_total", "counter", "Probes run, by result.")
    for result, count in sorted(m.probes.items()):
        out.append(f"portico_healthd_probes_total{_labels(result=result)} {count}")
    family("portico_healthd_probe_duration_seconds", "histogram", "Probe latency over all backends.")
    for bound, count in zip(LATENCY_BUCKETS, m.latency_buckets):
        out.append(f'portico_healthd_probe_duration_seconds_bucket{{le="{bound}"}} {count}')
    out.append(f'portico_healthd_probe_duration_seconds_bucket{{le="+Inf"}} {m.latency_count}')
    out.append(f"portico_healthd_probe_duration_seconds_sum {m.latency_sum:.6f}")
    out.append(f"portico_healthd_probe_duration_seconds_count {m.latency_count}")
    vips = tracker.vips()
    announced = tracker.announced or set()
    family("portico_healthd_vip_healthy_backends", "gauge", "Healthy backends behind a VIP.")
    for vip, counts in sorted(vips.items()):
        out.append(f"portico_healthd_vip_healthy_backends{_labels(vip=vip)} {counts['healthy']}")
    family("portico_healthd_vip_backends", "gauge", "Configured backends behind a VIP.")
    for vip, counts in sorted(vips.items()):
        out.append(f"portico_healthd_vip_backends{_labels(vip=vip)} {counts['total']}")
    family("portico_healthd_vip_announced", "gauge", "1 while the VIP is announced.")
    for vip in sorted(vips):
        out.append(f"portico_healthd_vip_announced{_labels(vip=vip)} {int(vip in announced)}")
    family("portico_healthd_schedule_lag_seconds", "summary", "How late probes start against their schedule.")
    out.append(f"portico_healthd_schedule_lag_seconds_sum {m.lag_sum:.6f}")
    out.append(f"portico_healthd_schedule_lag_seconds_count {m.lag_count}")
    for name, kind, text, value in (
        ("nft_updates_total", "counter", "Backend table transactions applied.", str(m.nft_updates)),
        ("nft_update_errors_total", "counter", "Backend table transactions nft refused.", str(m.nft_errors)),
        ("nft_update_seconds", "gauge", "Duration of the last table transaction.", f"{m.nft_last_seconds:.6f}"),
        ("schedule_lag_max_seconds", "gauge", "Largest probe start lag since the daemon started.", f"{m.lag_max:.6f}"),
        ("dataplane_reloads_total", "counter", "Times the applied model was (re)loaded.", str(m.reloads)),
        ("dataplane_table_present", "gauge", "1 while the load balancer table is in the kernel (0: deleted; traffic is not balanced).",
         str(int(m.table_present is not False))),
        ("checks", "gauge", "Backends being checked.", str(len(checks))),
    ):
        family(f"portico_healthd_{name}", kind, text)
        out.append(f"portico_healthd_{name} {value}")
    return "\n".join(out) + "\n"
