"""portico.gateway.k8s_service_status through real ansible-playbook against the API stand-in."""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

from conftest import K8sLab, play, task_results

VIP = "198.51.100.10"


def status_task(lab: K8sLab, **args: Any) -> dict[str, Any]:
    return {"portico.gateway.k8s_service_status": {"kubeconfig": str(lab.kubeconfig), "namespace": "default", "name": "echo", **args}}


def run(lab: K8sLab, tmp: pathlib.Path, *flags: str, **args: Any) -> dict[str, Any]:
    return task_results(play([{**status_task(lab, **args), "ignore_errors": True}], tmp, *flags))[0]


def ingress(lab: K8sLab, namespace: str = "default", name: str = "echo") -> list[dict[str, Any]]:
    service = lab.api.get("Service", namespace, name) or {}
    return service.get("status", {}).get("loadBalancer", {}).get("ingress") or []


def kubectl(lab: K8sLab, *args: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", str(lab.kubeconfig), *args], capture_output=True, text=True, check=True).stdout


def test_sets_the_ingress_and_kubectl_shows_it(k8s_lab, tmp_path):
    result = run(k8s_lab, tmp_path, ingress=[VIP, "2001:db8:100::10"])
    assert result["changed"] is True and result["found"] is True
    assert result["ingress"] == [{"ip": VIP, "ipMode": "VIP"}, {"ip": "2001:db8:100::10", "ipMode": "VIP"}]
    assert ingress(k8s_lab) == result["ingress"]
    row = next(line for line in kubectl(k8s_lab, "get", "svc", "echo").splitlines() if line.startswith("echo "))
    assert f"{VIP},2001:db8:100::10" in row


def test_second_run_reports_no_change_and_does_not_write(k8s_lab, tmp_path):
    run(k8s_lab, tmp_path, ingress=[VIP])
    version = k8s_lab.api.get("Service", "default", "echo")["metadata"]["resourceVersion"]
    again = run(k8s_lab, tmp_path, ingress=[VIP])
    assert again["changed"] is False and again["ingress"] == [{"ip": VIP, "ipMode": "VIP"}]
    assert k8s_lab.api.get("Service", "default", "echo")["metadata"]["resourceVersion"] == version


def test_check_mode_reports_the_change_with_a_diff_but_writes_nothing(k8s_lab, tmp_path):
    result = run(k8s_lab, tmp_path, "--check", "--diff", ingress=[VIP])
    assert result["changed"] is True
    assert result["diff"]["before"] == {"ingress": []} and result["diff"]["after"] == {"ingress": [{"ip": VIP, "ipMode": "VIP"}]}
    assert ingress(k8s_lab) == []


def test_an_empty_list_clears_the_ingress(k8s_lab, tmp_path):
    run(k8s_lab, tmp_path, ingress=[VIP])
    cleared = run(k8s_lab, tmp_path, ingress=[])
    assert cleared["changed"] is True and cleared["ingress"] == []
    assert k8s_lab.api.get("Service", "default", "echo")["status"] == {"loadBalancer": {}}
    assert "<pending>" in kubectl(k8s_lab, "get", "svc", "echo")
    assert run(k8s_lab, tmp_path, ingress=[])["changed"] is False


def test_an_event_is_created_once_then_its_count_is_bumped(k8s_lab, tmp_path):
    event = {"type": "Warning", "reason": "PoolExhausted", "message": "no free address in pool public"}
    first = run(k8s_lab, tmp_path, ingress=[], event=event)
    assert first["event_created"] is True and first["event_updated"] is False and first["changed"] is True
    second = run(k8s_lab, tmp_path, ingress=[], event=event)
    assert second["event_created"] is False and second["event_updated"] is True
    events = k8s_lab.api.list("Event", "default")
    assert len(events) == 1
    recorded = events[0]
    uid = k8s_lab.api.get("Service", "default", "echo")["metadata"]["uid"]
    assert recorded["involvedObject"] == {**recorded["involvedObject"], "kind": "Service", "name": "echo", "namespace": "default", "uid": uid}
    assert (recorded["count"], recorded["type"], recorded["reason"]) == (2, "Warning", "PoolExhausted")
    assert (recorded["source"], recorded["reportingComponent"]) == ({"component": "portico"}, "portico.io/gateway")
    assert "PoolExhausted" in kubectl(k8s_lab, "get", "events")
    # A different message is a different event.
    third = run(k8s_lab, tmp_path, event={**event, "message": "still no free address"})
    assert third["event_created"] is True and len(k8s_lab.api.list("Event", "default")) == 2


def test_check_mode_does_not_record_events(k8s_lab, tmp_path):
    result = run(k8s_lab, tmp_path, "--check", event={"reason": "IPAllocated", "message": f"assigned {VIP}"})
    assert result["changed"] is True and result["event_created"] is True
    assert k8s_lab.api.list("Event") == []


def test_unknown_service_fails_naming_it_unless_missing_ok(k8s_lab, tmp_path):
    failed = run(k8s_lab, tmp_path, namespace="team-b", name="ghost", ingress=[VIP])
    assert failed.get("failed") is True and "team-b/ghost" in failed["msg"] and "not found" in failed["msg"]
    tolerated = run(k8s_lab, tmp_path, namespace="team-b", name="ghost", ingress=[VIP], missing_ok=True)
    assert tolerated.get("failed") is not True and tolerated["changed"] is False and tolerated["found"] is False


def test_invalid_input_is_refused_before_any_write(k8s_lab, tmp_path):
    failed = run(k8s_lab, tmp_path, ingress=["198.51.100.300"])
    assert failed.get("failed") is True and "198.51.100.300" in failed["msg"]
    no_message = run(k8s_lab, tmp_path, ingress=[VIP], event={"reason": "IPAllocated"})
    assert no_message.get("failed") is True and "message" in no_message["msg"]
    assert ingress(k8s_lab) == [] and k8s_lab.api.list("Event") == []


def test_a_concurrent_change_between_read_and_write_is_retried(k8s_lab):
    """The status patch carries the resourceVersion it was computed from; on a 409 the module
    reads the Service again instead of overwriting someone else's change blindly."""
    from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import K8sAuth, api_client
    from ansible_collections.portico.gateway.plugins.module_utils.k8s.writeback import desired_ingress
    from ansible_collections.portico.gateway.plugins.modules.k8s_service_status import write_ingress

    client = api_client(K8sAuth(kubeconfig=str(k8s_lab.kubeconfig)))
    stale = k8s_lab.api.get("Service", "default", "echo")
    k8s_lab.api.apply({**stale, "metadata": {**stale["metadata"], "labels": {"app": "echo", "edited": "yes"}}})
    written = write_ingress(client, stale, desired_ingress([VIP], "VIP"), "portico")
    assert written["status"]["loadBalancer"]["ingress"] == [{"ip": VIP, "ipMode": "VIP"}]
    assert k8s_lab.api.get("Service", "default", "echo")["metadata"]["labels"]["edited"] == "yes"


def test_cluster_without_ip_mode_is_not_patched_again(k8s_lab, tmp_path):
    """API servers without the LoadBalancerIPMode feature drop ipMode: that is not a difference."""
    echo = k8s_lab.api.get("Service", "default", "echo")
    echo["status"] = {"loadBalancer": {"ingress": [{"ip": VIP, "ports": [{"port": 80, "protocol": "TCP"}]}]}}
    k8s_lab.api.apply(echo)
    assert run(k8s_lab, tmp_path, ingress=[VIP])["changed"] is False
    assert run(k8s_lab, tmp_path, ingress=["198.51.100.51"])["changed"] is True


# --- batch mode: one call for a whole cluster -------------------------------------------------


def item(name: str, namespace: str = "default", **fields: Any) -> dict[str, Any]:
    return {"cluster": "lab", "namespace": namespace, "name": name, "uid": "", "ips": [], "problems": [], "warnings": [],
            "served": False, "release": False, "release_reason": "", **fields}


def batch(lab: K8sLab, tmp: pathlib.Path, items: list[dict[str, Any]], *flags: str, **args: Any) -> dict[str, Any]:
    document = json.dumps({"format": "portico.io/k8s-status/v1", "services": items})
    task = {"portico.gateway.k8s_service_status": {"kubeconfig": str(lab.kubeconfig), "services": document, "cluster": "lab", **args},
            "ignore_errors": True}
    return task_results(play([task], tmp, *flags))[0]


def portico_events(lab: K8sLab, name: str) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in lab.api.list("Event", "default")
            if e["involvedObject"]["name"] == name and e["source"] == {"component": "portico"}]


