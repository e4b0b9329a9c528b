"""Pure helpers of module_utils.health.probes (the probes themselves: tests/integration)."""

from __future__ import annotations

import ssl

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.health.probes import (
    ProbeTarget,
    describe_error,
    parse_status_line,
)


@pytest.mark.parametrize("data, status", [
    (b"HTTP/1.1 200 OK\r\n", 200),
    (b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 503),
    (b"HTTP/1.1 204\r\n", 204),  # the reason phrase may be empty
    (b"HTTP/1.1 404 Not Found\n", 404),  # bare LF, as some embedded servers send
    (b"HTTP/1.1 200", 200),  # nothing after the code yet
    (b"HTTP/2 200 OK\r\n", 200),
])
def test_parse_status_line_accepts(data, status):
    assert parse_status_line(data) == status


@pytest.mark.parametrize("data", [
    b"",
    b"HTTP/1.1",
    b"HTTP/1.1 20 OK\r\n",  # two digits
    b"HTTP/1.1 2000 OK\r\n",  # four digits
    b"HTTP/1.1 099 Nope\r\n",
    b"HTTP/1.1 abc OK\r\n",
    b"http/1.1 200 OK\r\n",  # the protocol name is case-sensitive
    b" HTTP/1.1 200 OK\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n",
    b"\x16\x03\x03\x00\x02\x02\x46",  # a TLS alert: a TLS server probed as plain HTTP
    b"Content-Type: text/plain\r\nHTTP/1.1 200 OK\r\n",  # the status line must come first
])
def test_parse_status_line_rejects(data):
    assert parse_status_line(data) is None


def test_describe_error_wording():
    assert describe_error(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
    assert describe_error(ConnectionResetError(104, "Connection reset by peer")) == "connection reset"
    assert describe_error(OSError(113, "No route to host")) == "no route to host"
    tls = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    tls.reason = "WRONG_VERSION_NUMBER"
    assert describe_error(tls) == "tls error: wrong version number"
    assert describe_error(ValueError("bad")) == "error: ValueError: bad"


def test_probe_target_defaults():
    target = ProbeTarget("http", "192.0.2.10", 80, 1.0)
    assert (target.path, target.host, target.expected_status, target.send, target.expect, target.source) == \
        ("/", None, (200,), None, None, None)
    assert hash(target) == hash(ProbeTarget("http", "192.0.2.10", 80, 1.0))  # frozen: usable as a dict key
