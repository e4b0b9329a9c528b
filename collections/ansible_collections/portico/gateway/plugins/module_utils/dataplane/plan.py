# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dataplane change summary: what a converge does to the load balancers, as data.

``lb_plan`` compares the LB model last applied on a gateway with the one about to be applied
(both as ``LoadBalancer.to_dict()`` per name) and says, per LB, which listeners, backends,
weights and rules change, plus which VIPs appear or disappear. ``plan_lines`` turns that into
the short lines a reviewer reads. The nft module returns both (also in check mode) and the
``portico.gateway.plan`` callback collects them per gateway.

Standard library only, pure: it runs inside the module on gateways and in unit tests.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

# Fields with their own treatment below; every other LB field is compared as a value.
_IDENTITY_FIELDS = ("name", "vip", "ports", "backends")


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def listener_key(port: Mapping[str, Any]) -> str:
    """Identity of a listener within an LB: protocol and port (what clients connect to)."""
    return f"{port['protocol']}/{port['port']}"


def listener_label(port: Mapping[str, Any]) -> str:
    return f"{listener_key(port)} -> {port['backend_port']}"


def backend_key(backend: Mapping[str, Any]) -> str:
    """Identity of a backend within an LB: address, plus its own port when it overrides the listeners'."""
    if backend.get("port") is None:
        return str(backend["address"])
    return f"{_bracketed(str(backend['address']))}:{backend['port']}"


def _backend_entry(backend: Mapping[str, Any]) -> dict[str, Any]:
    return {"backend": backend_key(backend), "weight": backend.get("weight", 1)}


def _lb_entry(lb: Mapping[str, Any]) -> dict[str, Any]:
    """An LB that appears or disappears as a whole."""
    return {"name": lb["name"], "vip": lb["vip"],
            "listeners": [listener_label(port) for port in lb.get("ports", [])],
            "backends": [_backend_entry(backend) for backend in lb.get("backends", [])]}


def _keyed_changes(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], key, kind: str) -> dict[str, list]:
    """Items of two keyed lists: added, removed, and per kept item each field that changed."""
    old = {key(item): item for item in before}
    new = {key(item): item for item in after}
    changed = [
        {kind: name, "field": field, "from": old[name].get(field), "to": new[name].get(field)}
        for name in sorted(set(old) & set(new))
        for field in sorted(set(old[name]) | set(new[name]))
        if old[name].get(field) != new[name].get(field)
    ]
    return {"added": [new[name] for name in sorted(set(new) - set(old))],
            "removed": [old[name] for name in sorted(set(old) - set(new))],
            "changed": changed}


def _field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Everything but identity, listeners and backends: health check per setting, lists as added/removed."""
    changes: dict[str, dict[str, Any]] = {}
    for field in sorted((set(before) | set(after)) - set(_IDENTITY_FIELDS)):
        old, new = before.get(field), after.get(field)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            for sub in sorted(set(old) | set(new)):
                if old.get(sub) != new.get(sub):
                    changes[f"{field}.{sub}"] = {"from": old.get(sub), "to": new.get(sub)}
        elif isinstance(old, list) and isinstance(new, list):
            # Source ranges are the LB's filter rules: a reviewer wants what opens and what closes.
            changes[field] = {"added": [v for v in new if v not in old], "removed": [v for v in old if v not in new]}
        else:
            changes[field] = {"from": old, "to": new}
    return changes


def _lb_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    listeners = _keyed_changes(before.get("ports", []), after.get("ports", []), listener_key, "listener")
    backends = _keyed_changes(before.get("backends", []), after.get("backends", []), backend_key, "backend")
    entry: dict[str, Any] = {
        "name": after["name"], "vip": after["vip"],
        "listeners": {"added": [listener_label(p) for p in listeners["added"]],
                      "removed": [listener_label(p) for p in listeners["removed"]],
                      "changed": listeners["changed"]},
        "backends": {"added": [_backend_entry(b) for b in backends["added"]],
                     "removed": [_backend_entry(b) for b in backends["removed"]],
                     "changed": backends["changed"]},
        "fields": _field_changes(before, after),
    }
    if before["vip"] != after["vip"]:
        entry["fields"]["vip"] = {"from": before["vip"], "to": after["vip"]}
    # Same items in another order still change the definition (the first listener picks the probe port).
    entry["reordered"] = not _has_details(entry)
    return entry


def _has_details(entry: Mapping[str, Any]) -> bool:
    return any(entry[part][kind] for part in ("listeners", "backends") for kind in ("added", "removed", "changed")) \
        or bool(entry["fields"])


def _option_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if before is None or after is None:
        # No record of the options last applied (first apply): nothing to compare them with.
        return {}
    return {key: {"from": before.get(key), "to": after.get(key)}
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)}


def lb_plan(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]],
            before_options: Mapping[str, Any] | None = None, after_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What applying ``after`` over ``before`` changes (both: LB name -> ``LoadBalancer.to_dict()``).

    Table-wide render options are compared only when both are given.
    """
    kept = sorted(set(before) & set(after))
    old_vips = {lb["vip"] for lb in before.values()}
    new_vips = {lb["vip"] for lb in after.values()}
    return {
        "loadbalancers": {
            "added": [_lb_entry(after[name]) for name in sorted(set(after) - set(before))],
            "removed": [_lb_entry(before[name]) for name in sorted(set(before) - set(after))],
            "changed": [_lb_changes(before[name], after[name]) for name in kept if before[name] != after[name]],
        },
        "vips": {"added": sorted(new_vips - old_vips), "removed": sorted(old_vips - new_vips)},
        "options": _option_changes(before_options, after_options),
    }


