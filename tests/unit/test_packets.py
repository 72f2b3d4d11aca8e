"""ARP and NDP frames: round trips, real frames captured from Linux and arping, and fuzzing.

The captured frames (hex below) were recorded with tcpdump in the namespace lab: the
kernel's own NS/NA/ARP and Thomas Habets' arping, so the parsers are checked against
independent implementations, and our builders against tcpdump's checksum verdict.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisft.net import arp, ndp

MAC = "02:00:5e:10:20:30"
OTHER = "d2:dc:a4:07:ce:f3"

# --- frames captured from real implementations -----------------------------------------
# Linux kernel: NA answering our DAD probe for 2001:db8::10 (to ff02::1, Override, TLLA)
KERNEL_DAD_NA = bytes.fromhex(
    "333300000001d2dca407cef386dd6000000000203aff20010db8000000000000000000000010ff02"
    "00000000000000000000000000018800b5352000000020010db80000000000000000000000100201"
    "d2dca407cef3")
# Linux kernel: its own DAD NS for a link-local address, with a nonce option (RFC 7527)
KERNEL_DAD_NS = bytes.fromhex(
    "3333ff6dd35186046e6dd35186dd6000000000203aff00000000000000000000000000000000ff02"
    "00000000000000000001ff6dd3518700bc3400000000fe8000000000000084046efffe6dd3510e01"
    "c357919cc472")
# Linux kernel: address resolution NS from 2001:db8::3 for 2001:db8::2, with SLLA
KERNEL_NS = bytes.fromhex(
    "3333ff0000023241247d141586dd6000000000203aff20010db800000000000000000000000"
    "3ff0200000000000000000001ff0000028700b3520000000020010db8000000000000000000000"
    "00201013241247d1415")
# Linux kernel: the solicited unicast NA answering KERNEL_NS (Solicited + Override)
KERNEL_SOLICITED_NA = bytes.fromhex(
    "3241247d1415d2dca407cef386dd6000000000203aff20010db80000000000000000000000022001"
    "0db8000000000000000000000003880046996000000020010db800000000000000000000000202"
    "01d2dca407cef3")
# Linux kernel with ndisc_notify=1: unsolicited NA after adding 2001:db8::30
KERNEL_UNSOLICITED_NA = bytes.fromhex(
    "333300000001367f4ac1f8af86dd6000000000203aff20010db8000000000000000000000030ff02"
    "0000000000000000000000000001880080dd2000000020010db8000000000000000000000030020"
    "1367f4ac1f8af")
KERNEL_ROUTER_SOLICITATION = bytes.fromhex(
    "33330000000286046e6dd35186dd6000000000103afffe8000000000000084046efffe6dd351ff02"
    "00000000000000000000000000028500efa600000000010186046e6dd351")
KERNEL_ECHO_REQUEST = bytes.fromhex(
    "d2dca407cef33241247d141586dd60020bdb00403a4020010db80000000000000000000000032001"
    "0db800000000000000000000000280005a5386cc00019081066b00000000e82d0500000000001011"
    "12131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637")
# Linux kernel ARP request and reply (42 bytes: veth does not pad)
KERNEL_ARP_REQUEST = bytes.fromhex(
    "ffffffffffff3241247d1415080600010800060400013241247d1415c0000203000000000000c0000202")
KERNEL_ARP_REPLY = bytes.fromhex(
    "3241247d1415d2dca407cef308060001080006040002d2dca407cef3c00002023241247d1415c0000203")
# arping -U -S 192.0.2.10 192.0.2.10 (gratuitous request, target MAC broadcast)
ARPING_GRATUITOUS = bytes.fromhex(
    "ffffffffffff367f4ac1f8af08060001080006040001367f4ac1f8afc000020affffffffffffc000020a"
    "00000000000000000000000000000000")
# arping -0 192.0.2.44 (an RFC 5227 probe)
ARPING_PROBE = bytes.fromhex(
    "ffffffffffff367f4ac1f8af08060001080006040001367f4ac1f8af00000000000000000000c000022c"
    "00000000000000000000000000000000")
# our build_dad_probe("9e:99:0f:05:f0:ce", 2001:db8::10); tcpdump said "icmp6 sum ok" and
# the holder's kernel answered it with KERNEL_DAD_NA
OUR_DAD_PROBE = bytes.fromhex(
    "3333ff0000109e990f05f0ce86dd6000000000183aff00000000000000000000000000000000ff02"
    "00000000000000000001ff00001087004ccf0000000020010db8000000000000000000000010")


def ones_complement_sum(data: bytes) -> int:
    """Independent of ndp.checksum: the RFC 1071 sum as a residue modulo 0xffff."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    return total % 0xFFFF or (0xFFFF if total else 0)


