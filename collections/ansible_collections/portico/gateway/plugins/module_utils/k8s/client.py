# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One place that turns Portico's connection options into an official ``kubernetes`` client.

Used by the k8s_services inventory plugin, the watcher and the k8s_service_status module
(controller side). ``kubernetes`` is imported here only, and optionally: gateways never need it.

``request`` and ``list_items`` talk to the API through the client's connection, credentials and
TLS settings, with raw JSON in and out: the typed API classes take seconds to import (CoreV1Api
alone about 1.5 s) and their models refuse real objects (``endpoints: null``), and Portico reads
and writes a few fields of plain JSON anyway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

try:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR: Exception | None = None
except ImportError as err:  # pragma: no cover - reported to the user by callers
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = err

# Option names shared with the doc fragment portico.gateway.k8s_auth.
AUTH_OPTIONS = ("kubeconfig", "context", "host", "api_key", "validate_certs", "ca_cert")


class K8sConfigError(RuntimeError):
    """The connection options do not lead to a usable API client."""


@dataclass(frozen=True)
class K8sAuth:
    kubeconfig: str | None = None
    context: str | None = None
    host: str | None = None
    api_key: str | None = None
    validate_certs: bool = True
    ca_cert: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "K8sAuth":
        return cls(**{name: options.get(name) for name in AUTH_OPTIONS if options.get(name) is not None})


def api_client(auth: K8sAuth) -> Any:
    """An ApiClient for the given options: explicit host/token, else kubeconfig (+context)."""
    if not HAS_KUBERNETES:
        raise K8sConfigError(f"the 'kubernetes' Python package is required: {KUBERNETES_IMPORT_ERROR}")
    if auth.host:
        configuration = k8s.Configuration()
        configuration.host = auth.host
        configuration.verify_ssl = auth.validate_certs
        if auth.ca_cert:
            configuration.ssl_ca_cert = auth.ca_cert
        if auth.api_key:
            configuration.api_key = {"authorization": f"Bearer {auth.api_key}"}
        return k8s.ApiClient(configuration)
    try:
        return k8s_config.new_client_from_config(config_file=auth.kubeconfig, context=auth.context)
    except Exception as err:  # the client raises several unrelated types for a bad kubeconfig
        where = auth.kubeconfig or "~/.kube/config"
        raise K8sConfigError(f"kubeconfig {where} (context {auth.context or 'current'}): {err}") from None


def current_context(kubeconfig: str | None) -> str | None:
    """The kubeconfig's current context (the client's usual lookup without a path), or None
    when there is no readable kubeconfig (``api_client`` reports that later, with the reason)."""
    if not HAS_KUBERNETES:
        return None
    try:
        _contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:  # pylint: disable=broad-except  # the client raises several unrelated types
        return None
    return str((active or {}).get("name") or "") or None


class ApiError(RuntimeError):
    """An API request that failed: ``status`` is the HTTP status (0 when the API was not reached)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status} {message}" if status else message)
        self.status = status
        self.message = message


def unreachable_reason(err: BaseException) -> str:
    """Why a request never got an answer, in a few words ("Connection refused", "timed out"):
    urllib3 nests the cause in a long retry message that names objects by memory address."""
    text = str(getattr(err, "reason", None) or err)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:200] if text else type(err).__name__


def _status_message(status: int, reason: str, data: bytes) -> str:
    """The message of the API's Status body, else the HTTP reason."""
    try:
        return str(json.loads(data)["message"])
    except (TypeError, ValueError, KeyError):
        return reason or f"HTTP {status}"


def request(client: Any, method: str, path: str, *, query: Iterable[tuple[str, Any]] = (), body: Any = None,
            content_type: str = "application/json", timeout: float | None = None) -> Any:
    """One API request (``path`` such as ``/api/v1/namespaces/default/services/web``); the decoded
    JSON reply. A reply other than 2xx raises ApiError with the API's message."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    try:
        method, url, headers, body, _post = client.param_serialize(
            method, path, query_params=[(k, v) for k, v in query if v is not None], header_params=headers, body=body,
            auth_settings=["BearerToken"])
        response = client.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        data = response.read()
    except Exception as err:  # urllib3 and the client raise several unrelated types for one unreachable API
        host = getattr(getattr(client, "configuration", None), "host", "") or "?"
        raise ApiError(0, f"cannot reach the Kubernetes API at {host}: {unreachable_reason(err)}") from None
    if not 200 <= response.status < 300:
        raise ApiError(response.status, _status_message(response.status, response.reason, data))
    return json.loads(data) if data else None


def list_items(client: Any, path: str, *, page_size: int = 500, timeout: float | None = None,
               **query: Any) -> tuple[list[dict[str, Any]], str]:
    """Every item of a list (following ``continue``) and the list's resourceVersion."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        body = request(client, "GET", path, query=[("limit", page_size), ("continue", token), *query.items()],
                       timeout=timeout)
        items.extend(body.get("items") or [])
        meta = body.get("metadata") or {}
        token = meta.get("continue")
        if not token:
            return items, str(meta.get("resourceVersion") or "")
