#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gateway_status
short_description: Report what a gateway does for each VIP, and what is wrong with it
version_added: "0.4.0"
description:
  - Reads the health checker's state (healthy and total backends per VIP, whether it serves the VIP),
    the BGP sessions and the prefixes advertised to each peer (O(mode=bgp)), the addresses the
    gateway holds (O(mode=vrrp)), and opens a TCP connection through each address in O(connect).
  - Returns a per-VIP view and a list of problems. Used by the rollout post-checks
    (role C(postcheck)) and by C(playbooks/status.yml). Never changes anything.
author:
  - Portico developers (@portico)
options:
  mode:
    description: The gateway's HA mode (C(portico_ha_mode)).
    type: str
    choices: [single, vrrp, bgp]
    default: single
  healthd_command:
    description: Command printing the health checker's state as JSON (exit 0 live, 3 last recorded state).
    type: list
    elements: str
    default: [/usr/lib/portico/portico-healthd, status, --json]
  vtysh:
    description: Path of FRR's vtysh (O(mode=bgp)).
    type: path
    default: /usr/bin/vtysh
  connect:
    description: TCP endpoints to open a connection to, normally every TCP VIP and port this gateway serves.
    type: list
    elements: dict
    default: []
    suboptions:
      address:
        description: VIP.
        type: str
        required: true
      port:
        description: TCP port.
        type: int
        required: true
  connect_timeout:
    description: Seconds to wait for each connection.
    type: float
    default: 2.0
  drained:
    description: The gateway is drained on purpose (C(playbooks/drain.yml)); advertisement is not required.
    type: bool
    default: false
  expect_vips:
    description: VIPs of the configuration just applied; each one the health checker does not know is a problem.
    type: list
    elements: str
    default: []
  expect_healthy:
    description:
      - VIPs that had a healthy backend before the change; each one left with none is a problem.
      - VIPs whose backends were all down already are not the change's fault and are not listed.
    type: list
    elements: str
    default: []
  loadbalancers:
    description:
      - LB names to report on in RV(observed) (the status write-back of Portico's LoadBalancer
        resources asks for theirs).
    type: list
    elements: str
    default: []
  dataplane_record:
    description: The nft module's dataplane record, whose digest tells whether the health checker runs the configuration applied last.
    type: path
    default: /var/lib/portico/nftables/portico.dataplane.json
  wait_current_s:
    description:
      - With O(loadbalancers), wait up to this long for the health checker to run the configuration applied
        last (it reloads within a second of a converge), so the report is about what was just applied.
    type: float
    default: 0
notes:
  - Supports check mode; it only reads.
"""

EXAMPLES = r"""
- name: Look at the gateway
  portico.gateway.gateway_status:
    mode: bgp
    connect:
      - {address: 203.0.113.10, port: 80}
  register: gateway

- name: Fail on any problem
  ansible.builtin.assert:
    that: gateway.problems | length == 0
    fail_msg: "{{ gateway.problems }}"
"""

RETURN = r"""
vips:
  description: >-
    Per VIP: C(healthy) and C(total) backends, C(served) (the health checker serves it), C(announced)
    (this gateway attracts its traffic), C(peers) it is advertised to, C(answers) per C(vip:port/tcp).
  returned: always
  type: dict
bgp_peers:
  description: BGP peer address to session state.
  returned: always
  type: dict
problems:
  description: Human-readable problems; empty when the gateway is sane.
  returned: always
  type: list
  elements: str
mode:
  description: The mode the status was evaluated for.
  returned: always
  type: str
drained:
  description: Whether the gateway was evaluated as drained.
  returned: always
  type: bool
observed:
  description:
    - With O(loadbalancers) - C(current) (the health checker runs the configuration applied last), C(running),
      and per LB C(loaded), C(vip), C(announced), C(checked) and C(backends) (address to C(up), C(detail)).
  returned: when O(loadbalancers) is given
  type: dict
