#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ip_routes
short_description: Keep the set of routes Portico owns, tagged with a route protocol number
version_added: "0.1.0"
description:
  - Installs the listed routes with route protocol O(protocol) and removes routes carrying that
    protocol that are no longer listed. Routes with any other protocol are never touched.
  - Used to route Kubernetes pod CIDRs to their nodes for direct-mode backends.
author:
  - Portico developers (@portico)
options:
  routes:
    description: Routes as C({to, via}) with C(to) a prefix and C(via) a next-hop address of the same family.
    type: list
    elements: dict
    required: true
    suboptions:
      to:
        description: Destination prefix.
        type: str
        required: true
      via:
        description: Next hop.
        type: str
        required: true
  protocol:
    description: Route protocol number marking Portico's routes (see C(/etc/iproute2/rt_protos)).
    type: int
    default: 200
notes:
  - Supports check mode and diff mode.
"""

EXAMPLES = r"""
- name: Route pod CIDRs to their nodes
  portico.gateway.ip_routes:
    routes:
      - {to: 198.19.1.0/24, via: 192.0.2.11}
      - {to: "2001:db8:244:1::/64", via: "2001:db8:192::11"}
"""

RETURN = r"""
added:
  description: Routes added or changed, as C(prefix via next-hop).
  returned: always
  type: list
  elements: str
removed:
  description: Routes removed.
  returned: always
  type: list
  elements: str
"""

import ipaddress
import json

from ansible.module_utils.basic import AnsibleModule


def _wanted(module: AnsibleModule) -> dict[str, str]:
    routes: dict[str, str] = {}
    for index, route in enumerate(module.params["routes"]):
        try:
            prefix = ipaddress.ip_network(route["to"], strict=False)
            via = ipaddress.ip_address(route["via"])
        except ValueError as err:
            module.fail_json(msg=f"routes[{index}]: {err}")
        if prefix.version != via.version:
            module.fail_json(msg=f"routes[{index}]: {prefix} and next hop {via} are of different families")
        if str(prefix) in routes and routes[str(prefix)] != str(via):
            module.fail_json(msg=f"routes[{index}].to: {prefix} is listed twice with different next hops")
        routes[str(prefix)] = str(via)
    return routes


def _present(module: AnsibleModule, ip_bin: str, protocol: int) -> dict[str, str]:
    present: dict[str, str] = {}
    for family in ("-4", "-6"):
        rc, out, err = module.run_command([ip_bin, "-j", family, "route", "show", "proto", str(protocol)])
        if rc != 0:
            module.fail_json(msg=f"ip route show: {err.strip()}")
        for route in json.loads(out or "[]"):
            dst = route.get("dst", "")
            if dst == "default":
                continue
            prefix = str(ipaddress.ip_network(dst if "/" in dst else f"{dst}/{128 if ':' in dst else 32}"))
            present[prefix] = route.get("gateway", "")
    return present


def _refuse_foreign(module: AnsibleModule, ip_bin: str, prefix: str, protocol: int) -> None:
    """``ip route replace`` would take over a route someone else (a CNI, BGP) installed."""
    rc, out, _err = module.run_command([ip_bin, "-j", "route", "show", "exact", prefix])
    for route in json.loads(out or "[]") if rc == 0 else []:
        owner = str(route.get("protocol", ""))
        if owner not in (str(protocol), ""):
            module.fail_json(msg=f"routes: {prefix} is already routed by protocol {owner} "
                                 f"(via {route.get('gateway', route.get('dev', '?'))}); Portico will not replace it")


def _render(routes: dict[str, str]) -> str:
    return "".join(f"{prefix} via {via}\n" for prefix, via in sorted(routes.items()))


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            routes=dict(type="list", elements="dict", required=True,
                        options=dict(to=dict(type="str", required=True), via=dict(type="str", required=True))),
            protocol=dict(type="int", default=200),
        ),
        supports_check_mode=True,
    )
    ip_bin = module.get_bin_path("ip", required=True)
    protocol = module.params["protocol"]
    wanted = _wanted(module)
    present = _present(module, ip_bin, protocol)
    to_set = sorted(prefix for prefix, via in wanted.items() if present.get(prefix) != via)
    for prefix in to_set:
        _refuse_foreign(module, ip_bin, prefix, protocol)
    to_remove = sorted(prefix for prefix in present if prefix not in wanted)
    result = {"changed": bool(to_set or to_remove),
              "added": [f"{p} via {wanted[p]}" for p in to_set], "removed": [f"{p} via {present[p]}" for p in to_remove]}
    if module._diff:
        result["diff"] = {"before": _render(present), "after": _render(wanted),
                          "before_header": f"routes proto {protocol}", "after_header": f"routes proto {protocol}"}
    if not module.check_mode:
        for prefix in to_set:
            module.run_command([ip_bin, "route", "replace", prefix, "via", wanted[prefix], "proto", str(protocol)], check_rc=True)
        for prefix in to_remove:
            module.run_command([ip_bin, "route", "del", prefix, "proto", str(protocol)], check_rc=True)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
