#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ip_addresses
short_description: Keep a managed set of IP addresses on one interface
version_added: "0.1.0"
description:
  - Adds the listed addresses to an interface and, with O(purge), removes addresses this
    module added earlier that are no longer listed. Addresses it did not add are never removed.
  - Used for VIPs on C(lo) (routed/BGP mode) and the backend-side gateway address.
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


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            addresses=dict(type="list", elements="str", required=True),
            purge=dict(type="bool", default=True),
            state_dir=dict(type="path", default="/var/lib/portico/addresses"),
        ),
        supports_check_mode=True,
    )
    interface = module.params["interface"]
    ip_bin = module.get_bin_path("ip", required=True)
    wanted = {_normalise(module, a) for a in module.params["addresses"]}
    state_path = os.path.join(module.params["state_dir"], f"{interface}.json")
    managed: set[str] = set()
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as handle:
            managed = set(json.load(handle))
    present = _current(module, ip_bin, interface)
    to_add = sorted(wanted - present)
    to_remove = sorted((managed - wanted) & present) if module.params["purge"] else []
    changed = bool(to_add or to_remove)
    result = {"changed": changed, "added": to_add, "removed": to_remove}
    if module._diff:
        result["diff"] = {"before": "\n".join(sorted(managed & present)) + "\n", "after": "\n".join(sorted(wanted)) + "\n",
                          "before_header": f"{interface} (managed)", "after_header": f"{interface} (managed)"}
    if module.check_mode:
        module.exit_json(**result)
    for address in to_add:
        # nodad: a VIP must answer at once; DAD would hold it tentative for a second or more.
        extra = ["nodad"] if ipaddress.ip_interface(address).version == 6 else []
        module.run_command([ip_bin, "address", "replace", address, "dev", interface, *extra], check_rc=True)
    for address in to_remove:
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
