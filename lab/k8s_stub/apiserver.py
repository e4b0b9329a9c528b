"""A Kubernetes API stand-in on loopback, reached by the official client and kubectl through a
normal kubeconfig (plain http, bearer token): core/v1 Services, Nodes, Namespaces and Events,
discovery.k8s.io/v1 EndpointSlices, apiextensions.k8s.io/v1 CustomResourceDefinitions and
the custom resources they define.

This module is the HTTP face (routing, content negotiation, tables, watch streams, warnings)
and the Python control API; the semantics live in api.py and the modules it uses.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from . import errors, tables
from .api import Api, Request
from .builtins import NODE_PORT_RANGE, SERVICE_CIDRS, Allocations
from .discovery import Discovery
from .errors import ApiError
from .patches import APPLY_PATCH
from .resources import Registry, Resource
from .store import Store

Obj = dict[str, Any]
DEFAULT_TOKEN = "portico-lab-token"
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
BODY_MEDIA = ("application/json", "application/yaml")
VALIDATION_MODES = ("Ignore", "Warn", "Strict")


@dataclass(frozen=True)
class Route:
    res: Resource
    version: str
    namespace: str | None
    name: str | None
    sub: str | None


def parse_route(registry: Registry, path: str) -> Route | None:
    """/api/v1/... or /apis/<group>/<version>/..., [namespaces/<ns>/]<plural>[/<name>[/status]]."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        scoped = registry.lookup(group, version, rest[2])
        if scoped is not None and scoped.namespaced:
            namespace, rest = rest[1], rest[2:]
    res = registry.lookup(group, version, rest[0]) if rest else None
    if res is None or len(rest) > 3 or (len(rest) == 3 and not (rest[2] == "status" and res.status_enabled(version))):
        return None
    return Route(res, version, namespace, *(rest[1:] + [None, None])[:2])


