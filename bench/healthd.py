#!/usr/bin/env python3
"""portico-healthd under load: CPU of 1,000 TCP checks at 200 ms, and detection time.

One namespace, pb-hd (lo only). 1,000 backend addresses from 198.18.0.0/15 (one prefix on
lo, so the whole range is local) answered by one accept-and-close listener on :8080, in
250 LBs x 4 backends converged by the real nft module; plus a detection LB with 3
backends (198.19.255.1-3, ports 9001-9003), each behind its own listener process.

  1. CPU: the real daemon (system python3) checking all backends at --interval-ms, against
     a bare prober that runs the same checks through the daemon's own `ProbeScheduler`
     and nothing else (no state, no nft, no metrics) -> daemon/bare is the bookkeeping;
     and against a coroutine per check (the design the scheduler replaced) -> bare/coroutine
     is what the scheduler saves. Same namespace, listeners, CPU pinning and window length;
     windows run coroutine, bare, daemon, (detection), daemon, bare, coroutine.
  2. Detection: with that load running, kill one detection listener, time until the daemon
     has applied the change (`applied_at` in /status), check the backend left the nft
     slot map; restart it and time its return. Compared with interval x fall + interval.

Run: sudo python3 bench/healthd.py [--quick] [--backends 1000 --interval-ms 200 --seconds 20
     --trials 40 --converge auto|ansible|direct --json out.json]
     sudo python3 bench/healthd.py --teardown   (what bench/run's EXIT trap calls)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import json
import math
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.measure import ratio  # noqa: E402
from lib.netns_topology import BenchError, _raise_exit, bench_lock, nft_apply, pin_cpu, run, run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import (  # noqa: E402
    DataplaneFiles,
    DataplaneRecord,
    file_signature,
    write_text_atomic,
)
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (  # noqa: E402
    render_health_update,
    render_table,
    service_ports,
)
from ansible_collections.portico.gateway.plugins.module_utils.model import ipam  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.model import loadbalancer as lb_model  # noqa: E402

NS = "pb-hd"
DAEMON = REPO / "roles/healthcheck/files/portico-healthd"
# The interpreter a gateway runs the daemon with (Debian's, stdlib only).
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
BACKEND_NET = ipaddress.ip_network("198.18.0.0/16")  # load backends: 198.18.0.1, .2, ...
LOAD_PORT = 8080
BACKENDS_PER_LB = 4
VIP_NET = ipaddress.ip_network("198.51.100.0/24")
VIPS = 250  # load LBs use 198.51.100.1-250; the port grows by one each time they wrap
DETECT_LB = "hd-detect"
DETECT_VIP = "198.51.100.254"
DETECT_BACKENDS = (("198.19.255.1", 9001), ("198.19.255.2", 9002), ("198.19.255.3", 9003))
POOLS = {"bench": {"addresses": [str(VIP_NET)]}}
METRICS_PORT = 19641
ANNOUNCE_TABLE = 201
RISE, FALL = 2, 2
DETECTION_LIMIT = 5.0  # a change not applied within this is a failure, not a slow number
CLONE_NEWNET = 0x40000000
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The programs the bench runs besides the daemon: backends, and the two reference probers
# (both build the daemon's checks from the dataplane record and print counters on SIGUSR1).
PROGRAMS = Path(__file__).resolve().parent / "lib" / "probers"
LISTENER = PROGRAMS / "listener.py"
# The daemon's own ProbeScheduler and nothing else: no rise/fall, no nft, no metrics.
BARE_PROBER = PROGRAMS / "bare.py"
# The design the scheduler replaced: a coroutine per check.
COROUTINE_PROBER = PROGRAMS / "coroutine.py"


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    backends: int
    interval_ms: int
    timeout_ms: int
    seconds: float
    settle: float
    trials: int
    converge: str
    json_path: str | None
    quick: bool

    @property
    def interval(self) -> float:
        return self.interval_ms / 1000.0

    @property
    def bound(self) -> float:
        """Detection bound: `fall` failed probes plus up to one interval until the first one."""
        return self.interval * FALL + self.interval

    @property
    def rise_bound(self) -> float:
        return self.interval * RISE + self.interval


def parse_args(argv: Sequence[str] | None) -> Settings | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: 5 s CPU windows, 8 detection trials (<1 min)")
    parser.add_argument("--backends", type=int, default=1000, help="load backends, 4 per LB (default 1000)")
    parser.add_argument("--interval-ms", type=int, default=200, help="check interval; timeout is 3/4 of it (default 200)")
    parser.add_argument("--seconds", type=float, default=None, help="each of the 4 CPU windows (default 20, quick 5)")
    parser.add_argument("--trials", type=int, default=None, help="kill/restart detection trials (default 40, quick 8)")
    parser.add_argument("--converge", choices=("auto", "ansible", "direct"), default="auto",
                        help="load the table with the nft module via ansible-playbook, or with module_utils and nft "
                             "directly (auto: ansible-playbook when it is on PATH)")
    parser.add_argument("--json", default=None, help="also write the raw numbers to this file")
    parser.add_argument("--teardown", action="store_true", help="only remove a leftover pb-hd namespace and exit")
    args = parser.parse_args(argv)
    if args.teardown:
        return None
    if not 1 <= args.backends <= 60000:
        parser.error("--backends must be 1-60000")
    if not 50 <= args.interval_ms <= 60000:
        parser.error("--interval-ms must be 50-60000 (the LB model's range)")
    return Settings(
        backends=args.backends,
        interval_ms=args.interval_ms,
        timeout_ms=max(10, args.interval_ms * 3 // 4),
        seconds=args.seconds if args.seconds is not None else (5.0 if args.quick else 20.0),
        settle=1.0 if args.quick else 3.0,
        trials=args.trials if args.trials is not None else (8 if args.quick else 40),
        converge=args.converge,
        json_path=args.json,
        quick=args.quick,
    )


# --------------------------------------------------------------------------- the LB model

def load_addresses(count: int) -> tuple[list[str], ipaddress.IPv4Network]:
    """`count` backend addresses and the smallest prefix of BACKEND_NET holding them."""
    prefix_len = 32 - max(2, math.ceil(math.log2(count + 2)))
    net = ipaddress.ip_network(f"{BACKEND_NET.network_address}/{prefix_len}")
    return [str(net[1 + i]) for i in range(count)], net


def loadbalancers(settings: Settings) -> list[dict[str, Any]]:
    health = {"type": "tcp", "interval_ms": settings.interval_ms, "timeout_ms": settings.timeout_ms,
              "rise": RISE, "fall": FALL}
    addresses, _ = load_addresses(settings.backends)
    raws: list[dict[str, Any]] = []
    for index in range(math.ceil(len(addresses) / BACKENDS_PER_LB)):
        vip, port = str(VIP_NET[1 + index % VIPS]), 80 + index // VIPS
        raws.append({"name": f"hd-{index:05d}", "vip": vip,
                     "ports": [{"protocol": "tcp", "port": port, "backend_port": LOAD_PORT}],
                     "backends": addresses[index * BACKENDS_PER_LB:(index + 1) * BACKENDS_PER_LB],
                     "health_check": health})
    raws.append({"name": DETECT_LB, "vip": DETECT_VIP, "ports": [{"protocol": "tcp", "port": 80, "backend_port": 80}],
                 "backends": [{"address": a, "port": p} for a, p in DETECT_BACKENDS], "health_check": health})
    return raws


def parse_model(raws: list[dict[str, Any]]) -> list[lb_model.LoadBalancer]:
    result = lb_model.parse_loadbalancers(raws, ipam.parse_pools(POOLS))
    if result.problems:
        raise BenchError(f"lb_model refused bench LBs: {result.problems[:3]}")
    return result.loadbalancers


def ansible_playbook() -> str | None:
    found = shutil.which("ansible-playbook")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else None


# --------------------------------------------------------------------------- namespace access

_libc = ctypes.CDLL(None, use_errno=True)


def ns_socket(ns: str = NS) -> socket.socket:
    """A TCP socket in the namespace, made from this process (no `ip netns exec` per request)."""
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise BenchError(f"setns({ns}): {os.strerror(err)}")
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                os._exit(70)  # never go on in the wrong namespace  # pylint: disable=protected-access
    finally:
        os.close(target)
        os.close(home)


def http_get(path: str, timeout: float = 5.0) -> bytes:
    sock = ns_socket()
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", METRICS_PORT))
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise OSError(f"GET {path}: {head[:80]!r}")
    return body


def daemon_get(path: str) -> bytes:
    """From the running daemon: not answering is a real failure (it crashed or hangs)."""
    try:
        return http_get(path)
    except OSError as err:
        raise BenchError(f"portico-healthd did not answer {path}: {err}") from None


def daemon_status() -> dict[str, Any]:
    return json.loads(daemon_get("/status"))


_METRIC_RE = re.compile(r'^(portico_healthd_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$', re.MULTILINE)


def daemon_metrics() -> dict[str, float]:
    """Counters of the daemon that the report uses (label-less names, probes by result)."""
    out: dict[str, float] = {}
    for name, labels, value in _METRIC_RE.findall(daemon_get("/metrics").decode()):
        if name == "portico_healthd_probes_total":
            out["fail" if 'result="fail"' in labels else "ok"] = float(value)
        elif name == "portico_healthd_transitions_total" and 'to="down"' in labels and DETECT_LB not in labels:
            out["load_downs"] = out.get("load_downs", 0.0) + float(value)
        elif not labels:
            out[name] = float(value)
    return out


def slot_owners(slot_map: str) -> set[str]:
    """Backend addresses in one slot map of the live table."""
    listing = json.loads(run(["nft", "-j", "list", "map", "inet", "portico", slot_map], ns=NS, timeout=30).stdout)
    for item in listing["nftables"]:
        if "map" in item:
            # Addresses only, or address . port when the backends' ports differ.
            return {elem[1]["concat"][0] if isinstance(elem[1], dict) else elem[1] for elem in item["map"].get("elem", [])}
    raise BenchError(f"no map {slot_map} in the live table")


# --------------------------------------------------------------------------- CPU accounting

def process_cpu(pid: int) -> float:
    """CPU seconds of a process, all threads, plus children it has reaped (nft, ip)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / _CLK_TCK


