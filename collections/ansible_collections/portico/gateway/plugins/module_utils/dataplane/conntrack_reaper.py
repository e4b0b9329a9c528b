# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""portico-conntrack-reaper: delete the conntrack entry of every TCP connection that is over.

conntrackd (FTFW, external cache disabled) writes every peer's connections into this gateway's
kernel table, closing states included, so that a flow moved here keeps its NAT binding. Once a
connection is over (TIME_WAIT, or CLOSE after a reset) its entries do harm twice:

- conntrackd 1.4.7 writes its replicas with no TCP flag but "be liberal" (none at all with
  TCPWindowTracking on). The kernel starts a new connection on a SYN that meets a TIME_WAIT or
  CLOSE entry only when the entry's flags say a FIN was seen (IP_CT_TCP_FLAG_CLOSE_INIT); on a
  replica it passes the SYN on the old entry instead, with the peer's NAT binding (its return
  address). A client that reuses its source port after ECMP moved that port to this gateway
  (drain, restore, failover, scale-out) then never gets an answer.
- The gateway's own TIME_WAIT entry expires after two minutes but the kernel collects expired
  entries lazily, and conntrackd replicates the destroy whenever that happens. If the client
  reused the port on a peer in between, that late destroy names the tuple of the peer's new,
  live connection, and the peer deletes it.

So a connection that is over leaves no entry anywhere: this daemon listens to conntrack events
(a socket filter in the kernel passes only TCP entries entering TIME_WAIT or CLOSE) and deletes
each such entry, naming its id so that a newer entry with the same tuple is never hit.
conntrackd replicates the deletion of the gateway's own entries at once, while the client still
holds the port. At start, and after the kernel dropped events (receive buffer overrun), it
sweeps the whole table once. A late retransmitted last ACK or FIN then finds no entry and is
answered or dropped as by a host that has closed the connection; the endpoints keep their own
TIME_WAIT.

Standard library only (gateways run it with Debian's python3). ``roles/conntrackd`` installs it
with an entry point; ``portico-conntrack-reaper --help`` for the options.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import logging
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

LOG = logging.getLogger("portico-conntrack-reaper")

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0  # events for new and updated entries, and dumped entries
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
CT_NEW = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
# Multicast groups as a bind() mask: NFNLGRP_CONNTRACK_NEW (1) and NFNLGRP_CONNTRACK_UPDATE (2).
GROUPS_NEW_AND_UPDATE = (1 << 0) | (1 << 1)

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

CTA_TUPLE_ORIG = 1
CTA_PROTOINFO = 4
CTA_ID = 12
CTA_ZONE = 18
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
TCP_CONNTRACK_TIME_WAIT = 7
TCP_CONNTRACK_CLOSE = 8
CLOSED_STATES = (TCP_CONNTRACK_TIME_WAIT, TCP_CONNTRACK_CLOSE)

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id (host order)
NFGEN_HEADER = struct.Struct("=BBH")  # family, version, resource id
ATTR_HEADER = struct.Struct("=HH")  # length, type
ATTRS_OFFSET = NLMSG_HEADER.size + NFGEN_HEADER.size

# Deletes sent per datagram: the kernel handles each message of a datagram in turn.
DELETE_BATCH = 256


@dataclass(frozen=True)
class ClosedEntry:
    """A TCP entry in TIME_WAIT or CLOSE: what a delete request for exactly that entry needs."""

    family: int
    tuple_orig: bytes  # the CTA_TUPLE_ORIG attribute as received, header included
    entry_id: bytes  # the CTA_ID attribute as received
    zone: bytes  # the CTA_ZONE attribute as received, or b"" (default zone)


# --- Messages ----------------------------------------------------------------------------------

def align4(length: int) -> int:
    return (length + 3) & ~3


def attributes(buffer: bytes) -> Iterator[Tuple[int, bytes, bytes]]:
    """(type, payload, whole attribute) of each netlink attribute in buffer; stops at a cut one."""
    offset = 0
    while offset + ATTR_HEADER.size <= len(buffer):
        length, kind = ATTR_HEADER.unpack_from(buffer, offset)
        if length < ATTR_HEADER.size or offset + length > len(buffer):
            return
        yield kind & NLA_TYPE_MASK, buffer[offset + ATTR_HEADER.size:offset + length], buffer[offset:offset + length]
        offset += align4(length)


def attribute(buffer: bytes, kind: int) -> Optional[Tuple[bytes, bytes]]:
    """(payload, whole attribute) of the first attribute of that type, or None."""
    return next(((payload, whole) for found, payload, whole in attributes(buffer) if found == kind), None)


def messages(data: bytes) -> Iterator[Tuple[int, bytes]]:
    """(type, payload after the netlink header) of each message in a datagram; stops at a cut one."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _seq, _port = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > len(data):
            return
        yield kind, data[offset + NLMSG_HEADER.size:offset + length]
        offset += align4(length)


def tcp_state(body: bytes) -> Optional[int]:
    """The TCP state of an entry's attributes, or None (not TCP, or no protocol info)."""
    protoinfo = attribute(body, CTA_PROTOINFO)
    tcp = attribute(protoinfo[0], CTA_PROTOINFO_TCP) if protoinfo else None
    state = attribute(tcp[0], CTA_PROTOINFO_TCP_STATE) if tcp else None
    return state[0][0] if state and state[0] else None


def closed_entry(kind: int, payload: bytes) -> Optional[ClosedEntry]:
    """The entry to delete when this message (an event or a dumped entry) is a TCP entry in
    TIME_WAIT or CLOSE; None for anything else."""
    if kind != CT_NEW or len(payload) < NFGEN_HEADER.size:
        return None
    body = payload[NFGEN_HEADER.size:]
    if tcp_state(body) not in CLOSED_STATES:
        return None
    tuple_orig, entry_id = attribute(body, CTA_TUPLE_ORIG), attribute(body, CTA_ID)
    if tuple_orig is None or entry_id is None:
        return None
    zone = attribute(body, CTA_ZONE)
    return ClosedEntry(payload[0], tuple_orig[1], entry_id[1], zone[1] if zone else b"")


def request(kind: int, flags: int, seq: int, family: int, body: bytes = b"") -> bytes:
    payload = NFGEN_HEADER.pack(family, 0, 0) + body
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(payload), NFNL_SUBSYS_CTNETLINK << 8 | kind,
                             NLM_F_REQUEST | flags, seq, 0) + payload


