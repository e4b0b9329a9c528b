#!/usr/bin/env python3
"""Three-namespace lab for Portico benchmarks: client -> gateway -> backend.

    pb-client 203.0.113.10 ==veth== 203.0.113.1 pb-gw 192.0.2.1 ==veth== 192.0.2.11-.14 pb-backend

The namespaces have no link to the host, so benchmark traffic cannot leave them.
The gateway only routes (forwarding on); rulesets under test are loaded into it.
The backend runs nginx (`return 200 "ok"`) and optionally an iperf3 server.

Also a CLI for poking at the lab by hand:
    python3 bench/lib/netns_topology.py setup|teardown
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

CLIENT_NS, GW_NS, BACKEND_NS = "pb-client", "pb-gw", "pb-backend"
NAMESPACES = (CLIENT_NS, GW_NS, BACKEND_NS)
CLIENT_ADDR = "203.0.113.10"
GW_CLIENT_ADDR = "203.0.113.1"
GW_BACKEND_ADDR = "192.0.2.1"
BACKEND_ADDRS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")
# The plain-routing reference uses its own address on the same backend. Sharing one
# with the VIP runs breaks them: the client's TCP timestamp offset is keyed by the
# address it dials (VIP vs backend), so a reused port meets the backend's TIME_WAIT
# with an "older" timestamp, is PAWS-rejected and the SYN retransmits (~12 ms p99).
PLAIN_ADDR = "192.0.2.14"
# No default route on the client: anything outside these prefixes has nowhere to go.
CLIENT_ROUTES = ("198.51.100.0/24", "198.18.128.0/17", "192.0.2.0/24")
HTTP_PORT = 80
IPERF_PORT = 5201
LOCK_PATH = "/run/portico-bench.lock"
# Host commands every netns benchmark runs; their packages come from the list install-deps installs.
REQUIRED_TOOLS = ("ip", "nft", "nginx")
PACKAGE_LIST = Path(__file__).resolve().parents[2] / ".ci/packages.txt"

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
"""

# Flushes the gateway's conntrack table over ctnetlink (IPCTNL_MSG_CT_DELETE with no
# tuple = flush), so every run starts empty and a run of ~45k short connections
# cannot fill the table for the next one. Inline so no `conntrack` package is needed.
_FLUSH_CONNTRACK = r"""
import socket, struct
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
body = struct.pack("=BBH", socket.AF_INET, 0, 0)
sock.send(struct.pack("=IHHII", 16 + len(body), (1 << 8) | 2, 1 | 4, 1, 0) + body)
error = struct.unpack_from("=i", sock.recv(4096), 16)[0]
raise SystemExit(0 if error in (0, -2) else -error)
"""


