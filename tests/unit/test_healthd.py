"""The health daemon's logic without root: plans, reloads, announcements, fail-static, settings.

The daemon against the real kernel (nft tables, routes, TCP backends) is tests/integration/test_healthd.py.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import Nft
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import (
    DataplaneRecord,
    load_health_state,
    read_withheld,
    write_health_state,
    write_text_atomic,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import render_table
from ansible_collections.portico.gateway.plugins.module_utils.health.announce import announcement, hook_runs
from ansible_collections.portico.gateway.plugins.module_utils.health.applier import OK, STALE, Applier, update_script
from ansible_collections.portico.gateway.plugins.module_utils.health.daemon import main
from ansible_collections.portico.gateway.plugins.module_utils.health.metrics import Metrics, metrics_text
from ansible_collections.portico.gateway.plugins.module_utils.health.probes import ProbeResult
from ansible_collections.portico.gateway.plugins.module_utils.health.settings import Settings, load_settings
from ansible_collections.portico.gateway.plugins.module_utils.health.status import format_status
from ansible_collections.portico.gateway.plugins.module_utils.health.tracker import Dataplane, HealthTracker
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers

POOLS = {"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}}
BACKENDS = ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
CHECK = {"type": "tcp", "interval_ms": 100, "timeout_ms": 80, "rise": 2, "fall": 2}
# Probes the same backends another way: its verdicts are its own.
OTHER_CHECK = {**CHECK, "interval_ms": 150}


def lb(name: str = "web", vip: str = "198.51.100.10", backends: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "vip": vip, "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
            "backends": BACKENDS if backends is None else backends, "health_check": CHECK, **extra}


def write_record(path: pathlib.Path, raws: list[dict[str, Any]], withheld: dict[str, set[str]] | None = None) -> None:
    """What the nft module writes after an apply (its own writer)."""
    model = parse_loadbalancers(raws, parse_pools(POOLS))
    assert not model.problems
    digest = render_table(model.loadbalancers, RenderOptions(), withheld).digest
    write_text_atomic(str(path), DataplaneRecord.of(model.loadbalancers, RenderOptions(), digest, POOLS).to_json())


def loaded(path: pathlib.Path, raws: list[dict[str, Any]], tracker: HealthTracker | None = None) -> HealthTracker:
    write_record(path, raws)
    tracker = tracker or HealthTracker()
    tracker.load(Dataplane.read(str(path)))
    return tracker


def fail(tracker: HealthTracker, address: str, times: int = 2, lb_name: str = "web") -> list[bool]:
    key = next(k for k, c in tracker.checks.items() if c.address == address and c.lb == lb_name)
    return [tracker.observe(key, ProbeResult(False, 0.001, "connection refused")) for _ in range(times)]


def succeed(tracker: HealthTracker, address: str, times: int = 2) -> list[bool]:
    key = next(k for k, c in tracker.checks.items() if c.address == address)
    return [tracker.observe(key, ProbeResult(True, 0.001, "ok")) for _ in range(times)]


# -- plan of a state change ----------------------------------------------------------------


def test_a_backend_going_down_plans_one_transaction_for_its_lb_only(tmp_path: pathlib.Path) -> None:
    tracker = loaded(tmp_path / "record.json", [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK)])
    tracker.dirty.clear()  # a fresh load with nothing withheld agrees with the tables
    assert fail(tracker, "192.0.2.12") == [False, True]  # fall 2: the second failure flips it
    assert tracker.dirty == {"web"}
    update = tracker.update(tracker.dirty)
    assert update.withheld == {"web": {"192.0.2.12"}} and update.served == {"web": {"192.0.2.11", "192.0.2.13"}}
    assert update.state["loadbalancers"]["web"]["withheld"] == ["192.0.2.12"]
    assert update.state["loadbalancers"]["api"]["withheld"] == []  # not part of this transaction
    script = update_script(tracker.dataplane, update.withheld)
    web = tracker.dataplane.services["web"][0]
    api = tracker.dataplane.services["api"][0]
    assert f"flush map inet portico {web.slot_map}" in script and api.slot_map not in script
    assert ": 192.0.2.12" not in script and ": 192.0.2.11" in script
    # The same slots the nft module renders for this health state: both writers agree.
    module_view = render_table(tracker.dataplane.loadbalancers, RenderOptions(), update.withheld).script
    added = next(line for line in script.splitlines() if line.startswith(f"add element inet portico {web.slot_map}"))
    assert added.split("{ ", 1)[1].rstrip(" }").split(", ")[0] in module_view
    tracker.committed(update, now=1000.0)
    assert tracker.applied_withheld["web"] == {"192.0.2.12"} and tracker.applied_at["web"] == 1000.0
    assert tracker.snapshot()["loadbalancers"]["web"]["withheld"] == ["192.0.2.12"]


def test_lbs_with_one_check_share_its_probe_and_their_table_is_written_once(tmp_path: pathlib.Path) -> None:
    tracker = loaded(tmp_path / "record.json", [lb(), lb(name="api", vip="198.51.100.11", ports=[
        {"protocol": "tcp", "port": 80, "backend_port": 8080}, {"protocol": "tcp", "port": 443, "backend_port": 8443}])])
    tracker.dirty.clear()
    assert len(tracker.checks) == 6 and len(tracker.scheduled()) == 3  # one probe per backend, for both LBs
    assert fail(tracker, "192.0.2.12") == [False, True]
    assert tracker.dirty == {"web", "api"}
    assert {tracker.health[k].up for k, c in tracker.checks.items() if c.address == "192.0.2.12"} == {False}
    update = tracker.update({"web"})  # the group comes along: their shared table is one content
    assert update.withheld == {"web": {"192.0.2.12"}, "api": {"192.0.2.12"}}
    script = update_script(tracker.dataplane, update.withheld)
    services = [s for name in ("web", "api") for s in tracker.dataplane.services[name]]
    assert len({s.slot_map for s in services}) == 1 and len(services) == 3
    assert script.count("flush map") == 1 and ": 192.0.2.12" not in script
    for service in services:  # every listener keeps its own target port in its rule
        assert f"map @{service.slot_map} : {service.port.backend_port}" in render_table(tracker.dataplane.loadbalancers, RenderOptions()).script
    # A check that joins a probe takes its verdict: a new LB does not serve a backend known dead.
    loaded(tmp_path / "record.json", [lb(), lb(name="api", vip="198.51.100.11"), lb(name="db", vip="198.51.100.12")], tracker)
    assert {tracker.health[k].up for k, c in tracker.checks.items() if c.address == "192.0.2.12"} == {False}
    assert tracker.plan({"db"})[0] == {"db": {"192.0.2.12"}}


def test_every_backend_down_rejects_or_keeps_the_last_set(tmp_path: pathlib.Path) -> None:
    for policy, withheld, served in (("reject", set(BACKENDS), set()), ("keep_last", {"192.0.2.11", "192.0.2.12"}, {"192.0.2.13"})):
        tracker = loaded(tmp_path / "record.json", [lb()], HealthTracker(all_down=policy))
        for address in BACKENDS:
            fail(tracker, address)
            update = tracker.update({"web"})
            tracker.committed(update)
        assert (update.withheld["web"], update.served["web"]) == (withheld, served), policy
        script = update_script(tracker.dataplane, update.withheld)
        rejecting = "delete element inet portico no_backends4" not in script
        assert rejecting is (policy == "reject"), script


# -- reload of the dataplane record ----------------------------------------------------------


def test_reload_matches_checks_by_key_and_keeps_their_state(tmp_path: pathlib.Path) -> None:
    record = tmp_path / "record.json"
    tracker = loaded(record, [lb()])
    fail(tracker, "192.0.2.11")
    tracker.committed(tracker.update({"web"}))
    down = next(k for k, c in tracker.checks.items() if c.address == "192.0.2.11")
    since = tracker.health[down].since
    tracker.dirty.clear()
    # A new interval, rise and fall: same keys, so no state is reset and no table disagrees.
    slower = {**CHECK, "interval_ms": 150, "timeout_ms": 100, "rise": 3}
    checks = loaded(record, [lb(health_check=slower)], tracker).checks
    assert down in checks and tracker.health[down].up is False and tracker.health[down].since == since
    assert tracker.checks[down].interval == 0.15 and tracker.checks[down].rise == 3
    assert tracker.dirty == set()
    # A backend leaves the model: its check is returned for the scheduler to stop, its state goes.
    write_record(record, [lb(backends=BACKENDS[:2], health_check=slower)])
    gone = tracker.load(Dataplane.read(str(record)))
    assert [tracker_key.split("|")[1] for tracker_key in gone] == ["192.0.2.13"]
    assert {c.address for c in tracker.checks.values()} == set(BACKENDS[:2]) and len(tracker.health) == 2


def test_a_changed_probe_keeps_the_verdict_until_it_has_its_own(tmp_path: pathlib.Path) -> None:
    record = tmp_path / "record.json"
    tracker = loaded(record, [lb()])
    fail(tracker, "192.0.2.11")
    http = {**CHECK, "type": "http", "port": 8080}
    loaded(record, [lb(health_check=http)], tracker)
    by_address = {c.address: tracker.health[k] for k, c in tracker.checks.items()}
    assert {c.target.kind for c in tracker.checks.values()} == {"http"}
    assert by_address["192.0.2.11"].up is False and by_address["192.0.2.11"].detail == "probe changed"
    assert by_address["192.0.2.12"].up is True


def test_a_removed_lb_is_forgotten_so_a_recreated_one_starts_clean(tmp_path: pathlib.Path) -> None:
    record = tmp_path / "record.json"
    tracker = loaded(record, [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK)])
    fail(tracker, "192.0.2.12")
    tracker.committed(tracker.update(tracker.dirty))
    tracker.dirty.clear()
    loaded(record, [lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK)], tracker)
    assert tracker.state_stale and "web" not in tracker.applied_withheld and "web" not in tracker.last_served
    assert "web" not in tracker.snapshot()["loadbalancers"]
    tracker.committed(tracker.update(set()))
    assert not tracker.state_stale
    loaded(record, [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK)], tracker)
    assert tracker.update({"web"}).withheld == {"web": set()}


def test_lbs_are_dirty_only_where_the_module_rendered_something_else(tmp_path: pathlib.Path) -> None:
    record = tmp_path / "record.json"
    tracker = loaded(record, [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK)])
    fail(tracker, "192.0.2.12")
    tracker.committed(tracker.update({"web"}))
    tracker.dirty.clear()
    # The module re-applied from the state file: web's table already leaves .12 out.
    loaded(record, [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK, backends=BACKENDS[:2])], tracker)
    assert tracker.dirty == set()
    # A backend of api went down while it was unknown to the state file: api disagrees now.
    fail(tracker, "192.0.2.11", lb_name="api")
    tracker.dirty.clear()
    loaded(record, [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK, backends=BACKENDS[:2])], tracker)
    assert tracker.dirty == {"api"}


def test_an_unreadable_record_is_an_error_and_a_missing_one_an_empty_dataplane(tmp_path: pathlib.Path) -> None:
    assert Dataplane.read(str(tmp_path / "none.json")).loadbalancers == []
    (tmp_path / "bad.json").write_text('{"loadbalancers": "web"}')
    with pytest.raises(ValueError, match="loadbalancers"):
        Dataplane.read(str(tmp_path / "bad.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError):
        Dataplane.read(str(tmp_path / "bad.json"))


# -- pending announcements ---------------------------------------------------------------------


def test_a_vip_waiting_for_its_table_update_keeps_its_announcement() -> None:
    assert announcement({"a", "b"}, None, {"a"}) == {"a", "b"}  # at start: sync the whole table
    assert announcement({"b"}, {"a", "b"}, set()) == {"b"}
    # a lost its last backend but its reject set is not in place yet: still announced.
    assert announcement({"b"}, {"a", "b"}, {"a"}) == {"a", "b"}
    # c got a backend back but its slots are not written yet: not announced yet.
    assert announcement({"b", "c"}, {"b"}, {"c"}) == {"b"}


def test_hooks_run_for_changes_and_for_every_vip_at_start() -> None:
    assert hook_runs({"a"}, {"a", "b"}, {"a", "b"}) == [("withdraw", "b")]
    assert hook_runs({"a", "b"}, {"a"}, {"a", "b"}) == [("announce", "b")]
    assert hook_runs({"a"}, None, {"a", "b"}) == [("announce", "a"), ("withdraw", "b")]


def test_the_tracker_holds_back_the_vips_of_dirty_lbs(tmp_path: pathlib.Path) -> None:
    tracker = loaded(tmp_path / "record.json", [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK)])
    tracker.announced = {"198.51.100.10", "198.51.100.11"}
    tracker.dirty.clear()
    for address in BACKENDS:
        fail(tracker, address)
    assert tracker.vips()["198.51.100.10"] == {"healthy": 0, "total": 3}
    assert tracker.to_announce() == {"198.51.100.10", "198.51.100.11"}  # web's update is pending
    tracker.committed(tracker.update(tracker.dirty))
    tracker.dirty.clear()
    assert tracker.to_announce() == {"198.51.100.11"}
    tracker.withdraw_vips = False
    assert tracker.to_announce() == {"198.51.100.10", "198.51.100.11"}


# -- fail-static: a restart resumes from the state file ----------------------------------------


def test_a_restart_resumes_from_the_state_file(tmp_path: pathlib.Path) -> None:
    record, state_file = tmp_path / "record.json", tmp_path / "state.json"
    before = loaded(record, [lb()])
    fail(before, "192.0.2.13")
    update = before.update({"web"})
    write_health_state(str(state_file), update.state)
    before.committed(update)
    # What the nft module reads back under the lock: the dead backend stays out of a rebuilt table.
    web = Dataplane.read(str(record)).loadbalancers
    assert read_withheld(str(state_file), web) == {"web": {"192.0.2.13"}}

    after = HealthTracker()
    assert after.restore(load_health_state(str(state_file)))
    after.load(Dataplane.read(str(record)))
    down = {c.address: after.health[k] for k, c in after.checks.items()}["192.0.2.13"]
    assert down.up is False and down.transitions == 1  # restored, not re-learnt
    assert after.applied_withheld == {"web": {"192.0.2.13"}} and after.dirty == set()
    assert after.update({"web"}).withheld == update.withheld  # same state, same table
    # Back after `rise` successes, not before.
    assert succeed(after, "192.0.2.13", times=2) == [False, True]


def test_a_state_written_when_each_lb_probed_alone_is_aligned_to_one_verdict(tmp_path: pathlib.Path) -> None:
    record, state_file = tmp_path / "record.json", tmp_path / "state.json"
    before = loaded(record, [lb(), lb(name="api", vip="198.51.100.11", health_check=OTHER_CHECK)])
    fail(before, "192.0.2.13")  # web's own check only: api still serves .13
    update = before.update({"web", "api"})
    write_health_state(str(state_file), update.state)
    assert update.withheld == {"web": {"192.0.2.13"}, "api": set()}
    # Both LBs now probe the same way: one probe, and the state of its first check (api's) for both.
    after = HealthTracker()
    assert after.restore(load_health_state(str(state_file)))
    write_record(record, [lb(), lb(name="api", vip="198.51.100.11")])
    after.load(Dataplane.read(str(record)))
    assert len(after.scheduled()) == 3
    assert {after.health[k].up for k, c in after.checks.items() if c.address == "192.0.2.13"} == {True}
    # web's table held .13 out and must take it back; the update covers the whole group.
    assert after.dirty == {"web"} and after.update(after.dirty).withheld == {"web": set(), "api": set()}


@pytest.mark.parametrize("content", ["not json", '{"version": 99, "loadbalancers": {}}', '{"version": 1, "loadbalancers": []}'])
def test_a_foreign_state_file_is_not_restored(tmp_path: pathlib.Path, content: str) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text(content)
    with pytest.raises(ValueError):
        load_health_state(str(state_file))
    assert read_withheld(str(state_file), []) == {}


def test_unreadable_entries_restore_nothing(tmp_path: pathlib.Path) -> None:
    tracker = HealthTracker()
    assert not tracker.restore({"version": 1, "loadbalancers": {}, "backends": [{"key": "web|x", "since": "yesterday"}]})
    assert tracker.health == {} and tracker.last_served == {}


# -- the commit: lock, signature, state file ---------------------------------------------------


def test_a_commit_against_a_replaced_record_is_stale_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    record, state_file = tmp_path / "record.json", tmp_path / "run" / "state.json"
    tracker = loaded(record, [lb()])
    fail(tracker, "192.0.2.11")
    update = tracker.update({"web"})
    applier = Applier(Nft(binary=str(tmp_path / "no-nft-here")), str(record), str(tmp_path / "lock"), str(state_file))
    write_record(record, [lb(backends=BACKENDS[:2])])  # the nft module replaced the table meanwhile
    assert applier.commit(tracker.dataplane, update.withheld, update.state) == STALE
    assert not state_file.exists()
    # Nothing to write to the tables (no LB in the update): only the state file, under the lock.
    tracker.load(Dataplane.read(str(record)))
    assert applier.commit(tracker.dataplane, {}, tracker.update(set()).state) == OK
    assert load_health_state(str(state_file))["loadbalancers"]["web"]["withheld"] == []


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config, message", [
    ({"all_down": "drop"}, "all_down: 'drop' is not one of reject, keep_last"),
    ({"metrics_prot": 1}, "unknown setting(s) metrics_prot"),
    ({"announce_protocol": 300}, "announce_protocol: expected 1-255"),
    ({"announce_table": True}, "announce_table: expected an integer"),
    ({"metrics_port": 70000}, "metrics_port: expected 0-65535"),
    ({"withdraw_vips": "yes"}, "withdraw_vips: expected true or false"),
    ({"state_file": "state.json"}, "state_file: expected an absolute path"),
])
def test_bad_settings_are_refused_with_the_file_and_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        Settings.from_mapping(config, "/etc/portico/healthd.json")
    assert message in str(err.value) and str(err.value).startswith("/etc/portico/healthd.json: ")


def test_settings_files(tmp_path: pathlib.Path) -> None:
    assert load_settings(str(tmp_path / "missing.json")) == Settings()
    path = tmp_path / "healthd.json"
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_settings(str(path))
    path.write_text(json.dumps({"all_down": "keep_last", "metrics_port": 0}))
    assert load_settings(str(path)) == Settings(all_down="keep_last", metrics_port=0)


def test_check_config_command(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "healthd.json"
    path.write_text(json.dumps({"announce_protocol": 300}))
    assert main(["check-config", str(path)]) == 1
    assert f"{path}: announce_protocol: expected 1-255" in capsys.readouterr().err
    path.write_text(json.dumps({"announce_protocol": 200}))
    assert main(["check-config", str(path)]) == 0
    assert main(["check-config", str(tmp_path / "missing.json")]) == 1


# -- what it shows -----------------------------------------------------------------------------


def test_metrics_and_status_show_a_dead_backend(tmp_path: pathlib.Path) -> None:
    tracker = loaded(tmp_path / "record.json", [lb()])
    metrics = Metrics()
    key = next(k for k, c in tracker.checks.items() if c.address == "192.0.2.13")
    for _ in range(2):
        result = ProbeResult(False, 0.002, "connection refused")
        metrics.probe(result)
        if tracker.observe(key, result):
            metrics.transition("web", "192.0.2.13:8080", "down")
    text = metrics_text(metrics, tracker)
    assert 'portico_healthd_backend_up{lb="web",backend="192.0.2.13:8080",vip="198.51.100.10"} 0' in text
    assert 'portico_healthd_backend_up{lb="web",backend="192.0.2.12:8080",vip="198.51.100.10"} 1' in text
    assert 'portico_healthd_transitions_total{lb="web",backend="192.0.2.13:8080",to="down"} 1' in text
    assert 'portico_healthd_vip_healthy_backends{vip="198.51.100.10"} 2' in text
    assert 'portico_healthd_probes_total{result="fail"} 2' in text and "portico_healthd_checks 3" in text
    state = tracker.snapshot(pid=os.getpid(), started=0.0)
    table = format_status(state, live=False, now=tracker.health[key].since + 90)
    assert "NOT RUNNING" in table and "198.51.100.10" in table and "2/3" in table
    row = next(line for line in table.splitlines() if "192.0.2.13:8080" in line)
    assert "DOWN" in row and "90s" in row and "connection refused" in row
