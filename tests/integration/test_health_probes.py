"""module_utils.health.probes against real servers on loopback (127.0.0.1 and ::1 only).

Every server runs in a thread of this process on an ephemeral port; every probe
runs in its own event loop (asyncio.run).
"""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from typing import Iterator

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.health.probes import (
    ProbeResult,
    ProbeTarget,
    run_probe,
)

V4 = "127.0.0.1"
V6 = "::1"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((V6, 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")


def probe(kind: str, address: str, port: int, timeout: float = 2.0, **extra) -> ProbeResult:
    return asyncio.run(run_probe(ProbeTarget(kind, address, port, timeout, **extra)))


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def free_port(address: str, kind: socket.SocketKind) -> int:
    """A port nothing listens on: bound for a moment, then released."""
    with socket.socket(family_of(address), kind) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


# --- servers -------------------------------------------------------------------------------------------------------

class TcpServer:
    """Accept loop in a thread. Default: close each connection at once. `reply`: read the request,
    send these bytes, then close (or keep the connection open with keep_open). `hold`: never answer."""

    def __init__(self, address: str = V4, reply: bytes | None = None, keep_open: bool = False, hold: bool = False):
        self.reply, self.keep_open, self.hold = reply, keep_open, hold
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._sock = socket.socket(family_of(address), socket.SOCK_STREAM)
        self._sock.bind((address, 0))
        self._sock.listen(1024)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TcpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self._held:
            conn.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            try:
                self._handle(conn)
            except OSError:
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        if self.hold:
            self._held.append(conn)
            return
        if self.reply is not None:
            conn.settimeout(1)
            conn.recv(65536)
            conn.sendall(self.reply)
            if self.keep_open:
                self._held.append(conn)
                return
        conn.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: HttpServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append({"line": self.requestline, "headers": dict(self.headers), "peer": self.client_address[0]})
        status, body = self.server.routes.get(self.path, (404, b"no such path\n"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class HttpServer(http.server.ThreadingHTTPServer):
    """routes: path -> (status, body). Records every request. Optional TLS (ssl_context)."""

    daemon_threads = True

    def __init__(self, routes: dict[str, tuple[int, bytes]], address: str = V4, ssl_context: ssl.SSLContext | None = None):
        self.address_family = family_of(address)
        self.routes = routes
        self.requests: list[dict] = []
        self.sni: list[str | None] = []  # TLS server names the clients sent (None: no SNI)
        super().__init__((address, 0), _Handler)
        if ssl_context is not None:
            ssl_context.sni_callback = lambda _sslobj, name, _ctx: self.sni.append(name)
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def server_bind(self) -> None:
        # TCPServer's bind only: HTTPServer's would call getfqdn (a reverse DNS lookup) on the address.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        pass  # the probes reset connections once they have a verdict; that is not a server error

    def __enter__(self) -> HttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class UdpServer:
    """reply=None: echo; reply=bytes: always answer that; silent: bound, never answers."""

    def __init__(self, address: str = V4, reply: bytes | None = None, silent: bool = False):
        self.reply, self.silent = reply, silent
        self._stop = threading.Event()
        self._sock = socket.socket(family_of(address), socket.SOCK_DGRAM)
        self._sock.bind((address, 0))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> UdpServer:
        if not self.silent:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except socket.timeout:
                continue
            self._sock.sendto(data if self.reply is None else self.reply, peer)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[str, str]:
    """A throwaway self-signed certificate (P-256: quick to generate)."""
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=portico-test"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def https_server(tls_files) -> Iterator[HttpServer]:
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with HttpServer({"/": (200, b"fine\n"), "/broken": (500, b"oops\n")}, ssl_context=context) as server:
        yield server


def assert_fast(result: ProbeResult, limit: float = 0.5) -> None:
    assert result.latency < limit, f"took {result.latency:.3f}s, should fail fast"


def assert_timed_out(result: ProbeResult, timeout: float) -> None:
    # A hair of slack below: the loop's timer may fire within its clock resolution of the deadline.
    assert timeout - 0.005 <= result.latency < timeout + 0.5, f"latency {result.latency:.3f}s for timeout {timeout}s"


# --- TCP -----------------------------------------------------------------------------------------------------------

def test_tcp_open_port_is_ok():
    with TcpServer() as server:
        result = probe("tcp", V4, server.port)
    assert (result.ok, result.detail) == (True, "ok")
    assert 0 <= result.latency < 1


def test_tcp_closed_port_fails_fast_with_refused():
    result = probe("tcp", V4, free_port(V4, socket.SOCK_STREAM), timeout=2.0)
    assert (result.ok, result.detail) == (False, "connection refused")
    assert_fast(result)


def test_tcp_connect_that_never_completes_times_out():
    # A full accept queue (backlog 0, one connection queued) makes the kernel drop further SYNs.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind((V4, 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        result = probe("tcp", V4, listener.getsockname()[1], timeout=0.2)
    assert result.detail == "timeout" and not result.ok
    assert 0.19 <= result.latency < 0.5, result


def test_cancelling_a_tcp_probe_as_its_connect_completes_is_quiet():
    # The verdict can be queued when the task is cancelled: it must be dropped, not raise in the loop.
    errors: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context["message"]))
        with TcpServer(V4) as server:
            task = loop.create_task(run_probe(ProbeTarget("tcp", V4, server.port, 2.0)))
            await asyncio.sleep(0)  # the probe starts its connect
            time.sleep(0.05)  # the handshake completes while the loop is busy
            loop.call_soon(task.cancel)
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)

    asyncio.run(main())
    assert not errors, errors


@needs_ipv6
def test_tcp_ipv6_loopback():
    with TcpServer(V6) as server:
        assert probe("tcp", V6, server.port).detail == "ok"
    assert probe("tcp", V6, free_port(V6, socket.SOCK_STREAM)).detail == "connection refused"


@pytest.mark.parametrize("address", [V4, pytest.param(V6, marks=needs_ipv6)])
def test_source_address_is_bound(address):
    with HttpServer({"/": (200, b"ok\n")}, address=address) as server:
        result = probe("http", address, server.port, source=address)
    assert (result.ok, result.detail) == (True, "ok")
    assert server.requests[0]["peer"] == address


def test_tcp_probes_leave_no_time_wait_sockets():
    """The linger-0 close ends every check with RST: no TIME_WAIT on either side of the connection."""
    count = 50
    with TcpServer() as server:
        # bind(0) may hand out a port that an earlier test's client still has TIME_WAIT entries
        # towards; only sockets created by this test count.
        before = set(_time_wait_lines(server.port))

        async def many() -> list[ProbeResult]:
            return [await run_probe(ProbeTarget("tcp", V4, server.port, 2.0)) for _ in range(count)]

        results = asyncio.run(many())
        deadline = time.monotonic() + 2
        while server.accepted < count and time.monotonic() < deadline:  # the server closed its side too
            time.sleep(0.01)
        time.sleep(0.05)
        assert all(r.ok for r in results)
        assert server.accepted == count
        time_wait = [line for line in _time_wait_lines(server.port) if line not in before]
    assert time_wait == []


def _time_wait_lines(port: int) -> list[str]:
    """TIME_WAIT sockets with `port` as local or peer port, as ss prints them."""
    ss = subprocess.run(["ss", "-tanH", "state", "time-wait"], capture_output=True, text=True, check=True)
    suffix = f":{port}"
    return [" ".join(line.split()) for line in ss.stdout.splitlines()
            if any(column.endswith(suffix) for column in line.split()[2:4])]


def test_300_concurrent_tcp_probes():
    servers = [TcpServer() for _ in range(3)]
    for server in servers:
        server.__enter__()
    try:
        targets = [ProbeTarget("tcp", V4, servers[i % 3].port, 2.0) for i in range(300)]

        async def all_at_once() -> tuple[list[ProbeResult], float]:
            start = time.perf_counter()
            results = await asyncio.gather(*(run_probe(t) for t in targets))
            return results, time.perf_counter() - start

        results, elapsed = asyncio.run(all_at_once())
    finally:
        for server in servers:
            server.__exit__(None, None, None)
    assert [r.detail for r in results] == ["ok"] * 300
    assert elapsed < 2.0, f"300 concurrent probes took {elapsed:.3f}s"


# --- HTTP ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    routes = {
        "/": (200, b"all good\n"),
        "/broken": (500, b"internal error\n"),
        "/empty": (204, b""),
        "/status": (200, b'{"state": "ready"}\n'),
    }
    with HttpServer(routes) as server:
        yield server


