#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_service_status
short_description: Write a Service's load balancer IPs (and an Event) back to Kubernetes
version_added: "0.1.0"
description:
  - Sets C(status.loadBalancer.ingress) of a Kubernetes Service to the given IPs, in the given
    order, each with O(ip_mode); an empty list clears it. Only the C(status) subresource is
    written, with a JSON merge patch guarded by the Service's C(resourceVersion) (retried on
    a conflict), so C(kubectl get svc) shows the IP in EXTERNAL-IP.
  - Optionally records a core/v1 Event on the Service (for example why it cannot be served).
    An identical Event (same reason, type and message for the same Service UID) is not
    duplicated; its C(count) and C(lastTimestamp) are bumped instead, as Kubernetes' own
    event recorder does.
  - Runs where the Kubernetes API is reachable, normally the controller (C(delegate_to=localhost)).
author:
  - Portico developers (@portico)
extends_documentation_fragment:
  - portico.gateway.k8s_auth
options:
  namespace:
    description: Namespace of the Service.
    type: str
    required: true
  name:
    description: Name of the Service.
    type: str
    required: true
  ingress:
    description:
      - IP addresses (IPv4 or IPv6) for C(status.loadBalancer.ingress), in order.
      - An empty list clears the status. When omitted, the status is left alone (only O(event) is recorded).
    type: list
    elements: str
  ip_mode:
    description:
      - C(ipMode) of every ingress entry. C(VIP) tells kube-proxy that traffic to the IP may be
        short-circuited inside the cluster; C(Proxy) that it must go through the load balancer.
    type: str
    choices: [VIP, Proxy]
    default: VIP
  event:
    description:
      - A core/v1 Event to record on the Service, with the keys C(type) (C(Normal), the default,
        or C(Warning)), C(reason) (required; short UpperCamelCase such as C(IPAllocated) or
        C(PoolExhausted)) and C(message) (required; a human-readable explanation).
      - A free-form dictionary checked by the module, because Ansible reserves the option name C(message).
    type: dict
  field_manager:
    description: Field manager name sent with writes (shown in the Service's C(managedFields)).
    type: str
    default: portico
  missing_ok:
    description: Succeed without a change when the Service does not exist (it may have just been deleted).
    type: bool
    default: false
  event_repeat:
    description:
      - What to do when an identical Event already exists. C(bump) raises its count as
        Kubernetes' event recorder does (a change); C(once) leaves it, so a periodic sync that
        keeps seeing the same problem stays idempotent.
    type: str
    choices: [bump, once]
    default: bump
notes:
  - Supports check mode (reports what would change, writes nothing) and diff mode (the ingress
    list before and after).
  - Needs RBAC to get Services, patch C(services/status), and list, create and patch Events.
"""

EXAMPLES = r"""
- name: Publish the VIP of default/echo
  portico.gateway.k8s_service_status:
    kubeconfig: /etc/portico/kubeconfig
    namespace: default
    name: echo
    ingress: [198.51.100.10, "2001:db8:100::10"]
  delegate_to: localhost

- name: Say why a Service gets no IP, and clear any stale one
  portico.gateway.k8s_service_status:
    namespace: team-a
    name: web
    ingress: []
    event:
      type: Warning
      reason: PoolExhausted
      message: no free address in pool public for namespace team-a
  delegate_to: localhost
"""

RETURN = r"""
ingress:
  description: C(status.loadBalancer.ingress) after the run (what it would be, in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{"ip": "198.51.100.10", "ipMode": "VIP"}]
found:
  description: Whether the Service exists (false only with O(missing_ok)).
  returned: always
  type: bool
event_created:
  description: A new Event was (or, in check mode, would be) created.
  returned: always
  type: bool
event_updated:
  description: An identical Event existed and its count was (or would be) bumped.
  returned: always
  type: bool
"""

import ipaddress
import json
import socket
import time
from datetime import datetime, timezone
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    K8sAuth,
    K8sConfigError,
    api_client,
)

try:
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError
except ImportError:  # reported through HAS_KUBERNETES
    pass

MERGE_PATCH = "application/merge-patch+json"
CONFLICT_RETRIES = 3  # another writer (e.g. a second controller) may patch the Service in between
EVENT_SOURCE = "portico"
REPORTING_COMPONENT = "portico.io/gateway"


class StatusError(Exception):
    """A failure with a message meant for the user."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_message(err: Any) -> str:
    """The Status message of an API error (the body), else its HTTP reason."""
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(err.reason)


def _call(what: str, func: Any, *args: Any, expect: tuple[int, ...] = (), **kwargs: Any) -> Any:
    """Call the API and return the decoded JSON (raw dicts keep the API's own field names).
    API errors with a status in `expect` are re-raised for the caller; others become StatusError."""
    try:
        response = func(*args, _preload_content=False, **kwargs)
    except ApiException as err:
        if err.status in expect:
            raise
        raise StatusError(f"{what}: {err.status} {_api_message(err)}") from None
    except HTTPError as err:
        raise StatusError(f"{what}: cannot reach the Kubernetes API: {err}") from None
    return json.loads(response.data)


def checked_event(event: dict[str, Any]) -> dict[str, str]:
    """The event option as {type, reason, message}; Ansible cannot check it (it reserves `message`)."""
    unknown = sorted(set(event) - {"type", "reason", "message"})
    if unknown:
        raise StatusError(f"event: unknown key(s) {', '.join(unknown)}; expected type, reason, message")
    checked = {"type": str(event.get("type") or "Normal"), "reason": str(event.get("reason") or ""), "message": str(event.get("message") or "")}
    if checked["type"] not in ("Normal", "Warning"):
        raise StatusError(f"event: type must be Normal or Warning, not {checked['type']!r}")
    missing = [key for key in ("reason", "message") if not checked[key]]
    if missing:
        raise StatusError(f"event: {' and '.join(missing)} required")
    return checked


def desired_ingress(ips: list[str], ip_mode: str) -> list[dict[str, str]]:
    """Normalised, de-duplicated entries in the given order; invalid IPs are refused."""
    entries: list[dict[str, str]] = []
    for text in ips:
        try:
            ip = str(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise StatusError(f"ingress: {text!r} is not an IP address") from None
        if all(entry["ip"] != ip for entry in entries):
            entries.append({"ip": ip, "ipMode": ip_mode})
    return entries


def current_ingress(service: dict[str, Any]) -> list[dict[str, Any]]:
    return ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


def same_ingress(live: list[dict[str, Any]], wanted: list[dict[str, str]]) -> bool:
    """Same IPs in the same order; ipMode compared only where the cluster keeps it.

    API servers without the LoadBalancerIPMode feature drop ipMode, and entries may carry
    other fields (ports): comparing whole entries would patch on every run.
    """
    if [entry.get("ip") for entry in live] != [entry["ip"] for entry in wanted]:
        return False
    return all("ipMode" not in entry or entry["ipMode"] == want["ipMode"] for entry, want in zip(live, wanted))


def read_service(core: Any, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _call(f"get Service {namespace}/{name}", core.read_namespaced_service, name, namespace, expect=(404,))
    except ApiException:
        return None


def write_ingress(core: Any, service: dict[str, Any], wanted: list[dict[str, str]], field_manager: str) -> dict[str, Any]:
    """Merge-patch the status subresource; the resourceVersion makes a concurrent change a 409,
    after which the Service is read again and the patch retried if still needed."""
    namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
    for _attempt in range(CONFLICT_RETRIES):
        patch = {"metadata": {"resourceVersion": service["metadata"]["resourceVersion"]},
                 "status": {"loadBalancer": {"ingress": wanted or None}}}  # null removes the list
        try:
            return _call(f"patch Service {namespace}/{name} status", core.patch_namespaced_service_status, name, namespace, patch,
                         expect=(409,), field_manager=field_manager, _content_type=MERGE_PATCH)
        except ApiException:
            pass  # changed since we read it
        service = read_service(core, namespace, name) or {}
        if not service:
            raise StatusError(f"Service {namespace}/{name} was deleted while its status was being written")
        if current_ingress(service) == wanted:
            return service
    raise StatusError(f"patch Service {namespace}/{name} status: still conflicting after {CONFLICT_RETRIES} attempts")


def find_event(core: Any, service: dict[str, Any], event: dict[str, str]) -> dict[str, Any] | None:
    """An Event Portico already recorded on this Service (by UID) with the same type, reason and message."""
    meta = service["metadata"]
    selector = f"involvedObject.uid={meta['uid']},reason={event['reason']}"
    events = _call(f"list Events in {meta['namespace']}", core.list_namespaced_event, meta["namespace"], field_selector=selector)
    for item in events.get("items") or []:
        if (item.get("message"), item.get("type"), (item.get("source") or {}).get("component")) == (event["message"], event["type"], EVENT_SOURCE):
            return item
    return None


def new_event(service: dict[str, Any], event: dict[str, str]) -> dict[str, Any]:
    meta, now = service["metadata"], _now()
    return {
        "apiVersion": "v1", "kind": "Event",
        # The name scheme of client-go's event recorder: <object>.<hex nanoseconds>.
        "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta["namespace"]},
        "involvedObject": {"kind": "Service", "apiVersion": "v1", "namespace": meta["namespace"], "name": meta["name"],
                           "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
        "type": event["type"], "reason": event["reason"], "message": event["message"],
        "source": {"component": EVENT_SOURCE}, "reportingComponent": REPORTING_COMPONENT, "reportingInstance": socket.gethostname(),
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def record_event(
    core: Any, service: dict[str, Any], event: dict[str, str], field_manager: str, check_mode: bool, repeat: str = "bump"
) -> tuple[bool, bool]:
    """Create the Event, or bump the identical one (or leave it, with repeat=once); returns (created, updated)."""
    existing = find_event(core, service, event)
    if existing is not None and repeat == "once":
        return False, False
    if check_mode:
        return existing is None, existing is not None
    namespace = service["metadata"]["namespace"]
    if existing is None:
        _call(f"create Event in {namespace}", core.create_namespaced_event, namespace, new_event(service, event), field_manager=field_manager)
        return True, False
    bump = {"count": (existing.get("count") or 1) + 1, "lastTimestamp": _now()}
    _call(f"patch Event {namespace}/{existing['metadata']['name']}", core.patch_namespaced_event, existing["metadata"]["name"], namespace,
          bump, field_manager=field_manager, _content_type=MERGE_PATCH)
    return False, True


def run(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    namespace, name = params["namespace"], params["name"]
    wanted = desired_ingress(params["ingress"], params["ip_mode"]) if params["ingress"] is not None else None
    event = checked_event(params["event"]) if params["event"] else None
    core = CoreV1Api(api_client(K8sAuth.from_options(params)))
    result: dict[str, Any] = {"changed": False, "ingress": [], "found": False, "event_created": False, "event_updated": False}
    service = read_service(core, namespace, name)
    if service is None:
        if params["missing_ok"]:
            return result
        raise StatusError(f"Service {namespace}/{name} not found")
    before = current_ingress(service)
    after = before if wanted is None else wanted
    result.update(found=True, ingress=after, changed=wanted is not None and not same_ingress(before, wanted))
    if module._diff:
        header = f"Service {namespace}/{name} status.loadBalancer.ingress"
        result["diff"] = {"before": {"ingress": before}, "after": {"ingress": after}, "before_header": header, "after_header": header}
    if result["changed"] and not module.check_mode:
        service = write_ingress(core, service, after, params["field_manager"])
        result["ingress"] = current_ingress(service)
    if event:
        created, updated = record_event(core, service, event, params["field_manager"], module.check_mode, params["event_repeat"])
        result.update(event_created=created, event_updated=updated, changed=result["changed"] or created or updated)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
            host=dict(type="str"),
            api_key=dict(type="str", no_log=True),
            validate_certs=dict(type="bool", default=True),
            ca_cert=dict(type="path"),
            namespace=dict(type="str", required=True),
            name=dict(type="str", required=True),
            ingress=dict(type="list", elements="str"),
            ip_mode=dict(type="str", choices=["VIP", "Proxy"], default="VIP"),
            event=dict(type="dict"),
            field_manager=dict(type="str", default="portico"),
            missing_ok=dict(type="bool", default=False),
            event_repeat=dict(type="str", choices=["bump", "once"], default="bump"),
        ),
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    try:
        result = run(module)
    except (StatusError, K8sConfigError) as err:
        module.fail_json(msg=str(err))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
