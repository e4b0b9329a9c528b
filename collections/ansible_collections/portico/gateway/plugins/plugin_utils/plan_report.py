# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-gateway plan: task results of a (check mode) run, summarised for a reviewer.

The ``portico.gateway.plan`` callback feeds every task result of a host to ``HostPlan.record``
and renders the collected plans with ``render_markdown`` / ``report_data``. Kept apart from the
callback so it is plain, testable code: no Ansible imports, and nothing here ever templates a
value (ansible-core 2.19 data trust): results are read as data only.

What it knows about Portico's tasks, by module:

- ``nft_loadbalancer``: its ``plan`` (LBs, listeners, backends, VIPs, options; lb_plan.py)
- ``ip_addresses``: VIP addresses on an interface (``kind: address``) or AnyIP routes
  (``kind: local_route``, BGP mode: what the gateway announces while a backend is healthy)
- ``ip_routes``: Portico's static routes
- any task whose diff is a file (template, copy, lineinfile...): ``+N/-M`` lines; for
  ``frr.conf`` the announce prefix-list entries and peers, for ``keepalived.conf`` the VRRP
  addresses, compared as sets so renumbered lines are not a change
- anything else that changed: named by its task, so a plan never hides a change
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.plan import lb_change_details, plan_is_empty, plan_lines, value_text

FORMAT_VERSION = 1
FILE_ACTIONS = frozenset({"template", "copy", "lineinfile", "blockinfile", "replace", "ini_file"})
_ANNOUNCE_RE = re.compile(r"^ipv?6? ?prefix-list PORTICO-ANNOUNCE[46] seq \d+ permit (\S+(?: [gl]e \d+)*)\s*$")
_PEER_RE = re.compile(r"^ neighbor (\S+) remote-as (\d+)\s*$")
_VRRP_ADDRESS_RE = re.compile(r"^\s+([0-9A-Fa-f.:]+(?:/\d+)?) dev \S+\s*$")


def short_action(action: str) -> str:
    """``portico.gateway.ip_addresses`` and ``ip_addresses`` name the same module."""
    return action.rsplit(".", 1)[-1]


def _lines(text: Any) -> list[str]:
    return text.splitlines() if isinstance(text, str) else []


def _frr_items(text: str) -> dict[str, set[str]]:
    """What an frr.conf change does to routing: prefixes it may announce, and its BGP peers."""
    announce = {m.group(1) for line in _lines(text) if (m := _ANNOUNCE_RE.match(line))}
    peers = {f"{m.group(1)} AS{m.group(2)}" for line in _lines(text) if (m := _PEER_RE.match(line))}
    return {"announce filter": announce, "bgp peers": peers}


def _keepalived_items(text: str) -> dict[str, set[str]]:
    """Addresses VRRP moves with mastership (virtual_ipaddress and virtual_ipaddress_excluded)."""
    addresses: set[str] = set()
    for line in _lines(text):
        match = _VRRP_ADDRESS_RE.match(line)
        if match:
            try:
                addresses.add(str(ipaddress.ip_interface(match.group(1))))
            except ValueError:
                continue
    return {"vrrp addresses": addresses}


# Files whose content means more than lines: basename -> items that matter, from the full text.
CONFIG_ITEMS: dict[str, Callable[[str], dict[str, set[str]]]] = {
    "frr.conf": _frr_items,
    "keepalived.conf": _keepalived_items,
}


def line_counts(before: str, after: str) -> tuple[int, int]:
    """Lines added and removed between two texts (what ``diff`` would show as + and -)."""
    added = removed = 0
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


def _prepared_counts(prepared: str) -> tuple[int, int]:
    lines = _lines(prepared)
    return (sum(1 for x in lines if x.startswith("+") and not x.startswith("+++")),
            sum(1 for x in lines if x.startswith("-") and not x.startswith("---")))


def item_changes(name: str, before: str, after: str) -> dict[str, dict[str, list[str]]]:
    """For files in CONFIG_ITEMS: per kind of item, what appears and what disappears."""
    extract = CONFIG_ITEMS.get(posixpath.basename(name))
    if extract is None:
        return {}
    old, new = extract(before), extract(after)
    changes = {kind: {"added": sorted(new[kind] - old[kind]), "removed": sorted(old[kind] - new[kind])} for kind in new}
    return {kind: change for kind, change in changes.items() if change["added"] or change["removed"]}


