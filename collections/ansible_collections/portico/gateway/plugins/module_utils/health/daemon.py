# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""portico-healthd: Portico's gateway health checker.

Probes every backend of every load balancer the dataplane serves (TCP, HTTP(S), UDP),
keeps rise/fall state, and on a state change rewrites only that LB's backend tables in
one nft transaction. A VIP without a healthy backend is withdrawn from the announcement
layer (a route in a dedicated kernel table, plus hook scripts) and restored when one
comes back.

Fail-static: nothing is undone when the daemon stops; state lives in a file under /run
so a restart resumes where it was.

Commands:
    portico-healthd run [--config FILE]          the daemon (systemd Type=notify)
    portico-healthd status [--json] [--config]   current state as a table or JSON
    portico-healthd check-config FILE            validate a configuration file

This module is the event loop and its plumbing (HTTP endpoint, watchdog, signals); the
decisions are ``health.tracker``'s, table updates ``health.applier``'s, announcements
``health.announce``'s. Standard library only: gateways run it with Debian's python3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import Nft, NftError
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.objects import TABLE_FAMILY
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import load_health_state
from ansible_collections.portico.gateway.plugins.module_utils.health.announce import Announcer, hook_runs
from ansible_collections.portico.gateway.plugins.module_utils.health.applier import OK, STALE, Applier
from ansible_collections.portico.gateway.plugins.module_utils.health.ha_metrics import HA_INTERVAL_S, HaReading, ha_text, read_all
from ansible_collections.portico.gateway.plugins.module_utils.health.metrics import CONTENT_TYPE, Metrics, metrics_text
from ansible_collections.portico.gateway.plugins.module_utils.health.probes import ProbeResult
from ansible_collections.portico.gateway.plugins.module_utils.health.scheduler import ProbeScheduler
from ansible_collections.portico.gateway.plugins.module_utils.health.settings import DEFAULT_CONFIG_FILE, Settings, load_settings
from ansible_collections.portico.gateway.plugins.module_utils.health.status import STATUS_PATH, fetch_status, format_status
from ansible_collections.portico.gateway.plugins.module_utils.health.tracker import Dataplane, HealthTracker, daemon_details
from ansible_collections.portico.gateway.plugins.module_utils.health.traffic import TrafficExporter

LOG = logging.getLogger("portico-healthd")
HTTP_TIMEOUT_S = 5
# How often the daemon looks whether the main table is still there.
TABLE_CHECK_S = 2.0
# Exit code of `status` when the daemon is not running (LSB: program is not running).
NOT_RUNNING = 3


def _announcer(settings: Settings) -> Announcer:
    return Announcer(settings.ip, settings.announce_table, settings.announce_protocol, settings.hooks_dir)


def _applier(settings: Settings) -> Applier:
    return Applier(Nft(binary=settings.nft), settings.dataplane_file, settings.lock_file, settings.state_file)


