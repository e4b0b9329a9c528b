"""docs/monitoring: the dashboard is well-formed, and every series the rules and the dashboard use
is one an exporter declares (or a recording rule, or Prometheus' own ``up``/``ALERTS``).

The declared names come from the exporters' own output: the health checker's exposition (health,
HA, traffic), the watcher's textfile and the console's /metrics, rendered here from empty state.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.traffic import TrafficLayout
from ansible_collections.portico.gateway.plugins.module_utils.health.ha_metrics import HaReading, ha_text
from ansible_collections.portico.gateway.plugins.module_utils.health.metrics import Metrics, metrics_text
from ansible_collections.portico.gateway.plugins.module_utils.health.tracker import HealthTracker
from ansible_collections.portico.gateway.plugins.module_utils.health.traffic import traffic_text
from ansible_collections.portico.gateway.plugins.plugin_utils.rollouts import WatchRuns, rollout_text, watch_text

REPO = pathlib.Path(__file__).resolve().parents[2]
MONITORING = REPO / "docs/monitoring"
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}
FUNCTION_OR_AGGREGATION = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\(")


def declared_families() -> set[str]:
    """Every family the exporters print a TYPE for; histograms and summaries with their sample suffixes."""
    text = (metrics_text(Metrics(), HealthTracker()) + ha_text(HaReading()) + traffic_text(TrafficLayout(), {}, {})
            + watch_text(WatchRuns()) + rollout_text(None)
            + "# TYPE portico_console_snapshot_timestamp_seconds gauge\n# TYPE portico_console_status_run_success gauge\n")
    names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = match.groups()
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
    return names


def console_families() -> set[str]:
    """The console's own families, as bin/portico-console prints them."""
    source = (REPO / "bin/portico-console").read_text(encoding="utf-8")
    return set(re.findall(r"# TYPE (portico_console_\w+) ", source))


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression: label matchers, strings, ranges, grouping clauses,
    function and aggregation names, keywords and numbers left out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = FUNCTION_OR_AGGREGATION.sub("(", text)
    names = set(re.findall(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)", text))
    return {name for name in names if name.lower() not in KEYWORDS}


RULES = yaml.safe_load((MONITORING / "portico-rules.yml").read_text(encoding="utf-8"))
RECORDED = {rule["record"] for group in RULES["groups"] for rule in group["rules"] if "record" in rule}
DASHBOARD = json.loads((MONITORING / "grafana-portico.json").read_text(encoding="utf-8"))


def dashboard_exprs() -> list[tuple[str, str]]:
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))
    walk(DASHBOARD["panels"])
    return found


def test_the_expression_scanner():
    expr = ('sum by (vip) (rate(portico_lb_bytes_total{lb=~"$lb",direction="in"}[5m])) * on (instance) group_left () '
            'max by (instance) (portico_bgp_session_up) > 0.5 and up{job="x"} == 0 or vector(0)')
    assert metric_names(expr) == {"portico_lb_bytes_total", "portico_bgp_session_up", "up"}


def test_the_exporters_declare_the_families_the_docs_promise():
    names = declared_families() | console_families()
    for name in ("portico_lb_new_connections_total", "portico_lb_bytes_total", "portico_backend_new_connections_total",
                 "portico_vip_dropped_packets_total", "portico_bgp_session_up", "portico_vrrp_state",
                 "portico_conntrack_entries_max", "portico_watch_last_run_success", "portico_rollout_last_success",
                 "portico_healthd_probe_duration_seconds_bucket", "portico_healthd_schedule_lag_seconds_count",
                 "portico_console_snapshot_timestamp_seconds"):
        assert name in names, name


@pytest.mark.parametrize("where, expr", [(rule.get("alert") or rule["record"], rule["expr"])
                                         for group in RULES["groups"] for rule in group["rules"]])
def test_every_series_a_rule_uses_exists(where, expr):
    unknown = metric_names(expr) - declared_families() - console_families() - RECORDED - PROMETHEUS_OWN
    assert not unknown, f"{where}: {sorted(unknown)}"


@pytest.mark.parametrize("title, expr", dashboard_exprs())
def test_every_series_a_dashboard_panel_draws_exists(title, expr):
    unknown = metric_names(expr) - declared_families() - console_families() - RECORDED - PROMETHEUS_OWN
    assert not unknown, f"panel {title!r}: {sorted(unknown)}"


def test_the_dashboard_is_well_formed():
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 30
    ids = []

    def walk(panels):
        for panel in panels:
            ids.append(panel["id"])
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] != "row":
                assert panel["targets"], panel["title"]
                assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
            walk(panel.get("panels", []))
    walk(DASHBOARD["panels"])
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(DASHBOARD["panels"])))
    assert used <= variables, used - variables


def test_every_alert_has_a_firing_and_a_quiet_promtool_case():
    tests = yaml.safe_load((MONITORING / "tests/portico-rules.test.yml").read_text(encoding="utf-8"))["tests"]
    alerts = {rule["alert"] for group in RULES["groups"] for rule in group["rules"] if "alert" in rule}
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    # A quiet case: a test none of whose evaluations expects an alert (a pending one is not enough).
    quiet = {case["alertname"] for test in tests if not any(c.get("exp_alerts") for c in test.get("alert_rule_test", []))
             for case in test.get("alert_rule_test", [])}
    assert alerts == fired, alerts ^ fired
    assert alerts == quiet, alerts ^ quiet
