# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""portico-console's pages: server-rendered HTML, every value escaped (names come from Kubernetes).

The only script replaces the page's ``<main>`` with a fresh copy every few seconds, so the
console refreshes itself without reloading (and without flicker); with scripts off the page
is still complete, just static.
"""

from __future__ import annotations

import html
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.plugin_utils.console_data import BackendView, GatewayView, LbView
from ansible_collections.portico.gateway.plugins.plugin_utils.rollouts import Rollout

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.5rem;align-items:baseline}
header a{color:#cfe0ff;text-decoration:none}header b{font-size:1.1rem}
main{padding:1rem 1.2rem}
table{border-collapse:collapse;background:#fff;margin:.4rem 0 1.2rem;min-width:40rem}
th,td{border:1px solid #d9dde3;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:700}.warn{color:#8a5a00;font-weight:600}
.muted{color:#6b7280}.box{background:#fff;border:1px solid #d9dde3;padding:.6rem 1rem;margin:.4rem 0 1rem}
pre{background:#fff;border:1px solid #d9dde3;padding:.6rem;overflow:auto;max-height:30rem}
"""

REFRESH_SCRIPT = """
<script>
(function(){const every=%d;async function refresh(){try{const r=await fetch(location.href,{cache:"no-store"});
if(r.ok){const d=new DOMParser().parseFromString(await r.text(),"text/html");const m=d.querySelector("main");
if(m){document.querySelector("main").replaceWith(m);document.title=d.title;}}}catch(e){}
setTimeout(refresh,every);}setTimeout(refresh,every);})();
</script>
"""


@dataclass(frozen=True)
class Meta:
    """About the data shown: when it was collected and how the last collection went."""

    snapshot_at: float | None
    refresh_ok: bool | None
    refresh_detail: str
    refresh_every_ms: int
    now: float = 0.0


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def lb_href(name: str) -> str:
    return "/lb/" + urllib.parse.quote(name, safe="")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def per_second(value: float | None, unit: str = "/s") -> str:
    if value is None:
        return "-"
    for bound, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= bound:
            return f"{value / bound:.1f} {suffix}{unit}"
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def bits(rate_bytes: float | None) -> str:
    return per_second(None if rate_bytes is None else rate_bytes * 8, "bit/s")


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def page(title: str, body: str, meta: Meta) -> str:
    collected = "never" if meta.snapshot_at is None else f"{age(meta.now - meta.snapshot_at)} ago"
    if meta.refresh_ok is None:
        refresh = "<span class='muted'>waiting for the first status run</span>"
    elif meta.refresh_ok:
        refresh = "<span class='ok'>ok</span>"
    else:
        refresh = f"<span class='bad'>FAILED</span> <span class='muted'>{e(meta.refresh_detail)}</span>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{e(title)} - Portico</title><style>{STYLE}</style></head><body>"
        "<header><b>Portico</b><a href='/'>Load balancers</a><a href='/rollouts'>Plan and rollouts</a></header>"
        f"<main><p class='muted' id='collected'>Status collected {e(collected)}; last status run: {refresh}</p>"
        f"{body}</main>{REFRESH_SCRIPT % meta.refresh_every_ms}</body></html>"
    )


def _health_cell(lb: LbView) -> str:
    kind = "ok" if lb.healthy == lb.total else ("bad" if lb.healthy == 0 else "warn")
    return f"<td class='health num {kind}'>{lb.healthy}/{lb.total}</td>"


