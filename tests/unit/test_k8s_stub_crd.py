"""CustomResourceDefinitions and custom resources on the API stand-in, through the official client
(typed ApiextensionsV1Api/CustomObjectsApi and the DynamicClient) and raw HTTP: what the real
API server accepts, what it refuses (422 with the field's path), and what it does to objects."""

from __future__ import annotations

import copy
import json
import pathlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.dynamic import DynamicClient

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from lab.k8s_stub import ApiError, FakeApiServer  # noqa: E402
from lab.k8s_stub.testing import WIDGETS_CRD, request  # noqa: E402

LAB = REPO / "lab/k8s_stub/fixtures/lab"
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(fixtures=[LAB, WIDGETS_CRD]) as api:
        yield api


@pytest.fixture
def api_client(server: FakeApiServer, tmp_path: pathlib.Path) -> client.ApiClient:
    return config.new_client_from_config(str(server.write_kubeconfig(tmp_path / "kubeconfig")))


@pytest.fixture
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def ext(api_client: client.ApiClient) -> client.ApiextensionsV1Api:
    return client.ApiextensionsV1Api(api_client)


def widget(object_name: str = "w1", version: str = VERSION, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{version}", "kind": "Widget", "metadata": {"name": object_name},
            "spec": {"listeners": [{"name": "http", "port": 80}], **spec}}


def create(custom: client.CustomObjectsApi, body: dict[str, Any], namespace: str = "default", version: str = VERSION) -> dict[str, Any]:
    return custom.create_namespaced_custom_object(GROUP, version, namespace, PLURAL, body)


