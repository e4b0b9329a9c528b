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
  - The kernel fills the client-affinity sets (C(affm_*)) from traffic; their elements are neither drift
    nor a change, and a rebuilt table gets them back in the same transaction, so a client keeps its
    backend for its timeout across changes (not behind a backend the health checker withholds).
  - Files that earlier versions kept in O(state_dir) and nothing reads any more (C(<table>.json),
    C(<table>.listing)) are removed.
author:
  - Portico developers (@portico)
options:
  loadbalancers:
    description:
      - Load balancer definitions (the Portico LB model; see the repository's docs/), as a list or as
        the LB model document C(portico_lb_model) set by C(portico.gateway.lb_validate).
    type: raw
    required: true
  pools:
    description:
      - Address pools, as in the inventory variable C(portico_pools). Every VIP must be inside one.
    type: dict
    required: true
  state_dir:
    description:
      - Where the last applied script, the dataplane record (LBs and options, read by the health
        checker) and the table structure (for drift) are kept.
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
extends_documentation_fragment:
  - portico.gateway.nft_render_options
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

import os
from typing import Sequence

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer, parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import Nft, NftError, TableListing, dataplane_lock
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import (
    RenderOptions,
    option_problems,
    options_from_dict,
    options_to_dict,
    render_options_spec,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.plan import lb_plan, plan_lines
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import (
    DEFAULT_LOCK_FILE,
    DEFAULT_STATE_DIR,
    DEFAULT_STATE_FILE,
    DataplaneFiles,
    DataplaneRecord,
    read_record,
    read_structure,
    read_text,
    read_withheld,
    write_structure,
    write_text_atomic,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (
    describe,
    health_elements_differ,
    remembered_clients_script,
    render_table,
)


def _applied(files: DataplaneFiles) -> DataplaneRecord | None:
    """What this module last applied here; None when unknown (an unreadable record is no record)."""
    try:
        return read_record(files.record)
    except (OSError, ValueError):
        return None


def _with_plan(result: dict, before: dict[str, dict], after: dict[str, dict],
               before_options: dict | None, after_options: dict | None) -> dict:
    plan = lb_plan(before, after, before_options, after_options)
    return {**result, "plan": plan, "plan_lines": plan_lines(plan)}


def _model_changes(before: dict[str, dict], after: dict[str, dict]) -> tuple[list[str], list[str], list[str]]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    updated = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    return added, removed, updated


def _before(applied: DataplaneRecord | None) -> tuple[dict[str, dict], dict | None]:
    if applied is None:
        return {}, None
    return {name: dict(lb) for name, lb in applied.by_name().items()}, dict(applied.options)


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)


def _absent(module: AnsibleModule, nft: Nft, files: DataplaneFiles) -> None:
    table = module.params["table"]
    try:
        listing = nft.list_table(table)
    except NftError as err:
        module.fail_json(msg=str(err))
    before_model, _options = _before(_applied(files)) if listing is not None else ({}, None)
    result = {"changed": listing is not None, "digest": "", "added": [], "removed": sorted(before_model), "updated": [], "drift": False}
    result = _with_plan(result, before_model, {}, None, None)
    if module._diff:
        result["diff"] = {"before": read_text(files.view) or "", "after": "", "before_header": f"inet {table}", "after_header": "absent"}
    if listing is not None and not module.check_mode:
        try:
            nft.delete_table(table)
        except NftError as err:
            module.fail_json(msg=str(err))
        _remove(files.current() + files.legacy)
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            loadbalancers=dict(type="raw", required=True),
            pools=dict(type="dict", required=True),
            **render_options_spec(),
            state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
            health_state_file=dict(type="path", default=DEFAULT_STATE_FILE),
            lock_file=dict(type="path", default=DEFAULT_LOCK_FILE),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    nft = Nft(binary=module.get_bin_path("nft", required=True))
    files = DataplaneFiles(params["state_dir"], params["table"])
    if params["state"] == "absent":
        _absent(module, nft, files)
        return

    try:
        pools = parse_pools(params["pools"])
    except PoolError as err:
        module.fail_json(msg=str(err))
    model = parse_loadbalancers(params["loadbalancers"], pools)
    if model.problems:
        problems = render(model.problems)
        module.fail_json(msg="invalid load balancer definitions:\n" + "\n".join(problems), problems=problems)
    options = options_from_dict(params)
    problems = option_problems(options)
    if problems:
        module.fail_json(msg="\n".join(problems))
    if module.check_mode:
        _converge(module, nft, model.loadbalancers, options, files)
    else:
        with dataplane_lock(params["lock_file"]):
            _converge(module, nft, model.loadbalancers, options, files)


def _drift(live: TableListing, recorded_structure: list | None, lbs: Sequence[LoadBalancer], options: RenderOptions,
           withheld: dict[str, set[str]]) -> bool:
    """Whether someone else changed the table: its structure is not as last applied, or the health-owned
    elements are not what the health state read under the lock says (the health checker may change
    them; anyone else doing so is drift too)."""
    if recorded_structure is not None and recorded_structure != live.structure():
        return True
    return health_elements_differ(live.health_elements(), lbs, options, withheld)


def _remembered(nft: Nft, table: str, lbs: Sequence[LoadBalancer], options: RenderOptions, withheld: dict[str, set[str]]) -> str:
    """The clients the live affinity sets remember, as commands for the transaction that replaces the table.
    Read right before it (under the lock): only clients first seen in between are not carried."""
    if not any(lb.session_affinity == "client_ip" for lb in lbs):
        return ""
    return remembered_clients_script(lbs, options, withheld, nft.remembered_clients(table))


def _converge(module: AnsibleModule, nft: Nft, lbs: Sequence[LoadBalancer], options: RenderOptions, files: DataplaneFiles) -> None:
    params = module.params
    # Held under the lock: the health checker cannot change state between this read and the apply.
    withheld = read_withheld(params["health_state_file"], lbs)
    rendered = render_table(lbs, options, withheld)
    view = describe(lbs, options)
    after_model = {lb.name: lb.to_dict() for lb in lbs}

    try:
        live = nft.list_table(params["table"])
    except NftError as err:
        module.fail_json(msg=str(err))
    # No live table: everything is new, whatever the files say.
    applied = _applied(files) if live is not None else None
    # The live table holds this intent when the record says so; its structure then tells whether
    # anyone changed it since (nft's JSON has no table comment to read the digest from).
    same_intent = live is not None and applied is not None and applied.digest == rendered.digest
    recorded_structure = read_structure(files.structure)
    drift = same_intent and _drift(live, recorded_structure, lbs, options, withheld)
    # Without a recorded structure the live table cannot be vouched for: apply again (same content).
    replace = not same_intent or recorded_structure is None or drift
    # Health checks are not part of the table, but the health checker must see their changes.
    record = DataplaneRecord.of(lbs, options, rendered.digest, params["pools"]).to_json()
    stale = [path for path in files.legacy if os.path.exists(path)]
    changed = replace or read_text(files.record) != record or bool(stale)
    before_model, before_options = _before(applied)
    added, removed, updated = _model_changes(before_model, after_model)
    result = {"changed": changed, "digest": rendered.digest, "script_path": files.script,
              "added": added, "removed": removed, "updated": updated, "drift": drift,
              "withheld": {name: sorted(addresses) for name, addresses in sorted(withheld.items())}}
    result = _with_plan(result, before_model, after_model, before_options, options_to_dict(options))
    if module._diff:
        before_view = (read_text(files.view) or "") if live is not None else ""
        if drift:
            before_view += "# live table was changed outside Portico; it will be replaced\n"
        result["diff"] = {"before": before_view, "after": view,
                          "before_header": f"inet {params['table']} (live)", "after_header": f"inet {params['table']} (desired)"}

    try:
        # Validate even in check mode: a plan that nft would refuse must fail the plan.
        nft.check(rendered.script)
        if changed and not module.check_mode:
            os.makedirs(params["state_dir"], mode=0o750, exist_ok=True)
            if replace:
                nft.apply(rendered.script + _remembered(nft, params["table"], lbs, options, withheld))
                # Right after the apply: the health checker must never patch this table from an old model.
                write_text_atomic(files.record, record)
                # Boot restore uses the intent: health state starts over when the checker does.
                write_text_atomic(files.script, rendered.intent_script)
                write_text_atomic(files.view, view)
                applied_listing = nft.list_table(params["table"])
                write_structure(files.structure, applied_listing.structure() if applied_listing else [])
            else:
                write_text_atomic(files.record, record)
            _remove(stale)
    except NftError as err:
        module.fail_json(msg=str(err), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