def test_http_200_is_ok(http_server):
    result = probe("http", V4, http_server.port)
    assert (result.ok, result.detail) == (True, "ok")
    assert http_server.requests[0]["line"] == "GET / HTTP/1.0"
    assert http_server.requests[0]["headers"]["User-Agent"] == "portico-healthd"
    assert http_server.requests[0]["headers"]["Connection"] == "close"


def test_http_500_fails_with_status(http_server):
    result = probe("http", V4, http_server.port, path="/broken")
    assert (result.ok, result.detail) == (False, "HTTP 500")


def test_http_expected_status_list(http_server):
    assert probe("http", V4, http_server.port, path="/empty", expected_status=(200, 204)).detail == "ok"
    assert probe("http", V4, http_server.port, path="/empty").detail == "HTTP 204"


def test_http_healthcheck_node_port_convention():
    """kube-proxy's healthCheckNodePort: /healthz is 200 on nodes with local endpoints, 503 elsewhere."""
    with HttpServer({"/healthz": (503, b'{"localEndpoints": 0}')}) as without_endpoints:
        down = probe("http", V4, without_endpoints.port, path="/healthz")
    with HttpServer({"/healthz": (200, b'{"localEndpoints": 2}')}) as with_endpoints:
        up = probe("http", V4, with_endpoints.port, path="/healthz")
    assert (down.ok, down.detail) == (False, "HTTP 503")
    assert (up.ok, up.detail) == (True, "ok")
    assert without_endpoints.requests[0]["line"] == "GET /healthz HTTP/1.0"


