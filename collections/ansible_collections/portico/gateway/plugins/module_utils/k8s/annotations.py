# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The annotations Portico reads on a Service: known keys, precedence, parsing, "did you mean".

Portico's own keys live under ``portico.io/``; an unknown key there is a typo and refuses the
Service, with a known key suggested by what the value means (an address under a misspelt key
suggests the IP annotation) and by spelling. The equivalents of MetalLB, Cilium LB-IPAM and
kube-vip are read too, so teams can switch without editing Services; when several are set the
highest-precedence one wins and a disagreeing lower one is a warning.

Annotation values are data: they are copied, never evaluated.
Standard library only, like every module_util.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_address
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Report, field_path

BACKEND_MODES = ("nodeport", "direct")

ANNOTATION_PREFIX = "portico.io/"
POOL_ANNOTATION = "portico.io/pool"
IPS_ANNOTATION = "portico.io/loadBalancerIPs"
SHARING_ANNOTATION = "portico.io/sharing-key"
BACKEND_MODE_ANNOTATION = "portico.io/backend-mode"
PRESERVE_SOURCE_IP_ANNOTATION = "portico.io/preserve-source-ip"
# Written by Portico, never by users: this installation (its loadBalancerClass) serves the
# Service and has not released it yet. Together with the cleanup finalizer it tells Portico
# which Services to release once they leave its scope (type or class changed).
SERVED_BY_ANNOTATION = "portico.io/served-by"
# annotation -> health_check field of the LB model
HEALTH_CHECK_ANNOTATIONS = {
    "portico.io/health-check-type": "type",
    "portico.io/health-check-port": "port",
    "portico.io/health-check-path": "path",
    "portico.io/health-check-interval-ms": "interval_ms",
    "portico.io/health-check-timeout-ms": "timeout_ms",
    "portico.io/health-check-rise": "rise",
    "portico.io/health-check-fall": "fall",
}
PORTICO_ANNOTATIONS = (
    POOL_ANNOTATION, IPS_ANNOTATION, SHARING_ANNOTATION, BACKEND_MODE_ANNOTATION,
    PRESERVE_SOURCE_IP_ANNOTATION, *HEALTH_CHECK_ANNOTATIONS,
)

# Highest precedence first; ``spec.loadBalancerIP`` comes after every annotation.
REQUESTED_IPS_ANNOTATIONS = (
    IPS_ANNOTATION,
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
    "lbipam.cilium.io/ips",
    "io.cilium/lb-ipam-ips",
    "kube-vip.io/loadbalancerIPs",
)
POOL_ANNOTATIONS = (POOL_ANNOTATION, "metallb.io/address-pool", "metallb.universe.tf/address-pool")
SHARING_ANNOTATIONS = (
    SHARING_ANNOTATION,
    "metallb.io/allow-shared-ip",
    "metallb.universe.tf/allow-shared-ip",
    "lbipam.cilium.io/sharing-key",
    "io.cilium/lb-ipam-sharing-key",
)
# Read only when spec.loadBalancerSourceRanges is empty, as kube-proxy does.
LEGACY_SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"

_INT_RE = re.compile(r"^\s*[0-9]{1,9}\s*$")


def annotation_field(key: str) -> str:
    """The field path of an annotation, as problems name it (kubectl's JSONPath spelling)."""
    return f"metadata.annotations['{key}']"


@dataclass(frozen=True)
class ServiceAnnotations:
    """What a Service's annotations ask for, with the field each value came from (for messages)."""

    requested_ips: list[str]
    requested_ips_field: str
    pool: str | None
    pool_field: str
    sharing_key: str | None
    backend_mode: str
    health_check: Mapping[str, Any]  # health_check fields of the LB model set by annotation
    health_check_fields: Mapping[str, str]  # LB model field path -> annotation field
    preserve_source_ip: bool | None  # None: not set


def read_annotations(
    annotations: Mapping[str, Any], spec: Mapping[str, Any], families: Sequence[int], default_mode: str, report: Report,
) -> ServiceAnnotations:
    """Every annotation Portico reads, parsed; problems and warnings go to ``report``."""
    _check_unknown(annotations, report)
    requested, requested_field = _requested_ips(annotations, spec, families, report)
    pool, pool_field = _first_of(annotations, POOL_ANNOTATIONS, report)
    sharing_key, _sharing_field = _first_of(annotations, SHARING_ANNOTATIONS, report)
    health_check, health_check_fields = _health_check_overrides(annotations, report)
    return ServiceAnnotations(
        requested_ips=requested, requested_ips_field=requested_field,
        pool=pool, pool_field=pool_field, sharing_key=sharing_key,
        backend_mode=_backend_mode(annotations, spec, default_mode, report),
        health_check=health_check, health_check_fields=health_check_fields,
        preserve_source_ip=_bool_annotation(annotations, PRESERVE_SOURCE_IP_ANNOTATION, report),
    )


def _check_unknown(annotations: Mapping[str, Any], report: Report) -> None:
    for key in sorted(annotations):
        if not key.startswith(ANNOTATION_PREFIX) or key in PORTICO_ANNOTATIONS or key == SERVED_BY_ANNOTATION:
            continue
        hint = suggest(key, annotations[key])
        suggestion = f" (did you mean '{hint}'?)" if hint else f" (known: {', '.join(PORTICO_ANNOTATIONS)})"
        report.problem(annotation_field(key), f"unknown annotation{suggestion}")


def _looks_like_ips(text: str) -> bool:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        return False
    for part in parts:
        try:
            parse_address(part)
        except ValueError:
            return False
    return True


