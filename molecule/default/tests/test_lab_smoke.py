"""Smoke test of the lab itself, independent of what the product configured."""

from __future__ import annotations

import json

import pytest
import testinfra
from testinfra.host import Host

NODES = ("node1", "node2", "node3")


def lab_host(name: str) -> Host:
    # podman exec per command: far faster than testinfra's ansible backend.
    return testinfra.get_host(f"podman://portico-lab-{name}")


def probe_locally(host: Host, proto: str, target: str, port: int) -> dict:
    output = host.check_output(f"portico-lab-probe --proto {proto} --target {target} --port {port} --count 3 --json")
    return json.loads(output)


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize(
    ("proto", "target", "port"),
    [
        ("tcp", "127.0.0.1", 8080),
        ("tcp", "::1", 8081),
        ("udp", "127.0.0.1", 5353),
        ("udp", "::1", 5353),
    ],
)
def test_node_echo_answers_with_its_name(node: str, proto: str, target: str, port: int) -> None:
    result = probe_locally(lab_host(node), proto, target, port)
    assert result["backends"] == {node: 3}, result


@pytest.mark.parametrize("node", NODES)
def test_node_echo_service_enabled(node: str) -> None:
    assert lab_host(node).service("portico-lab-echo").is_enabled


@pytest.mark.parametrize("router", ["203.0.113.1", "2001:db8:203::1"])
def test_client_reaches_router(router: str) -> None:
    assert lab_host("client").run(f"ping -c 1 -W 1 {router}").rc == 0


def test_gateway_net_sysctls_writable_host_wide_ones_not() -> None:
    gw1 = lab_host("gw1")
    # gateway_base sets net.* sysctls; kernel-wide ones must stay out of reach.
    assert gw1.run("test -w /proc/sys/net/ipv4/ip_forward").rc == 0
    assert gw1.run("test -w /proc/sys/vm/swappiness").rc != 0