def test_http_expect_body_substring(http_server):
    assert probe("http", V4, http_server.port, path="/status", expect='"ready"').detail == "ok"
    result = probe("http", V4, http_server.port, path="/status", expect='"draining"')
    assert (result.ok, result.detail) == (False, "unexpected body")


def test_http_expect_is_checked_only_on_an_expected_status(http_server):
    assert probe("http", V4, http_server.port, path="/broken", expect="internal").detail == "HTTP 500"


def test_http_expect_reads_at_most_64_kib():
    marker = b"MARKER"
    near = b"x" * 1000 + marker
    far = b"x" * (64 * 1024) + marker
    with HttpServer({"/near": (200, near), "/far": (200, far)}) as server:
        assert probe("http", V4, server.port, path="/near", expect="MARKER").detail == "ok"
        assert probe("http", V4, server.port, path="/far", expect="MARKER").detail == "unexpected body"


def test_http_expect_honours_content_length_on_a_connection_left_open():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready"
    with TcpServer(reply=reply, keep_open=True) as server:
        result = probe("http", V4, server.port, timeout=2.0, expect="ready")
    assert (result.ok, result.detail) == (True, "ok")
    assert_fast(result)


def test_http_hanging_server_times_out():
    timeout = 0.3
    with TcpServer(hold=True) as server:
        result = probe("http", V4, server.port, timeout=timeout)
        assert server.accepted == 1
    assert (result.ok, result.detail) == (False, "timeout")
    assert_timed_out(result, timeout)


def test_http_garbage_and_empty_replies():
    with TcpServer(reply=b"SSH-2.0-OpenSSH_9.2\r\n") as ssh:
        assert probe("http", V4, ssh.port).detail == "bad HTTP response"
    with TcpServer(reply=b"") as silent_close:
        assert probe("http", V4, silent_close.port).detail == "empty reply"


def test_http_host_header(http_server):
    probe("http", V4, http_server.port)
    probe("http", V4, http_server.port, host="web.example.org")
    hosts = [request["headers"]["Host"] for request in http_server.requests]
    assert hosts == ["127.0.0.1", "web.example.org"]


