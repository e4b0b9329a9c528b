#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ip_addresses
short_description: Keep a managed set of IP addresses (or AnyIP local routes) on one interface
version_added: "0.1.0"
description:
  - Adds the listed addresses to an interface and, with O(purge), removes addresses this
    module added earlier that are no longer listed. Addresses it did not add are never removed.
  - Used for VIPs on C(lo) (single-gateway mode) and the backend-side gateway address.
  - With O(kind=local_route) each prefix becomes an AnyIP route (C(ip route add local PREFIX dev IF table local))
    instead of an interface address. The gateway still accepts traffic for it, but routing daemons
    see no connected route, so FRR can announce the VIP from the health checker's route (BGP mode).
  - Runtime state only (like C(ip addr)); the role re-applies it at boot through a systemd unit.
author:
  - Portico developers (@portico)
options:
  interface:
    description: Interface name.
    type: str
    required: true
  addresses:
    description: Addresses with prefix length, for example C(198.51.100.10/32) or C(2001:db8::1/64).
    type: list
    elements: str
    required: true
  kind:
    description:
      - C(address) adds interface addresses; C(local_route) adds AnyIP routes in table C(local).
      - Each kind keeps its own record, so switching a VIP from one kind to the other removes the old form.
    type: str
    choices: [address, local_route]
    default: address
    version_added: "0.3.0"
  purge:
    description: Remove addresses previously managed by this module that are not in O(addresses).
    type: bool
    default: true
  state_dir:
    description: Where the list of managed addresses is kept.
    type: path
    default: /var/lib/portico/addresses
notes:
  - Supports check mode and diff mode.
"""

EXAMPLES = r"""
- name: Put the VIPs on the loopback interface
  portico.gateway.ip_addresses:
    interface: lo
    addresses: [198.51.100.10/32, 2001:db8:100::10/128]

- name: Accept the VIPs as AnyIP local routes (BGP mode)
  portico.gateway.ip_addresses:
    interface: lo
    kind: local_route
    addresses: [198.51.100.10/32, 2001:db8:100::10/128]
"""

RETURN = r"""
added:
  description: Addresses added.
  returned: always
  type: list
  elements: str
removed:
  description: Addresses removed.
  returned: always
  type: list
  elements: str
interface:
  description: The interface, so a report can say where addresses come and go (the C(portico.gateway.plan) callback).
  returned: always
  type: str
  sample: lo
  version_added: "0.4.0"
kind:
  description: The O(kind) of the addresses; C(local_route) VIPs are the ones announced by BGP while healthy.
  returned: always
  type: str
  sample: address
  version_added: "0.4.0"
"""

import ipaddress
import json
import os

from ansible.module_utils.basic import AnsibleModule


def _normalise(module: AnsibleModule, text: str) -> str:
    try:
        return str(ipaddress.ip_interface(text.strip()))
    except ValueError:
        module.fail_json(msg=f"addresses: {text!r} is not an address with prefix length")
    return ""


def _current(module: AnsibleModule, ip_bin: str, interface: str) -> set[str]:
    rc, out, err = module.run_command([ip_bin, "-j", "address", "show", "dev", interface])
    if rc != 0:
        module.fail_json(msg=f"interface {interface}: {err.strip() or 'not found'}")
    present: set[str] = set()
    for link in json.loads(out or "[]"):
        for info in link.get("addr_info", []):
            present.add(str(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")))
    return present


def _current_local_routes(module: AnsibleModule, ip_bin: str, interface: str) -> set[str]:
    present: set[str] = set()
    for family in ("-4", "-6"):
        rc, out, err = module.run_command([ip_bin, "-j", family, "route", "show", "table", "local",
                                           "type", "local", "dev", interface])
        if rc != 0:
            module.fail_json(msg=f"interface {interface}: {err.strip() or 'not found'}")
        for route in json.loads(out or "[]"):
            if route.get("protocol") == "kernel":  # made by the kernel for an interface address, not AnyIP
                continue
            dst = route.get("dst", "")
            present.add(str(ipaddress.ip_network(dst if "/" in dst else f"{dst}/{128 if ':' in dst else 32}")))
    return present


def _local_route_command(ip_bin: str, action: str, prefix: str, interface: str) -> list[str]:
    family = "-6" if ipaddress.ip_interface(prefix).version == 6 else "-4"
    return [ip_bin, family, "route", action, "local", str(ipaddress.ip_interface(prefix).network),
            "dev", interface, "table", "local"]


def state_file_name(interface: str, kind: str) -> str:
    """The boot-time restore script (role gateway_base) reads these names back."""
    return f"{interface}.json" if kind == "address" else f"{interface}.local-routes.json"


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            addresses=dict(type="list", elements="str", required=True),
            kind=dict(type="str", default="address", choices=["address", "local_route"]),
            purge=dict(type="bool", default=True),
            state_dir=dict(type="path", default="/var/lib/portico/addresses"),
        ),
        supports_check_mode=True,
    )
    interface = module.params["interface"]
    ip_bin = module.get_bin_path("ip", required=True)
    wanted = {_normalise(module, a) for a in module.params["addresses"]}
    kind = module.params["kind"]
    state_path = os.path.join(module.params["state_dir"], state_file_name(interface, kind))
    managed: set[str] = set()
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as handle:
            managed = set(json.load(handle))
    present = (_current(module, ip_bin, interface) if kind == "address"
               else _current_local_routes(module, ip_bin, interface))
    to_add = sorted(wanted - present)
    to_remove = sorted((managed - wanted) & present) if module.params["purge"] else []
    changed = bool(to_add or to_remove)
    result = {"changed": changed, "added": to_add, "removed": to_remove, "interface": interface, "kind": kind}
    if module._diff:
        result["diff"] = {"before": "\n".join(sorted(managed & present)) + "\n", "after": "\n".join(sorted(wanted)) + "\n",
                          "before_header": f"{interface} {kind} (managed)", "after_header": f"{interface} {kind} (managed)"}
    if module.check_mode:
        module.exit_json(**result)
    for address in to_add if kind == "local_route" else []:
        module.run_command(_local_route_command(ip_bin, "replace", address, interface), check_rc=True)
    for address in to_remove if kind == "local_route" else []:
        module.run_command(_local_route_command(ip_bin, "del", address, interface), check_rc=True)
    for address in to_add if kind == "address" else []:
        # nodad: a VIP must answer at once; DAD would hold it tentative for a second or more.
        extra = ["nodad"] if ipaddress.ip_interface(address).version == 6 else []
        module.run_command([ip_bin, "address", "replace", address, "dev", interface, *extra], check_rc=True)
    for address in to_remove if kind == "address" else []:
        module.run_command([ip_bin, "address", "del", address, "dev", interface], check_rc=True)
    new_managed = sorted(wanted | ((managed - wanted) - set(to_remove) if not module.params["purge"] else set()))
    if new_managed != sorted(managed):
        os.makedirs(module.params["state_dir"], mode=0o750, exist_ok=True)
        with open(state_path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(new_managed, handle)
        os.replace(state_path + ".tmp", state_path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
