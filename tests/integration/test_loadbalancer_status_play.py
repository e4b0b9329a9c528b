"""Portico's LoadBalancer resource through the real status plays (validate, claim, a stand-in
converge, k8s_status.yml), the k8s_services inventory and the API stand-in with the lab's CRD and
its two samples. The gateways are local; each has a health checker stand-in (its status command
prints a state file the test writes, in portico-healthd's format) and a dataplane record, so the
status shows what the gateways report: the real daemon is the lab's (molecule default,
test_loadbalancer_resource.py)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import yaml
from conftest import LAB_FIXTURES
from test_k8s_status_play import Site

from lab.k8s_stub import FakeApiServer

FINALIZER = "portico.io/load-balancer-cleanup"
DIGEST = "applied-1"
APP_LB = "lab/team-a/LoadBalancer/legacy-app"


class ResourceSite(Site):
    """Site with a health checker stand-in and a dataplane record per gateway (one for both)."""

    def __init__(self, tmp: pathlib.Path, api: FakeApiServer):
        super().__init__(tmp, api)
        self.healthd = tmp / "healthd"
        self.healthd.mkdir()
        command = self.healthd / "portico-healthd"
        command.write_text('#!/bin/sh\n[ -f "$(dirname "$0")/state.json" ] || exit 1\ncat "$(dirname "$0")/state.json"\n')
        command.chmod(0o755)
        (tmp / "nft").mkdir()
        (tmp / "nft" / "portico.dataplane.json").write_text(json.dumps({"digest": DIGEST, "loadbalancers": [], "options": {}, "pools": {}}))
        group_vars = self.inventory / "group_vars" / "gateways.yml"
        settings = yaml.safe_load(group_vars.read_text())
        settings.update(healthcheck_install_dir=str(self.healthd), nftables_state_dir=str(tmp / "nft"))
        group_vars.write_text(yaml.safe_dump(settings))

    def health(self, lbs: dict[str, dict[str, Any]], running: bool = True, digest: str = DIGEST) -> None:
        """What the health checkers report: per LB name, its vip, announced and backend -> (up, detail)."""
        state = {"daemon_running": running, "digest": digest, "loadbalancers": {}, "backends": [], "vips": {}}
        for name, lb in lbs.items():
            state["loadbalancers"][name] = {"vip": lb["vip"]}
            state["vips"][lb["vip"]] = {"healthy": 0, "total": 0, "announced": lb.get("announced", True)}
            for address, (up, detail) in lb.get("backends", {}).items():
                state["backends"].append({"lb": name, "address": address, "up": up, "detail": detail})
        (self.healthd / "state.json").write_text(json.dumps(state))

    def resource(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self.api.get("LoadBalancer", namespace, name)


@pytest.fixture
def site(tmp_path: pathlib.Path):
    with FakeApiServer(fixtures=LAB_FIXTURES) as api:
        yield ResourceSite(tmp_path, api)


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in obj["status"].get("conditions") or []}


def app_health(address: str, *backends: tuple[str, bool, str], announced: bool = True) -> dict[str, dict[str, Any]]:
    return {APP_LB: {"vip": address, "announced": announced, "backends": {b: (up, detail) for b, up, detail in backends}}}


def test_a_sync_serves_the_resources_and_says_what_each_gateway_does(site: ResourceSite):
    site.sync()
    app = site.resource("legacy-app", "team-a")
    assert FINALIZER in app["metadata"]["finalizers"] and app["metadata"]["annotations"]["portico.io/served-by"] == "portico.io/gateway"
    (address,) = app["status"]["addresses"]
    assert app["status"]["state"] == "active" and app["status"]["observedGeneration"] == app["metadata"]["generation"]
    assert conditions(app)["Accepted"] == ("True", "Accepted", f"served on {address}")
    # No health checker answered: the gateways converged, but nothing says they run it.
    assert conditions(app)["Programmed"] == ("False", "Pending", "gw1 its health checker is not running; "
                                             "gw2 its health checker is not running")
    appliance = site.resource("appliance", "default")
    assert appliance["status"]["addresses"][0] == "198.51.100.50" and ":" in appliance["status"]["addresses"][1]

    site.health(app_health(address, ("192.0.2.11", True, "HTTP 200"), ("192.0.2.12", True, "HTTP 200")))
    site.sync()
    app = site.resource("legacy-app", "team-a")
    assert conditions(app)["Programmed"] == ("True", "Programmed", f"gw1, gw2 announce {address}")
    assert app["status"]["healthy"] == "2/2"
    assert [(b["address"], b["name"], b["health"]) for b in app["status"]["backends"]] == [
        ("192.0.2.11", "vm1", "Healthy"), ("192.0.2.12", "vm2", "Healthy")]
    assert [(g["name"], g["programmed"], g["announced"]) for g in app["status"]["gateways"]] == [("gw1", True, True), ("gw2", True, True)]
    events = [(e["reason"], e["message"]) for e in site.api.list("Event", "team-a") if e["involvedObject"]["name"] == "legacy-app"]
    assert events == [("IPAllocated", f"Portico serves this LoadBalancer on {address}")]
    assert {(e["involvedObject"]["kind"], e["involvedObject"]["apiVersion"]) for e in site.api.list("Event", "team-a")
            if e["involvedObject"]["name"] == "legacy-app"} == {("LoadBalancer", "portico.io/v1alpha1")}

    before = app["metadata"]["resourceVersion"]
    again = site.sync()
    recap = again.split("PLAY RECAP")[-1]
    assert "changed=0" in recap and "changed=1" not in recap, again[-3000:]
    assert site.resource("legacy-app", "team-a")["metadata"]["resourceVersion"] == before


def test_a_backend_down_on_one_gateway_is_unhealthy_in_status(site: ResourceSite):
    site.sync()
    address = site.resource("legacy-app", "team-a")["status"]["addresses"][0]
    site.health(app_health(address, ("192.0.2.11", True, "HTTP 200"), ("192.0.2.12", False, "HTTP 503")))
    site.sync()
    app = site.resource("legacy-app", "team-a")
    assert app["status"]["healthy"] == "1/2"
    assert [(b["health"], b.get("message")) for b in app["status"]["backends"]] == [
        ("Healthy", None), ("Unhealthy", "gw1: HTTP 503; gw2: HTTP 503")]
    assert conditions(app)["Programmed"][0] == "True"  # one healthy backend: still announced

    site.health(app_health(address, ("192.0.2.11", False, "connect: refused"), ("192.0.2.12", False, "HTTP 503"), announced=False))
    site.sync()
    app = site.resource("legacy-app", "team-a")
    assert app["status"]["healthy"] == "0/2"
    assert conditions(app)["Programmed"] == ("False", "NoHealthyBackend", f"every gateway runs it, none announces {address}: "
                                             "no healthy backend")


def test_a_health_checker_still_on_the_last_configuration_is_not_programmed(site: ResourceSite):
    site.sync()
    address = site.resource("legacy-app", "team-a")["status"]["addresses"][0]
    site.health(app_health(address, ("192.0.2.11", True, "")), digest="applied-0")
    output = site.sync()
    app = site.resource("legacy-app", "team-a")
    assert conditions(app)["Programmed"] == ("False", "Pending", "gw1 its health checker has not loaded the configuration "
                                             "applied last; gw2 its health checker has not loaded the configuration applied last")
    assert "PLAY RECAP" in output


def test_bad_resources_are_refused_on_their_own_fields_and_the_others_keep_working(site: ResourceSite):
    # The appliance holds its address first: objects created in the same second are ordered by uid.
    site.sync()
    taken = yaml.safe_load((LAB_FIXTURES / "50-loadbalancer-legacy-app.yaml").read_text())
    taken["metadata"] = {"name": "taker", "namespace": "team-a"}
    taken["spec"]["addresses"] = [{"family": "IPv4", "ip": "198.51.100.50"}]  # the appliance's
    outside = json.loads(json.dumps(taken))
    outside["metadata"]["name"] = "outsider"
    outside["spec"]["addresses"] = [{"family": "IPv4", "ip": "203.0.113.5"}]
    clash = json.loads(json.dumps(taken))
    clash["metadata"]["name"] = "clash"
    clash["spec"]["addresses"] = [{"family": "IPv4", "pool": "public"}]
    clash["spec"]["healthCheck"] = {"type": "tcp"}
    clash["spec"]["listeners"] = [{"name": "dns", "protocol": "udp", "port": 53}]  # a UDP-only LB with a TCP check
    for obj in (taken, outside, clash):
        site.api.apply(obj)
    output = site.sync()
    assert "not served: lab/team-a/LoadBalancer/taker: spec.addresses[0].ip: 198.51.100.50 is taken by " \
           "lab/default/LoadBalancer/appliance (no common sharing key)" in " ".join(output.split())
    refused = {name: site.resource(name, "team-a") for name in ("taker", "outsider", "clash")}
    assert conditions(refused["taker"])["Accepted"] == (
        "False", "AddressNotAvailable", "spec.addresses[0].ip: 198.51.100.50 is taken by lab/default/LoadBalancer/appliance "
        "(no common sharing key)")
    assert conditions(refused["outsider"])["Accepted"] == (
        "False", "AddressNotAvailable", "spec.addresses[0].ip: 203.0.113.5 is not in any pool (public)")
    assert conditions(refused["clash"])["Accepted"] == (
        "False", "Invalid", "spec.healthCheck.port: is required: a tcp check needs a tcp listener or an explicit port")
    for obj in refused.values():
        assert obj["status"]["state"] == "refused" and "addresses" not in obj["status"]
        assert conditions(obj)["Programmed"][:2] == ("False", "Invalid")
        assert FINALIZER not in (obj["metadata"].get("finalizers") or [])  # never served: nothing to hold
    assert site.resource("appliance", "default")["status"]["addresses"][0] == "198.51.100.50"
    assert conditions(site.resource("legacy-app", "team-a"))["Accepted"][0] == "True"
    warnings = {e["involvedObject"]["name"]: e["message"] for e in site.api.list("Event", "team-a") if e["reason"] == "NotServed"}
    assert warnings["outsider"] == "lab/team-a/LoadBalancer/outsider: spec.addresses[0].ip: 203.0.113.5 is not in any pool (public)"


def test_a_disabled_resource_keeps_its_address_and_serves_nothing(site: ResourceSite):
    site.sync()
    app = site.resource("legacy-app", "team-a")
    address = app["status"]["addresses"][0]
    app["spec"]["state"] = "disabled"
    site.api.apply(app)
    site.sync()
    app = site.resource("legacy-app", "team-a")
    assert app["status"]["addresses"] == [address] and app["status"]["state"] == "disabled" and app["status"]["healthy"] == "-"
    assert conditions(app)["Programmed"] == ("False", "Disabled", f"state is disabled: {address} kept, refusing connections; "
                                             "no gateway announces it")
    assert {b["health"] for b in app["status"]["backends"]} == {"Unchecked"}
    # Nothing else may have its address.
    taker = yaml.safe_load((LAB_FIXTURES / "50-loadbalancer-legacy-app.yaml").read_text())
    taker["metadata"] = {"name": "taker", "namespace": "team-a"}
    taker["spec"]["addresses"] = [{"family": "IPv4", "ip": address}]
    site.api.apply(taker)
    site.sync()
    assert conditions(site.resource("taker", "team-a"))["Accepted"][:2] == ("False", "AddressNotAvailable")


def test_a_deleted_resource_keeps_its_finalizer_until_every_gateway_converged(site: ResourceSite):
    site.sync()
    address = site.resource("legacy-app", "team-a")["status"]["addresses"]
    site.api.delete("LoadBalancer", "team-a", "legacy-app")
    output = " ".join(site.sync("-e", json.dumps({"portico_test_broken": ["gw2"]})).split())
    assert "keep their address and finalizer until a converge reaches every gateway: lab/team-a/LoadBalancer/legacy-app" in output
    held = site.resource("legacy-app", "team-a")
    assert held is not None and held["status"]["addresses"] == address
    site.sync()
    assert site.resource("legacy-app", "team-a") is None
    released = [e["message"] for e in site.api.list("Event", "team-a") if e["reason"] == "Released"]
    assert released == [f"Portico no longer serves this LoadBalancer (being deleted); {address[0]} withdrawn from every gateway"]