def cpu_busy(cpu: int | None) -> tuple[float, float]:
    """(busy, total) seconds of one CPU from /proc/stat, softirq included; (0, 0) unpinned."""
    if cpu is None:
        return 0.0, 0.0
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]
                total = sum(values[:8])
                return (total - idle) / _CLK_TCK, total / _CLK_TCK
    return 0.0, 0.0


@dataclass
class CpuWindow:
    label: str
    order: int
    seconds: float
    cpu_percent: float  # process CPU (utime+stime, threads and reaped children) / wall time
    cpu_busy_percent: float  # whole pinned CPU busy (anything running there, softirq included)
    probes_per_s: float
    failures: int
    lag_mean_ms: float
    lag_max_ms: float  # since the prober started (the daemon exports no per-window maximum)

    @property
    def us_per_probe(self) -> float:
        return self.cpu_percent / 100.0 / self.probes_per_s * 1e6 if self.probes_per_s else math.nan


def measure_window(label: str, order: int, pid: int, cpu: int | None, seconds: float,
                   counters: Callable[[], dict[str, float]]) -> CpuWindow:
    """CPU and probe counters of a running prober over `seconds` of wall time."""
    first = counters()
    busy0, total0 = cpu_busy(cpu)
    cpu0, t0 = process_cpu(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = process_cpu(pid), time.monotonic()
    busy1, total1 = cpu_busy(cpu)
    last = counters()
    wall = t1 - t0
    probes = (last["ok"] + last["fail"]) - (first["ok"] + first["fail"])
    lag_count = last["lag_count"] - first["lag_count"]
    return CpuWindow(
        label=label, order=order, seconds=wall, cpu_percent=100.0 * (cpu1 - cpu0) / wall,
        cpu_busy_percent=100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else math.nan,
        probes_per_s=probes / wall, failures=int(last["fail"] - first["fail"]),
        lag_mean_ms=1000.0 * (last["lag_sum"] - first["lag_sum"]) / lag_count if lag_count else math.nan,
        lag_max_ms=1000.0 * last["lag_max"],
    )


# --------------------------------------------------------------------------- the lab

@dataclass
class Lab:
    workdir: Path
    settings: Settings
    daemon_cpu: int | None
    server_cpu: int | None
    processes: list[subprocess.Popen] = field(default_factory=list)
    detect: dict[str, subprocess.Popen] = field(default_factory=dict)
    daemon: subprocess.Popen | None = None
    bare: subprocess.Popen | None = None
    converge_how: str = ""
    converge_seconds: float = 0.0

    @property
    def state_dir(self) -> Path:
        return self.workdir / "nftables"

    @property
    def dataplane_file(self) -> Path:
        return Path(DataplaneFiles(str(self.state_dir)).record)

    @property
    def state_file(self) -> Path:
        return self.workdir / "run/healthd/state.json"

    @property
    def lock_file(self) -> Path:
        return self.workdir / "run/dataplane.lock"

    def spawn(self, args: Sequence[str], cpu: int | None, log: str, env: dict[str, str] | None = None,
              stdout_pipe: bool = False) -> subprocess.Popen:
        """A process in the namespace; `ip netns exec` and taskset exec, so its pid is the program's."""
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        handle = open(self.workdir / log, "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(["ip", "netns", "exec", NS, *pin, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if stdout_pipe else handle, stderr=handle, env=env)
        handle.close()
        self.processes.append(proc)
        return proc

    def log_tail(self, log: str, lines: int = 15) -> str:
        try:
            text = (self.workdir / log).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def read_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        raise BenchError(f"{what}: no answer within {timeout:.0f}s (exit status {proc.poll()})")
    return line


def start_listener(lab: Lab, host: str, port: int) -> subprocess.Popen:
    proc = lab.spawn([SYSTEM_PYTHON, str(LISTENER), host, str(port)], lab.server_cpu, f"listener-{port}.log",
                     stdout_pipe=True)
    if read_line(proc, 10, f"listener {host}:{port}") != "ready":
        raise BenchError(f"listener {host}:{port} did not start: {lab.log_tail(f'listener-{port}.log')}")
    return proc


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def remove_namespace() -> None:
    """Kill what still runs in pb-hd (only this benchmark's processes live there) and delete it."""
    if NS not in run(["ip", "netns", "list"], check=False).stdout.split():
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = run(["ip", "netns", "pids", NS], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), sig)
        if pids and sig == signal.SIGTERM:
            time.sleep(0.5)
    run(["ip", "netns", "del", NS], check=False)


def build(lab: Lab) -> tuple[list[lb_model.LoadBalancer], list[dict[str, Any]]]:
    settings = lab.settings
    run(["ip", "netns", "add", NS])
    run(["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"], ns=NS)
    run(["ip", "link", "set", "lo", "up"], ns=NS)
    _, prefix = load_addresses(settings.backends)
    run(["ip", "addr", "add", f"{prefix[1]}/{prefix.prefixlen}", "dev", "lo"], ns=NS)
    for address, _port in DETECT_BACKENDS:
        run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], ns=NS)
    raws = loadbalancers(settings)
    lbs = parse_model(raws)
    lab.processes.append(start_listener(lab, "0.0.0.0", LOAD_PORT))
    for address, port in DETECT_BACKENDS:
        lab.detect[address] = start_listener(lab, address, port)
    converge(lab, raws, lbs)
    return lbs, raws


