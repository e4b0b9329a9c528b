"""The pipeline's rollout (playbooks/deploy.yml): one gateway at a time with a post-check
after each. A change that passes validation but breaks the first gateway (here: a BGP password the
router does not share) stops the rollout there; the other gateways keep their configuration and
keep serving. Re-running the good configuration repairs the broken gateway.
"""

from __future__ import annotations

import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
import labtools  # noqa: E402

WEB = "198.51.100.10"
UPLINKS = {"gw1": "198.18.0.11", "gw2": "198.18.0.12", "gw3": "198.18.0.13"}
BAD_PASSWORD = "not-the-routers-password"


def inventories() -> list[str]:
    extra = ["inventories/lab-bgp-gw3.yml"] if labtools.running("gw3") else []
    return ["inventories/lab-bgp", *extra]


def announcing(prefix: str) -> set[str]:
    hops = set(re.findall(r"via ([0-9.]+)", labtools.sh("router", f"ip -4 route show {prefix}", check=False)))
    return {gw for gw, address in UPLINKS.items() if address in hops}


def frr_conf(gateway: str) -> str:
    return labtools.sh(gateway, "cat /etc/frr/frr.conf")


def test_failed_post_check_stops_the_rollout_and_the_rest_keep_serving():
    gateways = ["gw1", "gw2", *(["gw3"] if labtools.running("gw3") else [])]
    before = {gw: frr_conf(gw) for gw in gateways}
    assert announcing(WEB) >= {"gw1", "gw2"}
    timeline = labtools.probe("client", "--target", WEB, "--port", "80", "--every", "20", "--duration", "45",
                              "--timeout", "0.3")
    run = labtools.playbook(inventories(), "playbooks/deploy.yml", "-e", f"portico_lab_bgp_password={BAD_PASSWORD}",
                            "-e", "postcheck_retries=15")
    result = labtools.finish(timeline)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    assert "gw1 failed its post-check" in output and "BGP peer 198.18.0.1" in output, output[-4000:]
    # gw1 got the change; nobody after it did.
    assert BAD_PASSWORD in frr_conf("gw1")
    for gateway in gateways[1:]:
        assert frr_conf(gateway) == before[gateway], f"{gateway} was touched after gw1 failed"
    serving = announcing(WEB)
    labtools.report("rollout_stopped", failed_gateway="gw1", still_announcing=sorted(serving),
                    probe_ok=result["ok"], probe_failed=len(result["failures"]), max_gap_ms=result["max_gap_ms"])
    assert "gw1" not in serving and serving >= {"gw2"}, serving
    # Clients kept being served throughout (by the gateways the rollout did not reach).
    assert result["ok"] > 0 and result["max_gap_ms"] <= 1000, result

    # The good configuration again: every gateway passes its post-check, gw1 is repaired.
    repaired = labtools.playbook(inventories(), "playbooks/deploy.yml")
    assert repaired.returncode == 0, repaired.stdout[-4000:] + repaired.stderr[-2000:]
    for gateway in gateways:
        assert re.search(rf"{gateway}: \d+ VIPs sane", repaired.stdout), repaired.stdout[-4000:]
    assert BAD_PASSWORD not in frr_conf("gw1")
    labtools.wait_for(lambda: announcing(WEB) >= {"gw1", "gw2"}, 30, "gw1 back in the ECMP route", every=0.2)
