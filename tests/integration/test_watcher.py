"""On-demand reconcile end to end: bin/portico-watch and the EDA source plugin against the
Kubernetes API stand-in (started as `python -m lab.k8s_stub`), changes made with the official
client, and a recording command in place of ansible-playbook."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from kubernetes import client

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "lab/k8s_stub/fixtures/lab"
PLUGIN = REPO / "collections/ansible_collections/portico/gateway/extensions/eda/plugins/event_source/k8s_services.py"
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import K8sAuth, api_client  # noqa: E402

# Appends one JSON line per run: when, what PORTICO_* said, and the payload file. Fails while
# the flag file exists, so tests can make the "apply" fail.
RECORDER = textwrap.dedent("""\
    import json, os, pathlib, sys, time
    out, flag = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    rc = 1 if flag.exists() else 0
    record = {"t": time.time(), "changed": json.loads(os.environ["PORTICO_CHANGED"]),
              "full": os.environ["PORTICO_FULL"] == "1", "rc": rc,
              "payload": json.loads(pathlib.Path(os.environ["PORTICO_CHANGED_FILE"]).read_text())}
    with out.open("a") as f:
        f.write(json.dumps(record) + "\\n")
    sys.exit(rc)
""")

# Runs the EDA plugin as ansible-rulebook does (runpy, no collection loader, no PYTHONPATH) and
# prints every event it queues.
EDA_DRIVER = textwrap.dedent("""\
    import asyncio, json, logging, runpy, signal, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    plugin = runpy.run_path(sys.argv[1])
    async def run():
        events = asyncio.Queue()
        task = asyncio.create_task(plugin["main"](events, json.loads(sys.argv[2])))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        while True:
            get = asyncio.create_task(events.get())
            done, _ = await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
            if get in done:
                print(json.dumps({"t": time.time(), "event": get.result()}), flush=True)
            if task in done:
                get.cancel()
                error = None if task.cancelled() else task.exception()
                print(json.dumps({"end": repr(error)}), flush=True)
                return
    asyncio.run(run())
