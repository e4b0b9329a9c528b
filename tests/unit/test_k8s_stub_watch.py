"""Watch semantics of the API stand-in that a long-running watcher relies on: bookmarks, and an
open watch of a quiet resource that does not expire while other resources change."""

from __future__ import annotations

import json
import pathlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import K8sAuth, api_client  # noqa: E402
from lab.k8s_stub import FakeApiServer  # noqa: E402

LAB = REPO / "lab/k8s_stub/fixtures/lab"


@pytest.fixture
def small(tmp_path: pathlib.Path) -> Iterator[tuple[FakeApiServer, client.CoreV1Api]]:
    with FakeApiServer(fixtures=LAB, history=5) as api:
        yield api, client.CoreV1Api(api_client(K8sAuth(kubeconfig=str(api.write_kubeconfig(tmp_path / "kc")))))


def raw_watch(core: client.CoreV1Api, **kwargs: Any) -> list[dict[str, Any]]:
    response = core.list_node(watch=True, _preload_content=False, **kwargs)
    return [json.loads(line) for line in response.data.decode().splitlines() if line.strip()]


def test_a_watch_that_times_out_ends_with_a_bookmark_of_the_current_version(small):
    api, core = small
    start = core.list_node().metadata.resource_version
    core.patch_namespaced_service("echo", "default", {"metadata": {"labels": {"x": "1"}}})
    events = raw_watch(core, resource_version=start, timeout_seconds=1, allow_watch_bookmarks=True)
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) == api.store.rv > int(start)
    assert raw_watch(core, resource_version=start, timeout_seconds=1) == []  # only when asked for


def test_an_open_watch_of_a_quiet_resource_outlives_the_history_of_others(small):
    _api, core = small
    start = core.list_node().metadata.resource_version
    found: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: found.extend(raw_watch(core, resource_version=start, timeout_seconds=3)))
    reader.start()
    time.sleep(0.3)
    for index in range(12):  # more than the history of 5
        core.patch_namespaced_service("echo", "default", {"metadata": {"labels": {"n": str(index)}}})
        time.sleep(0.02)
    core.patch_node("node1", {"metadata": {"labels": {"seen": "yes"}}})
    reader.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in found] == [("MODIFIED", "node1")]
    # A watch that starts from that old version is still gone, as on the real API.
    assert raw_watch(core, resource_version=start, timeout_seconds=1)[0]["object"]["code"] == 410


def test_deletion_with_a_finalizer_is_a_modification_then_a_deletion(small):
    _api, core = small
    core.create_namespaced_service("team-a", {"metadata": {"name": "held", "finalizers": ["portico.io/vip"]},
                                              "spec": {"ports": [{"port": 80}]}})
    start = core.list_namespaced_service("team-a").metadata.resource_version
    core.delete_namespaced_service("held", "team-a")
    core.patch_namespaced_service("held", "team-a", {"metadata": {"finalizers": None}},
                                  _content_type="application/merge-patch+json")
    response = core.list_namespaced_service("team-a", watch=True, resource_version=start, timeout_seconds=1, _preload_content=False)
    events = [json.loads(line) for line in response.data.decode().splitlines() if line.strip()]
    shape = [(e["type"], e["object"]["metadata"]["name"], bool(e["object"]["metadata"].get("deletionTimestamp"))) for e in events]
    assert shape == [("MODIFIED", "held", True), ("DELETED", "held", True)]
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) > int(events[0]["object"]["metadata"]["resourceVersion"])


def test_a_streaming_list_sends_the_objects_then_a_marked_bookmark(small):
    _api, core = small
    events = raw_watch(core, send_initial_events=True, allow_watch_bookmarks=True, resource_version_match="NotOlderThan",
                       timeout_seconds=1)
    assert [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"] == ["node1", "node2", "node3"]
    marker = next(e for e in events if e["type"] == "BOOKMARK")
    assert marker["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert events.index(marker) == 3