def refusal(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as err:
        call(*args, **kwargs)
    return {"code": err.value.status, **json.loads(err.value.body)}


# --- the definition ----------------------------------------------------------------------------

def test_a_crd_is_established_with_its_accepted_names(ext):
    crd = ext.read_custom_resource_definition("widgets.example.com")
    assert {c.type: c.status for c in crd.status.conditions} == {"NamesAccepted": "True", "Established": "True"}
    names = crd.status.accepted_names
    assert (names.kind, names.plural, names.singular, names.short_names, names.list_kind) == ("Widget", "widgets", "widget", ["wd"], "WidgetList")
    assert crd.status.stored_versions == ["v1"] and crd.metadata.generation == 1
    assert crd.metadata.finalizers == ["customresourcecleanup.apiextensions.k8s.io"]
    assert "widgets.example.com" in [c.metadata.name for c in ext.list_custom_resource_definition().items]


def test_discovery_serves_versions_names_and_the_status_subresource(server):
    group = request(f"{server.url}/apis/example.com").body
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"] and group["preferredVersion"]["version"] == "v1"
    resources = {r["name"]: r for r in request(f"{server.url}/apis/example.com/v1").body["resources"]}
    assert set(resources) == {"widgets", "widgets/status"}
    assert (resources["widgets"]["shortNames"], resources["widgets"]["categories"], resources["widgets"]["namespaced"]) == (
        ["wd"], ["examples"], True)
    assert set(resources["widgets"]["verbs"]) >= {"create", "get", "list", "watch", "patch", "update", "delete", "deletecollection"}
    assert "example.com" in [g["name"] for g in request(f"{server.url}/apis").body["groups"]]
    aggregated = request(f"{server.url}/apis", accept="application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    assert aggregated.headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    entry = next(i for i in aggregated.body["items"] if i["metadata"]["name"] == "example.com")
    v1 = next(r for r in entry["versions"][0]["resources"] if r["resource"] == "widgets")
    assert entry["versions"][0]["version"] == "v1" and v1["scope"] == "Namespaced" and v1["subresources"][0]["subresource"] == "status"
    openapi = request(f"{server.url}/openapi/v3").body["paths"]["apis/example.com/v1"]["serverRelativeURL"]
    schemas = request(server.url + openapi).body["components"]["schemas"]
    assert schemas["com.example.v1.Widget"]["properties"]["spec"]["properties"]["mode"]["enum"] == ["Active", "Standby"]


def test_a_crd_created_through_the_api_is_served_and_goes_with_its_objects(server, ext, custom, api_client, tmp_path):
    definition = yaml.safe_load(WIDGETS_CRD.read_text())
    definition["metadata"]["name"] = "gadgets.example.org"
    definition["spec"].update(group="example.org", scope="Cluster",
                              names={"plural": "gadgets", "singular": "gadget", "kind": "Gadget"})
    definition["spec"]["versions"] = definition["spec"]["versions"][:1]
    created = ext.create_custom_resource_definition(definition)
    assert created.metadata.uid and created.spec.names.list_kind == "GadgetList"
    dynamic = DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
    gadgets = dynamic.resources.get(api_version="example.org/v1", kind="Gadget")
    assert gadgets.namespaced is False
    gadgets.create(body={"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g1"},
                         "spec": {"listeners": [{"name": "a", "port": 1}]}})
    assert gadgets.get(name="g1").spec.mode == "Active"
    ext.delete_custom_resource_definition("gadgets.example.org")
    assert request(f"{server.url}/apis/example.org/v1/gadgets").status == 404
    assert "example.org" not in [g["name"] for g in request(f"{server.url}/apis").body["groups"]]
    assert server.store.count("gadgets.example.org") == 0


@pytest.mark.parametrize("change, field, message", [
    ({"metadata": {"name": "Bad_Name"}}, "metadata.name", 'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'),
    ({"spec": None}, "spec", "Required value"),
    ({"listeners": [{"name": "http", "port": 70000}]}, "spec.listeners[0].port",
     "Invalid value: 70000: spec.listeners[0].port in body should be less than or equal to 65535"),
    ({"listeners": [{"name": "http", "port": 0}]}, "spec.listeners[0].port", "in body should be greater than or equal to 1"),
    ({"listeners": [{"name": "http"}]}, "spec.listeners[0].port", "Required value"),
    ({"listeners": []}, "spec.listeners", "spec.listeners in body should have at least 1 items"),
    ({"listeners": [{"name": str(i), "port": 80} for i in range(5)]}, "spec.listeners", "Too many: 5: must have at most 4 items"),
    ({"listeners": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "spec.listeners[1]",
     'Duplicate value: map[string]interface {}{"name":"a"}'),
    ({"listeners": [{"name": "a", "port": 80, "protocol": "SCTP"}]}, "spec.listeners[0].protocol",
     'Unsupported value: "SCTP": supported values: "TCP", "UDP"'),
    ({"mode": "Bogus"}, "spec.mode", 'Unsupported value: "Bogus": supported values: "Active", "Standby"'),
    ({"replicas": "3"}, "spec.replicas", 'Invalid value: "string": spec.replicas in body must be of type integer: "string"'),
    ({"replicas": 11}, "spec.replicas", "should be less than or equal to 10"),
    ({"weight": 0}, "spec.weight", "Invalid value: 0: spec.weight in body should be greater than 0"),
    ({"address": "198.51.100.300"}, "spec.address", 'spec.address in body must be of type ipv4: "198.51.100.300"'),
    ({"address": "198.51.100.3", "address6": "2001:db8::zz"}, "spec.address6", "must be of type ipv6"),
    ({"hostname": "-bad-.example"}, "spec.hostname", "must be of type hostname"),
    ({"name": "Bad"}, "spec.name", "spec.name in body should match '^[a-z][a-z0-9-]*$'"),
    ({"name": "a" * 21}, "spec.name", "Too long: may not be more than 20 bytes"),
    ({"port": True}, "spec.port", "must be of type integer,string"),
    ({"tags": ["x", "y", "x"]}, "spec.tags[2]", 'Duplicate value: "x"'),
    ({"labels": {"tier": 1}}, "spec.labels.tier", "must be of type string"),
    ({"backend": {}}, "spec.backend", "must validate one and only one schema (oneOf)"),
    ({"backend": {"service": "s", "ip": "198.51.100.1"}}, "spec.backend", "one and only one schema (oneOf)"),
    ({"address6": "2001:db8::1"}, "spec.address6", 'Invalid value: "object": an IPv6 address needs an IPv4 address too'),
])
def test_an_invalid_widget_is_refused_with_the_fields_path(custom, change, field, message):
    body = widget()
    if "metadata" in change:
        body["metadata"].update(change["metadata"])
    elif "spec" in change:
        del body["spec"]
    else:
        body["spec"].update(change)
    status = refusal(create, custom, body)
    assert (status["code"], status["reason"], status["details"]["kind"], status["details"]["group"]) == (422, "Invalid", "Widget", GROUP)
    causes = {c["field"]: c["message"] for c in status["details"]["causes"]}
    assert field in causes and message in causes[field], causes
    assert status["message"].startswith(f'Widget.example.com "{body["metadata"]["name"]}" is invalid: ')
    assert f"{field}: {causes[field]}" in status["message"]


def test_a_valid_widget_with_every_feature_is_accepted(custom):
    body = widget(mode="Standby", replicas=10, weight=0.5, address="198.51.100.3", address6="2001:db8::1", hostname="lb.example.org",
                  name="edge-1", port="http", tags=["x", "y"], labels={"tier": "web"}, backend={"service": "web"},
                  listeners=[{"name": "a", "port": 65535, "protocol": "UDP"}, {"name": "b", "port": 1}])
    created = create(custom, body)
    assert created["spec"]["port"] == "http" and created["spec"]["listeners"][1]["protocol"] == "TCP"
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert (created["metadata"]["name"], created["spec"]["name"]) == ("w1", "edge-1")


def test_an_error_message_lists_every_problem(custom):
    status = refusal(create, custom, widget(mode="Bogus", replicas=-1))
    assert sorted(c["field"] for c in status["details"]["causes"]) == ["spec.mode", "spec.replicas"]
    assert status["message"] == ('Widget.example.com "w1" is invalid: [spec.mode: Unsupported value: "Bogus": supported values: '
                                 '"Active", "Standby", spec.replicas: Invalid value: -1: spec.replicas in body should be greater '
                                 'than or equal to 0]')


def test_unknown_fields_are_pruned_and_defaults_set(server, custom):
    body = widget(foo="bar", extra={"anything": {"goes": [1]}}, listeners=[{"name": "a", "port": 80, "bar": 1}], replicas=None)
    body["metadata"]["bogus"] = True
    body["status"] = {"phase": "Ready"}
    reply = request(f"{server.url}/apis/example.com/v1/namespaces/default/widgets", "POST", body)
    assert reply.status == 201
    assert sorted(reply.warnings) == ['299 - "unknown field \\"metadata.bogus\\""', '299 - "unknown field \\"spec.foo\\""',
                                      '299 - "unknown field \\"spec.listeners[0].bar\\""']
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert stored["spec"] == {"listeners": [{"name": "a", "port": 80, "protocol": "TCP"}], "extra": {"anything": {"goes": [1]}},
                              "mode": "Active", "replicas": 1}
    assert "bogus" not in stored["metadata"] and "status" not in stored  # create cannot set the status


def test_strict_field_validation_refuses_unknown_fields(server):
    url = f"{server.url}/apis/example.com/v1/namespaces/default/widgets?fieldValidation=Strict"
    reply = request(url, "POST", widget(foo="bar"))
    assert reply.status == 400 and reply.body["message"] == (
        'Widget in version "v1" cannot be handled as a Widget: strict decoding error: unknown field "spec.foo"')
    quiet = request(url.replace("Strict", "Ignore"), "POST", widget(foo="bar"))
    assert quiet.status == 201 and quiet.warnings == [] and "foo" not in quiet.body["spec"]


def test_the_status_subresource_rules_and_generation(custom):
    create(custom, widget())
    spec_change = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1",
                                                        {"spec": {"replicas": 2}, "status": {"phase": "Ignored"}})
    assert spec_change["metadata"]["generation"] == 2 and "status" not in spec_change
    status = {"status": {"phase": "Ready", "observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]},
              "spec": {"replicas": 5}, "metadata": {"labels": {"sneaky": "yes"}}}
    after = custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w1", status)
    assert after["status"]["phase"] == "Ready" and after["spec"]["replicas"] == 2 and "labels" not in after["metadata"]
    assert after["metadata"]["generation"] == 2
    labelled = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 2 and labelled["metadata"]["labels"] == {"a": "b"}
    assert labelled["status"]["phase"] == "Ready"
    replaced = custom.replace_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w1", {**labelled, "status": {}})
    assert replaced["status"] == {} and replaced["metadata"]["generation"] == 2


def test_the_status_is_validated_too(custom):
    create(custom, widget())
    status = refusal(custom.patch_namespaced_custom_object_status, GROUP, VERSION, "default", PLURAL, "w1",
                     {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}})
    assert status["code"] == 422 and status["details"]["causes"][0]["field"] == "status.conditions[0].status"


def test_objects_are_read_at_every_served_version(server, custom):
    create(custom, widget(replicas=3))
    beta = custom.get_namespaced_custom_object(GROUP, "v1beta1", "default", PLURAL, "w1")
    assert beta["apiVersion"] == "example.com/v1beta1" and beta["spec"]["replicas"] == 3
    assert server.get("Widget", "default", "w1")["apiVersion"] == "example.com/v1"  # stored at the storage version
    create(custom, widget("w2", "v1beta1"), version="v1beta1")
    assert [w["apiVersion"] for w in custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]] == [
        "example.com/v1", "example.com/v1"]
    reply = request(f"{server.url}/apis/example.com/v1beta1/namespaces/default/widgets/w2")
    assert reply.body["apiVersion"] == "example.com/v1beta1" and reply.warnings == ['299 - "example.com/v1beta1 Widget is deprecated"']
    assert request(f"{server.url}/apis/example.com/v2/namespaces/default/widgets/w2").status == 404


