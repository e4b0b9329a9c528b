#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nft_loadbalancer
short_description: Converge Portico's nftables load balancer table from LB definitions
version_added: "0.1.0"
description:
  - Validates load balancer definitions through Portico's LB model, renders Portico's own
    nftables table (verdict-map dispatch, per-service chains, Maglev backend tables,
    VIP filtering, SNAT) and applies it as one atomic transaction after C(nft -c).
  - Only the table named by O(table) in the C(inet) family is ever replaced or deleted;
    other tables on the host are left alone.
  - Established connections are kept across changes, because NAT bindings live in conntrack
    and the VIP filter accepts established flows first.
  - Idempotent; counters never cause a change. Drift (someone edited or flushed the table)
    is detected and repaired.
  - The health checker owns the elements of the C(slots_*) maps and C(no_backends*) sets;
    health changes are neither drift nor a change, but elements that disagree with the health
    checker's state file are drift and get repaired. The module writes the applied model and
    render options to O(state_dir) for the health checker.
author:
  - Portico developers (@portico)
options:
  loadbalancers:
    description:
      - Load balancer definitions (the Portico LB model; see the repository's docs/).
    type: list
    elements: dict
    required: true
  pools:
    description:
      - Address pools, as in the inventory variable C(portico_pools). Every VIP must be inside one.
    type: dict
    required: true
  table:
    description: Name of Portico's table in the C(inet) family.
    type: str
    default: portico
  hash_seed:
    description:
      - Seed of the flow hash. Must be the same on every gateway so that they all pick the
        same backend for the same flow.
    type: int
    default: 1592614637
  slots_per_backend:
    description:
      - Minimum Maglev slots per backend; 100 keeps the spread within 1%.
    type: int
    default: 100
  snat_mark:
    description: Packet mark bit used to select connections of LBs that SNAT toward backends.
    type: int
    default: 131072
  allow_icmp:
    description: Accept ICMP echo to VIPs (errors and neighbour discovery are always accepted).
    type: bool
    default: true
  local_dispatch:
    description: Also load balance connections the gateway itself opens to a VIP.
    type: bool
    default: true
  egress_snat:
    description: Source NAT for connections that the backend network opens itself.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: Source CIDR (the backend network).
        type: str
        required: true
      to_address:
        description: Address to translate to; masquerade when omitted.
        type: str
      out_interface:
        description: Only for packets leaving through this interface.
        type: str
  snat_all:
    description:
      - SNAT connections of every LB, whatever its C(preserve_source_ip). Active/active (BGP) gateways
        set this so replies return through the gateway that holds the connection's state.
    type: bool
    default: false
    version_added: "0.3.0"
  snat_source4:
    description:
      - IPv4 source address for LB SNAT instead of the outgoing interface's address (masquerade).
      - In HA modes a per-gateway address that VRRP moves to a peer when this gateway fails, so
        connections synced by conntrackd keep their return path.
    type: str
    default: ""
    version_added: "0.3.0"
  snat_source6:
    description: IPv6 counterpart of O(snat_source4).
    type: str
    default: ""
    version_added: "0.3.0"
  state_dir:
    description: Where the last applied script, model and listing are kept (for diffs and drift).
    type: path
    default: /var/lib/portico/nftables
  health_state_file:
    description:
      - State file of the health checker (C(portico-healthd)). Backends it has taken out of
        rotation stay out when the table is rebuilt, so a converge never puts a dead backend
        back. A missing file means every configured backend is served.
    type: path
    default: /run/portico/healthd/state.json
  lock_file:
    description:
      - Lock shared with the health checker, so the two never write the table at the same time.
    type: path
    default: /run/portico/dataplane.lock
  state:
    description: C(absent) deletes Portico's table.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Supports check mode (the ruleset is still validated with C(nft -c)) and diff mode
    (a readable per-service view, not raw slot maps).
requirements:
  - nftables >= 0.9.6 and a kernel with nf_tables, nft_nat, nft_hash
"""

EXAMPLES = r"""
- name: Converge the load balancer dataplane
  portico.gateway.nft_loadbalancer:
    pools:
      public:
        addresses: [198.51.100.0/24]
    loadbalancers:
      - name: web
        vip: 198.51.100.10
        ports:
          - {protocol: tcp, port: 80, backend_port: 8080}
        backends:
          - {address: 192.0.2.11}
          - {address: 192.0.2.12, weight: 2}
"""

RETURN = r"""
digest:
  description: Digest of the rendered table body, also written into the table comment.
  returned: always
  type: str
script_path:
  description: Where the applied nft script is kept.
  returned: when state is present
  type: str
added:
  description: Names of LBs that are new.
  returned: always
  type: list
  elements: str
removed:
  description: Names of LBs that are gone.
  returned: always
  type: list
  elements: str
updated:
  description: Names of LBs whose definition changed.
  returned: always
  type: list
  elements: str
drift:
  description: True when the live table differed from what Portico last applied.
  returned: always
  type: bool
withheld:
  description: Backend addresses per LB kept out of rotation because the health checker found them down.
  returned: when state is present
  type: dict
plan:
  description:
    - What this run changes (in check mode, would change) compared with what was last applied on this
      host, per load balancer. Empty lists and an empty C(options) mapping mean no change.
    - The C(portico.gateway.plan) callback collects it into a per-gateway report.
  returned: always
  type: dict
  contains:
    loadbalancers:
      description:
        - C(added) and C(removed) list whole LBs (name, vip, listeners as C(tcp/80 -> 8080), backends with weight).
        - C(changed) lists LBs with C(listeners) and C(backends) added, removed and changed (per field, from/to),
          and C(fields) (other settings; C(source_ranges) as added/removed, health check per setting).
      type: dict
      returned: always
      sample: {"added": [], "removed": [], "changed": [{"name": "web", "vip": "198.51.100.10",
               "listeners": {"added": [], "removed": [], "changed": []},
               "backends": {"added": [{"backend": "192.0.2.14", "weight": 1}], "removed": [], "changed": []},
               "fields": {}, "reordered": false}]}
    vips:
      description: VIPs that appear (C(added)) or disappear (C(removed)) from the dataplane.
      type: dict
      returned: always
      sample: {"added": ["198.51.100.11"], "removed": []}
    options:
      description: Table-wide settings that change (C(snat_all), C(hash_seed), ...), each with C(from) and C(to).
      type: dict
      returned: always
      sample: {"snat_all": {"from": false, "to": true}}
plan_lines:
  description: RV(plan) as one line per change (C(+) appears, C(-) disappears, C(~) changes).
  returned: always
  type: list
  elements: str
  sample: ["+ lb api 198.51.100.11: tcp/80 -> 8080; backends: 192.0.2.11", "- vip 198.51.100.13"]
"""

import ipaddress
import json
import os
from typing import Sequence

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer, parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.health.state import dataplane_record, read_withheld
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.plan import lb_plan, plan_lines
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import (
    Nft,
    NftError,
    dataplane_lock,
    digest_in_listing,
    health_owned_elements,
    without_health_owned_elements,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (
    RenderOptions,
    describe,
    options_from_dict,
    options_to_dict,
    render_rulesets,
)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _applied(paths: dict[str, str]) -> tuple[dict[str, dict], dict | None]:
    """The LBs and render options last applied here. The dataplane record is rewritten with every
    change (health-check-only ones too); the model file is kept only for hosts converged before it existed."""
    record = json.loads(_read(paths["dataplane"]) or "null")
    if isinstance(record, dict) and isinstance(record.get("loadbalancers"), list):
        return {lb["name"]: lb for lb in record["loadbalancers"]}, record.get("options")
    return json.loads(_read(paths["model"]) or "{}"), None


def _with_plan(result: dict, before: dict[str, dict], after: dict[str, dict],
               before_options: dict | None, after_options: dict | None) -> dict:
    plan = lb_plan(before, after, before_options, after_options)
    return {**result, "plan": plan, "plan_lines": plan_lines(plan)}


def _model_changes(before: dict[str, dict], after: dict[str, dict]) -> tuple[list[str], list[str], list[str]]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    updated = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    return added, removed, updated


def _options(params: dict) -> RenderOptions:
    fields = ("table", "hash_seed", "slots_per_backend", "snat_mark", "allow_icmp", "local_dispatch",
              "egress_snat", "snat_all", "snat_source4", "snat_source6")
    return options_from_dict({name: params[name] for name in fields})


def _check_snat_sources(module: AnsibleModule) -> None:
    for name, version in (("snat_source4", 4), ("snat_source6", 6)):
        value = module.params[name]
        if not value:
            continue
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            module.fail_json(msg=f"{name}: {value!r} is not an IP address")
        if address.version != version:
            module.fail_json(msg=f"{name}: {value} is not an IPv{version} address")


def _absent(module: AnsibleModule, nft: Nft, paths: dict[str, str]) -> None:
    table = module.params["table"]
    try:
        listing = nft.list_table(table)
    except NftError as err:
        module.fail_json(msg=str(err))
    before_model, before_options = _applied(paths) if listing is not None else ({}, None)
    result = {"changed": listing is not None, "digest": "", "added": [], "removed": sorted(before_model), "updated": [], "drift": False}
    result = _with_plan(result, before_model, {}, None, None)
    if module._diff:
        result["diff"] = {"before": _read(paths["view"]) or "", "after": "", "before_header": f"inet {table}", "after_header": "absent"}
    if listing is not None and not module.check_mode:
        try:
            nft.delete_table(table)
        except NftError as err:
            module.fail_json(msg=str(err))
        for path in paths.values():
            if os.path.exists(path):
                os.unlink(path)
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            loadbalancers=dict(type="list", elements="dict", required=True),
            pools=dict(type="dict", required=True),
            table=dict(type="str", default="portico"),
            hash_seed=dict(type="int", default=0x5EED5EED),
            slots_per_backend=dict(type="int", default=100),
            snat_mark=dict(type="int", default=0x00020000),
            allow_icmp=dict(type="bool", default=True),
            local_dispatch=dict(type="bool", default=True),
            egress_snat=dict(
                type="list", elements="dict", default=[],
                options=dict(source=dict(type="str", required=True), to_address=dict(type="str"), out_interface=dict(type="str")),
            ),
            snat_all=dict(type="bool", default=False),
            snat_source4=dict(type="str", default=""),
            snat_source6=dict(type="str", default=""),
            state_dir=dict(type="path", default="/var/lib/portico/nftables"),
            health_state_file=dict(type="path", default="/run/portico/healthd/state.json"),
            lock_file=dict(type="path", default="/run/portico/dataplane.lock"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    nft = Nft(binary=module.get_bin_path("nft", required=True))
    base = os.path.join(params["state_dir"], params["table"])
    paths = {"script": f"{base}.nft", "model": f"{base}.json", "view": f"{base}.txt", "listing": f"{base}.listing",
             "dataplane": f"{base}.dataplane.json"}
    if params["state"] == "absent":
        _absent(module, nft, paths)
        return

    try:
        pools = parse_pools(params["pools"])
    except PoolError as err:
        module.fail_json(msg=str(err))
    model = parse_loadbalancers(params["loadbalancers"], pools)
    if model.problems:
        module.fail_json(msg="invalid load balancer definitions:\n" + "\n".join(model.problems), problems=model.problems)
    _check_snat_sources(module)
    options = _options(params)
    if module.check_mode:
        _converge(module, nft, model.loadbalancers, options, paths)
    else:
        with dataplane_lock(params["lock_file"]):
            _converge(module, nft, model.loadbalancers, options, paths)


def _converge(module: AnsibleModule, nft: Nft, lbs: Sequence[LoadBalancer], options: RenderOptions, paths: dict[str, str]) -> None:
    params = module.params
    # Held under the lock: the health checker cannot change state between this read and the apply.
    withheld = read_withheld(params["health_state_file"], lbs)
    script, intent_script, digest = render_rulesets(lbs, options, withheld)
    view = describe(lbs, options)
    after_model = {lb.name: lb.to_dict() for lb in lbs}

    try:
        live = nft.list_table(params["table"])
    except NftError as err:
        module.fail_json(msg=str(err))
    live_digest = digest_in_listing(live)
    recorded_listing = _read(paths["listing"])
    # Structure: as last applied. Slot maps and no_backends: as the health state read under the lock
    # says (the health checker may change them; anyone else doing so is drift too).
    drift = live is not None and live_digest == digest and (
        (recorded_listing is not None
         and without_health_owned_elements(recorded_listing) != without_health_owned_elements(live))
        or health_owned_elements(live) != health_owned_elements(script))
    # Health checks are not part of the table, but the health checker must see their changes.
    record = dataplane_record(lbs, options, digest, params["pools"])
    record_changed = _read(paths["dataplane"]) != record
    changed = live_digest != digest or drift or record_changed
    # No live table: everything is new, whatever the files say.
    before_model, before_options = _applied(paths) if live is not None else ({}, None)
    added, removed, updated = _model_changes(before_model, after_model)
    result = {"changed": changed, "digest": digest, "script_path": paths["script"],
              "added": added, "removed": removed, "updated": updated, "drift": drift,
              "withheld": {name: sorted(addresses) for name, addresses in sorted(withheld.items())}}
    result = _with_plan(result, before_model, after_model, before_options, options_to_dict(options))
    if module._diff:
        before_view = (_read(paths["view"]) or "") if live is not None else ""
        if drift:
            before_view += "# live table was changed outside Portico; it will be replaced\n"
        result["diff"] = {"before": before_view, "after": view,
                          "before_header": f"inet {params['table']} (live)", "after_header": f"inet {params['table']} (desired)"}

    try:
        # Validate even in check mode: a plan that nft would refuse must fail the plan.
        nft.check(script)
        if changed and not module.check_mode:
            os.makedirs(params["state_dir"], mode=0o750, exist_ok=True)
            if live_digest != digest or drift:
                nft.apply(script)
                # Right after the apply: the health checker must never patch this table from an old model.
                _write_atomic(paths["dataplane"], record)
                # Boot restore uses the intent: health state starts over when the checker does.
                _write_atomic(paths["script"], intent_script)
                _write_atomic(paths["model"], json.dumps(after_model, indent=1, sort_keys=True))
                _write_atomic(paths["view"], view)
                _write_atomic(paths["listing"], nft.list_table(params["table"]) or "")
            else:
                _write_atomic(paths["dataplane"], record)
    except NftError as err:
        module.fail_json(msg=str(err), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
