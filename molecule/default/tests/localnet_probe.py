"""Send hand-made TCP SYNs in Ethernet frames to a neighbour's MAC and report what answers
(standard library only: it runs in a lab container, which has CAP_NET_RAW).

    python3 localnet_probe.py INTERFACE NEIGHBOUR_MAC SOURCE_IP PORT [--target IP] [--count N]

The IP destination defaults to 127.0.0.1: a host that routes such a frame to its loopback
services (route_localnet=1, kube-proxy's CVE-2020-8558) answers, a correct one drops it as a
martian. Prints {"sent": n, "answers": [{"from": ip, "flags": "SA"|"R"|...}]}.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
TCP_FLAGS = {0x01: "F", 0x02: "S", 0x04: "R", 0x08: "P", 0x10: "A"}


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(source: str, target: str, sport: int, dport: int) -> bytes:
    src, dst = ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(target).packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0x4000, 64, 6, 0, src, dst)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + tcp


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("interface")
    parser.add_argument("mac")
    parser.add_argument("source")
    parser.add_argument("port", type=int)
    parser.add_argument("--target", default="127.0.0.1")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--wait", type=float, default=2.0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.bind((args.interface, ETH_P_IP))
    own_mac = sock.getsockname()[4]
    ethernet = bytes.fromhex(args.mac.replace(":", "")) + own_mac + struct.pack("!H", ETH_P_IP)
    sports = [random.randint(20000, 60000) for _ in range(args.count)]
    for sport in sports:
        sock.send(ethernet + syn(args.source, args.target, sport, args.port))
    answers = []
    deadline = time.monotonic() + args.wait
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            continue
        packet = frame[14:]
        if len(packet) < 40 or packet[9] != 6 or socket.inet_ntoa(packet[16:20]) != args.source:
            continue
        offset = (packet[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", packet[offset:offset + 4])
        if sport == args.port and dport in sports:
            flags = "".join(name for bit, name in TCP_FLAGS.items() if packet[offset + 13] & bit)
            answers.append({"from": socket.inet_ntoa(packet[12:16]), "flags": flags})
    json.dump({"sent": len(sports), "answers": answers}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