def test_merge_and_json_patches_apply_and_strategic_merge_is_refused(server, custom):
    create(custom, widget())
    url = f"{server.url}/apis/example.com/v1/namespaces/default/widgets/w1"
    merged = request(url, "PATCH", {"spec": {"tags": ["a"]}}, MERGE)
    assert merged.status == 200 and merged.body["spec"]["tags"] == ["a"]
    ops = [{"op": "test", "path": "/spec/tags/0", "value": "a"}, {"op": "add", "path": "/spec/tags/-", "value": "b"}]
    assert request(url, "PATCH", ops, "application/json-patch+json").body["spec"]["tags"] == ["a", "b"]
    strategic = request(url, "PATCH", {"spec": {"tags": ["c"]}}, "application/strategic-merge-patch+json")
    assert strategic.status == 415 and strategic.body["reason"] == "UnsupportedMediaType"
    assert strategic.body["message"] == ("the body of the request was in an unknown format - accepted media types include: "
                                         "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")


def test_server_side_apply_owns_fields_and_reports_conflicts(server, custom):
    url = f"{server.url}/apis/example.com/v1/namespaces/default/widgets/w1"
    config_a = ("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\n"
                "spec:\n  replicas: 2\n  tags: [a]\n  listeners: [{name: http, port: 80}]\n")
    created = request(url + "?fieldManager=tool-a", "PATCH", config_a, APPLY)
    assert created.status == 201 and created.body["spec"]["mode"] == "Active"
    managers = {(m["manager"], m["operation"]) for m in created.body["metadata"]["managedFields"]}
    assert managers == {("tool-a", "Apply")}
    assert request(url, "PATCH", config_a, APPLY).status == 400  # apply needs a field manager
    config_b = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {replicas: 3}\n"
    clash = request(url + "?fieldManager=tool-b", "PATCH", config_b, APPLY)
    assert clash.status == 409 and clash.body["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "tool-a" using example.com/v1', "field": ".spec.replicas"}]
    forced = request(url + "?fieldManager=tool-b&force=true", "PATCH", config_b, APPLY)
    assert forced.status == 200 and forced.body["spec"]["replicas"] == 3
    without_tags = config_a.replace("  tags: [a]\n", "").replace("replicas: 2", "replicas: 3")
    reapplied = request(url + "?fieldManager=tool-a", "PATCH", without_tags, APPLY).body
    assert "tags" not in reapplied["spec"] and reapplied["spec"]["replicas"] == 3  # co-owned now, so kept
    typo = request(url + "?fieldManager=tool-a", "PATCH", config_b.replace("replicas", "replicaz"), APPLY)
    assert typo.status == 400 and ".spec.replicaz: field not declared in schema" in typo.body["message"]


def test_a_cel_rule_keeps_a_field_immutable(custom):
    create(custom, widget(**{"class": "gold"}))
    status = refusal(custom.patch_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"class": "silver"}})
    assert status["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.class",
                                            "message": 'Invalid value: "string": class is immutable'}]
    other = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"replicas": 4}})
    assert other["spec"]["class"] == "gold" and other["spec"]["replicas"] == 4


