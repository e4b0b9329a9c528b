"""portico-conntrack-reaper's message handling (collection: dataplane.conntrack_reaper): which conntrack
events and dumped entries name an entry to delete (TCP in TIME_WAIT or CLOSE), the requests built from
them, and what the kernel socket filter passes. The kernel side is in tests/integration/test_conntrack_reaper.py."""

from __future__ import annotations

import socket
import struct

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import conntrack_reaper as reaper

NESTED = 0x8000
SCTP_PROTOINFO = 3  # CTA_PROTOINFO_SCTP
ESTABLISHED, LAST_ACK = 3, 6


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (reaper.align4(length) - length)


def nest(kind: int, *children: bytes) -> bytes:
    return attr(kind | NESTED, b"".join(children))


def tuple_orig(source: str, destination: str, sport: int, dport: int, proto: int = socket.IPPROTO_TCP) -> bytes:
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    kinds = (3, 4) if family == socket.AF_INET6 else (1, 2)
    return nest(reaper.CTA_TUPLE_ORIG,
                nest(1, attr(kinds[0], socket.inet_pton(family, source)), attr(kinds[1], socket.inet_pton(family, destination))),
                nest(2, attr(1, bytes([proto])), attr(2, struct.pack(">H", sport)), attr(3, struct.pack(">H", dport))))


def event(state: int | None, kind: int = reaper.CT_NEW, sport: int = 40000, source: str = "203.0.113.10",
          protoinfo: int = reaper.CTA_PROTOINFO_TCP, zone: int | None = None) -> bytes:
    """A conntrack event (or dumped entry) as the kernel sends it: tuple, status, protocol info, id."""
    destination = "2001:db8::10" if ":" in source else "198.51.100.10"
    body = tuple_orig(source, destination, sport, 80) + attr(3, struct.pack(">I", 0x18E))
    if state is not None:
        body += nest(reaper.CTA_PROTOINFO, nest(protoinfo, attr(reaper.CTA_PROTOINFO_TCP_STATE, bytes([state]))))
    body += attr(reaper.CTA_ID, struct.pack(">I", 0xDEADBEEF))
    if zone is not None:
        body += attr(reaper.CTA_ZONE, struct.pack(">H", zone))
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    payload = struct.pack("=BBH", family, 0, 0) + body
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, 0, 0) + payload


def closed(data: bytes) -> list[reaper.ClosedEntry]:
    return [e for e in (reaper.closed_entry(*message) for message in reaper.messages(data)) if e is not None]


@pytest.mark.parametrize("state", [reaper.TCP_CONNTRACK_TIME_WAIT, reaper.TCP_CONNTRACK_CLOSE])
@pytest.mark.parametrize("source", ["203.0.113.10", "2001:db8::1"], ids=["ipv4", "ipv6"])
def test_a_tcp_entry_in_time_wait_or_close_is_named_with_its_tuple_and_id(state, source):
    [entry] = closed(event(state, source=source))
    assert entry.family == (socket.AF_INET6 if ":" in source else socket.AF_INET)
    assert entry.tuple_orig == tuple_orig(source, "2001:db8::10" if ":" in source else "198.51.100.10", 40000, 80)
    assert entry.entry_id == attr(reaper.CTA_ID, struct.pack(">I", 0xDEADBEEF))
    assert entry.zone == b""


@pytest.mark.parametrize("data", [
    event(ESTABLISHED),  # a flow that may move here
    event(LAST_ACK),  # one side still waits for the last ACK
    event(None),  # no protocol info: UDP
    event(reaper.TCP_CONNTRACK_TIME_WAIT, protoinfo=SCTP_PROTOINFO),  # SCTP's own state 7
    event(reaper.TCP_CONNTRACK_TIME_WAIT, kind=reaper.NFNL_SUBSYS_CTNETLINK << 8 | reaper.IPCTNL_MSG_CT_DELETE),
], ids=["established", "last-ack", "udp", "sctp", "destroy-event"])
def test_other_messages_name_nothing(data):
    assert closed(data) == []


def test_several_messages_in_one_datagram_and_a_cut_one():
    data = (event(reaper.TCP_CONNTRACK_TIME_WAIT, sport=1) + event(ESTABLISHED, sport=2)
            + event(reaper.TCP_CONNTRACK_CLOSE, sport=3))
    assert len(closed(data)) == 2
    assert len(closed(data[:-10])) == 1  # the last message is incomplete: skipped, no exception


