"""portico-console's data and pages, and what feeds them (lb_details, the watcher's textfile, rollouts).

The console in a real browser against the lab: molecule/default/tests/test_console.py. Here: the
joins and the arithmetic (rates from two snapshots, merging gateways), escaping of names that
come from Kubernetes, and the records of runs.
"""

from __future__ import annotations

import json

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.status.details import (
    lb_details,
    parse_samples,
    traffic_counters,
)
from ansible_collections.portico.gateway.plugins.plugin_utils import console_pages as pages
from ansible_collections.portico.gateway.plugins.plugin_utils.console_data import gateways, loadbalancers, source_label
from ansible_collections.portico.gateway.plugins.plugin_utils.rollouts import (
    WatchRuns,
    read_watch,
    recording,
    rollout_summary,
    rollout_text,
    watch_text,
)

POOLS = parse_pools({"p": {"addresses": ["198.51.100.0/24"]}})
METRICS = """# TYPE portico_lb_new_connections_total counter
portico_lb_new_connections_total{lb="web",vip="198.51.100.10",protocol="tcp",port="80"} 100
portico_lb_packets_total{lb="web",vip="198.51.100.10",protocol="tcp",port="80",direction="in"} 500
portico_lb_bytes_total{lb="web",vip="198.51.100.10",protocol="tcp",port="80",direction="in"} 30000
portico_lb_bytes_total{lb="web",vip="198.51.100.10",protocol="tcp",port="80",direction="out"} 90000
portico_backend_new_connections_total{backend="192.0.2.11"} 60
portico_backend_new_connections_total{backend="192.0.2.12"} 40
portico_vip_dropped_packets_total{vip="198.51.100.10"} 7
portico_healthd_backend_up{lb="a \\"quoted\\" name",backend="x",vip="y"} 1
"""