def test_a_tightened_schema_ratchets_unchanged_values(ext, custom):
    create(custom, widget(name="a-rather-long-name"))
    crd = ext.read_custom_resource_definition("widgets.example.com").to_dict()
    patch = [{"op": "replace", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/name/maxLength", "value": 5},
             {"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/zone",
              "value": {"type": "string", "default": "lab-a"}}]
    assert crd["metadata"]["generation"] == 1
    updated = ext.patch_custom_resource_definition("widgets.example.com", patch)
    assert updated.metadata.generation == 2
    kept = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"replicas": 2}})
    assert kept["spec"]["name"] == "a-rather-long-name" and kept["spec"]["zone"] == "lab-a"  # the new default, when read
    status = refusal(custom.patch_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"name": "another-long"}})
    assert status["details"]["causes"][0]["message"] == "Too long: may not be more than 5 bytes"
    assert refusal(create, custom, widget("w2", name="too-long"))["code"] == 422


def test_selectors_and_paging_over_custom_resources(custom):
    for index in range(7):
        body = widget(f"w{index}")
        body["metadata"]["labels"] = {"tier": "web" if index % 2 else "db"}
        create(custom, body)
    def names(**kwargs: Any) -> list[str]:
        return [w["metadata"]["name"] for w in custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, **kwargs)["items"]]
    assert names(label_selector="tier=web") == ["w1", "w3", "w5"]
    assert names(field_selector="metadata.name=w4") == ["w4"]
    assert refusal(custom.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, field_selector="spec.mode=Active")["code"] == 400
    first = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, limit=3)
    assert [w["metadata"]["name"] for w in first["items"]] == ["w0", "w1", "w2"] and first["metadata"]["remainingItemCount"] == 4
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w4")  # the pages still show the first page's moment
    create(custom, widget("w3a"))
    second = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, limit=3, _continue=first["metadata"]["continue"])
    third = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, limit=3, _continue=second["metadata"]["continue"])
    assert [w["metadata"]["name"] for w in second["items"] + third["items"]] == ["w3", "w4", "w5", "w6"]
    assert "continue" not in third["metadata"]