SERVED = [item("echo", ips=[VIP], served=True), item("dns", ips=["198.51.100.11"], served=True),
          item("echo-local", problems=["lab/default/echo-local: spec.healthCheckNodePort: 70000 is out of range 1-65535"])]


def test_claim_marks_served_services_before_a_converge_and_writes_nothing_else(k8s_lab, tmp_path):
    result = batch(k8s_lab, tmp_path, SERVED, stage="claim")
    assert result["changed"] is True and result["counts"]["claimed"] == 2 and result["counts"]["status_written"] == 0
    echo = k8s_lab.api.get("Service", "default", "echo")
    assert echo["metadata"]["finalizers"] == ["service.kubernetes.io/load-balancer-cleanup"]
    assert echo["metadata"]["annotations"]["portico.io/served-by"] == "portico.io/gateway"
    assert ingress(k8s_lab) == [] and portico_events(k8s_lab, "echo") == []
    assert "finalizers" not in k8s_lab.api.get("Service", "default", "echo-local")["metadata"]  # not served: not claimed
    assert batch(k8s_lab, tmp_path, SERVED, stage="claim")["changed"] is False


def test_publish_writes_what_differs_once_and_a_second_run_writes_nothing(k8s_lab, tmp_path):
    first = batch(k8s_lab, tmp_path, SERVED, "--diff")
    assert first["counts"]["status_written"] == 2 and first["counts"]["claimed"] == 2 and first["counts"]["events"] == 3
    assert first["diff"]["after"]["lab/default/echo"] == [VIP]
    assert ingress(k8s_lab) == [{"ip": VIP, "ipMode": "VIP"}]
    assert portico_events(k8s_lab, "echo") == [("IPAllocated", f"Portico serves this Service on {VIP}")]
    assert portico_events(k8s_lab, "echo-local") == [
        ("NotServed", "lab/default/echo-local: spec.healthCheckNodePort: 70000 is out of range 1-65535")]
    versions = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in k8s_lab.api.list("Service", "default")}
    again = batch(k8s_lab, tmp_path, SERVED)
    assert again["changed"] is False and again["counts"]["events"] == 0 and again["changed_services"] == []
    assert {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in k8s_lab.api.list("Service", "default")} == versions
    assert len(k8s_lab.api.list("Event", "default")) == 3


