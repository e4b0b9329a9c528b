# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health probes for backends, built for volume.

``portico-healthd`` probes about 1,000 backends every 200 ms on one core, so
every probe is a bare non-blocking socket (no streams, no transports, no DNS:
addresses must be IP literals).

* ``tcp``: connect, then close. The verdict is the handshake. It runs as loop
  callbacks (``TcpConnectProbe``), not a coroutine: at 5,000 probes/s a task,
  its futures and ``wait_for`` cost more CPU than the probe itself.
* ``http``: ``GET <path> HTTP/1.0`` with ``Host``, ``User-Agent: portico-healthd``
  and ``Connection: close``; the status must be in ``expected_status``, and when
  ``expect`` is set the body (first 64 KiB) must contain it. The Kubernetes
  ``healthCheckNodePort`` convention (``/healthz``: 200 on nodes with local
  endpoints, 503 otherwise) is this probe with ``path="/healthz"``.
* ``https``: the same over TLS (memory BIOs over the same socket). Certificates
  are NOT verified: backends commonly serve self-signed certificates, and the
  probe checks liveness, not identity. SNI is ``host`` when it is a name.
* ``udp``: connected datagram socket, one payload out, one reply back. An ICMP
  port unreachable fails the probe at once ("connection refused").

Every TCP-based probe ends with SO_LINGER (1, 0): the close sends RST, so
thousands of checks per second leave no TIME_WAIT sockets behind, and their
conntrack entries close at once instead of lingering in TIME_WAIT (HAProxy
closes its checks the same way).

``run_probe`` never raises (except ``asyncio.CancelledError``); whatever went
wrong is in ``ProbeResult.detail``. The whole probe, connect included, is
bounded by ``ProbeTarget.timeout``.

Standard library only, Python 3.9+: runs on gateways with Debian's python3.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import re
import socket
import ssl
import struct
import sys
from dataclasses import dataclass
from typing import Any, Callable, Tuple, Union
from urllib.parse import quote

OK = "ok"
TIMEOUT = "timeout"
NO_REPLY = "no reply"
UDP_DEFAULT_PAYLOAD = b"portico-healthcheck\n"
HTTP_BODY_LIMIT = 64 * 1024
USER_AGENT = "portico-healthd"

# l_onoff=1, l_linger=0: close() aborts the connection with RST (no TIME_WAIT).
_LINGER_RST = struct.pack("ii", 1, 0)
# Linux: defer the source port choice to connect() when binding a source address,
# so bound probes share ephemeral ports per destination (Python < 3.12 lacks the name).
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24 if sys.platform.startswith("linux") else None)
_STATUS_LINE_LIMIT = 8 * 1024  # a status line longer than this is not HTTP
_RECV_SIZE = 16 * 1024
_UDP_RECV_SIZE = 65535
_STATUS_RE = re.compile(rb"HTTP/\d(?:\.\d)? ([1-9]\d\d)(?:[ \t\r\n]|$)")
_CONTENT_LENGTH_RE = re.compile(rb"\r?\ncontent-length:[ \t]*(\d+)[ \t]*\r?\n", re.IGNORECASE)
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
# Everything printable but space stays as is (already-encoded paths pass through);
# space, controls and non-ASCII are percent-encoded, so no header injection.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class ProbeTarget:
    kind: str  # "tcp" | "http" | "https" | "udp"
    address: str  # IPv4 or IPv6 literal
    port: int
    timeout: float  # seconds for the whole probe (connect + request + verdict)
    path: str = "/"
    host: str | None = None  # HTTP Host header and TLS SNI; default: the address (bracketed for IPv6 in Host)
    expected_status: tuple[int, ...] = (200,)
    send: str | None = None  # UDP payload (default b"portico-healthcheck\n" when None); ignored for tcp/http
    expect: str | None = None  # UDP: reply must contain this text; HTTP(S): body must contain it when set
    source: str | None = None  # optional source address to bind


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency: float  # seconds from start to verdict
    detail: str  # short reason: "ok", "HTTP 500", "timeout", "connection refused", "no reply", ...


async def run_probe(target: ProbeTarget) -> ProbeResult:
    """Probe one backend; never raises except ``asyncio.CancelledError``."""
    loop = asyncio.get_running_loop()
    if target.kind == "tcp":
        return await _await_tcp_connect(loop, target)
    start = loop.time()
    try:
        detail = await asyncio.wait_for(_probe(loop, target), target.timeout)
    except asyncio.TimeoutError:
        # Silence is the normal failure of a UDP service, hence its own wording.
        detail = NO_REPLY if target.kind == "udp" else TIMEOUT
    except Exception as exc:  # pylint: disable=broad-except  # a verdict for the daemon, never a crash
        detail = describe_error(exc)
    return ProbeResult(ok=detail == OK, latency=loop.time() - start, detail=detail)