def _meaning(value: Any) -> tuple[str, ...]:
    """The annotations a value would be valid for, judged by what it looks like."""
    text = str(value).strip()
    if _looks_like_ips(text):
        return (IPS_ANNOTATION,)
    if text.lower() in BACKEND_MODES:
        return (BACKEND_MODE_ANNOTATION,)
    if text.lower() in ("true", "false"):
        return (PRESERVE_SOURCE_IP_ANNOTATION,)
    if text.lower() in ("none", "tcp", "http", "https", "udp"):
        return ("portico.io/health-check-type",)
    if text.startswith("/"):
        return ("portico.io/health-check-path",)
    if _INT_RE.match(text):
        return tuple(key for key, field in HEALTH_CHECK_ANNOTATIONS.items() if field not in ("type", "path"))
    return ()


def suggest(key: str, value: Any) -> str | None:
    """The known annotation a misspelt ``portico.io/`` key most likely meant: among those the
    value fits, the closest in spelling (or the only one); else the closest of all by spelling."""
    fitting = _meaning(value)
    if len(fitting) == 1:
        return fitting[0]
    hint = difflib.get_close_matches(key, fitting, n=1, cutoff=0.0) if fitting else []
    if hint:
        return hint[0]
    spelled = difflib.get_close_matches(key, PORTICO_ANNOTATIONS, n=1, cutoff=0.6)
    return spelled[0] if spelled else None


def _present(annotations: Mapping[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    """(annotation, stripped value) for the non-empty ones among keys, in precedence order."""
    return [(key, str(annotations[key]).strip()) for key in keys if str(annotations.get(key) or "").strip()]


def _first_of(annotations: Mapping[str, Any], keys: Sequence[str], report: Report) -> tuple[str | None, str]:
    """Value of the highest-precedence annotation; disagreeing lower ones are reported."""
    found = _present(annotations, keys)
    if not found:
        return None, annotation_field(keys[0])
    key, value = found[0]
    for other, other_value in found[1:]:
        if other_value != value:
            report.warning(annotation_field(other), f"ignored: {annotation_field(key)} takes precedence")
    return value, annotation_field(key)


def _parse_ip_list(text: str, families: Sequence[int], where: str, report: Report) -> list[str] | None:
    """One address per family, each of a family the Service has; None (and problems) if not."""
    addresses: dict[int, str] = {}
    ok = True
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            ip = parse_address(item)
        except ValueError:
            report.problem(where, f"{item!r} is not an IP address")
            ok = False
            continue
        if ip.version not in families:
            have = ", ".join(f"IPv{f}" for f in families)
            report.problem(where, f"{ip} is IPv{ip.version} but the Service's ipFamilies are {have}")
            ok = False
        elif ip.version in addresses:
            report.problem(where, f"{ip}: only one IPv{ip.version} address may be requested (also {addresses[ip.version]})")
            ok = False
        else:
            addresses[ip.version] = str(ip)
    return list(addresses.values()) if ok else None


def _requested_ips(
    annotations: Mapping[str, Any], spec: Mapping[str, Any], families: Sequence[int], report: Report,
) -> tuple[list[str], str]:
    sources = [(annotation_field(key), value) for key, value in _present(annotations, REQUESTED_IPS_ANNOTATIONS)]
    if str(spec.get("loadBalancerIP") or "").strip():
        sources.append(("spec.loadBalancerIP", str(spec["loadBalancerIP"]).strip()))
    if not sources:
        return [], annotation_field(IPS_ANNOTATION)
    chosen_field, text = sources[0]
    chosen = _parse_ip_list(text, families, chosen_field, report)
    for other_field, other_text in sources[1:]:
        other = _parse_ip_list(other_text, families, other_field, Report(report.subject))
        # A subset agrees: kube-vip's cloud provider mirrors one address into spec.loadBalancerIP.
        if other is None or not set(other) <= set(chosen or []):
            report.warning(other_field, f"ignored: {chosen_field} takes precedence")
    return chosen or [], chosen_field


def _backend_mode(annotations: Mapping[str, Any], spec: Mapping[str, Any], default: str, report: Report) -> str:
    node_ports = spec.get("allocateLoadBalancerNodePorts") is not False
    raw = annotations.get(BACKEND_MODE_ANNOTATION)
    if raw is None:
        # Without node ports there is nothing to send to but the pods.
        return default if node_ports else "direct"
    mode = str(raw).strip().lower()
    where = annotation_field(BACKEND_MODE_ANNOTATION)
    if mode not in BACKEND_MODES:
        report.problem(where, f"unknown value {str(raw)!r} (expected one of: {', '.join(BACKEND_MODES)})")
        return default
    if mode == "nodeport" and not node_ports:
        report.problem(where, "nodeport needs node ports but spec.allocateLoadBalancerNodePorts is false (use direct)")
    return mode


def _bool_annotation(annotations: Mapping[str, Any], key: str, report: Report) -> bool | None:
    raw = annotations.get(key)
    if raw is None:
        return None
    value = str(raw).strip().lower()
    if value not in ("true", "false"):
        report.problem(annotation_field(key), f"expected \"true\" or \"false\", got {str(raw)!r}")
        return None
    return value == "true"


def _health_check_overrides(annotations: Mapping[str, Any], report: Report) -> tuple[dict[str, Any], dict[str, str]]:
    """Health check fields set by annotation, and LB model field path -> annotation field."""
    overrides: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for key, model_field in HEALTH_CHECK_ANNOTATIONS.items():
        if key not in annotations:
            continue
        raw = str(annotations[key])
        fields[field_path("health_check", model_field)] = annotation_field(key)
        if model_field == "type":
            overrides[model_field] = raw.strip().lower()
        elif model_field == "path":
            overrides[model_field] = raw.strip()
        elif _INT_RE.match(raw):
            overrides[model_field] = int(raw)
        else:
            report.problem(annotation_field(key), f"expected an integer, got {raw!r}")
    return overrides, fields