def icmp_checksum_ok(frame: bytes) -> bool:
    payload_len = int.from_bytes(frame[18:20], "big")
    src, dst = frame[22:38], frame[38:54]
    icmp = frame[54:54 + payload_len]
    pseudo = src + dst + payload_len.to_bytes(4, "big") + bytes(3) + bytes([58])
    return ones_complement_sum(pseudo + icmp) == 0xFFFF


# --- ARP -----------------------------------------------------------------------------


def test_arp_probe_is_rfc5227() -> None:
    frame = arp.build_probe(MAC, IPv4Address("192.0.2.10"))
    assert frame[:6] == b"\xff" * 6  # broadcast
    assert len(frame) >= 60
    packet = arp.parse(frame)
    assert packet == arp.ArpPacket(arp.OP_REQUEST, MAC, IPv4Address("0.0.0.0"),
                                   "00:00:00:00:00:00", IPv4Address("192.0.2.10"))
    assert packet.is_probe and not packet.is_announcement


def test_arp_announcement_claims_the_address() -> None:
    frame = arp.build_announcement(MAC, IPv4Address("192.0.2.10"))
    assert frame[:6] == b"\xff" * 6
    packet = arp.parse(frame)
    assert packet is not None
    assert packet.op == arp.OP_REQUEST
    assert packet.sender_mac == MAC
    assert packet.sender_ip == packet.target_ip == IPv4Address("192.0.2.10")
    assert packet.is_announcement and not packet.is_probe


def test_arp_frames_from_arping_and_the_kernel() -> None:
    garp = arp.parse(ARPING_GRATUITOUS)
    assert garp is not None and garp.is_announcement
    assert (garp.sender_mac, garp.sender_ip) == ("36:7f:4a:c1:f8:af", IPv4Address("192.0.2.10"))
    probe = arp.parse(ARPING_PROBE)
    assert probe is not None and probe.is_probe
    assert probe.target_ip == IPv4Address("192.0.2.44")
    reply = arp.parse(KERNEL_ARP_REPLY)
    assert reply == arp.ArpPacket(arp.OP_REPLY, OTHER, IPv4Address("192.0.2.2"),
                                  "32:41:24:7d:14:15", IPv4Address("192.0.2.3"))
    request = arp.parse(KERNEL_ARP_REQUEST)
    assert request is not None and request.op == arp.OP_REQUEST
    assert request.target_ip == IPv4Address("192.0.2.2")


def test_our_arp_frames_have_the_same_layout_as_arpings() -> None:
    ours = arp.build_announcement("36:7f:4a:c1:f8:af", IPv4Address("192.0.2.10"))
    # identical but for the target MAC, which RFC 5227 says SHOULD be zero (arping: ff..)
    assert ours[:32] == ARPING_GRATUITOUS[:32] and ours[38:42] == ARPING_GRATUITOUS[38:42]
    assert arp.build_probe("36:7f:4a:c1:f8:af", IPv4Address("192.0.2.44"))[:42] == \
        ARPING_PROBE[:42]


