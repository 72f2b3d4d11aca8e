"""ARP frames for RFC 5227 probes and announcements. Pure: bytes in, bytes out, no sockets.

`parse` reads whatever the wire delivers: any input returns an `ArpPacket` or None, it
never raises, so a hostile or broken frame cannot take the daemon down.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
OP_REQUEST = 1
OP_REPLY = 2

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
UNSPECIFIED = IPv4Address("0.0.0.0")

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_HEADER_LEN = _ETH.size + _ARP.size  # 42
_MIN_FRAME = 60  # Ethernet minimum without FCS; short frames are padded as drivers would


@dataclass(frozen=True)
class ArpPacket:
    op: int
    sender_mac: str
    sender_ip: IPv4Address
    target_mac: str
    target_ip: IPv4Address

    @property
    def is_probe(self) -> bool:
        """RFC 5227 probe: a request from 0.0.0.0 asking who has target_ip."""
        return self.op == OP_REQUEST and self.sender_ip == UNSPECIFIED

    @property
    def is_announcement(self) -> bool:
        """Gratuitous ARP: the sender claims sender_ip (request or reply, sender == target)."""
        return self.sender_ip == self.target_ip and self.sender_ip != UNSPECIFIED


def mac_to_bytes(mac: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff' (or with '-') to 6 bytes; ValueError for anything else."""
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_to_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _frame(dst: bytes, src: bytes, op: int, sender_ip: IPv4Address, target_mac: bytes,
           target_ip: IPv4Address) -> bytes:
    frame = _ETH.pack(dst, src, ETH_P_ARP) + _ARP.pack(
        ARPHRD_ETHER, ETH_P_IP, 6, 4, op, src, sender_ip.packed, target_mac, target_ip.packed)
    return frame.ljust(_MIN_FRAME, b"\0")


def build_probe(src_mac: str, target_ip: IPv4Address) -> bytes:
    """RFC 5227 2.1.1 probe: broadcast request, sender IP 0.0.0.0, target MAC zero."""
    src = mac_to_bytes(src_mac)
    return _frame(mac_to_bytes(BROADCAST_MAC), src, OP_REQUEST, UNSPECIFIED,
                  bytes(6), IPv4Address(target_ip))


def build_announcement(src_mac: str, ip: IPv4Address) -> bytes:
    """RFC 5227 2.3 announcement: broadcast request with sender IP == target IP == ip."""
    ip = IPv4Address(ip)
    return _frame(mac_to_bytes(BROADCAST_MAC), mac_to_bytes(src_mac), OP_REQUEST, ip,
                  bytes(6), ip)


def parse(frame: bytes) -> ArpPacket | None:
    """An Ethernet/IPv4 ARP request or reply, or None for anything else or anything broken."""
    try:
        if len(frame) < _HEADER_LEN:
            return None
        _dst, _src, ethertype = _ETH.unpack_from(frame, 0)
        if ethertype != ETH_P_ARP:
            return None
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
        if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, ETH_P_IP, 6, 4):
            return None
        if op not in (OP_REQUEST, OP_REPLY):
            return None
        return ArpPacket(op, mac_to_str(sha), IPv4Address(spa), mac_to_str(tha),
                         IPv4Address(tpa))
    except Exception:  # defensive by contract: bytes from the wire never raise
        return None