class _ManifestLoader(yaml.SafeLoader):
    """YAML as kubectl turns it into JSON: timestamps stay strings."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_yaml(text: str | bytes) -> Any:
    return yaml.load(text, Loader=_ManifestLoader)


def _warning_header(text: str) -> str:
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for kubectl; watches use chunked encoding
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per response
    server: _HttpServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        if self.server.fake.verbose:
            super().log_message(format, *args)

    @property
    def fake(self) -> FakeApiServer:
        return self.server.fake

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._warnings: list[str] = []
        path = url.path.rstrip("/") or "/"
        try:
            self._authorise(path)
            if path in PUBLIC_PATHS[1:]:
                return self._send(200, b"ok", "text/plain")
            if method == "GET" and self._discovery(path):
                return
            route = parse_route(self.fake.registry, path)
            if route is None:
                raise errors.not_found_path()
            self._serve(method, route, query, self._body(method, raw))
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            self._send_json(400, errors.bad_request(f"invalid request body: {err}").status())
        except ApiError as err:
            self._send_json(err.code, err.status())
        except Exception as err:  # noqa: BLE001 - a stand-in defect becomes a 500, like a panic in the API server
            traceback.print_exc()
            self._send_json(500, ApiError(500, "InternalError", f"Internal error occurred: {err!r}").status())

    def _body(self, method: str, raw: bytes) -> Any:
        media = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if method in ("POST", "PUT") and media not in BODY_MEDIA:
            # e.g. protobuf from kubectl's typed clients: 415 makes client-go retry in JSON
            raise errors.unsupported_media(BODY_MEDIA)
        if not raw.strip():
            return None
        return load_yaml(raw) if media in ("application/yaml", APPLY_PATCH) else json.loads(raw)

    def _authorise(self, path: str) -> None:
        # kubectl sends no credentials over plain http, so a request without any is let in (as
        # on the API server's old insecure port); a wrong token is refused like the real API.
        sent, token = self.headers.get("Authorization"), self.fake.token
        if sent is not None and token and path not in PUBLIC_PATHS and sent != f"Bearer {token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _discovery(self, path: str) -> bool:
        accept = self.headers.get("Accept", "")
        if path in ("/api", "/apis") and "as=APIGroupDiscoveryList" in accept:
            document, media = self.fake.discovery.aggregated(path == "/api", accept)
            self._send_json(200, document, media)
            return True
        if path == "/api":
            address = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]})
            return True
        document = self.fake.discovery.document(path)
        if document is None:
            return False
        self._send_json(200, document)
        return True

    def _request(self, query: dict[str, str]) -> Request:
        validation = query.get("fieldValidation") or "Warn"
        if validation not in VALIDATION_MODES:
            raise errors.bad_request(f'fieldValidation: Unsupported value: "{validation}": supported values: '
                                     + ", ".join(f'"{m}"' for m in VALIDATION_MODES))
        dry_run = query.get("dryRun", "")
        if dry_run not in ("", "All"):
            raise errors.bad_request(f'dryRun: Unsupported value: "{dry_run}": supported values: "All"')
        manager = query.get("fieldManager") or self.headers.get("User-Agent", "unknown").split("/")[0]
        return Request(dry_run=dry_run == "All", manager=manager[:128], manager_given=bool(query.get("fieldManager")),
                       validation=validation, force=query.get("force") in ("true", "1"), warnings=self._warnings)

    def _serve(self, method: str, route: Route, query: dict[str, str], body: Any) -> None:
        api, res, version, ns, name = self.fake.api, route.res, route.version, route.namespace, route.name
        if res.custom is not None and res.custom.versions[version].deprecation:
            self._warnings.append(str(res.custom.versions[version].deprecation))
        if res.namespaced and ns is None and not (method == "GET" and name is None):
            raise errors.not_found_path()
        if name is None:
            if method == "GET" and query.get("watch") in ("true", "1"):
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
                return self._stream(res, version, api.watch(res, version, ns, query, deadline), query)
            if method == "GET":
                items, meta = api.list(res, version, ns, query)
                return self._send_list(res, version, items, meta, query)
            if method == "DELETE":
                deleted = api.delete_collection(res, version, ns, query, self._request(query))
                return self._send_list(res, version, deleted, {"resourceVersion": ""}, query)
            if method != "POST":
                raise errors.method_not_allowed()
            obj = api.create(res, version, ns, body, self._request(query))
            return self._send_json(201, obj)
        if method == "POST":
            raise errors.method_not_allowed()
        if method == "GET":
            return self._send_one(res, version, api.get(res, version, ns, name), query)
        if method == "PUT":
            return self._send_json(200, api.update(res, version, ns, name, body, route.sub, self._request(query)))
        if method == "PATCH":
            obj, created = api.patch(res, version, ns, name, body, self.headers.get("Content-Type", ""), route.sub,
                                     self._request(query))
            return self._send_json(201 if created else 200, obj)
        obj, gone = api.delete(res, version, ns, name, body if isinstance(body, dict) else None, self._request(query))
        if not gone or (res.group == "" and res.kind in ("Service", "Namespace")):  # these return the object
            return self._send_json(200, obj)
        self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": {"name": name, **({"group": res.group} if res.group else {}), "kind": res.plural,
                                          "uid": obj["metadata"]["uid"]}})

    # --- representations ---------------------------------------------------------------------

    def _wants(self) -> str:
        accept = self.headers.get("Accept", "")
        if "as=Table" in accept:
            return "table"
        return "metadata" if "as=PartialObjectMetadata" in accept else ""

    def _columns(self, res: Resource, version: str) -> list[tables.Column]:
        if res.custom is not None:
            return tables.printer_columns(res.custom.versions[version].columns)
        return tables.COLUMNS.get(res.kind, tables.DEFAULT_COLUMNS)

    def _send_one(self, res: Resource, version: str, obj: Obj, query: dict[str, str]) -> None:
        wants = self._wants()
        if wants == "table":
            return self._send_json(200, tables.to_table(self._columns(res, version), [obj], query.get("includeObject", "Metadata"),
                                                        {"resourceVersion": obj["metadata"].get("resourceVersion", "")}))
        self._send_json(200, _partial(obj) if wants == "metadata" else obj)

    def _send_list(self, res: Resource, version: str, items: list[Obj], meta: Obj, query: dict[str, str]) -> None:
        wants = self._wants()
        if wants == "table":
            return self._send_json(200, tables.to_table(self._columns(res, version), items, query.get("includeObject", "Metadata"), meta))
        if wants == "metadata":
            return self._send_json(200, {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                                         "items": [_partial(o) for o in items]})
        if res.custom is None:  # items of built-in lists carry no kind/apiVersion in the real API
            items = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]
        self._send_json(200, {"kind": res.list_kind, "apiVersion": res.api_version(version), "metadata": meta, "items": items})

    def _stream(self, res: Resource, version: str, events: Iterator[tuple[str, Obj]], query: dict[str, str]) -> None:
        wants, include = self._wants(), query.get("includeObject", "Metadata")
        columns = self._columns(res, version) if wants == "table" else []

        def shaped() -> Iterator[Obj]:
            for kind, obj in events:
                shown = obj
                if kind not in ("ERROR", "BOOKMARK"):
                    if wants == "table":  # `kubectl get -w` watches in Table form too
                        shown = tables.to_table(columns, [obj], include, {"resourceVersion": obj["metadata"]["resourceVersion"]})
                    elif wants == "metadata":
                        shown = _partial(obj)
                yield {"type": kind, "object": shown}
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        for warning in self._warnings:
            self.send_header("Warning", _warning_header(warning))
        self.end_headers()
        try:
            for event in shaped():
                self._chunk(event)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, event: Obj) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_json(self, code: int, payload: Obj, media: str = "application/json") -> None:
        self._send(code, json.dumps(payload).encode(), media)

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        head = [f"HTTP/1.1 {code} {self.responses.get(code, ('',))[0]}", f"Content-Type: {content_type}",
                f"Content-Length: {len(data)}", f"Date: {self.date_time_string()}"]
        head += [f"Warning: {_warning_header(w)}" for w in getattr(self, "_warnings", [])]
        self.log_request(code)
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + data)  # one write: one segment


def _partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApiServer


# --- fixtures and the Python control API -----------------------------------------------------

KIND_ORDER = {"Namespace": 0, "CustomResourceDefinition": 0, "Node": 1}  # what others need first


def read_manifests(path: str | os.PathLike[str]) -> list[Obj]:
    """Objects of a YAML/JSON manifest file or directory (multi-document, `kind: List` ok),
    namespaces and CRDs first."""
    root = pathlib.Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json")) if root.is_dir() else [root]
    objects: list[Obj] = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        docs = [json.loads(text)] if file.suffix == ".json" else yaml.load_all(text, Loader=_ManifestLoader)
        for doc in docs:
            if isinstance(doc, dict):
                objects.extend(doc.get("items") or [] if doc.get("kind", "").endswith("List") else [doc])
    return sorted(objects, key=lambda o: KIND_ORDER.get(o.get("kind", ""), 2))


def _port_range(value: str | range | None) -> range:
    if value is None:
        return NODE_PORT_RANGE
    if isinstance(value, range):
        return value
    low, _, high = value.partition("-")
    return range(int(low), int(high) + 1)


class FakeApiServer:
    """The stand-in: `FakeApiServer(fixtures=DIR).start()`, then point a kubeconfig at `.url`.

    `node_port_range` ("30000-32767") and `service_cidrs` ({"IPv4": ..., "IPv6": ...}) are the
    API server's --service-node-port-range and --service-cluster-ip-range."""

    def __init__(self, port: int = 0, fixtures: str | os.PathLike[str] | list[Any] | None = None, *,
                 host: str = "127.0.0.1", token: str = DEFAULT_TOKEN, history: int = 1000, verbose: bool = False,
                 node_port_range: str | range | None = None, service_cidrs: dict[str, str] | None = None) -> None:
        self.host, self.port, self.token, self.verbose = host, port, token, verbose
        self.registry, self.store = Registry(), Store(history)
        self.api = Api(self.registry, self.store, Allocations(_port_range(node_port_range), service_cidrs or SERVICE_CIDRS))
        self.discovery = Discovery(self.registry)
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        for name in BUILTIN_NAMESPACES:
            self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for path in fixtures if isinstance(fixtures, list) else [fixtures] if fixtures else []:
            self.load(path)

    def load(self, path: str | os.PathLike[str]) -> list[Obj]:
        return [self.apply(obj) for obj in read_manifests(path)]

    def start(self) -> FakeApiServer:
        self._httpd = _HttpServer((self.host, self.port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"k8s-stub-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.store.close()  # ends open watches
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kubeconfig(self, context: str = "lab", cluster_name: str = "lab") -> Obj:
        user = f"{cluster_name}-admin"
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
                "clusters": [{"name": cluster_name, "cluster": {"server": self.url}}],
                "users": [{"name": user, "user": {"token": self.token}}],
                "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user, "namespace": "default"}}]}

    def write_kubeconfig(self, path: str | os.PathLike[str], context: str = "lab", cluster_name: str = "lab") -> pathlib.Path:
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig(context, cluster_name), sort_keys=False), encoding="utf-8")
        target.chmod(0o600)  # kubectl warns about group/world-readable kubeconfigs holding tokens
        return target

    # The Python control API works on the storage version and returns copies.

    def apply(self, obj: Obj) -> Obj:
        """Create or replace an object as given, status included (a test's or fixture's truth);
        schema validation of custom resources applies, unknown fields are refused."""
        return _copy(self.api.apply_fixture(obj))

    def _resource(self, kind: str) -> Resource:
        return self.registry.for_kind(kind)

    def delete(self, kind: str, namespace: str | None, name: str) -> Obj:
        """Delete like the API: an object with finalizers stays, marked with a deletionTimestamp."""
        res = self._resource(kind)
        return _copy(self.api.delete(res, res.storage_version, namespace if res.namespaced else None, name, None,
                                     Request(fixture=True))[0])

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        res = self._resource(kind)
        try:
            return _copy(self.api.get(res, res.storage_version, namespace if res.namespaced else None, name))
        except ApiError:
            return None

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        res = self._resource(kind)
        items, _ = self.api.list(res, res.storage_version, namespace if res.namespaced else None, {})
        return [_copy(o) for o in items]


def _copy(obj: Obj) -> Obj:
    return json.loads(json.dumps(obj))
