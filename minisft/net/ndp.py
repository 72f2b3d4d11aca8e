"""IPv6 neighbour discovery frames: DAD-style probes and unsolicited advertisements.

Pure: bytes in, bytes out, no sockets. `parse` applies RFC 4861 7.1.1/7.1.2 validity
checks (hop limit 255, code 0, checksum, option lengths, ...) and never raises: any bytes
return an `NdpPacket` or None.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv6Address

from minisft.net.arp import mac_to_bytes, mac_to_str

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
HOP_LIMIT = 255

OPT_SOURCE_LLA = 1
OPT_TARGET_LLA = 2

NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20

ALL_NODES = IPv6Address("ff02::1")
UNSPECIFIED = IPv6Address("::")
ALL_NODES_MAC = "33:33:00:00:00:01"

_ETH = struct.Struct("!6s6sH")
_IP6 = struct.Struct("!IHBB16s16s")
_ICMP_OFFSET = _ETH.size + _IP6.size  # 54
_ND_LEN = 24  # ICMPv6 header (4) + reserved/flags (4) + target (16)


class NdpType(IntEnum):
    NS = 135
    NA = 136


@dataclass(frozen=True)
class NdpPacket:
    type: NdpType
    src: IPv6Address
    dst: IPv6Address
    target: IPv6Address
    eth_src: str
    source_lladdr: str | None = None  # NS: source link-layer address option
    target_lladdr: str | None = None  # NA: target link-layer address option
    flags: int = 0  # NA: router/solicited/override bits (first byte of the reserved word)

    @property
    def is_dad(self) -> bool:
        """An NS from :: : someone is about to configure `target` (RFC 4862 5.4.2)."""
        return self.type is NdpType.NS and self.src == UNSPECIFIED

    @property
    def lladdr(self) -> str:
        """The link-layer address this packet speaks for: the option if any, else eth src."""
        option = self.target_lladdr if self.type is NdpType.NA else self.source_lladdr
        return option or self.eth_src


def solicited_node(ip: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX for the low 24 bits of ip (RFC 4291 2.7.1)."""
    return IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + IPv6Address(ip).packed[13:])


def multicast_mac(group: IPv6Address) -> str:
    """33:33 followed by the low 32 bits of the group (RFC 2464 7)."""
    return mac_to_str(b"\x33\x33" + IPv6Address(group).packed[12:])


def checksum(src: IPv6Address, dst: IPv6Address, icmp: bytes) -> int:
    """ICMPv6 checksum over the RFC 8200 8.1 pseudo-header and the message."""
    data = (src.packed + dst.packed + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6) + icmp)
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(eth_dst: str, src_mac: str, src: IPv6Address, dst: IPv6Address, icmp_type: int,
           word: int, target: IPv6Address, options: bytes) -> bytes:
    body = struct.pack("!BBHI16s", icmp_type, 0, 0, word, target.packed) + options
    body = body[:2] + struct.pack("!H", checksum(src, dst, body)) + body[4:]
    ip6 = _IP6.pack(6 << 28, len(body), IPPROTO_ICMPV6, HOP_LIMIT, src.packed, dst.packed)
    return _ETH.pack(mac_to_bytes(eth_dst), mac_to_bytes(src_mac), ETH_P_IPV6) + ip6 + body


def build_dad_probe(src_mac: str, target: IPv6Address) -> bytes:
    """NS from :: to target's solicited-node group, no SLLA option (RFC 4862 5.4.2)."""
    target = IPv6Address(target)
    group = solicited_node(target)
    return _frame(multicast_mac(group), src_mac, UNSPECIFIED, group, NdpType.NS, 0, target,
                  b"")


def build_unsolicited_na(src_mac: str, target: IPv6Address) -> bytes:
    """Unsolicited NA to all-nodes: Override set, Solicited clear, with TLLA (RFC 4861 7.2.6)."""
    target = IPv6Address(target)
    tlla = bytes([OPT_TARGET_LLA, 1]) + mac_to_bytes(src_mac)
    return _frame(ALL_NODES_MAC, src_mac, target, ALL_NODES, NdpType.NA,
                  NA_FLAG_OVERRIDE << 24, target, tlla)


def _options(data: bytes) -> dict[int, bytes] | None:
    """Option type -> first value seen, or None when the option area is malformed."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            return None
        kind, units = data[pos], data[pos + 1]
        size = units * 8
        if size == 0 or pos + size > len(data):  # zero length: RFC 4861 4.6 says discard
            return None
        found.setdefault(kind, data[pos + 2:pos + size])
        pos += size
    return found


def _lladdr(value: bytes | None) -> str | None:
    # Ethernet link-layer option: 6 address bytes in an 8-byte option (RFC 2464 8)
    if value is None or len(value) < 6:
        return None
    return mac_to_str(value[:6])


def parse(frame: bytes) -> NdpPacket | None:
    """A valid NS or NA in an Ethernet frame, or None for anything else or anything broken."""
    try:
        return _parse(frame)
    except Exception:  # defensive by contract: bytes from the wire never raise
        return None


def _parse(frame: bytes) -> NdpPacket | None:
    if len(frame) < _ICMP_OFFSET + _ND_LEN:
        return None
    _eth_dst, eth_src, ethertype = _ETH.unpack_from(frame, 0)
    if ethertype != ETH_P_IPV6:
        return None
    vtf, payload_len, next_header, hop_limit, src_raw, dst_raw = _IP6.unpack_from(
        frame, _ETH.size)
    if vtf >> 28 != 6 or next_header != IPPROTO_ICMPV6 or hop_limit != HOP_LIMIT:
        return None
    # payload_len bounds the message: trailing Ethernet padding is not part of it
    if payload_len < _ND_LEN or _ICMP_OFFSET + payload_len > len(frame):
        return None
    icmp = frame[_ICMP_OFFSET:_ICMP_OFFSET + payload_len]
    icmp_type, code, _csum, word, target_raw = struct.unpack_from("!BBHI16s", icmp, 0)
    if icmp_type not in (NdpType.NS, NdpType.NA) or code != 0:
        return None
    src, dst, target = IPv6Address(src_raw), IPv6Address(dst_raw), IPv6Address(target_raw)
    if checksum(src, dst, icmp) != 0:  # a correct message sums to zero, checksum included
        return None
    if target.is_multicast or target == UNSPECIFIED or src.is_multicast:
        return None
    options = _options(icmp[_ND_LEN:])
    if options is None:
        return None
    kind = NdpType(icmp_type)
    if kind is NdpType.NS:
        slla = _lladdr(options.get(OPT_SOURCE_LLA))
        # RFC 4861 7.1.1: from :: only to a solicited-node group, and never with SLLA
        if src == UNSPECIFIED and (dst != solicited_node(target)
                                   or OPT_SOURCE_LLA in options):
            return None
        return NdpPacket(kind, src, dst, target, mac_to_str(eth_src), source_lladdr=slla)
    flags = word >> 24
    # RFC 4861 7.1.2: a multicast NA must not claim to be solicited
    if dst.is_multicast and flags & NA_FLAG_SOLICITED:
        return None
    if src == UNSPECIFIED:
        return None
    return NdpPacket(kind, src, dst, target, mac_to_str(eth_src),
                     target_lladdr=_lladdr(options.get(OPT_TARGET_LLA)), flags=flags)