def overview(lbs: Sequence[LbView], gateways: Sequence[GatewayView], meta: Meta) -> str:
    rows = []
    for lb in lbs:
        rates = lb.rates or {}
        announced = ", ".join(e(g) for g in lb.announced_by) or "<span class='bad'>nobody</span>"
        rows.append(
            f"<tr data-lb='{e(lb.name)}'><td><a href='{e(lb_href(lb.name))}'>{e(lb.name)}</a></td>"
            f"<td>{e(lb.source)}</td><td>{e(lb.vip)}</td><td>{e(lb.ports)}</td><td class='announced'>{announced}</td>"
            f"{_health_cell(lb)}"
            f"<td class='num new'>{per_second(rates.get('new_connections'))}</td>"
            f"<td class='num bytes'>{bits(rates.get('bytes_in'))} / {bits(rates.get('bytes_out'))}</td>"
            f"<td class='num total'>{count((lb.traffic or {}).get('new_connections'))}</td></tr>")
    table = ("<table id='lbs'><tr><th>Load balancer</th><th>Source</th><th>Address</th><th>Ports</th>"
             "<th>Announced by</th><th>Healthy</th><th>New conn.</th><th>In / out</th><th>Connections (total)</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p class='muted'>No load balancer reported yet.</p>"
    body = f"<h1>Load balancers <span class='muted'>({len(lbs)})</span></h1>{table}<h2>Gateways</h2>{gateway_table(gateways)}"
    return page("Load balancers", body, meta)


def gateway_table(gateways: Sequence[GatewayView]) -> str:
    rows = []
    for gw in gateways:
        if not gw.reachable:
            state = "<span class='bad'>unreachable</span>"
        elif not gw.healthd_running:
            state = "<span class='bad'>health checker not running</span>"
        else:
            state = "<span class='ok'>ok</span>" if not gw.problems else "<span class='warn'>problems</span>"
        problems = "<br>".join(e(p) for p in gw.problems) or "<span class='muted'>none</span>"
        rows.append(f"<tr data-gateway='{e(gw.name)}'><td>{e(gw.name)}</td><td>{e(gw.mode)}{' (drained)' if gw.drained else ''}</td>"
                    f"<td>{state}</td><td>{problems}</td></tr>")
    return ("<table id='gateways'><tr><th>Gateway</th><th>HA mode</th><th>State</th><th>Problems</th></tr>"
            + "".join(rows) + "</table>")


def _backend_row(backend: BackendView, gateways: Sequence[str], now: float) -> str:
    state = backend.state
    kind = {"up": "ok", "down": "bad"}.get(state, "muted")
    per_gateway = "".join(f"<td>{e(backend.states.get(g, '-'))}</td>" for g in gateways) if len(gateways) > 1 else ""
    since = "-" if backend.since is None else f"{age(now - backend.since)}"
    latency = "-" if backend.latency is None else f"{backend.latency * 1000:.1f} ms"
    name = f" <span class='muted'>{e(backend.name)}</span>" if backend.name else ""
    return (f"<tr data-backend='{e(backend.address)}'><td>{e(backend.address)}{name}</td>"
            f"<td class='state {kind}'>{'DOWN' if state == 'down' else e(state)}</td>{per_gateway}"
            f"<td class='num since'>{e(since)}</td><td class='num'>{e(latency)}</td>"
            f"<td class='num'>{per_second(backend.new_per_s)}</td><td class='num'>{count(backend.new_connections)}</td>"
            f"<td class='muted'>{e(backend.detail)}</td></tr>")


def lb_page(lb: LbView, meta: Meta) -> str:
    gateways = lb.gateways
    extra = "".join(f"<th>{e(g)}</th>" for g in gateways) if len(gateways) > 1 else ""
    backends = "".join(_backend_row(b, gateways, meta.now) for b in lb.backends)
    listeners = "".join(
        f"<tr><td>{e(item['port'])}/{e(item['protocol'])}</td><td>{e(item.get('backend_port'))}</td>"
        f"<td class='num'>{count(item.get('new_connections'))}</td><td class='num'>{count(item.get('packets_in'))} / "
        f"{count(item.get('packets_out'))}</td><td class='num'>{count(item.get('bytes_in'))} / {count(item.get('bytes_out'))}</td></tr>"
        for item in lb.listeners)
    rates = lb.rates or {}
    shares = "".join(
        f"<tr><td>{e(g)}</td><td>{'yes' if g in lb.announced_by else 'no'}</td><td class='num'>{e(v['healthy'])}/{e(v['total'])}</td>"
        f"<td class='num'>{count((v.get('traffic') or {}).get('new_connections'))}</td></tr>" for g, v in sorted(lb.per_gateway.items()))
    body = (
        f"<h1 id='lb-name'>{e(lb.name)}</h1>"
        f"<div class='box'><b>{e(lb.vip)}</b> {e(lb.ports)} &middot; source {e(lb.source)}"
        f"{' &middot; pool ' + e(lb.pool) if lb.pool else ''} &middot; healthy <span id='lb-health'>{lb.healthy}/{lb.total}</span>"
        f" &middot; {per_second(rates.get('new_connections'), ' conn/s')} &middot; in {bits(rates.get('bytes_in'))}, out "
        f"{bits(rates.get('bytes_out'))} &middot; dropped by its filter: {count(lb.dropped_packets)} packets</div>"
        "<h2>Backends</h2><table id='backends'><tr><th>Backend</th><th>State</th>" + extra +
        "<th>Since</th><th>Probe latency</th><th>New conn./s</th><th>Connections (total)</th><th>Last check</th></tr>"
        f"{backends}</table><p class='muted'>Connections to a backend count every load balancer that has its address "
        "(nodeport backends are shared), on every gateway.</p>"
        "<h2>Listeners</h2><table id='listeners'><tr><th>Port</th><th>Backend port</th><th>Connections</th><th>Packets in / out</th>"
        f"<th>Bytes in / out</th></tr>{listeners}</table>"
        "<h2>Gateways</h2><table><tr><th>Gateway</th><th>Announces</th><th>Healthy</th><th>Connections</th></tr>"
        f"{shares}</table>"
    )
    return page(lb.name, body, meta)


def not_found(name: str, meta: Meta) -> str:
    return page("Not found", f"<h1>No load balancer {e(name)}</h1><p><a href='/'>All load balancers</a></p>", meta)


def _rollout_box(title: str, rollout: Rollout | None, element: str) -> str:
    if rollout is None:
        return f"<h2>{e(title)}</h2><p class='muted' id='{element}'>none recorded</p>"
    verdict = "<span class='ok'>succeeded</span>" if rollout.success else "<span class='bad'>FAILED</span>"
    if rollout.check_mode:
        verdict = "<span class='muted'>plan (check mode)</span>"
    rows = "".join(f"<tr><td>{e(host)}</td><td>{e(status)}</td><td>{'<br>'.join(e(f) for f in rollout.failures.get(host, []))}</td></tr>"
                   for host, status in rollout.hosts.items())
    return (f"<h2>{e(title)}</h2><div class='box' id='{element}'>{e(rollout.playbook)} at {e(rollout.generated)}: {verdict}"
            f"<table><tr><th>Gateway</th><th>Result</th><th>Failures</th></tr>{rows}</table></div>")


def rollouts_page(plan: Rollout | None, plan_text: str | None, rollout: Rollout | None,
                  watch: Mapping[str, Any] | None, meta: Meta) -> str:
    body = ["<h1>Plan and rollouts</h1>", _rollout_box("Last rollout", rollout, "rollout")]
    body.append("<h2>Last watcher run</h2>")
    last = (watch or {}).get("last")
    if not last:
        body.append("<p class='muted' id='watch'>none recorded</p>")
    else:
        verdict = "<span class='ok'>succeeded</span>" if last["success"] else "<span class='bad'>FAILED</span>"
        runs = (watch or {}).get("runs", {})
        body.append(f"<div class='box' id='watch'>{verdict} {age(meta.now - last['ended'])} ago, took {last['seconds']:.1f}s; "
                    f"runs: {e(runs.get('ok', 0))} ok, {e(runs.get('failed', 0))} failed</div>")
    body.append(_rollout_box("Last plan", plan, "plan"))
    if plan_text:
        body.append(f"<pre id='plan-text'>{e(plan_text)}</pre>")
    return page("Plan and rollouts", "".join(body), meta)