class TcpConnectProbe:
    """One TCP connect check as event-loop callbacks: a non-blocking connect, a
    writer callback for the handshake's outcome and a timer for the timeout.

    Starts on construction; ``done`` is called exactly once with the result, always
    from the loop (never from the constructor), unless ``cancel()`` came first.
    """

    __slots__ = ("_loop", "_done", "_sock", "_start", "_timer", "_watching", "_finished")

    def __init__(self, loop: asyncio.AbstractEventLoop, target: ProbeTarget,
                 done: Callable[[ProbeResult], object]) -> None:
        self._loop = loop
        self._done = done
        self._start = loop.time()
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watching = False
        self._finished = False
        try:
            family, sockaddr = _sockaddr(target.address, target.port)
            self._sock = socket.socket(family, socket.SOCK_STREAM)
            self._sock.setblocking(False)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            if target.source:
                _bind_source(self._sock, target.source)
            code = self._sock.connect_ex(sockaddr)
        except Exception as exc:  # pylint: disable=broad-except  # a verdict, never a crash
            loop.call_soon(self._finish, describe_error(exc))
            return
        if code != errno.EINPROGRESS:  # loopback can complete (or refuse) at once
            loop.call_soon(self._finish, _connect_verdict(code))
            return
        loop.add_writer(self._sock.fileno(), self._writable)
        self._watching = True
        self._timer = loop.call_at(self._start + target.timeout, self._finish, TIMEOUT)

    def cancel(self) -> None:
        """Stop without a verdict; the socket is closed."""
        self._finish(None)

    def _writable(self) -> None:
        sock = self._sock
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock is not None else errno.EBADF
        self._finish(_connect_verdict(code))

    def _finish(self, detail: str | None) -> None:
        if self._finished:  # the timeout and the handshake can land in the same loop pass
            return
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        if self._sock is not None:
            if self._watching:
                self._loop.remove_writer(self._sock.fileno())
            self._sock.close()  # SO_LINGER (1, 0): RST, no TIME_WAIT
        if detail is not None:
            self._done(ProbeResult(ok=detail == OK, latency=self._loop.time() - self._start, detail=detail))


def _connect_verdict(code: int) -> str:
    if code == 0:
        return OK
    return describe_error(OSError(code, os.strerror(code)))  # OSError(code) picks the subclass, e.g. refused


async def _await_tcp_connect(loop: asyncio.AbstractEventLoop, target: ProbeTarget) -> ProbeResult:
    outcome: asyncio.Future[ProbeResult] = loop.create_future()

    def deliver(result: ProbeResult) -> None:
        if not outcome.done():  # cancelled while the verdict was already queued
            outcome.set_result(result)

    probe = TcpConnectProbe(loop, target, deliver)
    try:
        return await outcome
    except asyncio.CancelledError:
        probe.cancel()
        raise


def parse_status_line(data: bytes) -> int | None:
    """Status code of an HTTP/1.x response starting with ``data``, or None if it is not one."""
    match = _STATUS_RE.match(data)
    return int(match.group(1)) if match else None


def describe_error(exc: BaseException) -> str:
    """Short, stable wording for what ended a probe."""
    if isinstance(exc, ssl.SSLError):  # before OSError: SSLError is one
        reason = exc.reason or (exc.args[1] if len(exc.args) > 1 else type(exc).__name__)
        return f"tls error: {str(reason).lower().replace('_', ' ')}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return "invalid address"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"error: {type(exc).__name__}: {exc}"