def test_a_delete_names_tuple_id_and_zone_and_asks_for_no_ack():
    [entry] = closed(event(reaper.TCP_CONNTRACK_TIME_WAIT, zone=7))
    request = reaper.delete_request(entry, seq=7)
    [(kind, payload)] = list(reaper.messages(request))
    assert kind == reaper.NFNL_SUBSYS_CTNETLINK << 8 | reaper.IPCTNL_MSG_CT_DELETE
    flags, seq = struct.unpack_from("=HI", request, 6)
    assert flags == reaper.NLM_F_REQUEST and seq == 7  # the kernel answers failures only
    assert payload[0] == socket.AF_INET
    assert [(kind, whole) for kind, _, whole in reaper.attributes(payload[4:])] == [
        (reaper.CTA_TUPLE_ORIG, entry.tuple_orig), (reaper.CTA_ID, entry.entry_id), (reaper.CTA_ZONE, entry.zone)]


def test_a_dump_asks_for_every_family():
    [(kind, payload)] = list(reaper.messages(reaper.dump_request(seq=3)))
    assert kind == reaper.NFNL_SUBSYS_CTNETLINK << 8 | reaper.IPCTNL_MSG_CT_GET
    assert struct.unpack_from("=H", reaper.dump_request(seq=3), 6)[0] == reaper.NLM_F_REQUEST | reaper.NLM_F_DUMP
    assert payload[0] == socket.AF_UNSPEC


def test_answers_report_their_error_codes():
    def answer(error: int) -> bytes:
        payload = struct.pack("=i", -error) + b"\0" * 16
        return struct.pack("=IHHII", 16 + len(payload), reaper.NLMSG_ERROR, 0, 1, 0) + payload

    assert list(reaper.errors(answer(0) + answer(2) + answer(1))) == [0, 2, 1]


# --- The socket filter, run by a small interpreter of the classic BPF it uses ----------------------

def nla_find(data: bytes, start: int, end: int, kind: int) -> int:
    """Offset of the first attribute of that type in data[start:end], or 0 (the kernel's nla_find)."""
    offset = start
    while offset + 4 <= end:
        length, found = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > end:
            return 0
        if found & reaper.NLA_TYPE_MASK == kind:
            return offset
        offset += reaper.align4(length)
    return 0


def run_filter(program: list[tuple[int, int, int, int]], packet: bytes) -> int:
    a = x = pc = 0
    while True:
        code, true, false, k = program[pc]
        if code == reaper.BPF_LD_IMM:
            a = k
        elif code == reaper.BPF_LDX_IMM:
            x = k
        elif code == reaper.BPF_TAX:
            x = a
        elif code == reaper.BPF_LD_B_IND:
            a = packet[x + k]
        elif code == reaper.BPF_LD_W_ABS and k == reaper.ancillary(reaper.SKF_AD_NLATTR):
            a = nla_find(packet, a, len(packet), x)
        elif code == reaper.BPF_LD_W_ABS and k == reaper.ancillary(reaper.SKF_AD_NLATTR_NEST):
            length = struct.unpack_from("=H", packet, a)[0]
            a = nla_find(packet, a + 4, a + length, x)
        elif code == reaper.BPF_JEQ_K:
            pc += true if a == k else false
        elif code == reaper.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"instruction {pc} not understood: {program[pc]}")
        pc += 1


@pytest.mark.parametrize("data,passes", [
    (event(reaper.TCP_CONNTRACK_TIME_WAIT), True),
    (event(reaper.TCP_CONNTRACK_CLOSE, source="2001:db8::1"), True),
    (event(ESTABLISHED), False),
    (event(LAST_ACK), False),
    (event(None), False),
    (event(reaper.TCP_CONNTRACK_TIME_WAIT, protoinfo=SCTP_PROTOINFO), False),
], ids=["time-wait", "close-ipv6", "established", "last-ack", "udp", "sctp"])
def test_the_kernel_filter_passes_exactly_the_closed_tcp_entries(data, passes):
    assert (run_filter(reaper.filter_program(), data) != 0) == passes
    assert bool(closed(data)) == passes  # the filter and the parser agree


def test_every_jump_of_the_filter_lands_inside_it():
    program = reaper.filter_program()
    for here, (code, true, false, _k) in enumerate(program):
        if code == reaper.BPF_JEQ_K:
            assert here + 1 + max(true, false) < len(program)
    assert program[-2:] == [(reaper.BPF_RET_K, 0, 0, 0), (reaper.BPF_RET_K, 0, 0, 0xFFFFFFFF)]
