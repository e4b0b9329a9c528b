# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic metrics per listener and backend: the health checker keeps the traffic table
(``dataplane.traffic``) in step with the applied model and exports its counters, with the main
table's per-VIP drop counters, on ``/metrics``.

Blocking (``nft`` runs): the daemon calls ``sync`` and ``read`` in a worker thread, never on
its event loop, so probes stay on time.

Series and labels (bounded: listeners and backend addresses, never their product):

* ``portico_lb_new_connections_total{lb,vip,protocol,port}``
* ``portico_lb_packets_total`` / ``portico_lb_bytes_total{lb,vip,protocol,port,direction}``,
  direction ``in`` (client to backend) or ``out`` (backend to client)
* ``portico_backend_new_connections_total{backend}``: over every LB that has the address
* ``portico_vip_dropped_packets_total`` / ``portico_vip_dropped_bytes_total{vip}``
"""

from __future__ import annotations

import logging
import subprocess
import threading
from typing import Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.traffic import (
    Listener,
    LiveTraffic,
    TrafficLayout,
    drop_samples,
    layout_of,
    samples,
    sync_script,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import Nft, NftError
from ansible_collections.portico.gateway.plugins.module_utils.health.metrics import _labels
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer

LOG = logging.getLogger("portico-healthd")
NFT_TIMEOUT_S = 10
Counters = dict[str, tuple[int, int]]

# The direction label of the listener kinds that count packets and bytes.
_LISTENER_SERIES = {
    objects.TRAFFIC_IN: "in",
    objects.TRAFFIC_OUT: "out",
}


class TrafficExporter:
    """Keeps the traffic table and reads its counters (thread-safe, blocking)."""

    def __init__(self, nft: str = "nft", main_table: str = objects.DEFAULT_TABLE, table: str = objects.TRAFFIC_TABLE) -> None:
        self.nft = nft
        self.main_table = main_table
        self.table = table
        self.layout = TrafficLayout()
        self.vips: tuple[str, ...] = ()
        self.sync_errors = 0
        self.read_errors = 0
        self._lock = threading.Lock()

    def sync(self, lbs: Sequence[LoadBalancer], main_table: str | None = None) -> bool:
        """Bring the traffic table to the model's listeners and backends: a delta when it exists.

        False (logged, counted) when nft refused; the next model change tries again.
        """
        layout = layout_of(lbs)
        with self._lock:
            self.main_table = main_table or self.main_table
            try:
                live = self._listing()
                script = sync_script(layout, live, self.table)
                if script:
                    Nft(binary=self.nft).apply(script)
            except (NftError, OSError, ValueError, KeyError, TypeError) as err:
                self.sync_errors += 1
                LOG.error("traffic counters: %s", err)
                return False
            self.layout = layout
            self.vips = tuple(sorted({lb.vip for lb in lbs}))
        if script:
            LOG.info("traffic counters: %d listeners, %d backend addresses%s", len(layout.listeners),
                     len(layout.backends), " (table created)" if script.startswith("#") else "")
        return True

    def _listing(self) -> LiveTraffic | None:
        result = subprocess.run([self.nft, "-j", "list", "table", objects.TABLE_FAMILY, self.table],
                                capture_output=True, check=False, timeout=NFT_TIMEOUT_S)
        if result.returncode != 0:
            if b"No such file or directory" in result.stderr:
                return None
            raise NftError(result.stderr.decode(errors="replace").strip())
        return LiveTraffic.from_json(result.stdout)

    def _counters(self, table: str) -> Counters:
        result = subprocess.run([self.nft, "-j", "list", "counters", "table", objects.TABLE_FAMILY, table],
                                capture_output=True, check=False, timeout=NFT_TIMEOUT_S)
        if result.returncode != 0:
            if b"No such file or directory" in result.stderr:
                return {}
            raise NftError(result.stderr.decode(errors="replace").strip())
        return LiveTraffic.from_json(result.stdout).counters

    def text(self) -> str:
        """The traffic families in the Prometheus text format; empty families when nft cannot be read."""
        with self._lock:
            layout, vips, table = self.layout, self.vips, self.main_table
        try:
            traffic, main = self._counters(self.table), self._counters(table)
        except (NftError, OSError, ValueError, subprocess.SubprocessError) as err:
            self.read_errors += 1
            LOG.warning("traffic counters unreadable: %s", err)
            traffic, main = {}, {}
        return traffic_text(layout, traffic, drop_samples(vips, main), self.sync_errors, self.read_errors)


def traffic_text(layout: TrafficLayout, counters: Mapping[str, tuple[int, int]], drops: Mapping[str, tuple[int, int]],
                 sync_errors: int = 0, read_errors: int = 0) -> str:
    """The exposition of one reading (pure: the counters' values are given)."""
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")

    found = samples(layout, counters)
    listeners = [s for s in found if s.kind in objects.TRAFFIC_LISTENER_KINDS]
    family("portico_lb_new_connections_total", "counter", "New connections (flows) to a listener, counted at their first packet.")
    for sample in listeners:
        if sample.kind == objects.TRAFFIC_NEW:
            out.append(f"portico_lb_new_connections_total{_listener_labels(sample.subject)} {sample.packets}")
    for unit, field in (("packets", "packets"), ("bytes", "bytes")):
        family(f"portico_lb_{unit}_total", "counter",
               f"{unit.capitalize()} of a listener's flows forwarded by this gateway, in (toward the backends) and out.")
        for sample in listeners:
            if sample.kind in _LISTENER_SERIES:
                labels = _listener_labels(sample.subject, direction=_LISTENER_SERIES[sample.kind])
                out.append(f"portico_lb_{unit}_total{labels} {getattr(sample, field)}")
    family("portico_backend_new_connections_total", "counter",
           "New connections sent to a backend address, over every load balancer that has it.")
    for sample in found:
        if sample.kind == objects.TRAFFIC_BACKEND_KIND:
            out.append(f"portico_backend_new_connections_total{_labels(backend=sample.subject)} {sample.packets}")
    for unit, index in (("packets", 0), ("bytes", 1)):
        family(f"portico_vip_dropped_{unit}_total", "counter",
               "Traffic to a VIP dropped by its filter (a port not served, a source not allowed).")
        for vip, values in sorted(drops.items()):
            out.append(f"portico_vip_dropped_{unit}_total{_labels(vip=vip)} {values[index]}")
    family("portico_traffic_sync_errors_total", "counter", "Times nft refused to update the traffic counters' table.")
    out.append(f"portico_traffic_sync_errors_total {sync_errors}")
    family("portico_traffic_read_errors_total", "counter", "Scrapes whose traffic counters could not be read.")
    out.append(f"portico_traffic_read_errors_total {read_errors}")
    return "\n".join(out) + "\n"


def _listener_labels(listener: Listener, **extra: str) -> str:
    return _labels(lb=listener.lb, vip=listener.vip, protocol=listener.protocol, port=str(listener.port), **extra)