@needs_ipv6
def test_http_ipv6_host_header_is_bracketed():
    with HttpServer({"/": (200, b"ok")}, address=V6) as server:
        result = probe("http", V6, server.port)
    assert result.ok, result.detail
    assert server.requests[0]["headers"]["Host"] == "[::1]"


def test_http_path_cannot_inject_headers(http_server):
    probe("http", V4, http_server.port, path="/x\r\nX-Injected: 1")
    request = http_server.requests[0]
    assert request["line"] == "GET /x%0D%0AX-Injected:%201 HTTP/1.0"
    assert "X-Injected" not in request["headers"]


# --- HTTPS ---------------------------------------------------------------------------------------------------------

def test_https_200_is_ok_despite_self_signed_cert(https_server):
    result = probe("https", V4, https_server.port)
    assert (result.ok, result.detail) == (True, "ok")
    assert https_server.requests[0]["headers"]["User-Agent"] == "portico-healthd"


def test_https_500_fails(https_server):
    result = probe("https", V4, https_server.port, path="/broken")
    assert (result.ok, result.detail) == (False, "HTTP 500")


def test_https_sni_is_the_host_name_only(https_server):
    assert probe("https", V4, https_server.port, host="api.example.org", expect="fine").detail == "ok"
    assert probe("https", V4, https_server.port).detail == "ok"
    assert probe("https", V4, https_server.port, host="127.0.0.1").detail == "ok"
    assert https_server.sni == ["api.example.org", None, None]
    assert https_server.requests[0]["headers"]["Host"] == "api.example.org"


def test_https_against_plain_http_is_a_tls_error():
    with TcpServer(reply=b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok") as plain:
        result = probe("https", V4, plain.port)
    assert not result.ok
    assert result.detail.startswith("tls error: "), result.detail
    assert_fast(result)


# --- UDP -----------------------------------------------------------------------------------------------------------

def test_udp_echo_is_ok():
    with UdpServer() as server:
        result = probe("udp", V4, server.port, send="ping", expect="ping")
        default_payload = probe("udp", V4, server.port)
    assert (result.ok, result.detail) == (True, "ok")
    assert (default_payload.ok, default_payload.detail) == (True, "ok")


@needs_ipv6
def test_udp_ipv6_echo():
    with UdpServer(V6) as server:
        assert probe("udp", V6, server.port, expect="portico-healthcheck").detail == "ok"


def test_udp_unexpected_reply():
    with UdpServer(reply=b"pong") as server:
        result = probe("udp", V4, server.port, send="ping", expect="PONG")
    assert (result.ok, result.detail) == (False, "unexpected reply")


def test_udp_silent_server_is_no_reply():
    timeout = 0.3
    with UdpServer(silent=True) as server:
        result = probe("udp", V4, server.port, timeout=timeout)
    assert (result.ok, result.detail) == (False, "no reply")
    assert_timed_out(result, timeout)


def test_udp_closed_port_is_refused_fast():
    result = probe("udp", V4, free_port(V4, socket.SOCK_DGRAM), timeout=2.0)
    assert (result.ok, result.detail) == (False, "connection refused")
    assert_fast(result)


# --- no leaks ------------------------------------------------------------------------------------------------------

def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_timeouts_and_failures_close_their_sockets():
    # The hanging HTTP server here is a listener that never accepts: the kernel completes the handshake
    # and queues the request, and no server-side socket joins this process's descriptor count.
    with socket.socket() as backlog, UdpServer(silent=True) as silent:
        backlog.bind((V4, 0))
        backlog.listen(128)
        targets = [ProbeTarget("http", V4, backlog.getsockname()[1], 0.2), ProbeTarget("udp", V4, silent.port, 0.2),
                   ProbeTarget("tcp", V4, free_port(V4, socket.SOCK_STREAM), 0.2)] * 20

        async def run_all() -> tuple[list[ProbeResult], int, int]:
            before = _open_fds()
            results = await asyncio.gather(*(run_probe(t) for t in targets))
            return results, before, _open_fds()

        results, before, after = asyncio.run(run_all())
    assert [r.detail for r in results] == ["timeout", "no reply", "connection refused"] * 20
    assert after == before
