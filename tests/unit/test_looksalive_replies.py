"""LooksAlive's reply parser against packets a Linux kernel sent, as a raw socket reads them.

Captured in the namespace lab (alpha 192.0.2.1 / 2001:db8::1 pinging with icmplib,
identifier 0x1234): beta's kernel answering sequence 1, and alpha's own kernel reporting
sequence 2 to an address nobody has as unreachable (neighbour resolution failed).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minisft.probes.looksalive import EchoAnswer, parse_answer

IDENT = 0x1234
# IPv4 raw sockets read the IP header too
V4_REPLY = bytes.fromhex(
    "4500002cc89e000040012e2fc0000202c000020100000cea12340001305253596e714c6771516d6c"
    "61366268")
V4_UNREACHABLE = bytes.fromhex(
    "45c0004835a300004001c04fc0000201c00002010301fcfe000000004500002c839f400040013"
    "2e3c0000201c000024d08004613123400025a4a54344969554839544b776c536167")
# ICMPv6 raw sockets read the ICMPv6 message only
V6_REPLY = bytes.fromhex("810058dd12340001537234755052374e70736d5371725964")
V6_UNREACHABLE = bytes.fromhex(
    "0103724f00000000600496ac00183a4020010db800000000000000000000000120010db800000000"
    "000000000000007780005b1e12340002666a64526b544e4933384f546b564431")


def with_ipv4_options(packet: bytes) -> bytes:
    """The same packet with 8 bytes of IPv4 options (NOPs): a header of 28 bytes."""
    header_len = (packet[0] & 0x0F) * 4
    return bytes([0x40 | (header_len + 8) // 4]) + packet[1:header_len] + b"\x01" * 8 + \
        packet[header_len:]


@pytest.mark.parametrize(("packet", "version", "expected"), [
    (V4_REPLY, 4, EchoAnswer(0, IDENT, 1)),
    (V4_UNREACHABLE, 4, EchoAnswer(3, IDENT, 2)),
    (V6_REPLY, 6, EchoAnswer(129, IDENT, 1)),
    (V6_UNREACHABLE, 6, EchoAnswer(1, IDENT, 2)),
    # a router may add IP options: the ICMP message starts where the header says
    (with_ipv4_options(V4_REPLY), 4, EchoAnswer(0, IDENT, 1)),
])
def test_replies_and_errors_name_the_echo_request_they_answer(
        packet: bytes, version: int, expected: EchoAnswer) -> None:
    assert parse_answer(packet, version) == expected


def test_an_echo_request_is_not_an_answer() -> None:
    # what the raw socket reads when the ICMP filter could not be installed and another
    # host pings us: the request's id/sequence must never complete one of our pings
    request = bytes([8]) + V4_REPLY[21:]
    assert parse_answer(V4_REPLY[:20] + request, 4) is None
    assert parse_answer(bytes([128]) + V6_REPLY[1:], 6) is None


def test_an_error_about_something_other_than_an_echo_request_is_ignored() -> None:
    quoted_udp = bytearray(V4_UNREACHABLE)
    quoted_udp[20 + 8 + 9] = 17  # the quoted datagram's protocol: UDP
    quoted_udp[20 + 8 + 20] = 0x9c  # its first bytes: a source port, not ICMP type 8
    assert parse_answer(bytes(quoted_udp), 4) is None


@pytest.mark.parametrize(("packet", "version"), [
    (V4_REPLY, 4), (V4_UNREACHABLE, 4), (V6_REPLY, 6), (V6_UNREACHABLE, 6)])
def test_truncated_packets_are_ignored(packet: bytes, version: int) -> None:
    # every byte up to the (quoted) identifier and sequence is needed: 16 payload bytes follow
    assert parse_answer(packet[:len(packet) - 16], version) is not None
    for cut in range(len(packet) - 16):
        assert parse_answer(packet[:cut], version) is None, cut


@given(st.binary(max_size=200), st.sampled_from([4, 6]))
def test_any_bytes_parse_or_are_ignored_never_raise(packet: bytes, version: int) -> None:
    answer = parse_answer(packet, version)
    assert answer is None or (0 <= answer.identifier <= 0xFFFF
                              and 0 <= answer.sequence <= 0xFFFF)
