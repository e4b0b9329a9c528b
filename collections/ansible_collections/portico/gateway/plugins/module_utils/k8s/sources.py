# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster options of a ``portico.gateway.k8s_services`` inventory source, read in one place.

The inventory plugin, the watcher (``bin/portico-watch``, the EDA source) and anything else that
follows the same clusters must agree on which clusters, which Services and how they translate:
a watcher that filtered on another class or namespace list would miss the changes the next run
acts on. So they all turn the source's options into ``ClusterConfig``s here.

The inventory plugin gets option values from Ansible (file, then ``PORTICO_K8S_*`` environment,
then the documented default); ``resolve_options`` does the same for callers outside Ansible, with
``SOURCE_OPTIONS`` mirroring the plugin's documentation (a unit test keeps the two equal).
The watcher runs the inventory as its child, with its own environment: both see the same values.

Standard library only, except ``read_source_file`` (PyYAML, which the kubernetes client needs too).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import BACKEND_MODES
from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import AUTH_OPTIONS, K8sAuth, current_context
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import SOURCE_KINDS
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    DEFAULT_LOAD_BALANCER_CLASS,
    NODE_HEALTH_CHECKS,
    TranslateOptions,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem, field_path

# Cluster names prefix LB names and seed address allocation: plain, short, stable.
CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
CLUSTER_KEYS = ("name", *AUTH_OPTIONS)
# Ansible's non-strict boolean: any other value is false.
_TRUE_WORDS = frozenset(("y", "yes", "on", "1", "true", "t"))


@dataclass(frozen=True)
class SourceOption:
    """One option of the source, as the inventory plugin documents it."""

    kind: str  # str, path, bool or list (Ansible's option types)
    default: Any = None
    env: str | None = None
    choices: tuple[str, ...] = ()


SOURCE_OPTIONS: Mapping[str, SourceOption] = {
    "kubeconfig": SourceOption("path", env="PORTICO_K8S_KUBECONFIG"),
    "context": SourceOption("str", env="PORTICO_K8S_CONTEXT"),
    "host": SourceOption("str", env="PORTICO_K8S_HOST"),
    "api_key": SourceOption("str", env="PORTICO_K8S_API_KEY"),
    "validate_certs": SourceOption("bool", True, "PORTICO_K8S_VALIDATE_CERTS"),
    "ca_cert": SourceOption("path", env="PORTICO_K8S_CA_CERT"),
    "cluster_name": SourceOption("str", env="PORTICO_K8S_CLUSTER"),
    "clusters": SourceOption("list", []),
    "namespaces": SourceOption("list", [], "PORTICO_K8S_NAMESPACES"),
    "exclude_namespaces": SourceOption("list", [], "PORTICO_K8S_EXCLUDE_NAMESPACES"),
    "load_balancer_class": SourceOption("str", DEFAULT_LOAD_BALANCER_CLASS, "PORTICO_K8S_LOAD_BALANCER_CLASS"),
    "serve_default_class": SourceOption("bool", False, "PORTICO_K8S_SERVE_DEFAULT_CLASS"),
    "serve_without_endpoints": SourceOption("bool", False, "PORTICO_K8S_SERVE_WITHOUT_ENDPOINTS"),
    "backend_mode": SourceOption("str", "nodeport", "PORTICO_K8S_BACKEND_MODE", BACKEND_MODES),
    "node_health_check": SourceOption("str", "node_port", "PORTICO_K8S_NODE_HEALTH_CHECK", NODE_HEALTH_CHECKS),
    "kinds": SourceOption("list", list(SOURCE_KINDS), "PORTICO_K8S_KINDS", SOURCE_KINDS),
}


class SourceError(ValueError):
    """The source's options cannot be used; ``problem`` names the option."""

    def __init__(self, problem: Problem):
        super().__init__(problem.render())
        self.problem = problem


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster of the source: how to reach it, and how its Services are selected and translated."""

    name: str
    auth: K8sAuth
    options: TranslateOptions


def read_source_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The source options set in an inventory source file (the plugin's other options are left out)."""
    import yaml  # pylint: disable=import-outside-toplevel  # controller only; gateways never read a source

    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as err:
        raise SourceError(Problem(where, "", str(err))) from None
    if not isinstance(data, dict):
        raise SourceError(Problem(where, "", f"expected a mapping of options, got {type(data).__name__}"))
    return {name: value for name, value in data.items() if name in SOURCE_OPTIONS}


def _coerce(name: str, option: SourceOption, value: Any, subject: str) -> Any:
    """An option value as Ansible's option types would make it."""
    if value is None:
        return None
    if option.kind == "bool":
        return value in (True, 1) or str(value).strip().lower() in _TRUE_WORDS
    if option.kind == "list":
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise SourceError(Problem(subject, name, f"expected a list, got {value!r}"))
        return list(value)
    if not isinstance(value, (str,) if option.kind == "path" else (str, int, float)):
        raise SourceError(Problem(subject, name, f"expected a string, got {value!r}"))
    text = str(value)
    if option.kind == "path":
        text = os.path.normpath(os.path.abspath(os.path.expandvars(os.path.expanduser(text))))
    return text