def delete_request(entry: ClosedEntry, seq: int) -> bytes:
    """A delete of exactly that entry: the kernel matches the tuple, zone and id. No ACK asked:
    the kernel answers only a failure."""
    return request(IPCTNL_MSG_CT_DELETE, 0, seq, entry.family, entry.tuple_orig + entry.entry_id + entry.zone)


def dump_request(seq: int) -> bytes:
    """A dump of every entry, IPv4 and IPv6 (family AF_UNSPEC)."""
    return request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, socket.AF_UNSPEC)


def errors(data: bytes) -> Iterator[int]:
    """The error code (positive errno, 0 for an ACK) of each NLMSG_ERROR in a datagram."""
    for kind, payload in messages(data):
        if kind == NLMSG_ERROR and len(payload) >= 4:
            yield -struct.unpack_from("=i", payload)[0]


# --- Kernel socket filter ----------------------------------------------------------------------

BPF_LD_W_ABS, BPF_LD_B_IND, BPF_LD_IMM, BPF_LDX_IMM = 0x20, 0x50, 0x00, 0x01
BPF_JEQ_K, BPF_TAX, BPF_RET_K = 0x15, 0x07, 0x06
SKF_AD_OFF = -0x1000
SKF_AD_NLATTR, SKF_AD_NLATTR_NEST = 12, 16
REJECT, ACCEPT = "reject", "accept"

Instruction = Tuple[int, int, int, int]  # code, jump if true, jump if false, k


def ancillary(offset: int) -> int:
    """The k of a load from the kernel's ancillary data at that offset (as unsigned 32 bits)."""
    return (SKF_AD_OFF + offset) & 0xFFFFFFFF


def filter_program() -> List[Instruction]:
    """Classic BPF that passes a conntrack event only when its TCP state is TIME_WAIT or CLOSE.

    The kernel's netlink-attribute loads find CTA_PROTOINFO, CTA_PROTOINFO_TCP in it and the
    state in that (0 when absent: not TCP, or no protocol info), so every other event is
    dropped before it is queued to the daemon.
    """
    # (code, where to go if true, if false, k); "" is the next instruction.
    steps: List[Tuple[int, str, str, int]] = [
        (BPF_LD_IMM, "", "", ATTRS_OFFSET),  # A = offset of the first attribute
        (BPF_LDX_IMM, "", "", CTA_PROTOINFO),
        (BPF_LD_W_ABS, "", "", ancillary(SKF_AD_NLATTR)),  # A = offset of CTA_PROTOINFO, or 0
        (BPF_JEQ_K, REJECT, "", 0),
        (BPF_LDX_IMM, "", "", CTA_PROTOINFO_TCP),
        (BPF_LD_W_ABS, "", "", ancillary(SKF_AD_NLATTR_NEST)),  # A = offset of CTA_PROTOINFO_TCP, or 0
        (BPF_JEQ_K, REJECT, "", 0),
        (BPF_LDX_IMM, "", "", CTA_PROTOINFO_TCP_STATE),
        (BPF_LD_W_ABS, "", "", ancillary(SKF_AD_NLATTR_NEST)),  # A = offset of the state, or 0
        (BPF_JEQ_K, REJECT, "", 0),
        (BPF_TAX, "", "", 0),  # X = A
        (BPF_LD_B_IND, "", "", ATTR_HEADER.size),  # A = the state (the attribute's first byte)
        (BPF_JEQ_K, ACCEPT, "", TCP_CONNTRACK_TIME_WAIT),
        (BPF_JEQ_K, ACCEPT, REJECT, TCP_CONNTRACK_CLOSE),
    ]
    labels = {REJECT: len(steps), ACCEPT: len(steps) + 1}

    def jump(target: str, here: int) -> int:
        # A jump counts the instructions it skips after the next one.
        return labels[target] - here - 1 if target else 0

    program = [(code, jump(true, here), jump(false, here), k) for here, (code, true, false, k) in enumerate(steps)]
    return program + [(BPF_RET_K, 0, 0, 0), (BPF_RET_K, 0, 0, 0xFFFFFFFF)]  # reject, accept the whole event