def plan_is_empty(plan: Mapping[str, Any]) -> bool:
    lbs = plan.get("loadbalancers", {})
    return not (any(lbs.get(kind) for kind in ("added", "removed", "changed"))
                or any(plan.get("vips", {}).get(kind) for kind in ("added", "removed"))
                or plan.get("options"))


def value_text(value: Any) -> str:
    """A setting's value as a reviewer writes it (true, unset, [a, b])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "unset"
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def _backend_label(entry: Mapping[str, Any]) -> str:
    weight = entry.get("weight", 1)
    return entry["backend"] if weight == 1 else f"{entry['backend']} (weight {weight})"


def _change_label(change: Mapping[str, Any], kind: str) -> str:
    return f"{kind} {change[kind]} {change['field']} {value_text(change['from'])} -> {value_text(change['to'])}"


def _field_label(field: str, change: Mapping[str, Any]) -> str:
    if "added" in change:
        parts = [f"+{value_text(v)}" for v in change["added"]] + [f"-{value_text(v)}" for v in change["removed"]]
        return f"{field} {' '.join(parts)}"
    return f"{field} {value_text(change['from'])} -> {value_text(change['to'])}"


def lb_change_details(entry: Mapping[str, Any]) -> list[str]:
    """The itemised changes of one changed LB, each a short phrase."""
    details = [f"backend in {_backend_label(b)}" for b in entry["backends"]["added"]]
    details += [f"backend out {_backend_label(b)}" for b in entry["backends"]["removed"]]
    details += [_change_label(c, "backend") for c in entry["backends"]["changed"]]
    details += [f"listener added {label}" for label in entry["listeners"]["added"]]
    details += [f"listener removed {label}" for label in entry["listeners"]["removed"]]
    details += [_change_label(c, "listener") for c in entry["listeners"]["changed"]]
    details += [_field_label(field, change) for field, change in entry["fields"].items()]
    if entry.get("reordered"):
        details.append("listeners or backends reordered")
    return details


def plan_lines(plan: Mapping[str, Any]) -> list[str]:
    """One line per change: ``+`` appears, ``-`` disappears, ``~`` changes."""
    lbs = plan.get("loadbalancers", {})
    lines = [f"+ lb {lb['name']} {lb['vip']}: {', '.join(lb['listeners'])}; backends: "
             f"{', '.join(_backend_label(b) for b in lb['backends']) or 'none'}" for lb in lbs.get("added", [])]
    lines += [f"- lb {lb['name']} {lb['vip']}: {', '.join(lb['listeners'])}" for lb in lbs.get("removed", [])]
    lines += [f"~ lb {lb['name']} {lb['vip']}: {'; '.join(lb_change_details(lb))}" for lb in lbs.get("changed", [])]
    lines += [f"+ vip {vip}" for vip in plan.get("vips", {}).get("added", [])]
    lines += [f"- vip {vip}" for vip in plan.get("vips", {}).get("removed", [])]
    lines += [f"~ option {key}: {value_text(c['from'])} -> {value_text(c['to'])}" for key, c in plan.get("options", {}).items()]
    return lines
