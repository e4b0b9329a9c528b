# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the health checker knows and decides, without I/O: the state machine of the daemon.

``HealthTracker`` holds the applied model (``Dataplane``), one check per backend with its
rise/fall state, and what each LB's tables hold now. Probe verdicts mark LBs dirty; an
``Update`` says what one nft transaction must write for them and what the state file
records afterwards. The daemon (``health.daemon``) runs probes, commits updates
(``health.applier``) and announces VIPs (``health.announce``) from these decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import (
    DataplaneRecord,
    file_signature,
    health_state,
    lb_health,
    read_record,
    recorded_lb_health,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import ServicePort, health_group, service_ports
from ansible_collections.portico.gateway.plugins.module_utils.health.announce import announcement
from ansible_collections.portico.gateway.plugins.module_utils.health.probes import ProbeResult
from ansible_collections.portico.gateway.plugins.module_utils.health.state import (
    BackendHealth,
    Check,
    announced_vips,
    checks_for,
    vip_health,
    withheld_for,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer, parse_loadbalancers

LOG = logging.getLogger("portico-healthd")


@dataclass
class Dataplane:
    """The model the nft module last applied, with the options that shape its tables."""

    digest: str = ""
    options: RenderOptions = field(default_factory=RenderOptions)
    loadbalancers: list[LoadBalancer] = field(default_factory=list)
    services: dict[str, list[ServicePort]] = field(default_factory=dict)
    by_name: dict[str, LoadBalancer] = field(default_factory=dict)
    signature: tuple[int, int, int] | None = None
    # LB name -> the names of its health group (itself included): LBs that may share backend tables.
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: DataplaneRecord | None, where: str = "dataplane record") -> Dataplane:
        """The model of a record (none: an empty dataplane); LBs the model refuses are left out, with a warning."""
        if record is None:
            return cls()
        model = parse_loadbalancers(list(record.loadbalancers), parse_pools(record.pools))
        for problem in model.problems:
            LOG.warning("dataplane file %s: %s", where, problem)
        services: dict[str, list[ServicePort]] = {}
        for service in service_ports(model.loadbalancers):
            services.setdefault(service.lb.name, []).append(service)
        members: dict[tuple[Any, ...], list[str]] = {}
        for lb in model.loadbalancers:
            members.setdefault(health_group(lb), []).append(lb.name)
        groups = {name: tuple(sorted(names)) for names in members.values() for name in names}
        return cls(digest=record.digest, options=record.render_options(), loadbalancers=model.loadbalancers,
                   services=services, by_name={lb.name: lb for lb in model.loadbalancers}, signature=record.signature,
                   groups=groups)

    @classmethod
    def read(cls, path: str) -> Dataplane:
        """OSError, ValueError or TypeError when the file is there but not a record."""
        return cls.from_record(read_record(path), path)

    def outdated(self, path: str) -> bool:
        """Whether the record at ``path`` is no longer the one this model was read from."""
        return file_signature(path) != self.signature


@dataclass
class Update:
    """One transaction: the LBs it rewrites, what they withhold and serve, and the state file after it."""

    withheld: dict[str, set[str]]
    served: dict[str, set[str]]
    state: dict[str, Any]


class HealthTracker:
    """The daemon's knowledge: checks and their health, and what each LB's tables hold."""

    def __init__(self, all_down: str = "reject", withdraw_vips: bool = True) -> None:
        self.all_down = all_down
        self.withdraw_vips = withdraw_vips
        self.dataplane = Dataplane()
        self.checks: dict[str, Check] = {}
        self.checks_by_lb: dict[str, list[str]] = {}
        # One probe per check identity, its verdicts given to every check with it (LBs sharing a
        # backend table must agree on each backend): probe -> check keys, the first one scheduled.
        self.probes: dict[tuple[str, ...], list[str]] = {}
        self.health: dict[str, BackendHealth] = {}
        # Per LB, as last committed: the backends served and withheld, and when.
        self.last_served: dict[str, set[str]] = {}
        self.applied_withheld: dict[str, set[str]] = {}
        self.applied_at: dict[str, float] = {}
        # VIPs announced now; None until the first announcement (then the table is synced whole).
        self.announced: set[str] | None = None
        # LBs whose tables may disagree with their health: the next update rewrites them.
        self.dirty: set[str] = set()
        # An LB left the model: the state file must forget it even if no table changes.
        self.state_stale = False

    # -- state --------------------------------------------------------------------

    def restore(self, state: Mapping[str, Any]) -> bool:
        """Resume from a health state document (``records.load_health_state``): a restart must not
        put dead backends back. False, and nothing kept, when its entries are unreadable."""
        try:
            for entry in state.get("backends", []):
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    self.health[entry["key"]] = BackendHealth.from_dict(entry)
            for name, (withheld, served) in recorded_lb_health(state).items():
                self.last_served[name] = served
                self.applied_withheld[name] = withheld
        except (AttributeError, TypeError, ValueError) as err:
            LOG.warning("ignoring an unreadable health state: %s", err)
            self.health, self.last_served, self.applied_withheld = {}, {}, {}
            return False
        return True

    def load(self, dataplane: Dataplane) -> list[str]:
        """Take a newly applied model: checks are matched by key, so unchanged backends keep their
        state; LBs whose tables now disagree with their health become dirty. Returns the keys the
        caller must stop probing: checks that are gone, and checks no longer first of their probe."""
        self.dataplane = dataplane
        wanted = {c.key: c for lb in dataplane.loadbalancers for c in checks_for(lb)}
        # A new probe (port, path, kind) for the same backend keeps its verdict until it has one:
        # a backend known dead must not come back just because its check was edited.
        previous = {(self.checks[k].lb, self.checks[k].address): self.health[k]
                    for k in self.checks if k not in wanted and k in self.health}
        leaders = set(self.scheduled())
        removed = sorted(set(self.checks) - set(wanted))
        for key in removed:
            del self.checks[key]
        for key, check in wanted.items():
            self.checks[key] = check  # interval, rise and fall may change without resetting state
            if key not in self.health:
                old = previous.get((check.lb, check.address))
                self.health[key] = BackendHealth(up=old.up, since=old.since, detail="probe changed") if old else BackendHealth()
        self.health = {key: self.health[key] for key in self.checks}
        self.checks_by_lb = {}
        for key, check in self.checks.items():
            self.checks_by_lb.setdefault(check.lb, []).append(key)
        self.probes = {}
        for key in sorted(self.checks):
            self.probes.setdefault(self.checks[key].probe, []).append(key)
        for keys in self.probes.values():
            # One verdict per probe: a check that joins one (a new LB, or a state written when each LB
            # probed alone) takes the state of the probe's first check.
            first = self.health[keys[0]]
            for key in keys[1:]:
                if self.health[key] != first:
                    self.health[key] = dataclasses.replace(first)
        removed += sorted(leaders - set(self.scheduled()) - set(removed))
        names = {lb.name for lb in dataplane.loadbalancers}
        for table in (self.last_served, self.applied_withheld, self.applied_at):
            for name in set(table) - names:
                del table[name]
                # The state file must forget it too, or a re-created LB would inherit it.
                self.state_stale = True
        # The nft module rendered from our state file; apply only where we now disagree.
        withheld, _served = self.plan(names)
        self.dirty |= {name for name in names if withheld.get(name, set()) != self.applied_withheld.get(name, set())}
        return removed

    def live_endpoints(self) -> set[tuple[str, str]]:
        """(LB, backend endpoint) of every check: what per-backend metrics may still name."""
        return {(c.lb, c.endpoint) for c in self.checks.values()}

    def scheduled(self) -> dict[str, Check]:
        """What to probe: the first check of each probe, by its key."""
        return {keys[0]: self.checks[keys[0]] for keys in self.probes.values()}

    def observe(self, key: str, result: ProbeResult) -> bool:
        """One probe verdict; True when the backend flipped (its LBs are then dirty)."""
        return bool(self.observe_all(key, result))

    def observe_all(self, key: str, result: ProbeResult) -> list[str]:
        """One probe verdict for every check with the probe of ``key``; the keys of those that flipped."""
        check = self.checks.get(key)
        if check is None:
            return []
        flipped = []
        for other in self.probes.get(check.probe, [key]):
            health = self.health.get(other)
            if health is not None and health.observe(result.ok, check.rise, check.fall, result.detail, result.latency):
                self.dirty.add(self.checks[other].lb)
                flipped.append(other)
        return flipped

    # -- decisions ----------------------------------------------------------------

    def up_by_lb(self, name: str) -> dict[str, bool]:
        return {self.checks[key].address: self.health[key].up for key in self.checks_by_lb.get(name, ())}

    def plan(self, names: Iterable[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """(withheld, served) addresses per LB in ``names`` for the health known now."""
        withheld: dict[str, set[str]] = {}
        served: dict[str, set[str]] = {}
        for name in names:
            lb = self.dataplane.by_name.get(name)
            if lb is None:
                continue
            # LBs of one health group share backend tables, so they must withhold alike: they have
            # the same verdicts, and what they last served is taken over the group.
            group = self.dataplane.groups.get(name, (name,))
            last_served = set().union(*(self.last_served.get(other, ()) for other in group))
            withheld[name], served[name] = withheld_for(lb, self.up_by_lb(name), last_served, self.all_down)
        return withheld, served

    def with_groups(self, names: Iterable[str]) -> set[str]:
        """``names`` and every LB of their health groups: an update rewrites shared tables whole."""
        return {other for name in names for other in self.dataplane.groups.get(name, (name,))}

    def vips(self) -> dict[str, dict[str, int]]:
        up = {(c.lb, c.address): self.health[k].up for k, c in self.checks.items()}
        return vip_health(self.dataplane.loadbalancers, up)

    def to_announce(self) -> set[str]:
        """The VIPs to announce now: a VIP whose LB still waits for its table update keeps its state."""
        pending = {lb.vip for lb in self.dataplane.loadbalancers if lb.name in self.dirty}
        return announcement(announced_vips(self.vips(), self.withdraw_vips), self.announced, pending)

    def snapshot(self, **details: Any) -> dict[str, Any]:
        """Everything the status command, the state file and the nft module need (a health state document)."""
        vips = self.vips()
        announced = self.announced if self.announced is not None else announced_vips(vips, self.withdraw_vips)
        backends = []
        for key, check in sorted(self.checks.items(), key=lambda kv: (kv[1].lb, kv[1].address)):
            backends.append({"key": key, "lb": check.lb, "address": check.address, "endpoint": check.endpoint,
                             "kind": check.target.kind, "interval": check.interval, "rise": check.rise,
                             "fall": check.fall, **self.health[key].to_dict()})
        lbs = {lb.name: lb_health(self.applied_withheld.get(lb.name, ()),
                                  self.last_served.get(lb.name, {b.address for b in lb.backends}),
                                  vip=lb.vip, applied_at=self.applied_at.get(lb.name))
               for lb in self.dataplane.loadbalancers}
        return health_state(lbs, **details, digest=self.dataplane.digest, all_down=self.all_down, backends=backends,
                            vips={vip: {**counts, "announced": vip in announced} for vip, counts in sorted(vips.items())})

    def update(self, names: Iterable[str], **details: Any) -> Update:
        """What one transaction for ``names`` (and their health groups) writes, and the state file that goes with it."""
        withheld, served = self.plan(self.with_groups(names))
        state = self.snapshot(**details)
        for name in withheld:
            state["loadbalancers"][name].update(lb_health(withheld[name], served[name]))
        return Update(withheld, served, state)

    def committed(self, update: Update, now: float | None = None) -> None:
        """The update is in the tables and the state file."""
        now = time.time() if now is None else now
        self.state_stale = False
        for name in update.withheld:
            self.applied_withheld[name], self.last_served[name] = update.withheld[name], update.served[name]
            self.applied_at[name] = now


def daemon_details(started: float) -> dict[str, Any]:
    """What a snapshot says about the daemon process itself."""
    return {"pid": os.getpid(), "started": started}
