"""Traffic metrics in the lab: what the client sends through gw1 is what gw1's /metrics counts.

The lab client opens new connections through the VIPs; gw1's portico-healthd exports the traffic
table's counters (dataplane/traffic.py). Each counter must move by exactly what was sent: new
connections per listener, new connections per backend address (split as the backends that
answered say), drops per VIP for a port nobody serves. Read the way an operator would, with an
HTTP GET of gw1's /metrics from inside gw1.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / "collections"))
import labtools  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.status.details import parse_samples  # noqa: E402

WEB, WEB6 = "198.51.100.10", "2001:db8:100::10"
NODE_V4 = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
NODE_V6 = {"node1": "2001:db8:192::11", "node2": "2001:db8:192::12", "node3": "2001:db8:192::13"}
METRICS = "http://127.0.0.1:9641/metrics"


def scrape() -> str:
    return labtools.sh("gw1", f"python3 -c \"import urllib.request as u; print(u.urlopen('{METRICS}').read().decode())\"")


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = [v for n, have, v in samples if n == name and all(have.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {len(found)} series"
    return found[0]


def listener(**labels: str) -> dict[str, str]:
    return labels


def send(target: str, port: int, count: int, proto: str = "tcp", timeout: float = 1.0) -> dict[str, Any]:
    return labtools.finish(labtools.probe("client", "--proto", proto, "--target", target, "--port", str(port),
                                          "--count", str(count), "--timeout", str(timeout)))


def setup_module() -> None:
    labtools.install_probe("client")


def test_series_have_bounded_labels():
    samples = parse_samples(scrape())
    # One new-connection series per listener of the lab, labelled lb, vip, protocol, port.
    new = [labels for name, labels, _ in samples if name == "portico_lb_new_connections_total"]
    assert {"lb": "web", "vip": WEB, "protocol": "tcp", "port": "80"} in new
    assert {"lb": "web", "vip": WEB, "protocol": "udp", "port": "53"} in new
    assert {"lb": "web-v6", "vip": WEB6, "protocol": "tcp", "port": "80"} in new
    assert all(set(labels) == {"lb", "vip", "protocol", "port"} for labels in new)
    # Per backend: one series per address, whatever the number of LBs that share it (web,
    # restricted and snat all have the three nodes).
    backends = [labels["backend"] for name, labels, _ in samples if name == "portico_backend_new_connections_total"]
    assert len(backends) == len(set(backends))
    assert set(NODE_V4.values()) <= set(backends)
    directions = {labels["direction"] for name, labels, _ in samples if name == "portico_lb_bytes_total"}
    assert directions == {"in", "out"}


def test_100_connections_move_the_counters_by_100():
    before = parse_samples(scrape())
    sent = send(WEB, 80, 100)
    after = parse_samples(scrape())
    assert sent["ok"] == 100, sent
    web80 = listener(lb="web", vip=WEB, protocol="tcp", port="80")

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("portico_lb_new_connections_total", **web80) == 100
    # Each connection: SYN, ACK, request, FIN/ACKs toward the backends; SYN-ACK, reply, FIN back.
    assert moved("portico_lb_packets_total", **web80, direction="in") >= 300
    assert moved("portico_lb_packets_total", **web80, direction="out") >= 200
    assert moved("portico_lb_bytes_total", **web80, direction="out") > moved("portico_lb_packets_total", **web80, direction="out") * 40
    # The backends that answered are the ones the counters say were chosen, connection for connection.
    chosen = {node: moved("portico_backend_new_connections_total", backend=address) for node, address in NODE_V4.items()}
    assert chosen == {node: sent["backends"].get(node, 0) for node in NODE_V4}, (chosen, sent["backends"])
    print("\n".join(line for line in scrape().splitlines() if 'vip="198.51.100.10"' in line or "backend=" in line))


def test_udp_flows_and_ipv6_are_counted():
    before = parse_samples(scrape())
    udp = send(WEB, 53, 40, proto="udp")
    v6 = send(WEB6, 80, 30)
    after = parse_samples(scrape())
    assert udp["ok"] == 40 and v6["ok"] == 30, (udp, v6)
    udp53 = listener(lb="web", vip=WEB, protocol="udp", port="53")
    v6_80 = listener(lb="web-v6", vip=WEB6, protocol="tcp", port="80")
    assert value(after, "portico_lb_new_connections_total", **udp53) - value(before, "portico_lb_new_connections_total", **udp53) == 40
    assert value(after, "portico_lb_packets_total", **udp53, direction="out") - \
        value(before, "portico_lb_packets_total", **udp53, direction="out") == 40
    assert value(after, "portico_lb_new_connections_total", **v6_80) - value(before, "portico_lb_new_connections_total", **v6_80) == 30
    chosen = {node: value(after, "portico_backend_new_connections_total", backend=address)
              - value(before, "portico_backend_new_connections_total", backend=address) for node, address in NODE_V6.items()}
    assert chosen == {node: v6["backends"].get(node, 0) for node in NODE_V6}, (chosen, v6["backends"])


def test_a_port_nobody_serves_is_dropped_and_counted_per_vip_not_as_traffic():
    before = parse_samples(scrape())
    refused = send(WEB, 81, 5, timeout=0.3)
    after = parse_samples(scrape())
    assert refused["ok"] == 0, refused
    assert value(after, "portico_vip_dropped_packets_total", vip=WEB) - value(before, "portico_vip_dropped_packets_total", vip=WEB) == 5
    assert not [labels for name, labels, _ in after if name == "portico_lb_new_connections_total" and labels.get("port") == "81"]