def converge(lab: Lab, raws: list[dict[str, Any]], lbs: list[lb_model.LoadBalancer]) -> None:
    """Load Portico's table and write the dataplane file the daemon reads."""
    how = lab.settings.converge
    playbook = ansible_playbook()
    if how == "ansible" and playbook is None:
        raise BenchError("--converge ansible: ansible-playbook not found (PATH, or beside this python)")
    started = time.monotonic()
    if how in ("auto", "ansible") and playbook is not None:
        lab.converge_how = "nft_loadbalancer module via ansible-playbook"
        task = {"name": "converge", "portico.gateway.nft_loadbalancer": {
            "loadbalancers": raws, "pools": POOLS, "state_dir": str(lab.state_dir),
            "health_state_file": str(lab.state_file), "lock_file": str(lab.lock_file)}}
        play = lab.workdir / "converge.yml"  # JSON is YAML
        play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false",
               "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
        proc = subprocess.run(["ip", "netns", "exec", NS, playbook, "-i", "localhost,", "-c", "local",
                               "-e", f"ansible_python_interpreter={SYSTEM_PYTHON}", str(play)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise BenchError(f"converge with ansible-playbook failed ({proc.returncode}):\n"
                             + "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:]))
    else:
        lab.converge_how = "module_utils render + nft -f + records.DataplaneRecord (the module's writer)"
        options = RenderOptions()
        rendered = render_table(lbs, options)
        nft_apply(rendered.script, ns=NS)
        write_text_atomic(str(lab.dataplane_file), DataplaneRecord.of(lbs, options, rendered.digest, POOLS).to_json())
    lab.converge_seconds = time.monotonic() - started
    if not lab.dataplane_file.exists():
        raise BenchError(f"converge wrote no dataplane file {lab.dataplane_file}")


# --------------------------------------------------------------------------- probers

def start_daemon(lab: Lab, checks: int) -> subprocess.Popen:
    config = lab.workdir / "healthd.json"
    config.write_text(json.dumps({
        "dataplane_file": str(lab.dataplane_file), "state_file": str(lab.state_file),
        "lock_file": str(lab.lock_file), "hooks_dir": str(lab.workdir / "hooks.d"),  # none: no host hooks run
        "metrics_address": "127.0.0.1", "metrics_port": METRICS_PORT, "announce_table": ANNOUNCE_TABLE}))
    env = {**os.environ, "PORTICO_PYTHONPATH": str(REPO / "collections")}
    proc = lab.spawn([SYSTEM_PYTHON, str(DAEMON), "run", "--config", str(config)], lab.daemon_cpu, "healthd.log", env=env)
    lab.daemon = proc
    # Up means probed OK (a new backend starts "up" before its first probe), and every VIP announced.
    deadline = time.monotonic() + 30 + checks / 50
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"portico-healthd exited ({proc.returncode}):\n{lab.log_tail('healthd.log')}")
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(http_get("/status"))
            backends = status["backends"]
            if (len(backends) == checks and all(b["up"] and b["detail"] == "ok" for b in backends)
                    and all(v["announced"] for v in status["vips"].values())):
                return proc
        time.sleep(1.0)  # /status of 1,000 backends costs the daemon a JSON dump: ask rarely
    if not status:
        raise BenchError(f"portico-healthd did not answer /status:\n{lab.log_tail('healthd.log')}")
    bad = [b for b in status.get("backends", []) if not (b["up"] and b["detail"] == "ok")]
    raise BenchError(f"backends never all up: {len(status.get('backends', []))} of {checks} checked, {len(bad)} "
                     f"not up, e.g. {bad[:3]}\n{lab.log_tail('healthd.log')}")


def daemon_counters() -> dict[str, float]:
    m = daemon_metrics()
    return {"ok": m.get("ok", 0.0), "fail": m.get("fail", 0.0),
            "lag_sum": m["portico_healthd_schedule_lag_seconds_sum"],
            "lag_count": m["portico_healthd_schedule_lag_seconds_count"],
            "lag_max": m["portico_healthd_schedule_lag_max_seconds"]}


def prober_window(lab: Lab, checks: int, program: Path, label: str, order: int) -> CpuWindow:
    env = {**os.environ, "PORTICO_PYTHONPATH": str(REPO / "collections")}
    log = label.split()[0] + ".log"
    proc = lab.spawn([SYSTEM_PYTHON, str(program), str(lab.dataplane_file)], lab.daemon_cpu, log,
                     env=env, stdout_pipe=True)
    lab.bare = proc
    ready = json.loads(read_line(proc, 30, f"{label} prober"))
    if ready.get("ready") != checks:
        raise BenchError(f"{label} prober built {ready.get('ready')} checks, expected {checks}")

    def counters() -> dict[str, float]:
        proc.send_signal(signal.SIGUSR1)
        return json.loads(read_line(proc, 10, f"{label} prober counters"))

    time.sleep(lab.settings.settle)
    window = measure_window(label, order, proc.pid, lab.daemon_cpu, lab.settings.seconds, counters)
    stop(proc)
    lab.bare = None
    print(f"  {label}: {window.cpu_percent:.1f}% CPU, {window.probes_per_s:.0f} probes/s", file=sys.stderr)
    return window


def daemon_window(lab: Lab, label: str, order: int) -> CpuWindow:
    assert lab.daemon is not None
    time.sleep(lab.settings.settle)
    window = measure_window(label, order, lab.daemon.pid, lab.daemon_cpu, lab.settings.seconds, daemon_counters)
    if lab.daemon.poll() is not None:
        raise BenchError(f"portico-healthd exited during the CPU window:\n{lab.log_tail('healthd.log')}")
    print(f"  {label}: {window.cpu_percent:.1f}% CPU, {window.probes_per_s:.0f} probes/s", file=sys.stderr)
    return window


# --------------------------------------------------------------------------- detection

@dataclass
class Trial:
    backend: str
    detect_ms: float  # listener dead -> daemon applied the table change
    decided_ms: float  # listener dead -> daemon marked it down (fall reached)
    rise_ms: float  # listener back -> daemon applied its return
    nft_ms: float  # portico_healthd_nft_update_seconds after the detection apply
    left_map: bool
    back_in_map: bool


def wait_applied(lab: Lab, address: str, up: bool, after: float, signature: Any) -> tuple[dict[str, Any], float]:
    """Wait until the daemon has applied `address` going up/down after `after`.

    Cheap polling: the daemon writes its state file in the same locked step as the nft
    apply, so /status (which costs the daemon a JSON dump of every backend) is only
    asked when that file changed.
    """
    deadline = time.time() + DETECTION_LIMIT
    while time.time() < deadline:
        current = file_signature(lab.state_file)
        if current != signature:
            time.sleep(0.02)  # the loop records applied_at just after the write
            status = daemon_status()
            backend = next(b for b in status["backends"] if b["lb"] == DETECT_LB and b["address"] == address)
            lb = status["loadbalancers"][DETECT_LB]
            applied = lb["applied_at"] or 0.0
            if backend["up"] == up and applied >= after and (address in lb["withheld"]) != up:
                return backend, applied
            if backend["up"] != up:
                signature = current  # another change; wait for the next write
            # else: written, the event loop has yet to record applied_at: ask again shortly
        if lab.daemon is not None and lab.daemon.poll() is not None:
            raise BenchError(f"portico-healthd exited during detection:\n{lab.log_tail('healthd.log')}")
        time.sleep(0.003)
    raise BenchError(f"{address} {'return' if up else 'failure'} not applied within {DETECTION_LIMIT:.0f}s "
                     f"(bound {lab.settings.bound * 1000:.0f} ms)")


def nft_update_alone(lb: lb_model.LoadBalancer, count: int = 5) -> float:
    """Median ms of `nft -f` of the daemon's transaction for one LB, alone (no prober running).

    The all-healthy update rewrites the slot map with the content it already has, so the
    table is unchanged; it is the same script size and kernel work as taking a backend out.
    """
    script = render_health_update(service_ports([lb]), RenderOptions(), {})
    return 1000 * sorted(nft_apply(script, ns=NS).seconds for _ in range(count))[count // 2]


def detection_trials(lab: Lab, slot_map: str) -> list[Trial]:
    trials: list[Trial] = []
    rng = random.Random(1)
    for index in range(lab.settings.trials):
        address, port = DETECT_BACKENDS[index % len(DETECT_BACKENDS)]
        # Kill at a random point of the probe schedule.
        time.sleep(rng.uniform(0.0, lab.settings.interval))
        signature = file_signature(lab.state_file)
        proc = lab.detect.pop(address)
        proc.kill()
        proc.wait()
        killed = time.time()
        backend, applied = wait_applied(lab, address, up=False, after=killed, signature=signature)
        nft_seconds = daemon_metrics().get("portico_healthd_nft_update_seconds", math.nan)
        left = address not in slot_owners(slot_map)
        signature = file_signature(lab.state_file)
        lab.detect[address] = start_listener(lab, address, port)
        restarted = time.time()
        _, returned = wait_applied(lab, address, up=True, after=restarted, signature=signature)
        back = address in slot_owners(slot_map)
        trial = Trial(address, 1000 * (applied - killed), 1000 * (backend["since"] - killed), 1000 * (returned - restarted),
                      1000 * nft_seconds, left, back)
        trials.append(trial)
        print(f"  trial {index + 1:>2}/{lab.settings.trials} {address}: detected+applied {trial.detect_ms:6.1f} ms "
              f"(decided {trial.decided_ms:6.1f}, nft {trial.nft_ms:5.1f}), back in {trial.rise_ms:6.1f} ms, "
              f"slot map {'left' if left else 'STILL THERE'}/{'back' if back else 'MISSING'}", file=sys.stderr)
        if not left or not back:
            raise BenchError(f"trial {index + 1}: {address} {'still in' if not left else 'missing from'} "
                             f"{slot_map} after the daemon reported it applied")
    return trials


# --------------------------------------------------------------------------- report

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: with 40 samples p99 is the maximum, p90 the 4th largest."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def report(lab: Lab, checks: int, lbs: int, coroutine: list[CpuWindow], bare: list[CpuWindow], daemon: list[CpuWindow],
           trials: list[Trial], extra: dict[str, Any], elapsed: float) -> list[str]:
    s = lab.settings
    where = (f"probers pinned to CPU {lab.daemon_cpu}, listeners and this script to CPU {lab.server_cpu}"
             if lab.daemon_cpu is not None else "unpinned")
    expected = checks / s.interval
    windows = sorted([*coroutine, *bare, *daemon], key=lambda w: w.order)

    def row(label: str, getter: Callable[[CpuWindow], float], digits: int, with_ratio: bool = True) -> str:
        c, b, d = (mean([getter(w) for w in side]) for side in (coroutine, bare, daemon))
        ratios = f"{ratio(d, b):>11} | {ratio(b, c):>14}" if with_ratio else f"{'':>11} | {'':>14}"
        return f"{label:<46} | {c:>11.{digits}f} | {b:>11.{digits}f} | {d:>11.{digits}f} | {ratios}"

    lines = [
        f"portico-healthd: {checks} TCP checks ({s.backends} load + {len(DETECT_BACKENDS)} detection) in {lbs} LBs, "
        f"every {s.interval_ms} ms, timeout {s.timeout_ms} ms, rise {RISE}, fall {FALL}",
        f"{where}; table loaded by {lab.converge_how} in {lab.converge_seconds:.1f}s; {elapsed:.0f}s total; "
        f"load average {extra.get('loadavg_start', '?')} at start, {extra.get('loadavg_end', '?')} at end",
        "",
        f"Steady state, all backends up: {len(windows)} windows of {s.seconds:.0f}s "
        f"({' -> '.join(w.label for w in windows)}), mean per prober",
        f"{'metric':<46} | {'coroutine':>11} | {'bare prober':>11} | {'daemon':>11} | {'daemon/bare':>11} | "
        f"{'bare/coroutine':>14}",
        row("CPU us per probe (utime+stime / probes)", lambda w: w.us_per_probe, 1),
        row(f"CPU % for the full schedule ({expected:.0f}/s)", lambda w: w.us_per_probe * expected / 1e4, 1),
        row("CPU % of one core, measured", lambda w: w.cpu_percent, 1),
        row(f"probes/s achieved (schedule {expected:.0f})", lambda w: w.probes_per_s, 0),
        row("schedule lag mean ms", lambda w: w.lag_mean_ms, 2),
        row("failed probes", lambda w: w.failures, 0, with_ratio=False),
    ]
    if lab.daemon_cpu is not None:
        lines.append(row(f"CPU {lab.daemon_cpu} busy % (all tasks, /proc/stat)", lambda w: w.cpu_busy_percent, 1, False))
        lines.append(row("  of which other tasks (busy - prober)", lambda w: w.cpu_busy_percent - w.cpu_percent, 1, False))
    lines += [
        f"{'schedule lag max ms (since start, 1st window)':<46} | {coroutine[0].lag_max_ms:>11.1f} | "
        f"{bare[0].lag_max_ms:>11.1f} | {daemon[0].lag_max_ms:>11.1f} |",
        "per window CPU %: " + ", ".join(f"{w.label} {w.cpu_percent:.1f}" for w in windows)
        + f"; load backends marked down: {extra.get('load_downs', 0):.0f}; conntrack entries: {extra.get('conntrack', '?')}",
    ]
    if not trials:
        return lines
    lines += ["", f"Kill one backend's listener under that load: {len(trials)} trials; detection bound interval x fall + "
              f"interval = {s.bound * 1000:.0f} ms, return bound interval x rise + interval = {s.rise_bound * 1000:.0f} ms",
              f"{'ms':<46} | {'p50':>6} | {'p90':>6} | {'p99':>6} | {'max':>6} | {'p50/bound':>9} | {'p99/bound':>9}"]

    def drow(label: str, values: list[float], bound: float | None) -> str:
        p50, p90, p99 = (percentile(values, p) for p in (50, 90, 99))
        ratios = f"{p50 / bound:>8.2f}x | {p99 / bound:>8.2f}x" if bound else f"{'':>9} | {'':>9}"
        return f"{label:<46} | {p50:>6.0f} | {p90:>6.0f} | {p99:>6.0f} | {max(values):>6.0f} | {ratios}"

    lines += [
        drow("killed -> applied in nft (detection)", [t.detect_ms for t in trials], s.bound * 1000),
        drow("  killed -> marked down (fall reached)", [t.decided_ms for t in trials], s.bound * 1000),
        drow("  marked down -> applied", [t.detect_ms - t.decided_ms for t in trials], None),
        drow("    of which commit (nft -f, state file)", [t.nft_ms for t in trials], None),
        drow("restarted -> applied back in (return)", [t.rise_ms for t in trials], s.rise_bound * 1000),
        f"reference: the same one-LB nft -f alone (no prober running): {extra.get('nft_alone_ms', math.nan):.0f} ms; "
        f"the state file each commit writes: {extra.get('state_file_kb', math.nan):.0f} KiB",
        f"slot map read back: backend gone after detection in {sum(t.left_map for t in trials)}/{len(trials)} trials, "
        f"back after return in {sum(t.back_in_map for t in trials)}/{len(trials)}",
    ]
    return lines


# --------------------------------------------------------------------------- main

def conntrack_count() -> str:
    proc = run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], ns=NS, check=False)
    return proc.stdout.strip() or "?"