""")


def lb_service(name: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "selector": {"app": "echo"},
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def stub(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """The stand-in on a free port; yields its kubeconfig."""
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "lab.k8s_stub", "--port", "0", "--fixtures", str(LAB),
                             "--kubeconfig", str(kubeconfig)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening" in line, line
        yield kubeconfig
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def core(stub: pathlib.Path) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(K8sAuth(kubeconfig=str(stub))))


@pytest.fixture
def discovery(stub: pathlib.Path) -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api_client(K8sAuth(kubeconfig=str(stub))))


class Watcher:
    """bin/portico-watch with the recorder as its command."""

    def __init__(self, tmp: pathlib.Path, kubeconfig: pathlib.Path):
        self.tmp, self.kubeconfig = tmp, kubeconfig
        self.out, self.flag, self.log = tmp / "runs.jsonl", tmp / "fail", tmp / "watch.log"
        (tmp / "recorder.py").write_text(RECORDER)
        self.proc: subprocess.Popen | None = None

    def command(self, *args: str) -> list[str]:
        recorder = f"{sys.executable} {self.tmp / 'recorder.py'} {self.out} {self.flag}"
        return [sys.executable, str(REPO / "bin/portico-watch"), "--kubeconfig", str(self.kubeconfig),
                "--command", recorder, *args]

    def start(self, *args: str) -> "Watcher":
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(self.command(*args), cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.log.read_text().count("watching from resourceVersion") >= 3 and self.runs(),
                 20, f"the watcher to start:\n{self.log.read_text()}")
        return self

    def runs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def runs_after(self, since: float) -> list[dict[str, Any]]:
        return [run for run in self.runs() if run["t"] > since]

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


@pytest.fixture
def watcher(tmp_path: pathlib.Path, stub: pathlib.Path) -> Iterator[Watcher]:
    started = Watcher(tmp_path, stub)
    yield started
    if started.proc is not None and started.proc.poll() is None:
        assert started.stop() == 0, started.log.read_text()  # SIGTERM is a clean exit


def test_a_new_service_triggers_one_run_within_a_second(watcher: Watcher, core: client.CoreV1Api):
    watcher.start()
    assert watcher.runs()[0]["full"] and watcher.runs()[0]["payload"]["reason"] == "full reconcile (start)"
    before = time.time()
    core.create_namespaced_service("default", lb_service("web"))
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    latency = run["t"] - before
    print(f"\nwatcher latency, Service created -> command started: {latency * 1000:.0f} ms")
    assert latency < 1.0
    assert run["changed"] == ["lab/default/web"] and not run["full"]
    assert run["payload"]["reasons"] == {"lab/default/web": ["Service added"]}
    time.sleep(1.0)
    assert len(watcher.runs_after(before)) == 1  # one change, one run
    assert "trigger 2 attempt 1: 1 key(s)" in watcher.log.read_text()


def test_a_state_dir_that_does_not_exist_yet_is_made(watcher: Watcher, core: client.CoreV1Api):
    state = watcher.tmp / "not" / "there"
    watcher.start("--state-dir", str(state))  # its first run writes PORTICO_CHANGED_FILE there
    assert watcher.runs()[0]["payload"]["reason"] == "full reconcile (start)"
    assert state.is_dir() and state.stat().st_mode & 0o777 == 0o700


def test_a_burst_is_debounced_and_every_key_is_covered(watcher: Watcher, core: client.CoreV1Api):
    watcher.start()
    before = time.time()
    for index in range(20):
        core.create_namespaced_service("default", lb_service(f"burst-{index}"))
    wanted = {f"lab/default/burst-{index}" for index in range(20)}
    runs = wait_for(lambda: (r := watcher.runs_after(before)) and set().union(*(x["changed"] for x in r)) >= wanted and r,
                    10, "every burst key")
    time.sleep(0.8)
    assert len(watcher.runs_after(before)) <= 3, watcher.runs_after(before)


def test_a_storm_waits_at_most_the_cap(watcher: Watcher, core: client.CoreV1Api):
    watcher.start()
    before = time.time()
    for index in range(30):  # one change every 0.1 s for 3 s: never quiet for 0.3 s
        core.patch_namespaced_service("echo", "default", {"metadata": {"annotations": {"portico.io/pool": f"p{index}"}}})
        time.sleep(0.1)
    time.sleep(1.0)  # the last changes settle (0.3 s) and run
    runs = watcher.runs_after(before)
    print(f"\nstorm of 30 changes over 3 s: runs at {[round(r['t'] - before, 2) for r in runs]} s")
    assert runs[0]["t"] - before < 2.5  # the first run did not wait for the storm to end
    assert 2 <= len(runs) <= 4, runs
    assert all(run["changed"] == ["lab/default/echo"] for run in runs)


def test_a_status_only_write_does_not_trigger(watcher: Watcher, core: client.CoreV1Api):
    watcher.start()
    before = time.time()
    core.patch_namespaced_service_status("echo", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.77"}]}}})
    time.sleep(1.5)
    assert watcher.runs_after(before) == []
    # The watcher is alive: a real change right after does trigger.
    core.patch_namespaced_service("echo", "default", {"metadata": {"annotations": {"portico.io/pool": "public"}}})
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    assert run["payload"]["reasons"] == {"lab/default/echo": ["Service annotations changed"]}


def test_a_failing_command_is_retried_with_back_off(watcher: Watcher, core: client.CoreV1Api):
    watcher.start("--backoff-initial-s", "0.5")
    watcher.flag.touch()
    before = time.time()
    core.create_namespaced_service("default", lb_service("flaky"))
    failed = wait_for(lambda: len(watcher.runs_after(before)) >= 3, 10, "three failed runs")
    watcher.flag.unlink()
    runs = wait_for(lambda: (r := watcher.runs_after(before)) and r[-1]["rc"] == 0 and r, 10, "a successful retry")
    assert [r["rc"] for r in runs] == [1, 1, 1, 0] and all(r["changed"] == ["lab/default/flaky"] for r in runs)
    assert [r["payload"]["attempt"] for r in runs] == [1, 2, 3, 4]
    gaps = [b["t"] - a["t"] for a, b in zip(runs, runs[1:])]
    assert 0.4 < gaps[0] < 0.9 and 0.9 < gaps[1] < 1.4 and 1.9 < gaps[2] < 2.5, gaps  # 0.5, 1, 2 s
    assert "FAILED, retry in 0.5s" in watcher.log.read_text() and failed
    time.sleep(1.0)
    assert len(watcher.runs_after(before)) == 4  # nothing left to retry


def test_endpointslice_scale_triggers_and_unrelated_slices_do_not(watcher: Watcher, core: client.CoreV1Api,
                                                                  discovery: client.DiscoveryV1Api):
    watcher.start()
    before = time.time()
    core.create_namespaced_service("default", {"metadata": {"name": "api"}, "spec": {"ports": [{"port": 80}]}})
    unrelated = {"metadata": {"name": "api-abcde", "labels": {"kubernetes.io/service-name": "api"}}, "addressType": "IPv4",
                 "endpoints": [{"addresses": ["198.19.1.50"], "conditions": {"ready": True}}], "ports": [{"port": 80}]}
    discovery.create_namespaced_endpoint_slice("default", unrelated)
    time.sleep(1.2)
    assert watcher.runs_after(before) == []
    echo = discovery.read_namespaced_endpoint_slice("echo-8kq2w", "default", _preload_content=False)
    endpoints = json.loads(echo.data)["endpoints"]
    endpoints.append({"addresses": ["198.19.3.20"], "conditions": {"ready": True}, "nodeName": "node3"})  # scaled up
    discovery.patch_namespaced_endpoint_slice("echo-8kq2w", "default", {"endpoints": endpoints})
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    assert run["payload"]["reasons"] == {"lab/default/echo": ["EndpointSlice echo-8kq2w changed"]}


def test_node_readiness_triggers_and_heartbeats_do_not(watcher: Watcher, core: client.CoreV1Api):
    watcher.start()
    before = time.time()
    heartbeat = {"type": "Ready", "status": "True", "lastHeartbeatTime": "2030-01-01T00:00:00Z"}
    core.patch_node_status("node2", {"status": {"conditions": [heartbeat]}})
    time.sleep(1.2)
    assert watcher.runs_after(before) == []
    core.patch_node_status("node2", {"status": {"conditions": [{**heartbeat, "status": "False"}]}})
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    assert run["changed"] == ["lab//node2"] and run["payload"]["reasons"] == {"lab//node2": ["Node ready changed"]}


def test_deleting_a_service_triggers_and_sigterm_exits_cleanly(watcher: Watcher, core: client.CoreV1Api):
    watcher.start()
    before = time.time()
    core.delete_namespaced_service("dns", "default")
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    assert run["payload"]["reasons"] == {"lab/default/dns": ["Service deleted"]}
    started = time.monotonic()
    assert watcher.stop() == 0
    assert time.monotonic() - started < 5 and "SIGTERM: stopping" in watcher.log.read_text()


def test_once_runs_one_full_reconcile_and_reports_its_result(tmp_path: pathlib.Path):
    once = Watcher(tmp_path, tmp_path / "no-kubeconfig-needed")
    assert subprocess.run(once.command("--once"), capture_output=True, check=False).returncode == 0
    once.flag.touch()
    assert subprocess.run(once.command("--once"), capture_output=True, check=False).returncode == 1
    assert [(r["full"], r["changed"], r["rc"]) for r in once.runs()] == [(True, [], 0), (True, [], 1)]


# --- the EDA source plugin --------------------------------------------------------------------


def read_lines(stream: Any) -> "queue.Queue[str]":
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def test_eda_source_puts_debounced_events_on_the_queue(tmp_path: pathlib.Path, stub: pathlib.Path, core: client.CoreV1Api):
    source = tmp_path / "k8s_services.yml"
    source.write_text(json.dumps({"plugin": "portico.gateway.k8s_services", "clusters": [{"name": "lab", "kubeconfig": str(stub)}]}))
    (tmp_path / "driver.py").write_text(EDA_DRIVER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the plugin must find module_utils itself
    args = {"inventory_source": str(source), "quiet_ms": 300, "max_wait_ms": 2000, "resync_s": "300"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(PLUGIN), json.dumps(args)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, log = read_lines(proc.stdout), read_lines(proc.stderr)
    try:
        first = json.loads(lines.get(timeout=20))
        assert first["event"] == {"portico": {"changed": [], "full": True, "reason": "full reconcile (start)",
                                              "reasons": {}, "trigger": 1}}
        for _ in range(3):  # Services, EndpointSlices, Nodes
            while "watching from resourceVersion" not in log.get(timeout=20):
                pass
        before = time.time()
        core.create_namespaced_service("default", lb_service("eda"))
        core.patch_namespaced_service_status("echo", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}})
        event = json.loads(lines.get(timeout=5))
        assert event["t"] - before < 1.0
        assert event["event"]["portico"]["changed"] == ["lab/default/eda"] and not event["event"]["portico"]["full"]
        with pytest.raises(queue.Empty):
            lines.get(timeout=1.0)  # the status write made no event
        proc.send_signal(signal.SIGTERM)
        assert json.loads(lines.get(timeout=10)) == {"end": "None"}  # cancelled cleanly
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