"""

import json
import os
import socket
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import read_record
from ansible_collections.portico.gateway.plugins.module_utils.status.gateway import (
    evaluate,
    observe_loadbalancers,
    parse_bgp_summary,
)


def _json_command(module: AnsibleModule, argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> Any:
    rc, out, _err = module.run_command(argv)
    if rc not in ok_codes:
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None


def _healthd(module: AnsibleModule) -> dict[str, Any] | None:
    command = module.params["healthd_command"]
    if not os.path.exists(command[0]):
        return None
    state = _json_command(module, command, ok_codes=(0, 3))
    return state if isinstance(state, dict) else None


def _vtysh(module: AnsibleModule, command: str) -> Any:
    return _json_command(module, [module.params["vtysh"], "-c", command])


def _bgp(module: AnsibleModule) -> tuple[dict[str, str], dict[str, list[str]]]:
    summary = _vtysh(module, "show bgp all summary json")
    # "show bgp all summary json" nests per VRF; the default VRF is the only one Portico uses.
    if isinstance(summary, dict) and "default" in summary:
        summary = summary["default"]
    peers = parse_bgp_summary(summary) if isinstance(summary, dict) else {}
    advertised: dict[str, list[str]] = {}
    for peer, state in peers.items():
        if state != "Established":
            continue
        prefixes: list[str] = []
        for family in ("ipv4", "ipv6"):
            routes = _vtysh(module, f"show bgp {family} unicast neighbors {peer} advertised-routes json")
            if isinstance(routes, dict):
                prefixes.extend((routes.get("advertisedRoutes") or {}).keys())
        advertised[peer] = prefixes
    return peers, advertised


def _held(module: AnsibleModule) -> list[str]:
    rc, out, _err = module.run_command(["ip", "-j", "address", "show"])
    if rc != 0:
        return []
    return [info["local"] for link in json.loads(out) for info in link.get("addr_info", []) if "local" in info]


def _answers(module: AnsibleModule) -> list[tuple[str, int, bool]]:
    answers: list[tuple[str, int, bool]] = []
    for target in module.params["connect"]:
        address, port = target["address"], target["port"]
        try:
            with socket.create_connection((address, port), timeout=module.params["connect_timeout"]):
                answers.append((address, port, True))
        except OSError:
            answers.append((address, port, False))
    return answers


def _applied_digest(path: str) -> str:
    try:
        record = read_record(path)
    except (OSError, ValueError):
        return ""
    return record.digest if record is not None else ""


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", choices=["single", "vrrp", "bgp"], default="single"),
            healthd_command=dict(type="list", elements="str",
                                 default=["/usr/lib/portico/portico-healthd", "status", "--json"]),
            vtysh=dict(type="path", default="/usr/bin/vtysh"),
            connect=dict(type="list", elements="dict", default=[],
                         options=dict(address=dict(type="str", required=True), port=dict(type="int", required=True))),
            connect_timeout=dict(type="float", default=2.0),
            drained=dict(type="bool", default=False),
            expect_vips=dict(type="list", elements="str", default=[]),
            expect_healthy=dict(type="list", elements="str", default=[]),
            loadbalancers=dict(type="list", elements="str", default=[]),
            dataplane_record=dict(type="path", default="/var/lib/portico/nftables/portico.dataplane.json"),
            wait_current_s=dict(type="float", default=0),
        ),
        supports_check_mode=True,
    )
    mode = module.params["mode"]
    peers, advertised = _bgp(module) if mode == "bgp" else ({}, {})
    healthd = _healthd(module)
    applied = _applied_digest(module.params["dataplane_record"]) if module.params["loadbalancers"] else ""
    deadline = time.monotonic() + module.params["wait_current_s"]
    while applied and (healthd or {}).get("digest") != applied and time.monotonic() < deadline:
        time.sleep(0.1)
        healthd = _healthd(module)
    result = evaluate(mode=mode, healthd=healthd, bgp_peers=peers if mode == "bgp" else None,
                      advertised=advertised, held=_held(module) if mode == "vrrp" else [],
                      answers=_answers(module), drained=module.params["drained"],
                      expect_vips=module.params["expect_vips"], expect_healthy=module.params["expect_healthy"])
    if module.params["loadbalancers"]:
        result["observed"] = observe_loadbalancers(healthd, module.params["loadbalancers"], applied, result["vips"]).to_data()
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
