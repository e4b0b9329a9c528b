"""Only what was declared is reachable: every TCP port and a sample of UDP ports of every VIP,
scanned from the lab client; healthd's endpoints from every other host.

Declared listeners come from the inventory (static LBs) and the Kubernetes API (the stand-in's
LoadBalancer Services, LoadBalancer resources and Gateways with their addresses): not from the gateway's own table, whose VIPs are
only the list of what to scan. A listener answers the client when its source ranges hold the
client's address; everything else must stay silent (no SYN-ACK, no reset, no ICMP) and each
packet dropped must show in its VIP's drop counter (``dataplane/objects.py``: drop_<hex>).
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import random
import subprocess
import sys
from dataclasses import dataclass, field

import kubernetes
import pytest
import testinfra
import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "collections"))
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.objects import drop_counter  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
LAB_VARS = yaml.safe_load((REPO / "inventories/lab/group_vars/gateways.yml").read_text())
KUBECONFIG = "/run/portico-lab/kubeconfig"
K8S_SOURCE = yaml.safe_load((REPO / "inventories/lab/k8s_services.yml").read_text())
CLIENT = {4: ipaddress.ip_address("203.0.113.10"), 6: ipaddress.ip_address("2001:db8:203::10")}
# Every address gw1 has off its loopback (lab/topology.yml, gateway_base_interface_addresses).
GATEWAY_ADDRESSES = ("198.18.0.11", "192.0.2.2", "192.0.2.1", "2001:db8:198::11", "2001:db8:192::2", "2001:db8:192::1")
HEALTHD_PORT = 9641
# UDP: every declared port, well-known ones, and a fixed random sample per VIP.
UDP_WELL_KNOWN = (7, 53, 67, 69, 123, 137, 161, 500, 514, 1812, 3784, 4500, 4789, 5353, 5404, 6081, 8472, 9641, 51820)
UDP_SAMPLE = 1000

gw1 = testinfra.get_host("podman://portico-lab-gw1")


@dataclass
class Vip:
    address: str
    tcp: set[int] = field(default_factory=set)  # listeners the client may reach
    udp: set[int] = field(default_factory=set)
    hidden: set[tuple[str, int]] = field(default_factory=set)  # declared, but the client is outside the source ranges


def _admits(source_ranges: list[str] | None, family: int) -> bool:
    if not source_ranges:
        return True
    return any(CLIENT[family] in ipaddress.ip_network(cidr, strict=False) for cidr in source_ranges
               if ipaddress.ip_network(cidr, strict=False).version == family)


def _declare(vips: dict[str, Vip], address: str, listeners: list[tuple[str, int]], source_ranges: list[str] | None) -> None:
    vip = vips.setdefault(address, Vip(address))
    for proto, port in listeners:
        if _admits(source_ranges, ipaddress.ip_address(address).version):
            getattr(vip, proto).add(port)
        else:
            vip.hidden.add((proto, port))


def declared() -> dict[str, Vip]:
    """VIP -> listeners, from the inventory's static LBs and the API's served Services, LoadBalancers and Gateways."""
    vips: dict[str, Vip] = {}
    for lb in LAB_VARS["portico_loadbalancers"]:
        listeners = [(str(p.get("protocol", "tcp")).lower(), p["port"]) for p in lb["ports"]]
        _declare(vips, lb["vip"], listeners, lb.get("source_ranges"))
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(config_file=KUBECONFIG))
    for svc in core.list_service_for_all_namespaces().items:
        if svc.spec.type != "LoadBalancer" or svc.spec.load_balancer_class != K8S_SOURCE["load_balancer_class"]:
            continue
        listeners = [(p.protocol.lower(), p.port) for p in svc.spec.ports]
        for ingress in (svc.status.load_balancer.ingress or []):
            if ingress.ip:
                _declare(vips, ingress.ip, listeners, svc.spec.load_balancer_source_ranges)
    custom = kubernetes.client.CustomObjectsApi(core.api_client)
    for plb in custom.list_cluster_custom_object("portico.io", "v1alpha1", "loadbalancers")["items"]:
        spec = plb["spec"]
        # A disabled LB keeps its address in the table and answers on no port.
        listeners = [] if spec.get("state") == "disabled" else [(str(item["protocol"]).lower(), item["port"])
                                                                 for item in spec["listeners"]]
        for address in (plb.get("status") or {}).get("addresses") or []:
            _declare(vips, address, listeners, spec.get("sourceRanges"))
    _declare_gateways(vips, custom)
    return vips


def _declare_gateways(vips: dict[str, Vip], custom: kubernetes.client.CustomObjectsApi) -> None:
    """The TCP and UDP listeners of Portico's Gateways that hold a route, on the Gateways' addresses
    (as their status says: none while the API serves no Gateway API)."""
    group = "gateway.networking.k8s.io"
    try:
        classes = custom.list_cluster_custom_object(group, "v1", "gatewayclasses")["items"]
        gateways = custom.list_cluster_custom_object(group, "v1", "gateways")["items"]
    except kubernetes.client.exceptions.ApiException as err:
        if err.status == 404:
            return
        raise
    ours = {c["metadata"]["name"] for c in classes if c["spec"].get("controllerName") == "portico.io/gateway-controller"}
    for gateway in gateways:
        if gateway["spec"]["gatewayClassName"] not in ours:
            continue
        status = gateway.get("status") or {}
        routed = {item["name"] for item in status.get("listeners") or [] if item.get("attachedRoutes")}
        listeners = [(item["protocol"].lower(), item["port"]) for item in gateway["spec"]["listeners"]
                     if item["name"] in routed and item["protocol"] in ("TCP", "UDP")]
        for address in status.get("addresses") or []:
            _declare(vips, address["value"], listeners, None)


def table_vips() -> set[str]:
    found: set[str] = set()
    for family in (4, 6):
        listing = json.loads(gw1.check_output(f"nft -j list set inet portico vips{family}"))
        for item in listing["nftables"]:
            found.update(str(e) for e in (item.get("set", {}).get("elem") or []))
    return found


def drops() -> dict[str, int]:
    listing = json.loads(gw1.check_output("nft -j list counters table inet portico"))
    return {c["counter"]["name"]: c["counter"]["packets"] for c in listing["nftables"] if "counter" in c}


def run_in(container: str, script: str, *args: str, timeout: float = 300) -> dict:
    proc = subprocess.run(["podman", "exec", "-i", f"portico-lab-{container}", "python3", "-", *args],
                          input=(HERE / script).read_text(), capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0 and proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def vips() -> dict[str, Vip]:
    wanted = declared()
    live = table_vips()
    # The table carries nothing that was not declared (what was declared and served is scanned too).
    assert live <= set(wanted), sorted(live - set(wanted))
    return {address: wanted[address] for address in sorted(live | {a for a, v in wanted.items() if v.tcp or v.udp})}


def report(name: str, **values) -> None:
    print(f"\nEXPOSURE {name}: " + ", ".join(f"{key}={value}" for key, value in values.items()))


def test_every_tcp_port_of_every_vip_answers_only_if_declared(vips):
    before = drops()
    scan = run_in("client", "port_scan.py", "tcp", ",".join(vips), "--ports", "all", "--timeout", "0.4", "--concurrency", "12000")
    after = drops()
    answered = silent = counted = 0
    for address, vip in vips.items():
        result = scan["targets"][address]
        assert result["errors"] == {}, (address, result["errors"])
        assert set(result["open"]) | set(result["refused"]) == vip.tcp, (address, result["open"], result["refused"], vip)
        assert result["silent"] == 65535 - len(vip.tcp)
        delta = after.get(drop_counter(address), 0) - before.get(drop_counter(address), 0)
        # One SYN per silent port; a retransmission (scanner starved of CPU for a second) counts twice.
        assert delta >= result["silent"], (address, delta, result["silent"])
        answered += len(vip.tcp)
        silent += result["silent"]
        counted += delta
    report("tcp", vips=len(vips), ports=scan["scanned"], answered=answered, dropped=silent, counted=counted,
           seconds=scan["seconds"])


def test_a_sample_of_udp_ports_of_every_vip_answers_only_if_declared(vips):
    rng = random.Random(20240601)
    ports = sorted(set(UDP_WELL_KNOWN) | set(rng.sample(range(1, 65536), UDP_SAMPLE)) | {p for v in vips.values() for p in v.udp})
    before = drops()
    scan = run_in("client", "port_scan.py", "udp", ",".join(vips), "--ports", ",".join(map(str, ports)), "--timeout", "1.0")
    after = drops()
    answered = silent = counted = 0
    for address, vip in vips.items():
        result = scan["targets"][address]
        assert result["errors"] == {}, (address, result["errors"])
        assert set(result["open"]) == vip.udp and result["refused"] == [], (address, result, vip)
        delta = after.get(drop_counter(address), 0) - before.get(drop_counter(address), 0)
        assert result["silent"] == len(ports) - len(vip.udp) and delta >= result["silent"], (address, delta, result["silent"])
        answered += len(result["open"])
        silent += result["silent"]
        counted += delta
    report("udp", vips=len(vips), ports=scan["scanned"], answered=answered, dropped=silent, counted=counted,
           seconds=scan["seconds"])


def test_a_source_outside_the_source_ranges_gets_nothing_on_any_port(vips):
    """The restricted VIPs (static and Kubernetes) were scanned in full above and gave the client
    nothing; here: they do serve a source inside their ranges (the router, 198.18.0.1)."""
    restricted = [address for address, vip in vips.items() if vip.hidden and not vip.tcp and not vip.udp]
    assert len(restricted) >= 2, vips
    for address in restricted:
        port = next(port for proto, port in sorted(vips[address].hidden) if proto == "tcp")
        inside = run_in("router", "port_scan.py", "tcp", address, "--ports", str(port), "--timeout", "2")
        assert inside["targets"][address]["open"] == [port], (address, inside)
    report("source_ranges", restricted_vips=len(restricted))


def test_healthd_endpoints_answer_on_the_gateway_only():
    status = gw1.check_output(f"python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{HEALTHD_PORT}/status').status)\"")
    metrics = gw1.check_output(f"python3 -c \"import urllib.request as u; print(len(u.urlopen('http://127.0.0.1:{HEALTHD_PORT}/metrics').read()))\"")
    assert status == "200" and int(metrics) > 0
    addresses = ",".join(GATEWAY_ADDRESSES)
    for container in ("client", "router", "node1"):
        scan = run_in(container, "port_scan.py", "tcp", addresses, "--ports", str(HEALTHD_PORT), "--timeout", "1")
        for address, result in scan["targets"].items():
            assert result["open"] == [], (container, address, result)
    report("healthd", hosts=3, addresses=len(GATEWAY_ADDRESSES), reachable=0)


def test_healthd_is_not_reachable_through_127_0_0_1_from_a_neighbour():
    """A neighbour sends a SYN for 127.0.0.1:9641 to gw1's MAC (how kube-proxy's localhost
    NodePorts leaked, CVE-2020-8558): gw1 must drop it as a martian, not answer."""
    assert gw1.check_output("sysctl -n net.ipv4.conf.all.route_localnet") == "0"
    mac = gw1.check_output("cat /sys/class/net/backend/address")
    result = run_in("node1", "localnet_probe.py", "backend", mac, "192.0.2.11", str(HEALTHD_PORT))
    assert result["sent"] == 3 and result["answers"] == [], result
    # The same frame to a port that listens on the gateway's backend address does get an answer,
    # so silence above is the gateway's doing, not a broken probe.
    control = run_in("node1", "localnet_probe.py", "backend", mac, "192.0.2.11", "22", "--target", "192.0.2.2")
    assert control["answers"], control