def test_watching_custom_resources(custom):
    seen: list[tuple[str, str, Any]] = []
    stream = watch.Watch()

    def act() -> None:
        create(custom, widget())
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w1", {"status": {"phase": "Ready"}})
        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")

    start = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["metadata"]["resourceVersion"]
    writer = threading.Thread(target=act)
    writer.start()
    for event in stream.stream(custom.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL,
                               resource_version=start, timeout_seconds=5):
        seen.append((event["type"], event["object"]["metadata"]["name"], (event["object"].get("status") or {}).get("phase")))
        if event["type"] == "DELETED":
            stream.stop()
    writer.join()
    assert seen == [("ADDED", "w1", None), ("MODIFIED", "w1", "Ready"), ("DELETED", "w1", "Ready")]


def test_finalizers_hold_an_object_until_the_last_is_removed(server, custom):
    body = widget()
    body["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    create(custom, body)
    marked = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 0
    assert marked["metadata"]["generation"] == 2
    again = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert again["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    status = refusal(custom.patch_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w1",
                     {"metadata": {"finalizers": ["example.com/a", "example.com/b", "example.com/c"]}})
    assert status["details"]["causes"][0]["field"] == "metadata.finalizers" and "no new finalizers" in status["message"]
    still = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1",
                                                  {"metadata": {"finalizers": ["example.com/b"]}, "spec": {"replicas": 2}})
    assert still["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"] and still["spec"]["replicas"] == 2
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"finalizers": None}})
    assert server.get("Widget", "default", "w1") is None


def test_deleting_a_crd_deletes_its_objects_then_itself(server, ext, custom):
    held = widget("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    create(custom, held)
    create(custom, widget("free"))
    ext.delete_custom_resource_definition("widgets.example.com")
    crd = ext.read_custom_resource_definition("widgets.example.com")
    assert crd.metadata.deletion_timestamp and {c.type: c.status for c in crd.status.conditions}["Terminating"] == "True"
    assert [w["metadata"]["name"] for w in custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]] == ["held"]
    assert refusal(create, custom, widget("late"))["code"] == 405
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "held", {"metadata": {"finalizers": []}})
    assert refusal(ext.read_custom_resource_definition, "widgets.example.com")["code"] == 404
    assert request(f"{server.url}/apis/example.com/v1/namespaces/default/widgets").status == 404


@pytest.mark.parametrize("change, field", [
    (lambda d: d["metadata"].update(name="wrong.example.org"), "metadata.name"),
    (lambda d: d["spec"]["versions"][1].update(storage=True), "spec.versions"),
    (lambda d: d["spec"]["versions"][0].pop("schema"), "spec.versions[0].schema.openAPIV3Schema"),
    (lambda d: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].pop("type"),
     "spec.versions[0].schema.openAPIV3Schema.properties[spec].type"),
    (lambda d: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tags"].update(
        {"x-kubernetes-list-type": "bag"}), "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[tags].x-kubernetes-list-type"),
    (lambda d: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["mode"].update(default="Off"),
     "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[mode].default"),
    (lambda d: d["spec"].update(scope="Global"), "spec.scope"),
    (lambda d: d["spec"].update(conversion={"strategy": "Webhook"}), "spec.conversion.strategy"),
    (lambda d: d["spec"]["versions"][0]["additionalPrinterColumns"][0].update(jsonPath="spec["),
     "spec.versions[0].additionalPrinterColumns[0].jsonPath"),
])
def test_an_invalid_crd_is_refused(ext, change, field):
    definition = yaml.safe_load(WIDGETS_CRD.read_text())
    definition["metadata"]["name"] = "widgets.example.org"
    definition["spec"]["group"] = "example.org"
    change(definition)
    status = refusal(ext.create_custom_resource_definition, definition)
    assert status["code"] == 422 and field in [c["field"] for c in status["details"]["causes"]], status