@pytest.mark.parametrize("frame", [
    b"",
    KERNEL_ARP_REPLY[:41],  # truncated
    KERNEL_ARP_REPLY[:12] + b"\x08\x00" + KERNEL_ARP_REPLY[14:],  # IPv4 ethertype
    KERNEL_ARP_REPLY[:14] + b"\x00\x06" + KERNEL_ARP_REPLY[16:],  # IEEE 802 hardware
    KERNEL_ARP_REPLY[:16] + b"\x86\xdd" + KERNEL_ARP_REPLY[18:],  # IPv6 protocol
    KERNEL_ARP_REPLY[:18] + b"\x08" + KERNEL_ARP_REPLY[19:],  # hlen 8
    KERNEL_ARP_REPLY[:20] + b"\x00\x03" + KERNEL_ARP_REPLY[22:],  # RARP request
    KERNEL_DAD_NA,
])
def test_arp_parse_rejects_what_is_not_ipv4_arp(frame: bytes) -> None:
    assert arp.parse(frame) is None


def test_mac_strings_are_validated() -> None:
    assert arp.mac_to_bytes("2-0-5E-10-20-30") == bytes.fromhex("02005e102030")
    for bad in ("", "02:00:5e:10:20", "02:00:5e:10:20:30:40", "zz:00:5e:10:20:30",
                "020:00:5e:10:20:30"):
        with pytest.raises(ValueError):
            arp.mac_to_bytes(bad)


# --- NDP -----------------------------------------------------------------------------


def test_dad_probe_layout() -> None:
    target = IPv6Address("2001:db8::abcd:1234")
    frame = ndp.build_dad_probe(MAC, target)
    assert frame[:6] == bytes.fromhex("3333ffcd1234")  # solicited-node group's MAC
    assert frame[6:12] == arp.mac_to_bytes(MAC)
    assert frame[12:14] == b"\x86\xdd"
    assert frame[20] == 58 and frame[21] == 255  # ICMPv6, hop limit 255
    assert IPv6Address(frame[22:38]) == IPv6Address("::")
    assert IPv6Address(frame[38:54]) == IPv6Address("ff02::1:ffcd:1234")
    assert frame[54] == 135 and frame[55] == 0
    assert IPv6Address(frame[62:78]) == target
    assert len(frame) == 78  # no options: RFC 4861 forbids SLLA from ::
    assert icmp_checksum_ok(frame)


def test_dad_probe_matches_the_frame_the_kernel_answered() -> None:
    assert ndp.build_dad_probe("9e:99:0f:05:f0:ce", IPv6Address("2001:db8::10")) == \
        OUR_DAD_PROBE


def test_unsolicited_na_layout() -> None:
    target = IPv6Address("2001:db8::10")
    frame = ndp.build_unsolicited_na(MAC, target)
    assert frame[:6] == bytes.fromhex("333300000001")
    assert frame[21] == 255
    assert IPv6Address(frame[22:38]) == target
    assert IPv6Address(frame[38:54]) == IPv6Address("ff02::1")
    assert frame[54] == 136
    assert frame[58] == 0x20  # Override only: not a router, not solicited
    assert IPv6Address(frame[62:78]) == target
    assert frame[78:86] == b"\x02\x01" + arp.mac_to_bytes(MAC)  # target link-layer option
    assert icmp_checksum_ok(frame)


def test_our_na_is_byte_identical_to_the_kernels() -> None:
    # the kernel's unsolicited NA (ndisc_notify) has exactly the form we build
    assert ndp.build_unsolicited_na("36:7f:4a:c1:f8:af", IPv6Address("2001:db8::30")) == \
        KERNEL_UNSOLICITED_NA


def test_ndp_round_trips() -> None:
    target = IPv6Address("2001:db8::10")
    probe = ndp.parse(ndp.build_dad_probe(MAC, target))
    assert probe == ndp.NdpPacket(ndp.NdpType.NS, IPv6Address("::"),
                                  IPv6Address("ff02::1:ff00:10"), target, MAC)
    assert probe.is_dad and probe.lladdr == MAC
    na = ndp.parse(ndp.build_unsolicited_na(MAC, target))
    assert na is not None and na.type is ndp.NdpType.NA
    assert (na.src, na.dst, na.target) == (target, IPv6Address("ff02::1"), target)
    assert na.target_lladdr == MAC and na.flags == ndp.NA_FLAG_OVERRIDE
    assert not na.is_dad


