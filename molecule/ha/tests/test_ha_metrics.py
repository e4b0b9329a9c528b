"""The VRRP pair's state on each gateway's /metrics: what the alerts on two masters or none read.

keepalived's notify script records each instance's state; portico-healthd exports it as
portico_vrrp_state. In a sane pair every instance has exactly one master over both gateways, and
a stopped keepalived shows as ``stop`` (not as the master it was), so the alert sees no master.
Runs first in the scenario (file order): the pair is as the converge left it.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "lab"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "collections"))
import labtools
from ansible_collections.portico.gateway.plugins.module_utils.health.ha_metrics import HA_INTERVAL_S
from ansible_collections.portico.gateway.plugins.module_utils.status.details import parse_samples

GATEWAYS = ("gw1", "gw2")
PREEMPT_DELAY_S = 10  # keepalived_preempt_delay_s


def states(gateway: str) -> dict[str, str]:
    text = labtools.sh(gateway, "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:9641/metrics').read().decode())\"")
    samples = parse_samples(text)
    assert any(name == "portico_conntrack_entries_max" for name, _, _ in samples), "conntrack fill is exported"
    return {labels["vrrp_instance"]: labels["state"] for name, labels, value in samples
            if name == "portico_vrrp_state" and value == 1}


def test_every_instance_has_one_master_over_the_pair():
    seen = {gateway: states(gateway) for gateway in GATEWAYS}
    instances = set(seen["gw1"]) | set(seen["gw2"])
    assert instances, seen
    for instance in instances:
        masters = [gateway for gateway in GATEWAYS if seen[gateway].get(instance) == "master"]
        assert len(masters) == 1, (instance, seen)
        assert {seen[gateway].get(instance) for gateway in GATEWAYS} == {"master", "backup"}, (instance, seen)


def test_a_stopped_keepalived_is_reported_stop_and_its_peer_master():
    master = next(gateway for gateway in GATEWAYS if "master" in states(gateway).values())
    peer = next(gateway for gateway in GATEWAYS if gateway != master)
    labtools.sh(master, "systemctl stop keepalived")
    try:
        labtools.wait_for(lambda: set(states(master).values()) == {"stop"} and set(states(peer).values()) == {"master"},
                          HA_INTERVAL_S * 2 + 5, "the stopped master reported stop, its peer master", every=0.5)
    finally:
        labtools.sh(master, "systemctl start keepalived")
    # Back as backup, master again after the preempt delay: the pair as the next tests expect it.
    labtools.wait_for(lambda: set(states(master).values()) == {"master"} and set(states(peer).values()) == {"backup"},
                      PREEMPT_DELAY_S + HA_INTERVAL_S * 2 + 10, "the pair as it was", every=0.5)
