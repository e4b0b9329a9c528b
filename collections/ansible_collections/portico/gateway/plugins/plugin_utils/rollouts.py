# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Results of converge runs on the controller, for alerts and the console.

* The watcher (``bin/portico-watch --metrics-file``) records every run it starts in a Prometheus
  textfile (node_exporter's textfile collector serves it): ``portico_watch_*``.
* A rollout (``playbooks/deploy.yml`` or ``site.yml`` with the ``portico.gateway.plan`` callback
  and a plan directory) leaves ``plan.json`` of a run that was not in check mode: per gateway its
  status and failures. ``rollout_summary`` reads it; the console shows it and exports
  ``portico_rollout_*``.

Standard library only; nothing here runs on a gateway.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.status.details import parse_samples


def write_atomic(path: str, text: str) -> None:
    """Readers (node_exporter, the console) never see half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".portico-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --- the watcher's runs ---------------------------------------------------------------------


@dataclass
class WatchRuns:
    """What the watcher's runs did since it started (the textfile holds these)."""

    ok: int = 0
    failed: int = 0
    last_success: bool | None = None
    last_run: float = 0.0
    last_ok: float = 0.0
    last_seconds: float = 0.0
    last_detail: str = ""
    last_full: bool = False

    def record(self, ok: bool, seconds: float, detail: str = "", full: bool = False, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if ok:
            self.ok += 1
            self.last_ok = now
        else:
            self.failed += 1
        self.last_success, self.last_run, self.last_seconds = ok, now, seconds
        self.last_detail, self.last_full = detail, full


WATCH_FAMILIES = (
    ("portico_watch_runs_total", "counter", "Runs portico-watch started, by result."),
    ("portico_watch_last_run_success", "gauge", "1 when the last run succeeded."),
    ("portico_watch_last_run_timestamp_seconds", "gauge", "When the last run ended."),
    ("portico_watch_last_success_timestamp_seconds", "gauge", "When a run last succeeded."),
    ("portico_watch_last_run_duration_seconds", "gauge", "How long the last run took."),
)


def watch_text(runs: WatchRuns) -> str:
    """The textfile: families without a run yet are declared, with no sample."""
    values: dict[str, list[str]] = {
        "portico_watch_runs_total": [f'portico_watch_runs_total{{result="ok"}} {runs.ok}',
                                     f'portico_watch_runs_total{{result="failed"}} {runs.failed}'],
    }
    if runs.last_success is not None:
        values["portico_watch_last_run_success"] = [f"portico_watch_last_run_success {int(runs.last_success)}"]
        values["portico_watch_last_run_timestamp_seconds"] = [f"portico_watch_last_run_timestamp_seconds {runs.last_run:.3f}"]
        values["portico_watch_last_run_duration_seconds"] = [f"portico_watch_last_run_duration_seconds {runs.last_seconds:.3f}"]
    if runs.last_ok:
        values["portico_watch_last_success_timestamp_seconds"] = [f"portico_watch_last_success_timestamp_seconds {runs.last_ok:.3f}"]
    lines: list[str] = []
    for name, kind, text in WATCH_FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *values.get(name, [])]
    return "\n".join(lines) + "\n"


def recording(run: Callable[[Any], Any], path: str) -> Callable[[Any], Any]:
    """Wrap the watcher's runner: after each run the textfile at ``path`` says how it went.

    The runner returns an outcome with ``ok`` and ``detail``; a batch has ``full``.
    """
    runs = WatchRuns()
    lock = threading.Lock()
    write_atomic(path, watch_text(runs))

    def recorded(batch: Any) -> Any:
        started = time.monotonic()
        outcome = run(batch)
        with lock:
            runs.record(bool(outcome.ok), time.monotonic() - started, str(getattr(outcome, "detail", "")),
                        bool(getattr(batch, "full", False)))
            write_atomic(path, watch_text(runs))
        return outcome

    return recorded


def read_watch(path: str) -> dict[str, Any] | None:
    """The watcher's last run as the console shows it; None when there is no textfile."""
    try:
        with open(path, encoding="utf-8") as handle:
            samples = parse_samples(handle.read())
    except OSError:
        return None
    values = {name: value for name, labels, value in samples if name != "portico_watch_runs_total"}
    totals = {labels.get("result", ""): int(value) for name, labels, value in samples if name == "portico_watch_runs_total"}
    if "portico_watch_last_run_success" not in values:
        return {"runs": totals, "last": None}
    return {"runs": totals, "last": {
        "success": bool(values["portico_watch_last_run_success"]),
        "ended": values.get("portico_watch_last_run_timestamp_seconds", 0.0),
        "seconds": values.get("portico_watch_last_run_duration_seconds", 0.0),
        "last_success": values.get("portico_watch_last_success_timestamp_seconds"),
    }}


# --- rollouts (the plan callback's report of a real run) ------------------------------------


@dataclass
class Rollout:
    """One run as its plan.json tells it."""

    playbook: str = ""
    generated: str = ""
    check_mode: bool = False
    hosts: dict[str, str] = field(default_factory=dict)  # host -> status
    failures: dict[str, list[str]] = field(default_factory=dict)  # host -> "task: message"

    @property
    def success(self) -> bool:
        return bool(self.hosts) and not self.failures and all(s not in ("failed", "unreachable") for s in self.hosts.values())


def rollout_summary(data: Mapping[str, Any]) -> Rollout:
    """A plan.json document (``plugin_utils.plan_report.report_data``) as a rollout."""
    hosts: dict[str, str] = {}
    failures: dict[str, list[str]] = {}
    for name, host in sorted((data.get("hosts") or {}).items()):
        if not isinstance(host, Mapping):
            continue
        hosts[name] = str(host.get("status", "?"))
        failed = [f"{item.get('task', '?')}: {item.get('msg', '')}" if isinstance(item, Mapping) else str(item)
                  for item in host.get("failures") or []]
        if host.get("unreachable"):
            failed.append("unreachable")
        if failed:
            failures[name] = failed
    return Rollout(playbook=str(data.get("playbook", "")), generated=str(data.get("generated", "")),
                   check_mode=bool(data.get("check_mode", False)), hosts=hosts, failures=failures)


def read_plan(path: str) -> dict[str, Any] | None:
    """A plan.json, None when there is none or it is unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def rollout_text(rollout: Rollout | None, generated_epoch: float | None = None) -> str:
    """``portico_rollout_*`` for the console's /metrics (no sample without a rollout)."""
    lines = ["# HELP portico_rollout_last_success 1 when the last rollout reached every gateway without a failure.",
             "# TYPE portico_rollout_last_success gauge"]
    if rollout is not None:
        lines.append(f"portico_rollout_last_success {int(rollout.success)}")
    lines += ["# HELP portico_rollout_failed_gateways Gateways the last rollout failed on.",
              "# TYPE portico_rollout_failed_gateways gauge"]
    if rollout is not None:
        lines.append(f"portico_rollout_failed_gateways {len(rollout.failures)}")
    lines += ["# HELP portico_rollout_last_timestamp_seconds When the last rollout's report was written.",
              "# TYPE portico_rollout_last_timestamp_seconds gauge"]
    if rollout is not None and generated_epoch is not None:
        lines.append(f"portico_rollout_last_timestamp_seconds {generated_epoch:.0f}")
    return "\n".join(lines) + "\n"