def _diffs(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    diff = result.get("diff")
    if isinstance(diff, Mapping):
        return [diff]
    if isinstance(diff, list):
        return [d for d in diff if isinstance(d, Mapping)]
    return []


def _has_text_diff(result: Mapping[str, Any]) -> bool:
    return any(isinstance(d.get("before"), str) or isinstance(d.get("after"), str) or isinstance(d.get("prepared"), str)
               for d in _diffs(result))


def _file_name(result: Mapping[str, Any]) -> str:
    """The file a result is about: module args first (the template action's after_header is a temp file)."""
    args = result.get("invocation", {}).get("module_args", {}) if isinstance(result.get("invocation"), Mapping) else {}
    for source in (args, result):
        for key in ("dest", "path"):
            if isinstance(source.get(key), str) and source[key]:
                return source[key]
    for diff in _diffs(result):
        for key in ("before_header", "after_header"):
            header = diff.get(key)
            if isinstance(header, str) and header.startswith("/"):
                return header.split(" (", 1)[0]
    return ""


def _label(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


@dataclass
class HostPlan:
    """Everything one host's run changes (or would change), by kind."""

    dataplane: list[dict[str, Any]] = field(default_factory=list)
    addresses: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    unreachable: bool = False

    def record(self, action: str, task_name: str, result: Mapping[str, Any], handler: bool = False) -> None:
        """One task result (a loop's items one by one). Unchanged results matter only for the dataplane."""
        items = result.get("results")
        if isinstance(items, list):
            for item in items:
                if isinstance(item, Mapping) and not item.get("skipped"):
                    label = item.get("_ansible_item_label", item.get("item", ""))
                    self.record(action, f"{task_name} ({_label(label)})", item, handler)
            return
        kind = short_action(action)
        if kind == "nft_loadbalancer" and isinstance(result.get("plan"), Mapping):
            self._record_dataplane(task_name, result)
        elif not result.get("changed"):
            return
        elif kind == "ip_addresses" and "censored" not in result:
            self.addresses.append({"task": task_name, "interface": _label(result.get("interface", "")),
                                   "kind": _label(result.get("kind", "address")),
                                   "added": list(result.get("added", [])), "removed": list(result.get("removed", []))})
        elif kind == "ip_routes" and "censored" not in result:
            self.routes.append({"task": task_name, "added": list(result.get("added", [])),
                                "removed": list(result.get("removed", []))})
        elif kind in FILE_ACTIONS or _has_text_diff(result):
            self._record_file(task_name, result)
        else:
            self.other.append(f"handler: {task_name}" if handler else task_name)

    def record_failure(self, task_name: str, message: str) -> None:
        # One line, bounded: model errors list every problem, but a report row must stay readable.
        text = "; ".join(line.strip() for line in message.splitlines() if line.strip())
        self.failures.append({"task": task_name, "msg": text if len(text) <= 1000 else text[:997] + "..."})

    def _record_dataplane(self, task_name: str, result: Mapping[str, Any]) -> None:
        diff = next(iter(_diffs(result)), {})
        header = _label(diff.get("before_header", "")).replace(" (live)", "")
        plan = result["plan"]
        entry = {"task": task_name, "table": header or "portico table", "changed": bool(result.get("changed")),
                 "drift": bool(result.get("drift")), "plan": plan, "lines": plan_lines(plan)}
        self.dataplane.append(entry)
        if result.get("changed"):
            added, removed = line_counts(_label(diff.get("before", "")), _label(diff.get("after", ""))) if diff else (0, 0)
            self.configs.append({"file": f"nft table {entry['table']}", "task": task_name, "lines_added": added,
                                 "lines_removed": removed, "items": {}, "hidden": False, "diff_shown": bool(diff),
                                 "note": "drift: the live table was changed by hand and will be replaced" if entry["drift"] else ""})

    def _record_file(self, task_name: str, result: Mapping[str, Any]) -> None:
        name = _file_name(result)
        entry: dict[str, Any] = {"file": name or task_name, "task": task_name, "lines_added": 0, "lines_removed": 0,
                                 "items": {}, "hidden": "censored" in result, "diff_shown": False, "note": ""}
        for diff in _diffs(result):
            before, after = diff.get("before"), diff.get("after")
            if isinstance(diff.get("prepared"), str):
                added, removed = _prepared_counts(diff["prepared"])
            elif isinstance(before, str) or isinstance(after, str):
                before, after = _label(before or ""), _label(after or "")
                added, removed = line_counts(before, after)
                entry["items"].update(item_changes(name, before, after))
                if not before and after:
                    entry["note"] = "new file"
            else:
                # Mode, owner or state only (the file module, attribute diffs).
                entry["note"] = entry["note"] or "attributes or state"
                continue
            entry["diff_shown"] = True
            entry["lines_added"] += added
            entry["lines_removed"] += removed
        if entry["hidden"]:
            entry["note"] = "details hidden (no_log)"
        # One file written by several loop items (lineinfile) is one entry.
        for known in self.configs:
            if known["file"] == entry["file"] and entry["file"] != task_name:
                known["lines_added"] += entry["lines_added"]
                known["lines_removed"] += entry["lines_removed"]
                for kind, change in entry["items"].items():
                    merged = known["items"].setdefault(kind, {"added": [], "removed": []})
                    merged["added"] = sorted(set(merged["added"]) | set(change["added"]))
                    merged["removed"] = sorted(set(merged["removed"]) | set(change["removed"]))
                return
        self.configs.append(entry)

    # Views used by the renderers.

    def lb_plans(self) -> list[Mapping[str, Any]]:
        return [entry["plan"] for entry in self.dataplane]

    def announcements(self) -> dict[str, list[str]]:
        """VIPs this gateway starts or stops attracting traffic for, however the mode does it.

        BGP: AnyIP local routes (healthd then puts the VIP in the main table and FRR announces it
        while a backend is healthy). VRRP: keepalived.conf addresses (held by the master).
        """
        announce: set[str] = set()
        withdraw: set[str] = set()
        for entry in self.addresses:
            if entry["kind"] == "local_route":
                announce.update(entry["added"])
                withdraw.update(entry["removed"])
        for entry in self.configs:
            vrrp = entry["items"].get("vrrp addresses", {})
            announce.update(vrrp.get("added", []))
            withdraw.update(vrrp.get("removed", []))
        return {"announce": sorted(announce), "withdraw": sorted(withdraw)}

    def counts(self) -> dict[str, int]:
        lbs = [plan.get("loadbalancers", {}) for plan in self.lb_plans()]
        changed = [lb for group in lbs for lb in group.get("changed", [])]
        routes = self.announcements()
        return {
            "lbs_added": sum(len(g.get("added", [])) for g in lbs),
            "lbs_removed": sum(len(g.get("removed", [])) for g in lbs),
            "lbs_changed": len(changed),
            "backends_in": sum(len(lb["backends"]["added"]) for lb in changed),
            "backends_out": sum(len(lb["backends"]["removed"]) for lb in changed),
            "vips_added": sum(len(p.get("vips", {}).get("added", [])) for p in self.lb_plans()),
            "vips_removed": sum(len(p.get("vips", {}).get("removed", [])) for p in self.lb_plans()),
            "announce": len(routes["announce"]),
            "withdraw": len(routes["withdraw"]),
            "configs": len(self.configs),
            "other": len(self.other),
        }

    def has_changes(self) -> bool:
        return bool(self.configs or self.addresses or self.routes or self.other
                    or any(not plan_is_empty(plan) for plan in self.lb_plans()))

    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failures:
            return "failed"
        return "changes" if self.has_changes() else "no change"


def report_data(hosts: Mapping[str, HostPlan], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON artifact: run facts, then per host its status, counts, routes and raw entries."""
    return {
        "format": FORMAT_VERSION,
        **meta,
        "hosts": {
            name: {"status": plan.status(), "counts": plan.counts(), "announcements": plan.announcements(), **asdict(plan)}
            for name, plan in sorted(hosts.items())
        },
    }


def _md(text: Any) -> str:
    """Inline code, so names from inventory are shown, never interpreted as Markdown."""
    value = _label(text).replace("`", "'")
    return f"`{value}`"


def _cell(text: Any) -> str:
    """Inline code inside a table row: a pipe would end the cell."""
    return _md(text).replace("|", "\\|")


def _signed(added: Iterable[Any], removed: Iterable[Any]) -> str:
    return ", ".join([f"+{_md(a)}" for a in added] + [f"-{_md(r)}" for r in removed])


def _dataplane_lines(plan: HostPlan) -> list[str]:
    lines: list[str] = []
    for entry in plan.dataplane:
        lbs = entry["plan"].get("loadbalancers", {})
        for lb in lbs.get("added", []):
            backends = ", ".join(b["backend"] if b.get("weight", 1) == 1 else f"{b['backend']} (weight {b['weight']})"
                                 for b in lb["backends"]) or "none"
            lines.append(f"- LB added {_md(lb['name'])} {_md(lb['vip'])}: {', '.join(lb['listeners'])}; backends {backends}")
        for lb in lbs.get("removed", []):
            lines.append(f"- LB removed {_md(lb['name'])} {_md(lb['vip'])}: {', '.join(lb['listeners'])}")
        for lb in lbs.get("changed", []):
            details = "; ".join(lb_change_details(lb))
            lines.append(f"- LB changed {_md(lb['name'])} {_md(lb['vip'])}: {details}")
        vips = entry["plan"].get("vips", {})
        if vips.get("added") or vips.get("removed"):
            lines.append(f"- VIPs: {_signed(vips.get('added', []), vips.get('removed', []))}")
        for key, change in entry["plan"].get("options", {}).items():
            lines.append(f"- table option {_md(key)}: {_md(value_text(change['from']))} -> {_md(value_text(change['to']))}")
        if entry["drift"]:
            lines.append(f"- {entry['table']}: changed outside Portico (drift); it will be replaced")
    return lines


def _route_lines(plan: HostPlan) -> list[str]:
    lines: list[str] = []
    routes = plan.announcements()
    if routes["announce"] or routes["withdraw"]:
        lines.append(f"- announced (BGP while a backend is healthy, or VRRP on the master): "
                     f"{_signed(routes['announce'], routes['withdraw'])}")
    for entry in plan.addresses:
        what = "AnyIP local routes" if entry["kind"] == "local_route" else "addresses"
        lines.append(f"- {what} on {_md(entry['interface'])}: {_signed(entry['added'], entry['removed'])}")
    for entry in plan.routes:
        lines.append(f"- static routes: {_signed(entry['added'], entry['removed'])}")
    for entry in plan.configs:
        for kind in ("announce filter", "bgp peers"):
            if kind in entry["items"]:
                change = entry["items"][kind]
                lines.append(f"- {kind} ({posixpath.basename(entry['file'])}): {_signed(change['added'], change['removed'])}")
    return lines


def _config_row(entry: Mapping[str, Any]) -> str:
    if entry["hidden"]:
        change = "would change"
    elif entry["diff_shown"]:
        change = f"+{entry['lines_added']} -{entry['lines_removed']} lines"
    else:
        change = "changes (run with --diff for lines)"
    notes = [entry["note"]] if entry["note"] else []
    notes += [f"{kind} {_signed(c['added'], c['removed'])}" for kind, c in entry["items"].items()]
    return f"| {_cell(entry['file'])} | {change} | {'; '.join(notes)} |"


def render_markdown(data: Mapping[str, Any], hosts: Mapping[str, HostPlan]) -> str:
    """The Markdown artifact, also what the callback prints: a summary table, then per host details."""
    mode = "check mode: nothing was applied" if data.get("check_mode") else "applied run: these changes were made"
    out = [f"# Portico plan: {data.get('playbook', '')}", "", f"{mode}; generated {data.get('generated', '')}", ""]
    out += ["| gateway | status | LBs +/-/~ | backends in/out | VIPs +/- | announce/withdraw | configs | other |",
            "|---|---|---|---|---|---|---|---|"]
    for name, plan in sorted(hosts.items()):
        c = plan.counts()
        out.append(f"| {_cell(name)} | {plan.status()} | {c['lbs_added']}/{c['lbs_removed']}/{c['lbs_changed']} | "
                   f"{c['backends_in']}/{c['backends_out']} | {c['vips_added']}/{c['vips_removed']} | "
                   f"{c['announce']}/{c['withdraw']} | {c['configs']} | {c['other']} |")
    for name, plan in sorted(hosts.items()):
        out += ["", f"## {name}", ""]
        if plan.unreachable:
            out.append("Unreachable: no plan for this host.")
        for failure in plan.failures:
            out.append(f"- FAILED {_md(failure['task'])}: {_md(failure['msg'])}")
        if plan.failures:
            out.append("")
        if not plan.has_changes():
            out.append("No change before the failure." if plan.failures or plan.unreachable else "No change.")
            continue
        sections = [("Dataplane", _dataplane_lines(plan)), ("VIPs and routes", _route_lines(plan))]
        for title, lines in sections:
            if lines:
                out += [f"### {title}", "", *lines, ""]
        if plan.configs:
            out += ["### Configuration", "", "| config | change | notes |", "|---|---|---|"]
            out += [_config_row(entry) for entry in plan.configs]
            out.append("")
        if plan.other:
            out += ["### Other changes", "", *[f"- {_md(task)}" for task in plan.other], ""]
    return "\n".join(out).rstrip("\n") + "\n"