def attach_filter(sock: socket.socket, program: Sequence[Instruction]) -> None:
    instructions = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(instructions)
    # struct sock_fprog: the kernel copies the program during setsockopt.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program), ctypes.addressof(buffer)))


# --- Daemon ------------------------------------------------------------------------------------

@dataclass
class Counters:
    deleted: int = 0
    gone: int = 0  # deleted meanwhile by someone else (conntrackd, the kernel): ENOENT
    failed: int = 0
    overruns: int = 0
    sweeps: int = 0

    def line(self) -> str:
        return (f"deleted {self.deleted} entries of closed TCP connections ({self.gone} already gone, "
                f"{self.failed} failed), {self.overruns} event overruns, {self.sweeps} sweeps")


def netlink_socket(groups: int = 0, buffer_bytes: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    if buffer_bytes:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    if groups:
        attach_filter(sock, filter_program())
    else:
        # Error answers carry the failed request's header only, not the whole request.
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.bind((0, groups))
    return sock


class Reaper:
    """Deletes closed TCP entries named by events or found by a sweep, and counts the outcome."""

    def __init__(self, requests: socket.socket) -> None:
        self.requests = requests
        self.counters = Counters()
        self.seq = 0

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def delete(self, entries: Sequence[ClosedEntry]) -> None:
        for start in range(0, len(entries), DELETE_BATCH):
            batch = entries[start:start + DELETE_BATCH]
            self.requests.send(b"".join(delete_request(entry, self.next_seq()) for entry in batch))
            # The kernel has handled the whole batch when send() returns; its answers are queued.
            failures = self.read_answers()
            self.counters.deleted += len(batch) - failures

    def read_answers(self) -> int:
        failures = 0
        while True:
            try:
                data = self.requests.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return failures
            for error in errors(data):
                if error == 0:
                    continue
                failures += 1
                if error == errno.ENOENT:
                    self.counters.gone += 1
                else:
                    self.counters.failed += 1
                    LOG.warning("delete failed: %s", os.strerror(error))

    def sweep(self) -> None:
        """Delete every TCP entry already in TIME_WAIT or CLOSE: those that closed while no event
        reached this daemon (before it started, or lost in an overrun)."""
        seq = self.next_seq()
        self.requests.send(dump_request(seq))
        found: List[ClosedEntry] = []
        done = False
        while not done:
            data = self.requests.recv(1 << 20)
            for kind, payload in messages(data):
                if kind == NLMSG_DONE:
                    done = True
                elif kind == NLMSG_ERROR:
                    error = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else errno.EIO
                    raise OSError(error, f"conntrack dump: {os.strerror(error)}")
                else:
                    entry = closed_entry(kind, payload)
                    if entry is not None:
                        found.append(entry)
        self.counters.sweeps += 1
        self.delete(found)

    def handle(self, data: bytes) -> None:
        """One datagram of events."""
        self.delete([entry for entry in (closed_entry(kind, payload) for kind, payload in messages(data))
                     if entry is not None])


def run(buffer_bytes: int, report_every_s: float) -> int:
    events = netlink_socket(GROUPS_NEW_AND_UPDATE, buffer_bytes)
    reaper = Reaper(netlink_socket())
    running = [True]

    def stop(_signum: int, _frame: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    events.settimeout(1.0)
    # Listening first, then sweeping: an entry that closes meanwhile is seen by one or the other.
    reaper.sweep()
    LOG.info("listening for TCP entries entering TIME_WAIT or CLOSE")
    reported, last_line = time.monotonic(), ""
    while running[0]:
        try:
            reaper.handle(events.recv(65536))
        except socket.timeout:
            pass
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise
            # The kernel dropped events: their entries stay unless a sweep finds them.
            reaper.counters.overruns += 1
            reaper.sweep()
        now = time.monotonic()
        line = reaper.counters.line()
        if now - reported >= report_every_s and line != last_line:
            LOG.info("%s", line)
            reported, last_line = now, line
    LOG.info("%s", reaper.counters.line())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="portico-conntrack-reaper", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--buffer-bytes", type=int, default=4 * 1024 * 1024,
                        help="receive buffer of the event socket (default 4 MiB)")
    parser.add_argument("--report-every", type=float, default=300.0, metavar="SECONDS",
                        help="log the counters this often when they changed (default 300)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(args.buffer_bytes, args.report_every)