def model(name="web", source="static"):
    raw = {"name": name, "vip": "198.51.100.10", "source": source, "backends": ["192.0.2.11", "192.0.2.12"],
           "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}]}
    result = parse_loadbalancers([raw], POOLS)
    assert not result.problems, result.problems
    return result.loadbalancers


def healthd(up_12=True, since=1000.0):
    return {"backends": [
        {"lb": "web", "address": "192.0.2.11", "endpoint": "192.0.2.11:8080", "up": True, "since": 900.0, "latency": 0.002,
         "detail": "connected", "kind": "tcp"},
        {"lb": "web", "address": "192.0.2.12", "endpoint": "192.0.2.12:8080", "up": up_12, "since": since, "latency": 0.15,
         "detail": "connection refused" if not up_12 else "connected", "kind": "tcp"}]}


def snapshot(generated, counters_text=METRICS, up_12=True, announced=True):
    details = lb_details(model(), healthd(up_12), traffic_counters(counters_text))
    return {"format": 1, "generated": generated,
            "status": {"gw1": {"mode": "single", "drained": False, "problems": [],
                               "vips": {"198.51.100.10": {"healthy": 2, "total": 2, "announced": announced}}},
                       "gw2": None},
            "details": {"gw1": {"healthd_running": True, "loadbalancers": details}, "gw2": None}}


def test_metrics_text_parses_with_escaped_labels():
    samples = parse_samples(METRICS)
    assert ("portico_healthd_backend_up", {"lb": 'a "quoted" name', "backend": "x", "vip": "y"}, 1.0) in samples
    traffic = traffic_counters(METRICS)
    assert traffic["listeners"][("198.51.100.10", "tcp", 80)] == {"new_connections": 100, "packets_in": 500,
                                                                     "bytes_in": 30000, "bytes_out": 90000}
    assert traffic["backends"] == {"192.0.2.11": 60, "192.0.2.12": 40}


def test_lb_details_join_definition_health_and_counters():
    details = lb_details(model(source="kubernetes"), healthd(up_12=False), traffic_counters(METRICS))["web"]
    assert details["source"] == "kubernetes" and details["healthy"] == 1 and details["total"] == 2
    down = next(b for b in details["backends"] if b["address"] == "192.0.2.12")
    assert down["state"] == "down" and down["since"] == 1000.0 and down["new_connections"] == 40
    assert details["traffic"]["new_connections"] == 100 and details["dropped_packets"] == 7
    # Without counters (health checker down): no traffic rather than zeros.
    assert lb_details(model(), None, None)["web"]["traffic"] is None
    assert {b["state"] for b in lb_details(model(), None, None)["web"]["backends"]} == {"unchecked"}


def test_rates_come_from_two_snapshots_and_a_restarted_counter_gives_none():
    before = snapshot("2026-01-01T00:00:00Z")
    later = METRICS.replace("} 100\n", "} 160\n").replace('"192.0.2.11"} 60', '"192.0.2.11"} 90')
    after = snapshot("2026-01-01T00:00:10Z", later)
    web = loadbalancers(after, before)[0]
    assert web.rates["new_connections"] == 6.0
    assert next(b for b in web.backends if b.address == "192.0.2.11").new_per_s == 3.0
    restarted = snapshot("2026-01-01T00:00:20Z", METRICS.replace("} 100\n", "} 5\n"))
    assert "new_connections" not in (loadbalancers(restarted, after)[0].rates or {})
    assert loadbalancers(after)[0].rates is None


def test_a_gateway_without_status_is_shown_unreachable():
    views = {view.name: view for view in gateways(snapshot("2026-01-01T00:00:00Z"))}
    assert views["gw1"].reachable and not views["gw2"].reachable


def test_pages_escape_names_and_show_state():
    view = loadbalancers(snapshot("2026-01-01T00:00:00Z", up_12=False))[0]
    view.name = "<script>alert(1)</script>"
    meta = pages.Meta(snapshot_at=0.0, refresh_ok=True, refresh_detail="", refresh_every_ms=2000, now=1060.0)
    overview = pages.overview([view], [], meta)
    assert "<script>alert(1)</script>" not in overview and "&lt;script&gt;" in overview
    assert "/lb/%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in overview
    page = pages.lb_page(view, meta)
    assert "<td class='state bad'>DOWN</td>" in page
    assert "<td class='num since'>60s</td>" in page  # down since 1000, now 1060
    assert "id='lb-health'>1/2<" in page


def test_source_labels():
    assert source_label("static") == "inventory" and source_label("kubernetes") == "Service"


def test_watch_textfile_round_trip_and_recording(tmp_path):
    runs = WatchRuns()
    assert "\nportico_watch_last_run_success " not in watch_text(runs)
    path = tmp_path / "watch.prom"

    class Outcome:
        def __init__(self, ok):
            self.ok, self.detail = ok, ""

    outcomes = iter([Outcome(True), Outcome(False)])
    run = recording(lambda batch: next(outcomes), str(path))
    assert read_watch(str(path)) == {"runs": {"ok": 0, "failed": 0}, "last": None}
    run(object())
    run(object())
    read = read_watch(str(path))
    assert read["runs"] == {"ok": 1, "failed": 1} and read["last"]["success"] is False and read["last"]["last_success"]
    assert read_watch(str(tmp_path / "missing")) is None


def test_rollout_from_a_plan_report():
    data = {"playbook": "deploy.yml", "generated": "2026-01-01T00:00:00Z", "check_mode": False, "hosts": {
        "gw1": {"status": "changes", "failures": []},
        "gw2": {"status": "failed", "failures": [{"task": "Stop here when the gateway is not healthy", "msg": "VIP x"}]}}}
    rollout = rollout_summary(json.loads(json.dumps(data)))
    assert not rollout.success and rollout.failures == {"gw2": ["Stop here when the gateway is not healthy: VIP x"]}
    assert "portico_rollout_last_success 0" in rollout_text(rollout)
    data["hosts"].pop("gw2")
    assert rollout_summary(data).success and "portico_rollout_last_success 1" in rollout_text(rollout_summary(data))
    assert "\nportico_rollout_last_success " not in rollout_text(None)
    assert not rollout_summary({"hosts": {}}).success