class Daemon:
    def __init__(self, settings: Settings, config_path: str) -> None:
        self.settings = settings
        self.config_path = config_path
        self.tracker = HealthTracker(settings.all_down, settings.withdraw_vips)
        self.applier = _applier(settings)
        self.announcer = _announcer(settings)
        self.scheduler: ProbeScheduler | None = None  # needs the running loop: made in run()
        self.wake = asyncio.Event()
        self.metrics = Metrics()
        self.started = time.time()
        self.traffic = TrafficExporter(settings.nft)
        self.ha = HaReading()

    # -- state --------------------------------------------------------------------

    def restore(self) -> None:
        """Resume from the state file: a restart must not put dead backends back."""
        try:
            state = load_health_state(self.settings.state_file)
        except (OSError, ValueError):
            return
        if self.tracker.restore(state):
            LOG.info("restored %d backend states from %s", len(self.tracker.health), self.settings.state_file)

    def snapshot(self) -> dict:
        return self.tracker.snapshot(**daemon_details(self.started))

    def reload_dataplane(self) -> None:
        try:
            dataplane = Dataplane.read(self.settings.dataplane_file)
        except (OSError, ValueError, TypeError) as err:
            LOG.error("cannot read %s: %s; keeping the previous model", self.settings.dataplane_file, err)
            return
        self.metrics.reloads += 1
        scheduler = self.probe_scheduler()
        for key in self.tracker.load(dataplane):
            scheduler.remove(key)
        for key, check in self.tracker.scheduled().items():
            scheduler.set(key, check.target, check.interval)
        self.metrics.keep_transitions_of(self.tracker.live_endpoints())
        # The traffic counters follow the model: a delta in a worker thread (nft), off the probe loop.
        asyncio.get_running_loop().run_in_executor(None, self.traffic.sync, dataplane.loadbalancers, dataplane.options.table)
        self.wake.set()
        LOG.info("loaded %d load balancers, %d checks, %d probes (digest %s)", len(dataplane.loadbalancers),
                 len(self.tracker.checks), len(self.tracker.probes), dataplane.digest or "-")

    # -- probing ------------------------------------------------------------------

    def probe_scheduler(self) -> ProbeScheduler:
        if self.scheduler is None:
            self.scheduler = ProbeScheduler(asyncio.get_running_loop(), self.observe)
        return self.scheduler

    def observe(self, key: str, result: ProbeResult, lag: float) -> None:
        check = self.tracker.checks.get(key)
        if check is None:
            return
        self.metrics.lag(lag)
        self.metrics.probe(result)
        flipped = self.tracker.observe_all(key, result)
        for other in flipped:
            check = self.tracker.checks[other]
            state = "up" if self.tracker.health[other].up else "down"
            self.metrics.transition(check.lb, check.endpoint, state)
            LOG.info("%s backend %s is %s (%s)", check.lb, check.endpoint, state, result.detail)
        if flipped:
            self.wake.set()

    # -- applying -----------------------------------------------------------------

    async def apply_loop(self) -> None:
        backoff = 0.5
        while True:
            await self.wake.wait()
            self.wake.clear()
            names, self.tracker.dirty = self.tracker.dirty, set()
            # Never let the applier die silently: any failure is logged and retried.
            try:
                outcome = await self.apply(names)
            except Exception as err:  # pylint: disable=broad-except
                LOG.exception("update failed")
                outcome = f"{type(err).__name__}: {err}"
            if outcome == OK:
                backoff = 0.5
                continue
            if outcome != STALE:
                LOG.error("update failed (will retry in %.1fs): %s", backoff, outcome)
                self.metrics.nft_errors += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            self.tracker.dirty |= names
            self.wake.set()

    async def apply(self, names: set[str]) -> str:
        """One transaction for the LBs in ``names``, then the announcements; OK, STALE or an error."""
        loop = asyncio.get_running_loop()
        if not names and not self.tracker.state_stale:
            await self.announce()
            return OK
        update = self.tracker.update(names, **daemon_details(self.started))
        started = time.monotonic()
        # Maglev repair is CPU work: keep it off the event loop so probes stay on time.
        outcome = await loop.run_in_executor(None, self.applier.commit, self.tracker.dataplane, update.withheld, update.state)
        if outcome == STALE:
            self.reload_dataplane()
            return outcome
        if outcome != OK:
            return outcome
        self.tracker.committed(update)
        self.metrics.nft_updates += 1
        self.metrics.nft_last_seconds = time.monotonic() - started
        await self.announce()
        return OK

    # -- announcing ---------------------------------------------------------------

    async def announce(self) -> None:
        wanted = self.tracker.to_announce()
        before = self.tracker.announced
        if before == wanted:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.announcer.sync_routes, wanted, before)
        for verb, vip in hook_runs(wanted, before, set(self.tracker.vips())):
            if verb == "announce":
                LOG.info("VIP %s announced", vip)
            else:
                LOG.info("VIP %s withdrawn: no healthy backend", vip)
            await loop.run_in_executor(None, self.announcer.run_hooks, verb, vip)
        self.tracker.announced = wanted

    # -- housekeeping -------------------------------------------------------------

    async def watch_dataplane(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            if self.tracker.dataplane.outdated(self.settings.dataplane_file):
                self.reload_dataplane()

    async def watch_table(self) -> None:
        """Notice a main table that disappeared (``nft delete table``, a flush of the ruleset) or came back.

        Fail-static while it is gone: health is still checked, routes and state stay as they are,
        and the daemon says so (log, ``portico_healthd_dataplane_table_present 0``); the next
        converge or the restore unit brings the table back. When it is back, every LB's backend
        tables are written again, since the table came back with the health state of its copy.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TABLE_CHECK_S)
            table = self.tracker.dataplane.options.table
            try:
                present = await loop.run_in_executor(None, self.applier.table_exists, table)
            except (NftError, OSError, subprocess.SubprocessError) as err:
                LOG.warning("cannot tell whether table %s exists: %s", table, err)
                continue
            if present == self.metrics.table_present:
                continue
            if not present:
                LOG.error("table %s %s is gone: traffic to the VIPs is not balanced; health is still checked, routes and "
                          "state are left as they are until a converge or the restore unit brings the table back",
                          TABLE_FAMILY, table)
            elif self.metrics.table_present is False:
                LOG.warning("table %s %s is back: writing every load balancer's backend tables for the current health",
                            TABLE_FAMILY, table)
                self.tracker.dirty |= {lb.name for lb in self.tracker.dataplane.loadbalancers}
                self.wake.set()
            self.metrics.table_present = present

    async def read_ha(self) -> None:
        """BGP sessions, VRRP state and conntrack fill for /metrics, read in a worker thread (vtysh may be slow)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                self.ha = await loop.run_in_executor(None, read_all)
            except Exception:  # pylint: disable=broad-except  # metrics must never stop the checker
                LOG.exception("reading BGP, VRRP and conntrack state failed")
            await asyncio.sleep(HA_INTERVAL_S)

    async def watchdog(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if not usec:
            return
        while True:
            sd_notify("WATCHDOG=1")  # only sent while the event loop runs: a stuck loop gets restarted
            await asyncio.sleep(usec / 2e6)

    async def serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), HTTP_TIMEOUT_S)
            while (await asyncio.wait_for(reader.readline(), HTTP_TIMEOUT_S)) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split()[1].decode() if len(request.split()) > 1 else "/"
            if path == "/metrics":
                traffic = await asyncio.get_running_loop().run_in_executor(None, self.traffic.text)
                text = metrics_text(self.metrics, self.tracker) + ha_text(self.ha) + traffic
                body, kind, status = text.encode(), CONTENT_TYPE, "200 OK"
            elif path == STATUS_PATH:
                body, kind, status = json.dumps(self.snapshot(), indent=1).encode(), "application/json", "200 OK"
            else:
                body, kind, status = b"see /metrics and /status\n", "text/plain", "404 Not Found"
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.restore()
        self.reload_dataplane()
        # Converge the tables to the restored state once (idempotent: same state, same slots).
        self.tracker.dirty |= {lb.name for lb in self.tracker.dataplane.loadbalancers}
        self.wake.set()
        loop.add_signal_handler(signal.SIGHUP, self.on_hup)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        server = None
        if self.settings.metrics_port:
            try:
                server = await asyncio.start_server(self.serve_http, self.settings.metrics_address, self.settings.metrics_port)
            except OSError as err:  # health checking matters more than its metrics
                LOG.error("metrics listener %s:%s: %s", self.settings.metrics_address, self.settings.metrics_port, err)
        helpers = [loop.create_task(self.apply_loop()), loop.create_task(self.watch_dataplane()),
                   loop.create_task(self.watchdog()), loop.create_task(self.read_ha()), loop.create_task(self.watch_table())]
        failed: list[str] = []

        def helper_done(task: asyncio.Task) -> None:
            # A helper must never end: exit so systemd restarts us instead of running half-dead.
            if not task.cancelled():
                failed.append(repr(task.exception()))
                stop.set()
        for task in helpers[:2]:
            task.add_done_callback(helper_done)
        sd_notify("READY=1")
        LOG.info("running: %d checks, metrics on %s:%s", len(self.tracker.checks), self.settings.metrics_address,
                 self.settings.metrics_port)
        await stop.wait()
        # Fail-static: leave tables, routes and state exactly as they are.
        for task in helpers:
            task.cancel()
        self.probe_scheduler().close()
        if server is not None:
            server.close()
        LOG.info("stopped; the dataplane keeps its last state")
        if failed:
            raise RuntimeError(f"internal task ended: {failed[0]}")

    def on_hup(self) -> None:
        try:
            settings = load_settings(self.config_path)
        except ValueError as err:
            LOG.error("reload refused, keeping the running configuration: %s", err)
        else:
            old = self.settings
            if (settings.metrics_address, settings.metrics_port) != (old.metrics_address, old.metrics_port):
                LOG.warning("metrics listener changes take effect at the next restart")
            if (settings.announce_table, settings.announce_protocol) != (old.announce_table, old.announce_protocol):
                self.announcer.sync_routes(set(), self.tracker.announced or set())  # empty the old table
                self.tracker.announced = None  # then fill the new one from scratch
            self.settings = settings
            self.tracker.all_down, self.tracker.withdraw_vips = settings.all_down, settings.withdraw_vips
            self.applier = _applier(settings)
            self.announcer = _announcer(settings)
        self.reload_dataplane()


def sd_notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as err:
            LOG.warning("sd_notify failed: %s", err)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portico-healthd", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=DEFAULT_CONFIG_FILE)
    status = sub.add_parser("status", help="print the current state")
    status.add_argument("--config", default=DEFAULT_CONFIG_FILE)
    status.add_argument("--json", action="store_true")
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path")
    return parser


def _error(message: object) -> None:
    sys.stderr.write(f"{message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        if not os.path.exists(args.path):
            _error(f"{args.path}: no such file")
            return 1
        try:
            load_settings(args.path)
        except ValueError as err:
            _error(err)
            return 1
        return 0
    try:
        settings = load_settings(args.config)
    except ValueError as err:
        _error(err)
        return 1
    if args.command == "status":
        try:
            state, live = fetch_status(settings)
        except (OSError, ValueError) as err:
            _error(f"portico-healthd is not running and left no state: {err}")
            return NOT_RUNNING
        if args.json:
            sys.stdout.write(json.dumps({**state, "daemon_running": live}, indent=1) + "\n")
        else:
            sys.stdout.write(format_status(state, live))
        return 0 if live else NOT_RUNNING
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    asyncio.run(Daemon(settings, args.config).run())
    return 0