async def _probe(loop: asyncio.AbstractEventLoop, target: ProbeTarget) -> str:
    if target.kind == "udp":
        return await _probe_udp(loop, target)
    if target.kind not in ("http", "https"):
        return f"unsupported kind: {target.kind}"
    family, sockaddr = _sockaddr(target.address, target.port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        if target.source:
            _bind_source(sock, target.source)
        await loop.sock_connect(sock, sockaddr)
        if target.kind == "http":
            channel: _Channel = _PlainChannel(loop, sock)
        else:
            channel = _TlsChannel(loop, sock, _sni(target.host))
            await channel.handshake()
        return await _http_check(channel, target)
    finally:
        # Cancellation (timeout) lands here too: the loop has already dropped
        # its reader/writer for this fd by the time the task resumes.
        sock.close()


async def _probe_udp(loop: asyncio.AbstractEventLoop, target: ProbeTarget) -> str:
    family, sockaddr = _sockaddr(target.address, target.port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if target.source:
            sock.bind((target.source, 0))
        # Connected: the kernel filters replies to this peer and reports ICMP
        # port unreachable as ConnectionRefusedError on the next send/recv.
        sock.connect(sockaddr)
        payload = UDP_DEFAULT_PAYLOAD if target.send is None else target.send.encode("utf-8")
        await loop.sock_sendall(sock, payload)
        reply = await loop.sock_recv(sock, _UDP_RECV_SIZE)
        if target.expect is not None and target.expect.encode("utf-8") not in reply:
            return "unexpected reply"
        return OK
    finally:
        sock.close()


async def _http_check(channel: _Channel, target: ProbeTarget) -> str:
    await channel.send(_http_request(target.path, _host_header(target.host, target.address)))
    head = b""
    while b"\n" not in head and len(head) <= _STATUS_LINE_LIMIT:
        chunk = await channel.recv(_RECV_SIZE)
        if not chunk:
            break
        head += chunk
    status = parse_status_line(head)
    if status is None:
        return "bad HTTP response" if head else "empty reply"
    if status not in target.expected_status:
        return f"HTTP {status}"
    if target.expect is None:
        return OK  # verdict known: the linger close discards the rest
    body = await _read_body(channel, head)
    return OK if target.expect.encode("utf-8") in body else "unexpected body"


async def _read_body(channel: _Channel, received: bytes) -> bytes:
    """Body up to HTTP_BODY_LIMIT: until EOF, the limit, or Content-Length, whichever comes first."""
    end = _HEADER_END_RE.search(received)
    while end is None:
        if len(received) > HTTP_BODY_LIMIT:
            return b""  # headers alone over the limit: no body to match
        chunk = await channel.recv(_RECV_SIZE)
        if not chunk:
            return b""
        received += chunk
        end = _HEADER_END_RE.search(received)
    headers, body = received[: end.end()], received[end.end():]
    limit = HTTP_BODY_LIMIT
    length = _CONTENT_LENGTH_RE.search(headers)
    if length:  # a server that keeps the connection open must not cost us the timeout
        limit = min(limit, int(length.group(1)))
    while len(body) < limit:
        chunk = await channel.recv(_RECV_SIZE)
        if not chunk:
            break
        body += chunk
    return body[:limit]


class _PlainChannel:
    __slots__ = ("_loop", "_sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock

    async def send(self, data: bytes) -> None:
        await self._loop.sock_sendall(self._sock, data)

    async def recv(self, size: int) -> bytes:
        return await self._loop.sock_recv(self._sock, size)


class _TlsChannel:
    """TLS through memory BIOs over the probe's own socket: the same cheap
    ``sock_*`` calls as plain HTTP, no SSL transport or streams."""

    __slots__ = ("_loop", "_sock", "_incoming", "_outgoing", "_tls", "_eof")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, server_hostname: str | None) -> None:
        self._loop = loop
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._eof = False
        self._tls = _tls_context().wrap_bio(self._incoming, self._outgoing, server_side=False,
                                            server_hostname=server_hostname)

    async def handshake(self) -> None:
        await self._drive(self._tls.do_handshake)

    async def send(self, data: bytes) -> None:
        await self._drive(self._tls.write, data)

    async def recv(self, size: int) -> bytes:
        try:
            return await self._drive(self._tls.read, size)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # end of the response; many servers skip close_notify

    async def _drive(self, operation: Callable[..., Any], *args: Any) -> Any:
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                await self._flush()
                if self._eof:  # OpenSSL raises SSLEOFError itself after EOF; never spin regardless
                    raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol") from None
                data = await self._loop.sock_recv(self._sock, _RECV_SIZE)
                if data:
                    self._incoming.write(data)
                else:
                    self._eof = True
                    self._incoming.write_eof()
                continue
            await self._flush()
            return result

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await self._loop.sock_sendall(self._sock, data)


_Channel = Union[_PlainChannel, _TlsChannel]
_SockAddr = Tuple[Any, ...]


@functools.lru_cache(maxsize=8192)
def _sockaddr(address: str, port: int) -> tuple[int, _SockAddr]:
    """(family, sockaddr) of a numeric address. AI_NUMERICHOST: a name can never
    start a DNS lookup (asyncio would run it in a thread) in the probe path. A
    link-local "fe80::1%eth0" comes back as ("fe80::1", port, 0, scope_id), which
    asyncio takes as is, where it would hand the "%eth0" form to getaddrinfo."""
    info = socket.getaddrinfo(address, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)[0]
    return info[0], info[4]


def _bind_source(sock: socket.socket, source: str) -> None:
    if _IP_BIND_ADDRESS_NO_PORT is not None:
        try:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        except OSError:
            pass  # older kernel: bind() picks the port, which still works
    sock.bind((source, 0))


@functools.lru_cache(maxsize=8192)
def _is_ip(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):
            continue
    return False


def _sni(host: str | None) -> str | None:
    """SNI only carries names (RFC 6066): none for IP literals or when no host is set."""
    if not host or _is_ip(host.strip("[]")):
        return None
    return host


def _host_header(host: str | None, address: str) -> str:
    if host:
        return host
    return f"[{address}]" if ":" in address else address


@functools.lru_cache(maxsize=8192)
def _http_request(path: str, host: str) -> bytes:
    """The request bytes, built once per (path, host): the daemon repeats them forever."""
    target = quote(path if path.startswith("/") else "/" + path, safe=_PATH_SAFE)
    host = quote(host, safe=_PATH_SAFE)  # a header value: same rule keeps CR/LF out
    return (
        f"GET {target} HTTP/1.0\r\n"
        f"Host: {host}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


@functools.lru_cache(maxsize=None)
def _tls_context() -> ssl.SSLContext:
    """One client context for all probes (a context per probe costs more than the probe)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Deliberately unverified: self-signed backend certificates are the norm,
    # and a health check asks "does it answer", not "is it who it claims".
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