def test_kernel_ndp_frames_parse() -> None:
    na = ndp.parse(KERNEL_DAD_NA)
    assert na is not None and na.type is ndp.NdpType.NA
    assert na.target == IPv6Address("2001:db8::10") and na.lladdr == OTHER
    dad = ndp.parse(KERNEL_DAD_NS)  # carries a nonce option, still a DAD probe
    assert dad is not None and dad.is_dad
    assert dad.target == IPv6Address("fe80::8404:6eff:fe6d:d351")
    assert dad.lladdr == "86:04:6e:6d:d3:51"
    ns = ndp.parse(KERNEL_NS)
    assert ns is not None and not ns.is_dad
    assert (ns.src, ns.target) == (IPv6Address("2001:db8::3"), IPv6Address("2001:db8::2"))
    assert ns.source_lladdr == "32:41:24:7d:14:15"
    solicited = ndp.parse(KERNEL_SOLICITED_NA)
    assert solicited is not None
    assert solicited.flags == ndp.NA_FLAG_SOLICITED | ndp.NA_FLAG_OVERRIDE
    assert solicited.dst == IPv6Address("2001:db8::3")
    for frame in (KERNEL_DAD_NA, KERNEL_DAD_NS, KERNEL_NS, KERNEL_SOLICITED_NA, OUR_DAD_PROBE):
        assert icmp_checksum_ok(frame)


def _with_byte(frame: bytes, offset: int, value: int) -> bytes:
    return frame[:offset] + bytes([value]) + frame[offset + 1:]


def _fix_checksum(frame: bytes) -> bytes:
    """Recompute the ICMPv6 checksum so only the field under test is wrong."""
    body = frame[54:54 + int.from_bytes(frame[18:20], "big")]
    body = body[:2] + b"\0\0" + body[4:]
    csum = ndp.checksum(IPv6Address(frame[22:38]), IPv6Address(frame[38:54]), body)
    return frame[:56] + struct.pack("!H", csum) + frame[58:]


@pytest.mark.parametrize("name, frame", [
    ("router solicitation", KERNEL_ROUTER_SOLICITATION),
    ("echo request", KERNEL_ECHO_REQUEST),
    ("ARP", KERNEL_ARP_REPLY),
    ("hop limit 64", _with_byte(KERNEL_DAD_NA, 21, 64)),
    ("bad checksum", _with_byte(KERNEL_DAD_NA, 57, KERNEL_DAD_NA[57] ^ 1)),
    ("flipped target bit", _with_byte(KERNEL_DAD_NA, 70, KERNEL_DAD_NA[70] ^ 0x10)),
    ("code 1", _fix_checksum(_with_byte(KERNEL_DAD_NA, 55, 1))),
    ("IPv4 version", _with_byte(KERNEL_DAD_NA, 14, 0x40)),
    ("next header UDP", _with_byte(KERNEL_DAD_NA, 20, 17)),
    ("truncated", KERNEL_DAD_NA[:-4]),
    ("payload length past the frame", _with_byte(KERNEL_DAD_NA, 19, 0x40)),
    ("zero-length option", _fix_checksum(_with_byte(KERNEL_DAD_NA, 79, 0))),
    ("multicast NA marked solicited", _fix_checksum(_with_byte(KERNEL_DAD_NA, 58, 0x60))),
    ("DAD NS with SLLA", _fix_checksum(_with_byte(KERNEL_DAD_NS, 78, 1))),
    ("DAD NS to all-nodes", _fix_checksum(
        KERNEL_DAD_NS[:38] + ndp.ALL_NODES.packed + KERNEL_DAD_NS[54:])),
    ("unspecified target", _fix_checksum(KERNEL_DAD_NA[:62] + bytes(16) + KERNEL_DAD_NA[78:])),
    ("multicast target", _fix_checksum(
        KERNEL_DAD_NA[:62] + ndp.ALL_NODES.packed + KERNEL_DAD_NA[78:])),
])
def test_ndp_parse_rejects_invalid(name: str, frame: bytes) -> None:
    assert ndp.parse(frame) is None, name


