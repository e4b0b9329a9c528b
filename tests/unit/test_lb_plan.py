"""lb_plan: the dataplane change summary the nft module returns and the plan callback reports."""

from __future__ import annotations

import copy
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.plan import lb_plan, plan_is_empty, plan_lines

POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}})
WEB = {"name": "web", "vip": "198.51.100.10", "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
       "backends": ["192.0.2.11", "192.0.2.12", "192.0.2.13"]}
API = {"name": "api", "vip": "198.51.100.11", "ports": [{"protocol": "tcp", "port": 443}],
       "backends": [{"address": "192.0.2.21", "weight": 2}]}


def model(*raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the module compares: the parsed model as plain data, per LB name."""
    result = parse_loadbalancers(list(raw), POOLS)
    assert not result.problems
    return {lb.name: lb.to_dict() for lb in result.loadbalancers}


def changed(before: dict, after: dict) -> dict[str, Any]:
    plan = lb_plan(model(before), model(after))
    assert [lb["name"] for lb in plan["loadbalancers"]["changed"]] == [after["name"]]
    return plan["loadbalancers"]["changed"][0]


def test_no_change_is_an_empty_plan():
    plan = lb_plan(model(WEB, API), model(API, WEB), {"snat_all": False}, {"snat_all": False})
    assert plan_is_empty(plan)
    assert plan == {"loadbalancers": {"added": [], "removed": [], "changed": []},
                    "vips": {"added": [], "removed": []}, "options": {}}
    assert plan_lines(plan) == []


def test_added_lb_and_its_vip():
    plan = lb_plan(model(WEB), model(WEB, API))
    assert plan["loadbalancers"]["added"] == [{"name": "api", "vip": "198.51.100.11", "listeners": ["tcp/443 -> 443"],
                                               "backends": [{"backend": "192.0.2.21", "weight": 2}]}]
    assert plan["loadbalancers"]["removed"] == [] and plan["loadbalancers"]["changed"] == []
    assert plan["vips"] == {"added": ["198.51.100.11"], "removed": []}
    assert plan_lines(plan) == ["+ lb api 198.51.100.11: tcp/443 -> 443; backends: 192.0.2.21 (weight 2)",
                                "+ vip 198.51.100.11"]


def test_removed_lb_and_its_vip():
    plan = lb_plan(model(WEB, API), model(WEB))
    assert [lb["name"] for lb in plan["loadbalancers"]["removed"]] == ["api"]
    assert plan["vips"] == {"added": [], "removed": ["198.51.100.11"]}
    assert "- lb api 198.51.100.11: tcp/443 -> 443" in plan_lines(plan)


def test_a_shared_vip_stays_while_one_lb_still_uses_it():
    dns = {"name": "dns", "vip": "198.51.100.10", "ports": [{"protocol": "udp", "port": 53}], "backends": ["192.0.2.11"]}
    plan = lb_plan(model(WEB, dns), model(WEB))
    assert [lb["name"] for lb in plan["loadbalancers"]["removed"]] == ["dns"]
    assert plan["vips"] == {"added": [], "removed": []}


def test_backend_in_and_out():
    after = {**WEB, "backends": ["192.0.2.11", "192.0.2.12", "192.0.2.14"]}
    entry = changed(WEB, after)
    assert entry["backends"] == {"added": [{"backend": "192.0.2.14", "weight": 1}],
                                 "removed": [{"backend": "192.0.2.13", "weight": 1}], "changed": []}
    assert entry["listeners"] == {"added": [], "removed": [], "changed": []}
    assert entry["fields"] == {} and entry["reordered"] is False
    assert plan_lines(lb_plan(model(WEB), model(after))) == [
        "~ lb web 198.51.100.10: backend in 192.0.2.14; backend out 192.0.2.13"]


def test_weight_change():
    after = {**WEB, "backends": ["192.0.2.11", {"address": "192.0.2.12", "weight": 3}, "192.0.2.13"]}
    entry = changed(WEB, after)
    assert entry["backends"]["changed"] == [{"backend": "192.0.2.12", "field": "weight", "from": 1, "to": 3}]
    assert entry["backends"]["added"] == [] and entry["backends"]["removed"] == []
    assert "backend 192.0.2.12 weight 1 -> 3" in plan_lines(lb_plan(model(WEB), model(after)))[0]


def test_backend_port_override_is_part_of_the_backend_identity():
    after = {**WEB, "backends": ["192.0.2.11", "192.0.2.12", {"address": "192.0.2.13", "port": 9090}]}
    entry = changed(WEB, after)
    assert [b["backend"] for b in entry["backends"]["added"]] == ["192.0.2.13:9090"]
    assert [b["backend"] for b in entry["backends"]["removed"]] == ["192.0.2.13"]


def test_port_changes():
    after = copy.deepcopy(WEB)
    after["ports"] = [{"protocol": "tcp", "port": 80, "backend_port": 8081}, {"protocol": "udp", "port": 53}]
    entry = changed(WEB, after)
    assert entry["listeners"]["added"] == ["udp/53 -> 53"]
    assert entry["listeners"]["removed"] == []
    assert entry["listeners"]["changed"] == [{"listener": "tcp/80", "field": "backend_port", "from": 8080, "to": 8081}]
    line = plan_lines(lb_plan(model(WEB), model(after)))[0]
    assert "listener added udp/53 -> 53" in line and "listener tcp/80 backend_port 8080 -> 8081" in line
    moved = {**WEB, "ports": [{"protocol": "tcp", "port": 8000, "backend_port": 8080}]}
    entry = changed(WEB, moved)
    assert entry["listeners"]["added"] == ["tcp/8000 -> 8080"] and entry["listeners"]["removed"] == ["tcp/80 -> 8080"]


def test_rules_and_settings():
    after = {**WEB, "source_ranges": ["10.0.0.0/8"], "preserve_source_ip": False, "health_check": {"fall": 5}}
    entry = changed(WEB, after)
    assert entry["fields"] == {
        "source_ranges": {"added": ["10.0.0.0/8"], "removed": ["0.0.0.0/0"]},
        "preserve_source_ip": {"from": True, "to": False},
        "health_check.fall": {"from": 3, "to": 5},
    }
    line = plan_lines(lb_plan(model(WEB), model(after)))[0]
    assert "source_ranges +10.0.0.0/8 -0.0.0.0/0" in line and "preserve_source_ip true -> false" in line


def test_vip_move_changes_the_lb_and_the_vip_set():
    after = {**WEB, "vip": "198.51.100.20"}
    entry = changed(WEB, after)
    assert entry["fields"] == {"vip": {"from": "198.51.100.10", "to": "198.51.100.20"}}
    assert lb_plan(model(WEB), model(after))["vips"] == {"added": ["198.51.100.20"], "removed": ["198.51.100.10"]}


def test_reordered_backends_are_a_change_without_details():
    after = {**WEB, "backends": list(reversed(WEB["backends"]))}
    entry = changed(WEB, after)
    assert entry["reordered"] is True
    assert plan_lines(lb_plan(model(WEB), model(after))) == ["~ lb web 198.51.100.10: listeners or backends reordered"]


def test_table_options_compared_only_with_a_record():
    options = {"snat_all": False, "hash_seed": 1}
    plan = lb_plan(model(WEB), model(WEB), options, {**options, "snat_all": True})
    assert plan["options"] == {"snat_all": {"from": False, "to": True}}
    assert plan_lines(plan) == ["~ option snat_all: false -> true"] and not plan_is_empty(plan)
    assert plan_is_empty(lb_plan(model(WEB), model(WEB), None, {"snat_all": True}))


def test_first_apply_and_removal_of_everything():
    first = lb_plan({}, model(WEB, API))
    assert [lb["name"] for lb in first["loadbalancers"]["added"]] == ["api", "web"]
    assert first["vips"]["added"] == ["198.51.100.10", "198.51.100.11"]
    gone = lb_plan(model(WEB, API), {})
    assert [lb["name"] for lb in gone["loadbalancers"]["removed"]] == ["api", "web"]
    assert gone["vips"]["removed"] == ["198.51.100.10", "198.51.100.11"]