# Runs nft from a small wrapper process: a child forked from the benchmark itself
# would report the benchmark's own (large) RSS as its peak, since Linux carries the
# pre-exec high-water mark over exec. Timing is taken inside, without interpreter start.
_TIMED_NFT = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(["nft", "-f", sys.argv[1]], capture_output=True, text=True)
seconds = time.perf_counter() - start
print(json.dumps({"rc": proc.returncode, "seconds": seconds, "stderr": proc.stderr[-2000:],
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


class BenchError(RuntimeError):
    """A real failure: the lab could not be built or a measurement is invalid."""


@dataclass
class Lab:
    workdir: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class NftLoad:
    seconds: float
    max_rss_mib: float


def run(
    args: Sequence[str],
    *,
    ns: str | None = None,
    timeout: float = 60.0,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[:2000]}")
    return proc


def packages_of(tools: Sequence[str], package_list: Path = PACKAGE_LIST) -> dict[str, str]:
    """Each host command's Debian package, from the one list (.ci/packages.txt)."""
    known: dict[str, str] = {}
    for line in package_list.read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            known.setdefault(fields[1], fields[0])
    unlisted = [tool for tool in tools if tool not in known]
    if unlisted:
        raise BenchError(f"{', '.join(unlisted)}: not in {package_list}; add the package that ships it there")
    return {tool: known[tool] for tool in tools}


def check_prerequisites(extra_tools: Sequence[str] = ()) -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, nftables): run with sudo")
    packages = packages_of([*REQUIRED_TOOLS, *extra_tools])
    missing = [f"{tool} (package {package})" for tool, package in packages.items() if shutil.which(tool) is None]
    if missing:
        raise BenchError("missing tools: " + ", ".join(missing) + ": run bash .ci/install-deps")


def existing_namespaces() -> list[str]:
    names = run(["ip", "netns", "list"]).stdout.split("\n")
    return [line.split()[0] for line in names if line.strip() and line.split()[0] in NAMESPACES]


def _sysctl(ns: str, key: str, value: str) -> None:
    # Written through /proc (per-namespace for net.*), so procps need not be installed.
    run(["sh", "-c", f"echo '{value}' > /proc/sys/{key.replace('.', '/')}"], ns=ns)


def _create_namespaces() -> None:
    for ns in NAMESPACES:
        run(["ip", "netns", "add", ns])
        # IPv6 off before any interface exists: no link-local/ND chatter, only the
        # documented IPv4 ranges appear on the wire.
        _sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        _sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
        run(["ip", "link", "set", "lo", "up"], ns=ns)


def _wire() -> None:
    run(["ip", "link", "add", "pbc0", "netns", CLIENT_NS, "type", "veth", "peer", "name", "pbg0", "netns", GW_NS])
    run(["ip", "link", "add", "pbg1", "netns", GW_NS, "type", "veth", "peer", "name", "pbb0", "netns", BACKEND_NS])
    run(["ip", "addr", "add", f"{CLIENT_ADDR}/24", "dev", "pbc0"], ns=CLIENT_NS)
    run(["ip", "addr", "add", f"{GW_CLIENT_ADDR}/24", "dev", "pbg0"], ns=GW_NS)
    run(["ip", "addr", "add", f"{GW_BACKEND_ADDR}/24", "dev", "pbg1"], ns=GW_NS)
    for address in (*BACKEND_ADDRS, PLAIN_ADDR):
        run(["ip", "addr", "add", f"{address}/24", "dev", "pbb0"], ns=BACKEND_NS)
    for ns, dev in ((CLIENT_NS, "pbc0"), (GW_NS, "pbg0"), (GW_NS, "pbg1"), (BACKEND_NS, "pbb0")):
        run(["ip", "link", "set", dev, "up"], ns=ns)
    for prefix in CLIENT_ROUTES:
        run(["ip", "route", "add", prefix, "via", GW_CLIENT_ADDR], ns=CLIENT_NS)
    run(["ip", "route", "add", "default", "via", GW_BACKEND_ADDR], ns=BACKEND_NS)
    _sysctl(GW_NS, "net.ipv4.ip_forward", "1")
    # ~15k conn/s for a few seconds exceeds the default 28k ephemeral ports.
    _sysctl(CLIENT_NS, "net.ipv4.ip_local_port_range", "1024 65535")
    _sysctl(CLIENT_NS, "net.ipv4.tcp_tw_reuse", "1")


def pin_cpu() -> int | None:
    """The one CPU the client tools, nginx and iperf3 share, or None for no pinning.

    On one CPU the whole path (client, gateway softirq, backend) runs there, so a run
    measures CPU cost per connection. Left to the scheduler, runs flip between same-
    and cross-CPU placement and p50 jumps between ~90 and ~160 us on 2 cores.
    PORTICO_BENCH_CPU=<n> picks the CPU; PORTICO_BENCH_CPU=none disables pinning.
    """
    value = os.environ.get("PORTICO_BENCH_CPU", "").strip().lower()
    if value == "none" or shutil.which("taskset") is None:
        return None
    if value:
        return int(value)
    # Last CPU: CPU 0 usually takes more of the host's own interrupts and timers.
    return sorted(os.sched_getaffinity(0))[-1]


def pinned(args: Sequence[str]) -> list[str]:
    cpu = pin_cpu()
    return ["taskset", "-c", str(cpu), *args] if cpu is not None else list(args)


def _spawn(ns: str, args: Sequence[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    # `ip netns exec` and taskset both exec, so the Popen pid is the server's own pid.
    return subprocess.Popen(["ip", "netns", "exec", ns, *pinned(args)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)


def _start_nginx(lab: Lab) -> None:
    conf = os.path.join(lab.workdir, "nginx.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(NGINX_CONF.format(dir=lab.workdir, port=HTTP_PORT))
    log = open(os.path.join(lab.workdir, "nginx.out"), "wb")  # noqa: SIM115 - lives as long as the lab
    lab.processes.append(_spawn(BACKEND_NS, ["nginx", "-c", conf, "-p", lab.workdir, "-e", f"{lab.workdir}/error.log"], log))


def _start_iperf3(lab: Lab) -> None:
    log = open(os.path.join(lab.workdir, "iperf3.out"), "wb")  # noqa: SIM115
    lab.processes.append(_spawn(BACKEND_NS, ["iperf3", "-s", "-4", "-p", str(IPERF_PORT)], log))


def _listening(port: int) -> bool:
    out = run(["ss", "-Hltn", f"sport = :{port}"], ns=BACKEND_NS, check=False).stdout
    return bool(out.strip())


def wait_listening(lab: Lab, ports: Sequence[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(_listening(port) for port in ports):
        dead = [p.args for p in lab.processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = " ".join(sorted(os.listdir(lab.workdir)))
            raise BenchError(f"backend servers not listening on {list(ports)} (exited: {dead}; logs in {lab.workdir}: {logs})")
        time.sleep(0.1)


# Polls from the client until the routed path answers: veth carrier comes up about a
# second after `ip link set up` (linkwatch), and the first run must not pay for that.
_WAIT_PATH = r"""
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
"""


def wait_path(host: str = PLAIN_ADDR, port: int = HTTP_PORT, timeout: float = 10.0) -> None:
    proc = run([sys.executable, "-c", _WAIT_PATH, host, str(port), str(timeout)], ns=CLIENT_NS,
               timeout=timeout + 10, check=False)
    if proc.returncode != 0:
        raise BenchError(f"no TCP path from {CLIENT_NS} to {host}:{port}: {proc.stderr.strip()[-300:]}")


def build_lab(with_iperf3: bool = False) -> Lab:
    lab = Lab(workdir=tempfile.mkdtemp(prefix="portico-bench-"))
    _create_namespaces()
    _wire()
    _start_nginx(lab)
    if with_iperf3:
        _start_iperf3(lab)
    wait_listening(lab, [HTTP_PORT, IPERF_PORT] if with_iperf3 else [HTTP_PORT])
    wait_path()
    return lab


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _kill_namespace_processes(ns: str) -> None:
    """Servers left by a crashed run or by `setup`: they live only in our namespace."""
    pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGTERM)


def destroy_lab(lab: Lab | None) -> None:
    """Stop our servers (by pid) and delete our namespaces; safe to call twice."""
    if lab is not None:
        for proc in lab.processes:
            _stop(proc)
        lab.processes.clear()
    for ns in existing_namespaces():
        _kill_namespace_processes(ns)
        run(["ip", "netns", "del", ns], check=False)
    if lab is not None and not os.environ.get("PORTICO_BENCH_KEEP_LOGS"):
        shutil.rmtree(lab.workdir, ignore_errors=True)


@contextlib.contextmanager
def bench_lock(blocking: bool = True) -> Iterator[bool]:
    """One lab per machine: the namespace names are fixed."""
    with open(LOCK_PATH, "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks tear the lab down.
    print(f"signal {signum}: removing the lab", file=sys.stderr)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def lab_session(with_iperf3: bool = False) -> Iterator[Lab]:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    with bench_lock():
        lab: Lab | None = None
        try:
            if existing_namespaces():
                print(f"removing leftover namespaces {existing_namespaces()}", file=sys.stderr)
                destroy_lab(None)
            lab = build_lab(with_iperf3)
            yield lab
        finally:
            destroy_lab(lab)


def nft_apply(script: str, ns: str = GW_NS, timeout: float = 180.0) -> NftLoad:
    """`nft -f` a script in the gateway; wall time and nft's peak RSS."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False, encoding="utf-8") as handle:
        handle.write(script)
    try:
        proc = run([sys.executable, "-c", _TIMED_NFT, handle.name], ns=ns, timeout=timeout, check=False)
    finally:
        os.unlink(handle.name)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"nft -f wrapper failed ({proc.returncode}): {proc.stderr.strip()[:2000]}") from None
    if data["rc"] != 0:
        raise BenchError(f"nft -f failed ({data['rc']}): {data['stderr']}")
    return NftLoad(seconds=float(data["seconds"]), max_rss_mib=int(data["maxrss_kib"]) / 1024)


def flush_conntrack(ns: str = GW_NS) -> None:
    proc = run([sys.executable, "-c", _FLUSH_CONNTRACK], ns=ns, check=False, timeout=15)
    if proc.returncode != 0:
        print(f"warning: conntrack flush in {ns} failed ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)


def conntrack_count(ns: str = GW_NS) -> int:
    proc = run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], ns=ns, check=False)
    return int(proc.stdout.strip() or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("setup", "teardown"))
    parser.add_argument("--iperf3", action="store_true", help="also start an iperf3 server (setup)")
    args = parser.parse_args(argv)
    check_prerequisites()
    if args.action == "teardown":
        # Never tear down a lab a running benchmark holds.
        with bench_lock(blocking=False) as mine:
            if not mine:
                print("a benchmark holds the lab lock; not tearing down", file=sys.stderr)
                return 0
            destroy_lab(None)
            # Work dirs of labs made by `setup` (a running benchmark would hold the lock).
            for leftover in glob.glob(os.path.join(tempfile.gettempdir(), "portico-bench-*")):
                shutil.rmtree(leftover, ignore_errors=True)
        return 0
    lab = build_lab(with_iperf3=args.iperf3)
    print(f"lab up (servers detached, logs in {lab.workdir}); remove with: {sys.argv[0]} teardown")
    return 0


def run_cli(main: Callable[[], int]) -> None:
    """Exit with main()'s code; a BenchError or Ctrl-C ends with a one-line message, not a trace."""
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted (lab removed)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_cli(main)
