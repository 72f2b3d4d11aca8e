"""ARP and IPv6 neighbour discovery on one interface: probe, announce, watch for conflicts.

Two AF_PACKET sockets on the event loop: one for ARP, one for IPv6 behind a classic BPF
filter that lets only ICMPv6 NS/NA through, so ordinary IPv6 traffic is never copied to
userspace. Frames we sent ourselves (PACKET_OUTGOING, or our MAC as source) are ignored.
Nothing read from the network can raise out of the reader: the parsers return None for
anything malformed and callbacks are isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

from minisft.net import arp, ndp
from minisft.net.link import Interface
from minisft.net.sockets import enlarge_receive_buffer

log = logging.getLogger("minisft.net")

IPAddress = IPv4Address | IPv6Address
# What a probe makes of another host probing for the same address at the same time:
#   "yield"    -- it answers (RFC 5227 2.1.1, RFC 4862 5.4.3): both back off
#   "ignore"   -- only a real holder answers: we go ahead (e.g. the primary claiming)
#   "tiebreak" -- it answers only if its MAC is lower than ours: of two simultaneous
#                 probers exactly one backs off, so equals cannot livelock
OnProber = Literal["yield", "ignore", "tiebreak"]


@dataclass(frozen=True)
class ProbeAnswer:
    """Who answered a probe: `prober` when it was another host probing for the address at
    the same time (it does not hold it yet), not a host that has the address."""

    mac: str
    prober: bool

SOL_PACKET = 263
SO_ATTACH_FILTER = 26
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_MR_MULTICAST = 0
PACKET_OUTGOING = 4

_RECV_SIZE = 65536
_BURST = 256  # frames read per wake-up, so a flood cannot starve the event loop
# room for a burst of ARP/NDP frames while the loop is busy (see enlarge_receive_buffer)
PACKET_RECEIVE_BUFFER = 4 * 1024 * 1024


# ldh [12]; jeq 0x86dd; ldb [20] (next header); jeq 58; ldb [54] (ICMPv6 type);
# jeq 135 or 136 -> accept whole frame, else drop. Extension headers are not followed:
# valid NS/NA never carry them.
_NDP_FILTER: list[tuple[int, int, int, int]] = [
    (0x28, 0, 0, 12),
    (0x15, 0, 6, ndp.ETH_P_IPV6),
    (0x30, 0, 0, 20),
    (0x15, 0, 4, ndp.IPPROTO_ICMPV6),
    (0x30, 0, 0, 54),
    (0x15, 1, 0, ndp.NdpType.NS),
    (0x15, 0, 1, ndp.NdpType.NA),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native layout);
    # the kernel copies the program, so buf only has to outlive this call
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _packet_socket(ifname: str, proto: int,
                   program: list[tuple[int, int, int, int]] | None) -> socket.socket:
    # Created with protocol 0 (receives nothing), filtered, then bound to the real protocol:
    # no unfiltered frame can slip in between creation and filter.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        if program is not None:
            _attach_filter(sock, program)
        sock.bind((ifname, proto))
        sock.setblocking(False)
        enlarge_receive_buffer(sock, PACKET_RECEIVE_BUFFER)
    except BaseException:
        sock.close()
        raise
    return sock


class NeighbourWatch:
    """Probe, announce and conflict watching for the addresses of one interface."""

    def __init__(self, iface: Interface) -> None:
        self.iface = iface
        self._mac = iface.mac.lower()
        self._mac_bytes = arp.mac_to_bytes(self._mac)
        self._arp: socket.socket | None = None
        self._ndp: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probes: dict[IPAddress, dict[asyncio.Future[ProbeAnswer], OnProber]] = {}
        self._watches: dict[IPAddress, Callable[[str], None]] = {}
        self._askers: dict[IPAddress, Callable[[IPAddress, str], None]] = {}
        self._users: dict[IPAddress, list[Callable[[str], None]]] = {}
        self.stats: dict[str, int] = {
            "frames_seen": 0,
            "own_frames": 0,
            "malformed": 0,
            "probes_sent": 0,
            "announcements_sent": 0,
            "probe_answers": 0,
            "conflicts_seen": 0,
            "callback_errors": 0,
        }

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the sockets (needs CAP_NET_RAW; raises OSError otherwise)."""
        if self._loop is not None:
            return
        loop = asyncio.get_running_loop()
        self._arp = _packet_socket(self.iface.name, arp.ETH_P_ARP, None)
        try:
            self._ndp = _packet_socket(self.iface.name, ndp.ETH_P_IPV6, _NDP_FILTER)
        except BaseException:
            self._arp.close()
            self._arp = None
            raise
        self._loop = loop
        loop.add_reader(self._arp.fileno(), self._readable, self._arp, self._on_arp)
        loop.add_reader(self._ndp.fileno(), self._readable, self._ndp, self._on_ndp)

    async def close(self) -> None:
        loop, self._loop = self._loop, None
        for sock in (self._arp, self._ndp):
            if sock is None:
                continue
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._arp = self._ndp = None
        for waiters in self._probes.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(OSError(f"neighbour watch on {self.iface.name} closed"))
        self._probes.clear()

    # ------------------------------------------------------------ actions

    async def probe(self, ip: IPAddress | str, count: int, interval: float, *,
                    on_prober: OnProber = "yield") -> str | None:
        """Send `count` probes `interval` apart; the MAC of the first host that answers
        for ip, or None `interval` after the last probe. Raises OSError if it cannot send:
        a probe that did not go out proves nothing. `on_prober`: see `OnProber`."""
        answer = await self.probe_answer(ip, count, interval, on_prober=on_prober)
        return None if answer is None else answer.mac

    async def probe_answer(self, ip: IPAddress | str, count: int, interval: float, *,
                           on_prober: OnProber = "yield") -> ProbeAnswer | None:
        """`probe`, telling a holder's answer from a simultaneous prober's."""
        addr = ip_address(ip)
        sock, frame = self._probe_frame(addr)
        fut: asyncio.Future[ProbeAnswer] = asyncio.get_running_loop().create_future()
        waiters = self._probes.setdefault(addr, {})
        waiters[fut] = on_prober
        group = self._join(addr) if addr.version == 6 else None
        try:
            for _ in range(max(1, count)):
                self._send(sock, frame)
                self.stats["probes_sent"] += 1
                done, _pending = await asyncio.wait({fut}, timeout=interval)
                if done:
                    return fut.result()
            return None
        finally:
            waiters.pop(fut, None)
            if not waiters and self._probes.get(addr) is waiters:
                del self._probes[addr]
            if not fut.done():
                fut.cancel()
            if group is not None:
                self._leave(group)

    async def announce(self, ip: IPAddress | str, count: int, interval: float) -> None:
        """Gratuitous ARP (IPv4) or unsolicited NA (IPv6), `count` times `interval` apart."""
        addr = ip_address(ip)
        if addr.version == 4:
            sock, frame = self._socket(4), arp.build_announcement(self._mac, addr)
        else:
            sock, frame = self._socket(6), ndp.build_unsolicited_na(self._mac, addr)
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            self._send(sock, frame)
            self.stats["announcements_sent"] += 1

    def watch(self, ip: IPAddress | str, callback: Callable[[str], None]) -> None:
        """Call callback(mac) whenever another host claims ip (replaces an earlier watch)."""
        self._watches[ip_address(ip)] = callback

    def unwatch(self, ip: IPAddress | str) -> None:
        self._watches.pop(ip_address(ip), None)
        self._askers.pop(ip_address(ip), None)

    def watch_askers(self, ip: IPAddress | str,
                     callback: Callable[[IPAddress, str], None]) -> None:
        """Call callback(sender_ip, mac) whenever a host resolves ip: an ARP request or a
        neighbour solicitation for it from the sender's own address (not a probe, not an
        announcement). A host that resolves an address watches it; it does not hold it."""
        self._askers[ip_address(ip)] = callback

    def watch_users(self, ip: IPAddress | str, callback: Callable[[str], None]) -> None:
        """Call callback(mac) whenever a frame shows which link-layer address uses ip: an
        ARP or neighbour solicitation sent from ip, a neighbour advertisement for it. Adds
        to the callbacks for ip (several monitors can share a peer)."""
        self._users.setdefault(ip_address(ip), []).append(callback)

    def unwatch_users(self, ip: IPAddress | str, callback: Callable[[str], None]) -> None:
        addr = ip_address(ip)
        callbacks = self._users.get(addr, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self._users.pop(addr, None)

    # ------------------------------------------------------------ sending

    def _socket(self, version: int) -> socket.socket:
        sock = self._arp if version == 4 else self._ndp
        if sock is None:
            raise OSError(f"neighbour watch on {self.iface.name} is not started")
        return sock

    def _probe_frame(self, addr: IPAddress) -> tuple[socket.socket, bytes]:
        if isinstance(addr, IPv4Address):
            return self._socket(4), arp.build_probe(self._mac, addr)
        return self._socket(6), ndp.build_dad_probe(self._mac, addr)

    def _send(self, sock: socket.socket, frame: bytes) -> None:
        try:
            sock.send(frame)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot send on {self.iface.name}: "
                                     f"{exc.strerror or exc}") from exc

    def _membership(self, option: int, group: IPv6Address) -> None:
        # struct packet_mreq { int ifindex; u16 type; u16 alen; u8 address[8]; }
        mac = arp.mac_to_bytes(ndp.multicast_mac(group))
        mreq = struct.pack("iHH8s", self.iface.index, PACKET_MR_MULTICAST, 6, mac)
        sock = self._socket(6)
        sock.setsockopt(SOL_PACKET, option, mreq)

    def _join(self, addr: IPv6Address) -> IPv6Address | None:
        """Receive another prober's DAD NS: it goes to a group a real NIC filters out
        unless someone joined it (kernel refcounts joins per socket)."""
        group = ndp.solicited_node(addr)
        try:
            self._membership(PACKET_ADD_MEMBERSHIP, group)
        except OSError as exc:
            log.debug("cannot join %s on %s: %s", group, self.iface.name, exc)
            return None
        return group

    def _leave(self, group: IPv6Address) -> None:
        with contextlib.suppress(OSError):
            self._membership(PACKET_DROP_MEMBERSHIP, group)

    # ------------------------------------------------------------ receiving

    def _readable(self, sock: socket.socket, handle: Callable[[bytes], None]) -> None:
        for _ in range(_BURST):
            try:
                frame, addr = sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ENETDOWN while the link flaps: keep listening
                log.debug("receive on %s: %s", self.iface.name, exc)
                return
            if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                continue
            self.stats["frames_seen"] += 1
            if frame[6:12] == self._mac_bytes:
                self.stats["own_frames"] += 1
                continue
            try:
                handle(frame)
            except Exception:  # a bug here must not kill the reader: log and go on
                log.exception("handling a frame on %s", self.iface.name)

    def _on_arp(self, frame: bytes) -> None:
        packet = arp.parse(frame)
        if packet is None:
            self.stats["malformed"] += 1
            return
        if packet.sender_mac == self._mac:
            return
        if packet.sender_ip != arp.UNSPECIFIED:
            # anyone using ip as its sender address has it: answers our probe, or conflicts
            self._answer(packet.sender_ip, packet.sender_mac, prober=False)
            self._conflict(packet.sender_ip, packet.sender_mac)
            if packet.op == arp.OP_REQUEST and packet.target_ip != packet.sender_ip:
                self._asked(packet.target_ip, packet.sender_ip, packet.sender_mac)
        elif packet.op == arp.OP_REQUEST:
            # RFC 5227 2.1.1: another host probing for the same address at the same time
            self._answer(packet.target_ip, packet.sender_mac, prober=True)

    def _on_ndp(self, frame: bytes) -> None:
        packet = ndp.parse(frame)
        if packet is None:
            self.stats["malformed"] += 1
            return
        mac = packet.lladdr
        if mac == self._mac:
            return
        if packet.type is ndp.NdpType.NA:
            self._answer(packet.target, mac, prober=False)
            self._conflict(packet.target, mac)
        elif packet.is_dad:
            # another host probing for the same address at the same time
            self._answer(packet.target, mac, prober=True)
        else:
            # an NS sent *from* ip: its sender uses the address, as an ARP sender_ip does.
            # It may be a link-local address: Linux re-checks a resolved neighbour (NUD
            # probe, unicast) from its link-local address, not from the one it pings from.
            self._answer(packet.src, mac, prober=False)
            self._conflict(packet.src, mac)
            self._asked(packet.target, packet.src, mac)

    def _answer(self, ip: IPAddress, mac: str, *, prober: bool) -> None:
        waiters = self._probes.get(ip)
        if not waiters:
            return
        for fut, on_prober in waiters.items():
            if fut.done():
                continue
            if prober and (on_prober == "ignore"
                           or (on_prober == "tiebreak" and mac >= self._mac)):
                continue
            self.stats["probe_answers"] += 1
            fut.set_result(ProbeAnswer(mac, prober))

    def _asked(self, ip: IPAddress, sender: IPAddress, mac: str) -> None:
        callback = self._askers.get(ip)
        if callback is None:
            return
        try:
            callback(sender, mac)
        except Exception:
            self.stats["callback_errors"] += 1
            log.exception("resolver callback for %s", ip)

    def _conflict(self, ip: IPAddress, mac: str) -> None:
        for user in list(self._users.get(ip, ())):
            try:
                user(mac)
            except Exception:
                self.stats["callback_errors"] += 1
                log.exception("user callback for %s", ip)
        callback = self._watches.get(ip)
        if callback is None:
            return
        self.stats["conflicts_seen"] += 1
        try:
            callback(mac)
        except Exception:
            self.stats["callback_errors"] += 1
            log.exception("conflict callback for %s", ip)