def loadavg() -> str:
    """1-minute load average: how busy the machine was besides this benchmark."""
    with open("/proc/loadavg", encoding="ascii") as handle:
        return handle.read().split()[0]


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, nftables): run with sudo")
    missing = [f"{tool} (apt-get install -y {pkg})" for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"))
               if shutil.which(tool) is None]
    if missing:
        raise BenchError("missing tools: " + ", ".join(missing))
    for program in (DAEMON, LISTENER, BARE_PROBER, COROUTINE_PROBER):
        if not program.exists():
            raise BenchError(f"not found: {program}")


def placement() -> tuple[int | None, int | None]:
    """(daemon CPU, listener CPU): the bench's usual CPU for the prober, another one for the rest."""
    daemon = pin_cpu()
    if daemon is None:
        return None, None
    others = sorted(os.sched_getaffinity(0) - {daemon})
    return daemon, (others[0] if others else daemon)


def run_bench(settings: Settings) -> int:
    started = time.monotonic()
    daemon_cpu, server_cpu = placement()
    if server_cpu is not None:
        os.sched_setaffinity(0, {server_cpu})  # this process and its helpers stay off the prober's CPU
    lab = Lab(workdir=Path(tempfile.mkdtemp(prefix="portico-bench-hd-")), settings=settings,
              daemon_cpu=daemon_cpu, server_cpu=server_cpu)
    extra: dict[str, Any] = {"loadavg_start": loadavg()}
    try:
        remove_namespace()  # a leftover of a killed run
        lbs, _raws = build(lab)
        checks = settings.backends + len(DETECT_BACKENDS)
        print(f"lab: {len(lbs)} LBs, {checks} checks; table loaded by {lab.converge_how} in "
              f"{lab.converge_seconds:.1f}s", file=sys.stderr)
        detect_lb = next(lb for lb in lbs if lb.name == DETECT_LB)
        extra["nft_alone_ms"] = nft_update_alone(detect_lb)
        # coroutine, bare, daemon, (detection), daemon, bare, coroutine: slow drift from other
        # jobs cancels in the means.
        coroutine = [prober_window(lab, checks, COROUTINE_PROBER, "coroutine 1", order=0)]
        bare = [prober_window(lab, checks, BARE_PROBER, "bare 1", order=1)]
        start_daemon(lab, checks)
        assert lab.daemon is not None
        daemon = [daemon_window(lab, "daemon 1", order=2)]
        extra["conntrack"] = conntrack_count()
        trials = detection_trials(lab, service_ports([detect_lb])[0].slot_map)
        daemon.append(daemon_window(lab, "daemon 2", order=3))
        extra["load_downs"] = daemon_metrics().get("load_downs", 0.0)
        extra["state_file_kb"] = lab.state_file.stat().st_size / 1024
        stop(lab.daemon)
        lab.daemon = None
        bare.append(prober_window(lab, checks, BARE_PROBER, "bare 2", order=4))
        coroutine.append(prober_window(lab, checks, COROUTINE_PROBER, "coroutine 2", order=5))
        extra["loadavg_end"] = loadavg()
        elapsed = time.monotonic() - started
        print("\n" + "\n".join(report(lab, checks, len(lbs), coroutine, bare, daemon, trials, extra, elapsed)))
        if settings.json_path:
            with open(settings.json_path, "w", encoding="utf-8") as handle:
                json.dump({"settings": asdict(settings), "checks": checks, "loadbalancers": len(lbs),
                           "daemon_cpu": daemon_cpu, "server_cpu": server_cpu, "converge": lab.converge_how,
                           "converge_seconds": lab.converge_seconds, "bare": [asdict(w) for w in bare],
                           "coroutine": [asdict(w) for w in coroutine],
                           "daemon": [asdict(w) for w in daemon], "trials": [asdict(t) for t in trials],
                           "extra": extra, "bound_ms": settings.bound * 1000,
                           "rise_bound_ms": settings.rise_bound * 1000, "elapsed_seconds": elapsed}, handle, indent=1)
    finally:
        for proc in [lab.daemon, lab.bare, *lab.detect.values(), *lab.processes]:
            with contextlib.suppress(Exception):
                stop(proc)
        remove_namespace()
        if not os.environ.get("PORTICO_BENCH_KEEP_LOGS"):
            shutil.rmtree(lab.workdir, ignore_errors=True)
        else:
            print(f"logs kept in {lab.workdir}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    check_prerequisites()
    if settings is None:  # --teardown: never under a running benchmark
        with bench_lock(blocking=False) as mine:
            if mine:
                remove_namespace()
                for leftover in Path(tempfile.gettempdir()).glob("portico-bench-hd-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            else:
                print("a benchmark holds the lab lock; not tearing down", file=sys.stderr)
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    with bench_lock():
        return run_bench(settings)


if __name__ == "__main__":
    run_cli(main)
