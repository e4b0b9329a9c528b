"""The lab client lab/files/portico-lab-probe against the lab backend portico-lab-echo, without the lab.

portico-lab-echo binds the wildcard address, so both scripts run in a private network namespace
(the netns fixture) where the only interface is loopback: every address used here is 127.0.0.1,
and every port is free. Failures are made by killing (or SIGSTOPping) the echo server mid-run.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from conftest import Netns

REPO = pathlib.Path(__file__).resolve().parents[2]
ECHO = REPO / "lab/files/portico-lab-echo"
PROBE = REPO / "lab/files/portico-lab-probe"


@dataclass
class Lab:
    ns: Netns
    tmp: pathlib.Path
    tcp_port: int = field(default_factory=lambda: random.randint(20000, 39999))
    udp_port: int = field(default_factory=lambda: random.randint(40000, 59999))
    servers: list[subprocess.Popen] = field(default_factory=list)

    def start_echo(self, name: str) -> subprocess.Popen:
        """Start portico-lab-echo; return once it has bound its ports (it logs after binding)."""
        log = self.tmp / f"echo-{name}-{len(self.servers)}.log"
        with log.open("w") as stderr:
            server = subprocess.Popen(
                ["ip", "netns", "exec", self.ns.name, sys.executable, str(ECHO), "--name", name,
                 "--tcp-port", str(self.tcp_port), "--udp-port", str(self.udp_port), "--http-port", "0"],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        self.servers.append(server)
        deadline = time.monotonic() + 10
        while f"{name}: tcp" not in log.read_text():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "portico-lab-echo did not start"
            time.sleep(0.01)
        return server

    def probe(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns.name, sys.executable, str(PROBE), "--target", "127.0.0.1", *args, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def tcp(self, *args: str) -> subprocess.Popen:
        return self.probe("--proto", "tcp", "--port", str(self.tcp_port), *args)

    def udp(self, *args: str) -> subprocess.Popen:
        return self.probe("--proto", "udp", "--port", str(self.udp_port), *args)


@pytest.fixture
def lab(netns: Netns, tmp_path: pathlib.Path) -> Iterator[Lab]:
    lab = Lab(netns, tmp_path)
    try:
        yield lab
    finally:
        for server in lab.servers:  # only the processes this test started
            server.kill()
            server.wait()


def finish(probe: subprocess.Popen, timeout: float = 15) -> tuple[int, dict[str, Any]]:
    out, err = probe.communicate(timeout=timeout)
    try:
        return probe.returncode, json.loads(out)
    except json.JSONDecodeError:
        pytest.fail(f"probe printed no JSON (rc={probe.returncode}):\n{out}\n{err}")


def kill(server: subprocess.Popen) -> float:
    server.kill()
    server.wait()
    return time.time()


def wait_for(path: pathlib.Path, probe: subprocess.Popen, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert probe.poll() is None, f"probe ended before writing {path}: {probe.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)
    return json.loads(path.read_text())


# --- existing modes: same output as before ---------------------------------------------------------


def test_request_and_stream_modes_keep_their_output(lab):
    lab.start_echo("be1")
    for probe in (lab.tcp("--count", "3"), lab.udp("--count", "3")):
        code, result = finish(probe)
        assert code == 0
        assert result == {"ok": 3, "failed": 0, "backends": {"be1": 3}, "clients": ["127.0.0.1"], "errors": {}}
    code, result = finish(lab.tcp("--stream", "1"))
    assert code == 0 and set(result) == {"lines", "reset", "backend", "max_gap_ms"}, result
    assert result["reset"] is False and result["backend"] == "be1" and result["lines"] >= 8, result


# --- timeline mode -----------------------------------------------------------------------------------


def test_timeline_tcp_and_udp_steady(lab):
    lab.start_echo("be1")
    probes = {"tcp": lab.tcp("--every", "20", "--duration", "2"), "udp": lab.udp("--every", "20", "--duration", "2")}
    for proto, probe in probes.items():
        code, result = finish(probe)
        assert code == 0
        summary = {key: value for key, value in result.items() if key != "samples"}
        assert result["mode"] == "timeline", summary
        assert 95 <= result["sent"] <= 100 and result["ok"] == result["sent"] and result["failed"] == 0, summary
        assert result["backends"] == {"be1": result["sent"]} and result["errors"] == {}, summary
        assert result["failures"] == [] and result["last_failure"] is None, summary
        assert result["max_gap_ms"] < 150, (proto, summary)
        samples = result["samples"]
        assert len(samples) == result["sent"] and all(ok == 1 and name == "be1" for _, ok, name in samples)
        starts = [started for started, _, _ in samples]
        assert starts == sorted(starts) and result["start"] <= starts[0] < result["start"] + 0.05
        # The absolute schedule: the k-th request starts at start + k * 20 ms, without drift.
        assert abs(starts[-1] - (result["start"] + (len(starts) - 1) * 0.02)) < 0.05, (starts[0], starts[-1])


def test_timeline_reports_an_outage(lab):
    server = lab.start_echo("be1")
    timeline = ("--every", "20", "--duration", "2.5", "--timeout", "0.2")
    probes = {"tcp": lab.tcp(*timeline), "udp": lab.udp(*timeline)}
    time.sleep(0.8)
    killed = kill(server)
    time.sleep(0.6)
    respawned = time.time()
    lab.start_echo("be2")
    back = time.time()
    for proto, probe in probes.items():
        code, result = finish(probe)
        assert code == 0
        summary = {key: value for key, value in result.items() if key != "samples"}
        assert result["ok"] > 0 and result["failed"] > 0 and result["sent"] == result["ok"] + result["failed"], summary
        assert set(result["backends"]) == {"be1", "be2"}, summary
        # A request in flight at the kill may time out (or, on TCP, see the connection closed); the rest are refused.
        assert result["errors"].get("refused", 0) >= 3, summary
        assert set(result["errors"]) <= {"refused", "timeout"} | ({"reset", "eof"} if proto == "tcp" else set()), summary
        assert sum(result["errors"].values()) == result["failed"] == len(result["failures"]), summary
        # Every failure happened while the server was gone (one request may have been in flight at the kill).
        for started, kind in result["failures"]:
            assert killed - 0.1 <= started <= back, (started, kind, killed, back)
        assert result["last_failure"] == result["failures"][-1][0]
        assert result["last_failure"] >= respawned - 0.1, summary  # failed until the new server was up
        # The longest gap is the outage: from the last reply of be1 to the first of be2.
        assert respawned - killed <= result["max_gap_ms"] / 1000 <= back - killed + 0.2, (summary, killed, back)
        assert killed - 0.1 <= result["gap_start"] <= killed, (summary, killed)
        for started, ok, name in result["samples"]:
            if started < killed - 0.1:
                assert (ok, name) == (1, "be1")
            if started > back:
                assert (ok, name) == (1, "be2")


def test_timeline_catches_up_after_a_stall(lab):
    """A stalled backend makes requests time out; the schedule does not drift: the requests that were
    due meanwhile follow at once, so about --duration / --every are sent in all."""
    server = lab.start_echo("be1")
    probe = lab.tcp("--every", "20", "--duration", "1.5", "--timeout", "0.2")
    time.sleep(0.4)
    os.kill(server.pid, signal.SIGSTOP)
    stopped = time.time()
    time.sleep(0.5)
    os.kill(server.pid, signal.SIGCONT)
    code, result = finish(probe)
    assert code == 0
    summary = {key: value for key, value in result.items() if key != "samples"}
    assert result["errors"].get("timeout", 0) >= 1 and result["failed"] == sum(result["errors"].values()), summary
    assert result["sent"] >= 70, summary  # 75 due; drifting would send about 50
    assert result["max_gap_ms"] >= 400 and result["gap_start"] >= stopped - 0.1, summary
    assert result["samples"][-1][1] == 1, summary


# --- multi-stream mode -------------------------------------------------------------------------------


def test_streams_all_held(lab, tmp_path):
    lab.start_echo("be1")
    ready = tmp_path / "ready.json"
    probe = lab.tcp("--stream", "3", "--streams", "10", "--ready-file", str(ready))
    assert wait_for(ready, probe) == {"backends": {"be1": 10}, "opened": 10}
    assert probe.poll() is None  # the ready file comes while the streams are held
    code, result = finish(probe)
    assert code == 0, result
    results = result.pop("results")
    assert result == {"mode": "streams", "streams": 10, "opened": 10, "reset": 0, "failed_to_open": 0,
                      "backends": {"be1": 10}}
    assert len(results) == 10
    for stream in results:
        assert set(stream) == {"backend", "lines", "reset", "max_gap_ms", "error", "ended_at"}
        assert stream["backend"] == "be1" and stream["reset"] is False and stream["error"] is None, stream
        assert stream["ended_at"] is None, stream
        assert stream["lines"] >= 25 and stream["max_gap_ms"] < 500, stream


def test_streams_report_resets_when_the_backend_dies(lab, tmp_path):
    server = lab.start_echo("be1")
    ready = tmp_path / "ready.json"
    probe = lab.tcp("--stream", "3", "--streams", "10", "--ready-file", str(ready))
    assert wait_for(ready, probe) == {"backends": {"be1": 10}, "opened": 10}
    time.sleep(0.5)
    killed = time.time()
    kill(server)
    code, result = finish(probe)
    assert code != 0, result
    assert result["opened"] == 10 and result["reset"] == 10 and result["failed_to_open"] == 0, result
    for stream in result["results"]:
        assert stream["backend"] == "be1" and stream["reset"] is True, stream
        assert stream["error"] in ("eof", "reset") and stream["lines"] >= 3, stream
        # When it broke, for a fault test to place it on its timeline.
        assert killed <= stream["ended_at"] <= time.time(), (killed, stream)


def test_streams_report_failures_to_open(lab, tmp_path):
    ready = tmp_path / "ready.json"
    code, result = finish(lab.tcp("--stream", "1", "--streams", "4", "--ready-file", str(ready)))  # no server
    assert code != 0
    assert json.loads(ready.read_text()) == {"backends": {}, "opened": 0}
    assert result["opened"] == 0 and result["failed_to_open"] == 4 and result["reset"] == 0, result
    assert result["results"] == [{"backend": None, "lines": 0, "reset": False, "max_gap_ms": 0.0, "error": "refused",
                                  "ended_at": None}] * 4


# --- argument checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--every", "20"], "--every and --duration go together"),
    (["--duration", "2"], "--every and --duration go together"),
    (["--every", "0", "--duration", "2"], "must be positive"),
    (["--every", "20", "--duration", "2", "--stream", "1"], "--every cannot be combined with --stream"),
    (["--every", "20", "--duration", "2", "--count", "5"], "--count does not apply to --every"),
    (["--streams", "3"], "--streams needs --stream"),
    (["--streams", "3", "--stream", "1", "--proto", "udp"], "--stream needs --proto tcp"),
    (["--streams", "0", "--stream", "1"], "--streams must be at least 1"),
    (["--stream", "1", "--ready-file", "/nonexistent/ready"], "--ready-file needs --streams"),
])
def test_bad_argument_combinations(args, message):
    run = subprocess.run([sys.executable, str(PROBE), "--target", "127.0.0.1", *args],
                         capture_output=True, text=True, timeout=10, check=False)
    assert run.returncode == 2 and message in run.stderr, run.stderr
