"""The load balancer table deleted by hand on gw1 (`nft delete table inet portico`).

What an operator must get: the health checker keeps checking, leaves routes and its state as they
are (fail-static) and says the table is gone (its log and `portico_healthd_dataplane_table_present`);
the restore unit brings the table back from its copy and the health checker writes the backend
tables again for the health of now, not of the copy; the next sync repairs it as well.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / "collections"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from lab_helpers import listener_slots, start_echo, stop_echo, sync  # noqa: E402

import labtools  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.status.details import parse_samples  # noqa: E402

WEB = "198.51.100.10"
NODE2 = "192.0.2.12"
METRICS = "http://127.0.0.1:9641/metrics"
# The daemon looks every 2 s (TABLE_CHECK_S); podman exec and the lab's load add the rest.
NOTICE_BOUND_S = 3.0


def scrape() -> list[tuple[str, dict[str, str], float]]:
    return parse_samples(labtools.sh("gw1", f"python3 -c \"import urllib.request as u; print(u.urlopen('{METRICS}').read().decode())\""))


def metric(name: str) -> float:
    return next(v for n, _labels, v in scrape() if n == name)


def table_present() -> bool:
    return labtools.podman("exec", "portico-lab-gw1", "nft", "list", "tables", "inet").stdout.count("table inet portico\n") == 1


def status() -> dict:
    return json.loads(labtools.sh("gw1", "/usr/lib/portico/portico-healthd status --json"))


def node2_up() -> bool:
    return next(b["up"] for b in status()["backends"] if b["lb"] == "web" and b["address"] == NODE2)


def web_slots() -> dict[int, str]:
    """Slot -> backend address of the map web's tcp/80 listener hashes into."""
    slots = listener_slots("svc_web_tcp80")
    assert slots, "web's tcp/80 listener has no Maglev map on gw1"
    return slots


def requests(count: int = 30) -> dict:
    return labtools.request("client", WEB, 80, count)


def setup_module() -> None:
    labtools.install_probe("client")


def teardown_module() -> None:
    start_echo("node2")
    if not table_present():
        sync()


def test_a_deleted_table_is_reported_fail_static_and_brought_back_with_todays_health():
    assert requests()["failed"] == 0
    routes = labtools.sh("gw1", "ip route show table 201")
    pid = labtools.sh("gw1", "systemctl show -p MainPID --value portico-healthd")
    errors_before = metric("portico_healthd_nft_update_errors_total")

    deleted = time.time()
    labtools.sh("gw1", "nft delete table inet portico")
    labtools.wait_for(lambda: metric("portico_healthd_dataplane_table_present") == 0, 10, "the daemon says the table is gone")
    noticed = time.time() - deleted
    assert "is gone" in labtools.sh("gw1", "journalctl -u portico-healthd --since '-30s' --no-pager")

    # Still checking: a backend stopped now is seen down, and the update nft cannot apply is counted.
    stop_echo("node2")
    labtools.wait_for(lambda: not node2_up(), 5, "node2 seen down while the table is gone")
    labtools.wait_for(lambda: metric("portico_healthd_nft_update_errors_total") > errors_before, 5, "the failed update counted")
    # Fail-static: the same daemon, the same routes.
    assert labtools.sh("gw1", "systemctl show -p MainPID --value portico-healthd") == pid
    assert labtools.sh("gw1", "ip route show table 201") == routes

    # The restore unit loads the copy the last converge saved, in which node2 was still up; the
    # daemon sees the table back and takes node2 out again.
    restored = time.time()
    labtools.sh("gw1", "systemctl restart portico-nftables")
    labtools.wait_for(lambda: metric("portico_healthd_dataplane_table_present") == 1, 10, "the daemon sees the table back")
    labtools.wait_for(lambda: NODE2 not in web_slots().values(), 5, "node2 out of the restored slot map")
    rewritten = time.time() - restored
    result = requests(60)
    assert result["failed"] == 0 and "node2" not in result["backends"], result

    # A sync repairs a deleted table too.
    labtools.sh("gw1", "nft delete table inet portico")
    sync()
    assert table_present()
    result = requests()
    assert result["failed"] == 0 and "node2" not in result["backends"], result
    labtools.report("table_deleted", noticed_s=round(noticed, 2), restored_and_rewritten_s=round(rewritten, 2))
    assert noticed <= NOTICE_BOUND_S, f"the daemon took {noticed:.2f}s to notice"