def test_check_mode_reports_but_writes_nothing(k8s_lab, tmp_path):
    result = batch(k8s_lab, tmp_path, SERVED, "--check")
    assert result["changed"] is True and result["counts"]["status_written"] == 2
    assert ingress(k8s_lab) == [] and k8s_lab.api.list("Event") == []
    assert "finalizers" not in k8s_lab.api.get("Service", "default", "echo")["metadata"]


def test_a_focused_run_reads_and_writes_only_the_changed_services(k8s_lab, tmp_path):
    result = batch(k8s_lab, tmp_path, SERVED, only=["lab/default/dns"])
    assert result["counts"]["considered"] == 1 and result["changed_services"] == ["lab/default/dns"]
    assert ingress(k8s_lab) == [] and ingress(k8s_lab, "default", "dns") == [{"ip": "198.51.100.11", "ipMode": "VIP"}]


def test_a_release_waits_for_a_converge_of_every_gateway_then_the_deleted_service_goes(k8s_lab, tmp_path):
    batch(k8s_lab, tmp_path, SERVED)
    k8s_lab.api.delete("Service", "default", "echo")
    terminating = k8s_lab.api.get("Service", "default", "echo")
    assert terminating["metadata"]["deletionTimestamp"]  # held by the finalizer
    releasing = [item("echo", uid=terminating["metadata"]["uid"], ips=[VIP], release=True, release_reason="being deleted")]
    withheld = batch(k8s_lab, tmp_path, releasing)
    assert withheld["changed"] is False and withheld["withheld"] == ["lab/default/echo"]
    assert k8s_lab.api.get("Service", "default", "echo") is not None and ingress(k8s_lab) == [{"ip": VIP, "ipMode": "VIP"}]
    released = batch(k8s_lab, tmp_path, releasing, release=True)
    assert released["counts"]["released"] == 1
    assert k8s_lab.api.get("Service", "default", "echo") is None
    assert ("Released", f"Portico no longer serves this Service (being deleted); {VIP} withdrawn from every gateway") in \
        portico_events(k8s_lab, "echo")
    assert "service/echo" not in kubectl(k8s_lab, "get", "svc", "-o", "name").split()


def test_a_service_that_left_the_scope_keeps_living_without_status_mark_or_finalizer(k8s_lab, tmp_path):
    batch(k8s_lab, tmp_path, SERVED)
    dns = k8s_lab.api.get("Service", "default", "dns")
    dns["spec"] = {**dns["spec"], "type": "ClusterIP", "loadBalancerClass": None}
    for port in dns["spec"]["ports"]:
        port.pop("nodePort", None)
    k8s_lab.api.apply(dns)
    released = batch(k8s_lab, tmp_path, [item("dns", release=True, release_reason="type changed to ClusterIP")], release=True)
    assert released["counts"]["released"] == 1
    after = k8s_lab.api.get("Service", "default", "dns")
    assert after["spec"]["type"] == "ClusterIP" and not after["metadata"].get("finalizers")
    assert "portico.io/served-by" not in (after["metadata"].get("annotations") or {})
    assert ingress(k8s_lab, "default", "dns") == []
    assert batch(k8s_lab, tmp_path, [item("dns", release=True)], release=True)["changed"] is False


def test_a_service_created_again_under_the_same_name_is_left_to_the_next_run(k8s_lab, tmp_path):
    stale = item("echo", uid="00000000-0000-0000-0000-000000000000", ips=[VIP], served=True)
    assert batch(k8s_lab, tmp_path, [stale])["changed"] is False
    assert ingress(k8s_lab) == []
