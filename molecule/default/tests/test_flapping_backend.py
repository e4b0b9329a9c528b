"""A backend flapping faster than its health check's rise/fall: node2 refuses new connections to
the echo port for 100 ms, accepts them for 100 ms, and so on for 5 s, while the client keeps the
`web` LB busy (held streams and a new connection every 20 ms).

What must hold: the health checker changes node2's state at most once per `fall` or `rise`
probes (the hysteresis bounds the table changes); the other backends' slots never change owner
(Maglev moves only the flapping backend's flows); no held stream is reset (the flap refuses new
connections only, and the gateway keeps every established flow's NAT binding).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / "collections"))
import faultload  # noqa: E402

import labtools  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.status.details import parse_samples  # noqa: E402

WEB = "198.51.100.10"
NODE2 = "192.0.2.12"
FLAP_S = 5.0
HALF_PERIOD_S = 0.1
# The web LB's check (inventories/lab): every 200 ms, fall 2, rise 2.
INTERVAL_S, FALL, RISE = 0.2, 2, 2
STREAMS = 60
METRICS = "http://127.0.0.1:9641/metrics"

# Runs inside node2: a rule that refuses new connections to the echo port, present half the time.
FLAPPER = f"""
nft add table inet portico_lab_flap
nft add chain inet portico_lab_flap input '{{ type filter hook input priority 0; }}'
end=$(( $(date +%s%N) + {int(FLAP_S * 1e9)} ))
while [ "$(date +%s%N)" -lt "$end" ]; do
  nft add rule inet portico_lab_flap input tcp dport 8080 ct state new reject with tcp reset
  sleep {HALF_PERIOD_S}
  nft flush chain inet portico_lab_flap input
  sleep {HALF_PERIOD_S}
done
nft delete table inet portico_lab_flap
"""


def slot_map() -> str:
    """The Maglev map web's tcp/80 listener hashes into (a backend table it may share)."""
    rule = labtools.sh("gw1", "nft list table inet portico | grep -A3 'chain svc_web_[0-9a-f]*_tcp80 ' | grep -o 'map @[a-z0-9_]*'")
    return rule.split("@", 1)[1].strip()


def owners(name: str) -> dict[int, str]:
    listing = json.loads(labtools.sh("gw1", f"nft -j list map inet portico {name}"))
    elements = next(item["map"] for item in listing["nftables"] if "map" in item).get("elem", [])
    # A table of addresses only, or of address . port when the backends' ports differ.
    return {slot: value["concat"][0] if isinstance(value, dict) else value for slot, value in elements}


def node2_transitions() -> float:
    text = labtools.sh("gw1", f"python3 -c \"import urllib.request as u; print(u.urlopen('{METRICS}').read().decode())\"")
    return sum(v for n, labels, v in parse_samples(text)
               if n == "portico_healthd_transitions_total" and labels.get("lb") == "web" and labels.get("backend", "").startswith(NODE2))


def setup_module() -> None:
    labtools.install_probe("client")


def teardown_module() -> None:
    labtools.sh("node2", "nft delete table inet portico_lab_flap", check=False)


def test_a_backend_flapping_every_100ms_moves_no_other_backends_flows():
    name = slot_map()
    before = owners(name)
    others = {slot: address for slot, address in before.items() if address != NODE2}
    assert others and len(others) < len(before), "node2 must hold some of web's slots and the others the rest"
    transitions_before = node2_transitions()
    load = faultload.ConnectionLoad(WEB, seconds=FLAP_S + 3, streams=STREAMS, new_every_ms=20).start()
    flapper = subprocess.Popen(["podman", "exec", "portico-lab-node2", "sh", "-c", FLAPPER],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples, moved = 0, []
    while flapper.poll() is None:
        now = owners(name)
        samples += 1
        moved += [(slot, address, now.get(slot)) for slot, address in others.items() if now.get(slot) != address]
        time.sleep(0.1)
    assert flapper.returncode == 0, flapper.stderr.read()
    summary = load.finish()["summary"]
    transitions = node2_transitions() - transitions_before
    # Each change of state needs FALL (down) or RISE (up) probes in a row.
    bound = FLAP_S / INTERVAL_S / min(FALL, RISE) + 1
    labtools.report("flapping_backend", flap_s=FLAP_S, half_period_ms=HALF_PERIOD_S * 1000, node2_transitions=transitions,
                    transition_bound=bound, slot_samples=samples, other_slots_moved=len(moved), **summary)
    assert samples >= 10, samples
    assert not moved, f"slots of other backends changed owner: {moved[:5]}"
    assert transitions <= bound, f"{transitions} transitions in {FLAP_S}s, the hysteresis allows {bound}"
    assert summary["streams"]["opened"] == STREAMS and summary["streams"]["reset"] == 0, summary
