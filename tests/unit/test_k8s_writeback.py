"""What the status write-back plans for one Service (k8s/writeback.py), on Services as the API
returns them: claim, status, Events, release, and what it leaves alone."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.k8s.writeback import (
    Desired,
    claim_patch,
    event_key,
    plan,
    read_status_document,
    seen_events,
)

MARK = "portico.io/gateway"
FINALIZER = "service.kubernetes.io/load-balancer-cleanup"
LIVE = {
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "41",
                 "creationTimestamp": "2025-02-01T10:00:00Z", "finalizers": ["example.com/keep"]},
    "spec": {"type": "LoadBalancer", "loadBalancerClass": MARK},
    "status": {"loadBalancer": {}},
}


def desired(**fields: Any) -> Desired:
    base = {"cluster": "lab", "namespace": "shop", "name": "web", "uid": "u-1", "ips": ["198.51.100.7"],
            "problems": [], "warnings": [], "served": True, "release": False, "release_reason": ""}
    return Desired.from_item({**base, **fields})


def live(**meta: Any) -> dict[str, Any]:
    service = copy.deepcopy(LIVE)
    service["metadata"].update(meta)
    return service


def claimed(ips: tuple[str, ...] = ()) -> dict[str, Any]:
    service = live(finalizers=["example.com/keep", FINALIZER], annotations={"portico.io/served-by": MARK})
    service["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}}
    return service


def test_claim_stage_only_claims():
    todo = plan(desired(), live(), set(), stage="claim", release_allowed=True, mark=MARK)
    assert todo.claim and todo.ingress is None and todo.events == [] and not todo.unclaim


def test_claim_keeps_other_finalizers_and_is_guarded_by_the_version_read():
    patch = claim_patch(live(), MARK, True)
    assert patch == {"metadata": {"resourceVersion": "41", "finalizers": ["example.com/keep", FINALIZER],
                                  "annotations": {"portico.io/served-by": MARK}}}
    assert claim_patch(claimed(), MARK, False)["metadata"]["finalizers"] == ["example.com/keep"]
    assert claim_patch(live(finalizers=[FINALIZER]), MARK, False)["metadata"]["finalizers"] is None


def test_publish_writes_the_address_once_with_an_event():
    todo = plan(desired(), claimed(), set(), stage="publish", release_allowed=True, mark=MARK)
    assert not todo.claim and todo.ingress == [{"ip": "198.51.100.7", "ipMode": "VIP"}]
    assert todo.events == [{"type": "Normal", "reason": "IPAllocated", "message": "Portico serves this Service on 198.51.100.7"}]
    done = plan(desired(), claimed(("198.51.100.7",)), set(), stage="publish", release_allowed=True, mark=MARK)
    assert not done.writes


def test_a_lasting_problem_gets_one_event_and_no_address():
    problem = "lab/shop/web: spec.ports[0].name: 'café' is not a DNS label"
    todo = plan(desired(ips=[], served=False, problems=[problem]), claimed(("198.51.100.7",)), set(), stage="publish",
                release_allowed=True, mark=MARK)
    assert todo.ingress == [] and todo.events == [{"type": "Warning", "reason": "NotServed", "message": problem}]
    seen = {event_key("u-1", todo.events[0])}
    again = plan(desired(ips=[], served=False, problems=[problem]), claimed(), seen, stage="publish", release_allowed=True, mark=MARK)
    assert not again.writes


def test_a_release_waits_for_every_gateway_then_clears_status_and_claim():
    deleting = claimed(("198.51.100.7",))
    deleting["metadata"]["deletionTimestamp"] = "2025-04-20T08:30:00Z"
    item = desired(release=True, served=False, release_reason="being deleted")
    assert plan(item, deleting, set(), stage="claim", release_allowed=True, mark=MARK).writes is False
    waiting = plan(item, deleting, set(), stage="publish", release_allowed=False, mark=MARK)
    assert waiting.withheld and not waiting.writes
    todo = plan(item, deleting, set(), stage="publish", release_allowed=True, mark=MARK)
    assert todo.ingress == [] and todo.unclaim
    assert todo.events == [{"type": "Normal", "reason": "Released",
                            "message": "Portico no longer serves this Service (being deleted); 198.51.100.7 withdrawn from every gateway"}]


def test_nothing_to_release_is_nothing_to_do():
    item = desired(release=True, served=False)
    assert not plan(item, live(), set(), stage="publish", release_allowed=True, mark=MARK).writes


def test_another_installations_mark_is_not_ours_to_remove():
    other = live(annotations={"portico.io/served-by": "example.com/other"})
    todo = plan(desired(release=True, served=False), other, set(), stage="publish", release_allowed=True, mark=MARK)
    assert not todo.unclaim


def test_a_service_created_again_under_the_same_name_is_left_alone():
    assert not plan(desired(), live(uid="u-2"), set(), stage="publish", release_allowed=True, mark=MARK).writes


def test_a_service_being_deleted_is_never_claimed():
    deleting = live(deletionTimestamp="2025-04-20T08:30:00Z")
    assert not plan(desired(), deleting, set(), stage="claim", release_allowed=True, mark=MARK).claim


@pytest.mark.parametrize("value", ['{"format": "portico.io/k8s-status/v1", "services": [{"name": "web"}]}', [{"name": "web"}]])
def test_the_status_document_or_its_list(value):
    assert [item.name for item in read_status_document(value)] == ["web"]


def test_only_porticos_events_count():
    events = [{"involvedObject": {"uid": "u-1"}, "type": "Warning", "reason": "NotServed", "message": "x",
               "source": {"component": "portico"}},
              {"involvedObject": {"uid": "u-1"}, "type": "Warning", "reason": "NotServed", "message": "y",
               "source": {"component": "someone-else"}}]
    assert seen_events(events) == {("u-1", "Warning", "NotServed", "x")}