def test_fixtures_load_crds_first_and_keep_creation_timestamps(tmp_path):
    (tmp_path / "a-widgets.yaml").write_text(yaml.safe_dump_all([
        widget("old"), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "aged", "creationTimestamp": "2020-01-02T03:04:05Z"},
                        "spec": {"ports": [{"port": 80}]}}]))
    (tmp_path / "b-crd.yaml").write_text(WIDGETS_CRD.read_text())
    loaded = FakeApiServer(fixtures=tmp_path)
    assert loaded.get("Widget", "default", "old")["spec"]["mode"] == "Active"
    assert loaded.get("Service", "default", "aged")["metadata"]["creationTimestamp"] == "2020-01-02T03:04:05Z"
    broken = copy.deepcopy(widget("broken", replicas=99))
    (tmp_path / "c-broken.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ApiError) as err:
        FakeApiServer(fixtures=tmp_path)
    assert err.value.code == 422 and "spec.replicas" in err.value.message


def test_tables_follow_the_printer_columns(server, custom):
    create(custom, widget(address="198.51.100.3"))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w1",
                                                 {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    table = request(f"{server.url}/apis/example.com/v1/namespaces/default/widgets",
                    accept="application/json;as=Table;v=v1;g=meta.k8s.io,application/json").body
    assert [(c["name"], c["type"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", 0), ("Mode", "string", 0), ("Replicas", "integer", 0), ("Ready", "string", 0), ("Address", "string", 1),
        ("Age", "date", 0)]
    cells = table["rows"][0]["cells"]
    assert cells[:5] == ["w1", "Active", 1, "True", "198.51.100.3"] and cells[5].endswith("s")
    assert table["rows"][0]["object"]["metadata"]["name"] == "w1"


def test_the_dynamic_client_round_trip(api_client, tmp_path):
    dynamic = DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
    widgets = dynamic.resources.get(api_version="example.com/v1", kind="Widget")
    widgets.create(body=widget(), namespace="default")
    widgets.status.patch(body={"metadata": {"name": "w1"}, "status": {"phase": "Ready"}}, namespace="default",
                         content_type=MERGE)
    got = widgets.get(name="w1", namespace="default")
    assert (got.status.phase, got.spec.listeners[0].protocol) == ("Ready", "TCP")
    assert [w.metadata.name for w in widgets.get(namespace="default").items] == ["w1"]


def test_dry_run_and_generate_name(server, custom):
    dry = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget(), dry_run="All")
    assert dry["spec"]["mode"] == "Active" and server.get("Widget", "default", "w1") is None
    body = widget()
    body["metadata"] = {"generateName": "w-"}
    named = create(custom, body)["metadata"]["name"]
    assert named.startswith("w-") and len(named) == 7 and server.get("Widget", "default", named)


def test_a_crd_whose_names_are_taken_is_not_served(server, ext):
    definition = yaml.safe_load(WIDGETS_CRD.read_text())
    definition["metadata"]["name"] = "gizmos.example.com"
    definition["spec"]["names"] = {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "shortNames": ["wd"]}
    ext.create_custom_resource_definition(definition)
    conditions = {c.type: (c.status, c.reason) for c in ext.read_custom_resource_definition("gizmos.example.com").status.conditions}
    assert conditions == {"NamesAccepted": ("False", "AlreadyInUse"), "Established": ("False", "NotAccepted")}
    assert request(f"{server.url}/apis/example.com/v1/namespaces/default/gizmos").status == 404


def test_delete_preconditions(server, custom):
    uid = create(custom, widget())["metadata"]["uid"]
    url = f"{server.url}/apis/example.com/v1/namespaces/default/widgets/w1"
    stale = request(url, "DELETE", {"preconditions": {"uid": "0000"}})
    assert stale.status == 409 and stale.body["message"].startswith("Precondition failed: UID in precondition: 0000")
    assert request(url, "DELETE", {"preconditions": {"uid": uid}}).body["status"] == "Success"