def test_ndp_parse_ignores_ethernet_padding() -> None:
    assert ndp.parse(OUR_DAD_PROBE + bytes(10)) == ndp.parse(OUR_DAD_PROBE) is not None


def test_solicited_node_group() -> None:
    assert ndp.solicited_node(IPv6Address("2001:db8::1:2:3:4")) == \
        IPv6Address("ff02::1:ff03:4")
    assert ndp.multicast_mac(IPv6Address("ff02::1:ff03:4")) == "33:33:ff:03:00:04"


# --- properties and fuzzing ----------------------------------------------------------

macs = st.binary(min_size=6, max_size=6).map(arp.mac_to_str)
ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6s = st.integers(1, 2**128 - 1).map(IPv6Address).filter(lambda a: not a.is_multicast)


@given(macs, ipv4s)
def test_arp_round_trip(mac: str, ip: IPv4Address) -> None:
    announcement = arp.parse(arp.build_announcement(mac, ip))
    assert announcement is not None
    assert (announcement.sender_mac, announcement.sender_ip, announcement.target_ip) == \
        (mac, ip, ip)
    probe = arp.parse(arp.build_probe(mac, ip))
    assert probe is not None
    assert (probe.sender_mac, probe.sender_ip, probe.target_ip) == \
        (mac, IPv4Address(0), ip)


@given(macs, ipv6s)
def test_ndp_round_trip_and_checksum(mac: str, target: IPv6Address) -> None:
    for frame in (ndp.build_dad_probe(mac, target), ndp.build_unsolicited_na(mac, target)):
        assert icmp_checksum_ok(frame)
        packet = ndp.parse(frame)
        assert packet is not None
        assert packet.target == target and packet.lladdr == mac and packet.eth_src == mac


def _parses_quietly(frame: bytes) -> None:
    a = arp.parse(frame)
    assert a is None or isinstance(a, arp.ArpPacket)
    n = ndp.parse(frame)
    assert n is None or isinstance(n, ndp.NdpPacket)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(frame: bytes) -> None:
    _parses_quietly(frame)


VALID = [KERNEL_DAD_NA, KERNEL_DAD_NS, KERNEL_NS, KERNEL_SOLICITED_NA, KERNEL_UNSOLICITED_NA,
         KERNEL_ARP_REPLY, ARPING_GRATUITOUS, ARPING_PROBE, OUR_DAD_PROBE,
         ndp.build_unsolicited_na(MAC, IPv6Address("2001:db8::10"))]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["set", "cut", "extend", "insert"]))
        if action == "set" and frame:
            frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
        elif action == "cut":
            del frame[draw(st.integers(0, len(frame))):]
        elif action == "extend":
            frame += draw(st.binary(max_size=40))
        elif action == "insert":
            pos = draw(st.integers(0, len(frame)))
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(frame)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_frames_never_raise(frame: bytes) -> None:
    _parses_quietly(frame)


@settings(max_examples=300)
@given(st.sampled_from([KERNEL_DAD_NA, KERNEL_NS, KERNEL_UNSOLICITED_NA]),
       st.integers(54, 85), st.integers(1, 255))
def test_any_corruption_of_the_icmp_message_is_caught(frame: bytes, offset: int,
                                                      flip: int) -> None:
    """Checksum validation: no single corrupted byte inside the message gets through
    unnoticed (it is rejected, never misread)."""
    offset = min(offset, len(frame) - 1)
    corrupted = _with_byte(frame, offset, frame[offset] ^ flip)
    assert ndp.parse(corrupted) is None