def resolve_options(given: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                    subject: str = "") -> dict[str, Any]:
    """Every source option as the inventory plugin sees it: the given value, else the option's
    environment variable, else its default."""
    environ = os.environ if environ is None else environ
    resolved: dict[str, Any] = {}
    for name, option in SOURCE_OPTIONS.items():
        value = given.get(name)
        if value is None and option.env and option.env in environ:
            value = environ[option.env]
        resolved[name] = _coerce(name, option, option.default if value is None else value, subject)
    return resolved


def _default_cluster_name(auth: K8sAuth) -> str:
    """The context, else the kubeconfig's current one, else ``default``."""
    if auth.context:
        return auth.context
    if auth.host:
        return "default"
    return current_context(auth.kubeconfig) or "default"


def _translate_options(name: str, options: Mapping[str, Any], subject: str) -> TranslateOptions:
    mode = options.get("backend_mode") or "nodeport"
    if mode not in BACKEND_MODES:
        raise SourceError(Problem(subject, "backend_mode", f"unknown value {mode!r} (expected one of: {', '.join(BACKEND_MODES)})"))
    node_check = options.get("node_health_check") or "node_port"
    if node_check not in NODE_HEALTH_CHECKS:
        raise SourceError(Problem(subject, "node_health_check",
                                  f"unknown value {node_check!r} (expected one of: {', '.join(NODE_HEALTH_CHECKS)})"))
    kinds = options.get("kinds")
    kinds = list(SOURCE_KINDS) if kinds is None else kinds
    unknown = [kind for kind in kinds if kind not in SOURCE_KINDS]
    if unknown or not kinds:
        raise SourceError(Problem(subject, "kinds", f"expected some of {', '.join(SOURCE_KINDS)}, got {kinds!r}"))
    return TranslateOptions(
        cluster=name,
        kinds=tuple(kind for kind in SOURCE_KINDS if kind in kinds),
        load_balancer_class=str(options.get("load_balancer_class") or DEFAULT_LOAD_BALANCER_CLASS),
        serve_default_class=bool(options.get("serve_default_class")),
        backend_mode=str(mode),
        node_health_check=str(node_check),
        namespaces=_names(options, "namespaces", subject),
        exclude_namespaces=_names(options, "exclude_namespaces", subject),
        serve_without_endpoints=bool(options.get("serve_without_endpoints")),
    )


def _names(options: Mapping[str, Any], name: str, subject: str) -> tuple[str, ...]:
    values = options.get(name) or ()
    if not all(isinstance(value, str) and value for value in values):
        raise SourceError(Problem(subject, name, f"expected a list of namespace names, got {values!r}"))
    return tuple(values)


def _cluster_items(options: Mapping[str, Any], top: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(where, item) per cluster: the ``clusters`` items, else one from the top-level options."""
    items = options.get("clusters") or []
    if items:
        return [(field_path("clusters", index), item) for index, item in enumerate(items)]
    name = options.get("cluster_name") or _default_cluster_name(K8sAuth.from_options(top))
    return [("cluster_name", {"name": name})]


def _cluster(where: str, item: Any, top: Mapping[str, Any], taken: set[str], subject: str) -> tuple[str, K8sAuth]:
    if not isinstance(item, Mapping):
        raise SourceError(Problem(subject, where, f"expected a mapping, got {item!r}"))
    unknown = sorted(str(key) for key in item if key not in CLUSTER_KEYS)
    if unknown:
        raise SourceError(Problem(subject, field_path(where, unknown[0]), f"unknown key (known: {', '.join(sorted(CLUSTER_KEYS))})"))
    name = str(item.get("name") or "")
    name_field = where if where == "cluster_name" else field_path(where, "name")
    if not CLUSTER_NAME_RE.match(name):
        raise SourceError(Problem(subject, name_field, f"expected letters, digits, '.', '_' or '-', got {name!r}"))
    if name in taken:
        raise SourceError(Problem(subject, name_field, f"{name!r} is listed twice"))
    merged = {**top, **{key: value for key, value in item.items() if key != "name" and value is not None}}
    return name, K8sAuth.from_options(merged)


def parse_source(options: Mapping[str, Any], subject: str = "") -> list[ClusterConfig]:
    """The clusters of a source from its resolved options (``resolve_options``, or the plugin's
    ``get_option`` values); an item of ``clusters`` overrides the top-level connection options.

    ``subject`` names the source in problems (a file path; empty where the caller already says it).
    """
    top = {name: options.get(name) for name in AUTH_OPTIONS if options.get(name) is not None}
    clusters: list[ClusterConfig] = []
    for where, item in _cluster_items(options, top):
        name, auth = _cluster(where, item, top, {cluster.name for cluster in clusters}, subject)
        clusters.append(ClusterConfig(name=name, auth=auth, options=_translate_options(name, options, subject)))
    return clusters
