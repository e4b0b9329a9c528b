"""Configuration changes under full load: 100 load balancers added, their weights changed, then
all removed, each by a sync (the fast path the watcher runs), while the client keeps the `web` LB
busy. `web` is never touched, so nothing of its traffic may suffer: no held stream reset, no new
TCP connection failed, no UDP reply lost. The table changes incrementally (the untouched LB's
chains and slot maps stay) and conntrack keeps every established flow's NAT binding.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import sys
import time
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import faultload  # noqa: E402
from lab_helpers import sync  # noqa: E402

import labtools  # noqa: E402

WEB = "198.51.100.10"
ADDED = 100
STREAMS = 200
# Long enough for three syncs of the lab with 100 more LBs (about 6-10 s each here); the test
# fails if the changes outlast the load, so a slower machine cannot pass without measuring.
LOAD_S = 48


def inventory_lbs() -> list[dict[str, Any]]:
    with open(REPO / "inventories/lab/group_vars/gateways.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["portico_loadbalancers"]


def free_vips(count: int) -> list[str]:
    """Addresses of the lab's public pool that no LB or Service holds now."""
    listed = labtools.sh("gw1", "nft -j list set inet portico vips4")
    used = {str(e) for item in json.loads(listed)["nftables"] if "set" in item for e in item["set"].get("elem", ())}
    pool = [str(ipaddress.ip_address("198.51.100.20") + i) for i in range(108)]
    free = [address for address in pool if address not in used]
    assert len(free) >= count, f"only {len(free)} free addresses in the lab pool"
    return free[:count]


def added_lbs(vips: list[str], weights: tuple[int, int, int]) -> list[dict[str, Any]]:
    return [{"name": f"churn-{i:03d}", "vip": vip,
             "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
             "backends": [{"address": f"192.0.2.1{n + 1}", "weight": w} for n, w in enumerate(weights)]}
            for i, vip in enumerate(vips)]


def sync_with(path: pathlib.Path, lbs: list[dict[str, Any]]) -> float:
    path.write_text(json.dumps({"portico_loadbalancers": lbs}))
    started = time.time()
    sync("-e", f"@{path}")
    return time.time() - started


def test_adding_reweighting_and_removing_100_lbs_costs_the_busy_lb_nothing(tmp_path):
    base = inventory_lbs()
    vips = free_vips(ADDED)
    load = faultload.ConnectionLoad(WEB, seconds=LOAD_S, streams=STREAMS, new_every_ms=20, udp_every_ms=20, udp_port=53).start()
    started = time.time()
    try:
        took = {"add": sync_with(tmp_path / "add.json", base + added_lbs(vips, (1, 1, 1)))}
        added = labtools.request("client", vips[-1], 80, 6)
        took["reweight"] = sync_with(tmp_path / "reweight.json", base + added_lbs(vips, (3, 1, 0)))
        reweighted = labtools.request("client", vips[-1], 80, 30)
        took["remove"] = sync_with(tmp_path / "remove.json", base)
        changes_ended = time.time() - started
    finally:
        result = load.finish()
    summary = result["summary"]
    labtools.report("config_under_load", lbs_changed=ADDED, sync_s={k: round(v, 1) for k, v in took.items()}, **summary)
    # The added LBs answered while they existed; a weight of 0 sends nothing.
    assert added["failed"] == 0 and reweighted["failed"] == 0 and "node3" not in reweighted["backends"], (added, reweighted)
    assert changes_ended < LOAD_S - 2, f"the changes ({changes_ended:.0f}s) outlasted the load ({LOAD_S}s)"
    assert summary["streams"]["opened"] == STREAMS and summary["streams"]["reset"] == 0, summary
    assert summary["tcp"]["failed"] == 0 and summary["tcp"]["sent"] > LOAD_S * 1000 / 20 * 0.8, summary
    assert summary["udp"]["failed"] == 0, summary


def test_the_lab_is_back_to_its_inventory():
    # Nothing of the churn remains for the tests after this one.
    assert "churn" not in labtools.sh("gw1", "nft list table inet portico")
