"""A bounded port scanner for the lab client (standard library only: it runs in the container).

    python3 port_scan.py tcp TARGET[,TARGET...] [--ports all|P,P-Q,...] [--timeout S] [--concurrency N]
    python3 port_scan.py udp TARGET[,TARGET...] --ports P,P-Q,... [--timeout S] [--concurrency N]

TCP: a non-blocking connect() to every port, at most N in flight (epoll). A port that completes
the handshake is "open", one that answers with a reset "refused"; one that gives no answer
within S seconds is "silent" (its only SYN was dropped: S stays under Linux's first SYN
retransmission, one second). UDP: one datagram to each port on a connected socket; a reply is
"open", an ICMP port unreachable "refused", nothing within S "silent".

Prints one JSON object: {"proto", "seconds", "scanned", "targets": {TARGET: {"open": [...],
"refused": [...], "silent": n, "errors": {kind: [...]}}}}. Exit 0 when the scan ran.
"""

from __future__ import annotations

import argparse
import collections
import errno
import ipaddress
import json
import select
import socket
import sys
import time

PAYLOAD = b"portico-port-scan\n"
RETRIES = 200  # of a probe the kernel refused with EAGAIN, 10 ms apart


def parse_ports(text: str) -> list[int]:
    if text == "all":
        return list(range(1, 65536))
    ports: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        ports.update(range(int(first), int(last or first) + 1))
    return sorted(ports)


class Scan:
    def __init__(self, proto: str, targets: list[str], timeout: float, concurrency: int):
        self.proto, self.timeout, self.concurrency = proto, timeout, concurrency
        self.results = {t: {"open": [], "refused": [], "silent": 0, "errors": collections.defaultdict(list)} for t in targets}
        self.poller = select.epoll()
        self.in_flight: dict[int, tuple[socket.socket, str, int, float]] = {}  # fd -> socket, target, port, start
        # (fd, start) by start time; an entry whose fd was closed (and maybe reused) since is stale.
        self.order: collections.deque[tuple[int, float]] = collections.deque()

    def start(self, target: str, port: int) -> bool:
        """Send the probe; False when the kernel said EAGAIN (no buffer or local port yet): retry."""
        family = socket.AF_INET6 if ipaddress.ip_address(target).version == 6 else socket.AF_INET
        kind = socket.SOCK_STREAM if self.proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(family, kind | socket.SOCK_NONBLOCK)
        code = sock.connect_ex((target, port))
        if self.proto == "udp" and code == 0:
            try:
                sock.send(PAYLOAD)
            except OSError as err:
                code = err.errno
        if code == errno.EAGAIN:
            sock.close()
            return False
        if code not in (0, errno.EINPROGRESS) or (self.proto == "tcp" and code == 0):
            self.finish(sock, target, port, code)
            return True
        events = select.EPOLLOUT if self.proto == "tcp" else select.EPOLLIN
        self.poller.register(sock.fileno(), events | select.EPOLLERR)
        started = time.monotonic()
        self.in_flight[sock.fileno()] = (sock, target, port, started)
        self.order.append((sock.fileno(), started))
        return True

    def finish(self, sock: socket.socket, target: str, port: int, code: int | None) -> None:
        result = self.results[target]
        if code == 0:
            result["open"].append(port)
        elif code == errno.ECONNREFUSED:
            result["refused"].append(port)
        elif code is None:
            result["silent"] += 1
        else:
            result["errors"][errno.errorcode.get(code, str(code))].append(port)
        sock.close()

    def settle(self, wait: float) -> None:
        for fd, _mask in self.poller.poll(wait):
            sock, target, port, _started = self.in_flight.pop(fd)
            self.poller.unregister(fd)
            if self.proto == "tcp":
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            else:
                try:
                    sock.recv(65535)
                    code = 0
                except OSError as err:
                    code = err.errno
            self.finish(sock, target, port, code)
        now = time.monotonic()
        while self.order and now - self.order[0][1] >= self.timeout:
            fd, started = self.order.popleft()
            if fd in self.in_flight and self.in_flight[fd][3] == started:
                sock, target, port, _started = self.in_flight.pop(fd)
                self.poller.unregister(fd)
                self.finish(sock, target, port, None)

    def run(self, work: list[tuple[str, int]]) -> None:
        for target, port in work:
            while len(self.in_flight) >= self.concurrency:
                self.settle(0.01)
            for _attempt in range(RETRIES):
                if self.start(target, port):
                    break
                self.settle(0.01)  # let answers and expiries free buffers and ports
            else:
                self.results[target]["errors"]["EAGAIN"].append(port)
            if len(self.in_flight) % 256 == 0:
                self.settle(0)
        while self.in_flight:
            self.settle(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("proto", choices=["tcp", "udp"])
    parser.add_argument("targets")
    parser.add_argument("--ports", default="all")
    parser.add_argument("--timeout", type=float, default=0.4)
    parser.add_argument("--concurrency", type=int, default=4000)
    args = parser.parse_args()
    targets, ports = args.targets.split(","), parse_ports(args.ports)
    scan = Scan(args.proto, targets, args.timeout, args.concurrency)
    started = time.monotonic()
    # Port-major order: each target sees its ports spread over the whole scan, not in one burst.
    scan.run([(target, port) for port in ports for target in targets])
    for result in scan.results.values():
        result["open"].sort()
        result["refused"].sort()
        result["errors"] = dict(result["errors"])
    json.dump({"proto": args.proto, "seconds": round(time.monotonic() - started, 2), "scanned": len(ports) * len(targets),
               "targets": scan.results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
