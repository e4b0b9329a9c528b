"""The JSON documents that carry the controller's large data across Ansible (model/documents.py),
and the inventory snapshot a focused run reuses (k8s/snapshot.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.k8s.snapshot import Snapshot, focus_of, load, save
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import (
    LB_MODEL_FORMAT,
    SERVICES_FORMAT,
    BackendSetPacker,
    DocumentError,
    decode,
    encode,
    expanded_loadbalancers,
    loadbalancer_items,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    encode_model,
    parse_loadbalancers,
)

POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24"]}})
NODES = [{"address": f"192.0.2.{10 + i}", "name": f"node{i}"} for i in range(3)]


def lb(name: str, vip: str, port: int, backends: list | None = None) -> dict:
    return {"name": name, "vip": vip, "ports": [{"protocol": "tcp", "port": 80, "backend_port": port}],
            "backends": NODES if backends is None else backends, "source": "kubernetes"}


def test_equal_backend_lists_are_listed_once_and_parsed_once():
    packer = BackendSetPacker()
    shared = packer.pack_loadbalancers([lb("a", "198.51.100.1", 30001), lb("b", "198.51.100.2", 30002),
                                        lb("c", "198.51.100.3", 30003, [dict(n) for n in NODES])])
    assert len(packer.sets) == 1 and {item["backends"]["set"] for item in shared} == set(packer.sets)
    document = encode(LB_MODEL_FORMAT, shared, packer.sets)
    model = parse_loadbalancers(document, POOLS)
    assert model.problems == [] and [m.name for m in model.loadbalancers] == ["a", "b", "c"]
    assert model.loadbalancers[0].backends is model.loadbalancers[2].backends  # one parsed tuple, shared


def test_the_model_document_round_trips_and_expands_for_readers():
    model = parse_loadbalancers([lb("a", "198.51.100.1", 30001), lb("b", "198.51.100.2", 30002, [])], POOLS).loadbalancers
    text = encode_model(model)
    assert encode_model(model) == text  # the same model, the same text
    assert parse_loadbalancers(text, POOLS).loadbalancers == model
    expanded = expanded_loadbalancers(text)
    assert [b["address"] for b in expanded[0]["backends"]] == [n["address"] for n in NODES] and expanded[1]["backends"] == []
    assert [item["vip"] for item in loadbalancer_items(text)] == ["198.51.100.1", "198.51.100.2"]
    assert expanded_loadbalancers([lb("x", "198.51.100.9", 1)])[0]["name"] == "x"  # a plain list is read as it is


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "portico_lb_model: is not a JSON document"),
    (json.dumps({"format": SERVICES_FORMAT, "services": []}), "portico_lb_model: format: expected 'portico.io/lb-model/v1'"),
    (42, "portico_lb_model: expected a portico.io/lb-model/v1 document, got int"),
])
def test_something_else_is_named_not_guessed(value, message):
    with pytest.raises(DocumentError) as err:
        decode(value, LB_MODEL_FORMAT, "portico_lb_model")
    assert str(err.value).startswith(message)
    result = parse_loadbalancers(value, POOLS)  # the modules get a problem, not an exception
    assert result.loadbalancers == [] and len(result.problems) == 1


def test_an_unknown_backend_set_is_the_lbs_problem():
    document = {"format": LB_MODEL_FORMAT, "loadbalancers": [{**lb("a", "198.51.100.1", 1), "backends": {"set": "feedfeedfeedfeed"}}]}
    result = parse_loadbalancers(document, POOLS)
    assert [str(p) for p in result.problems] == ["a: backends: unknown backend set 'feedfeedfeedfeed'"] and result.refused == ["a"]


@pytest.mark.parametrize(("changed", "full", "focus"), [
    ('["lab/default/a", "lab/team-b/b"]', False, {"lab/default/a", "lab/team-b/b"}),
    ('["lab/default/a"]', True, None),  # asked for a full run
    ('["lab/default/a", "lab//node1"]', False, None),  # a Node changes every nodeport Service
    ("[]", False, None), (None, False, None), ("not json", False, None), ('{"a": 1}', False, None),
])
def test_what_a_focused_run_is(changed, full, focus):
    assert focus_of(changed, full) == (frozenset(focus) if focus is not None else None)


def test_a_snapshot_is_only_reused_for_the_same_source(tmp_path):
    path = str(tmp_path / "state" / "k8s_services-x.json")
    snapshot = Snapshot("fp-1", backend_sets={"abc": NODES})
    save(path, snapshot)
    assert load(path, "fp-1") == snapshot
    assert load(path, "fp-2") is None  # other clusters or options
    (tmp_path / "state" / "k8s_services-x.json").write_text("{broken")
    assert load(path, "fp-1") is None
