"""The pool's UDP endpoint: send heartbeats to every member, receive and check theirs.

One UDP socket per other member, bound to this member's own address and the pool port and
*connected* to that member's address and the pool port. The kernel delivers a datagram to
the socket whose connected peer matches its source, so:

* a datagram from any other address (a non-member, a flood) matches no socket and is
  dropped by the kernel before it costs this process anything: no wake-up, no HMAC, no
  queue space (it shows as `UdpNoPorts` in `nstat`);
* each member's heartbeats have a receive queue of their own, which traffic from other
  sources cannot fill. Measured in tests/integration/test_pools.py: ~0.5 M wrong-key
  datagrams per second from a non-member to every member for 10 s, no member lost.

The sockets share the port with SO_REUSEPORT (allowed only to the same user, so another
local user cannot bind it). Each wake-up drains the socket (up to `DRAIN` datagrams, then
the event loop runs other work). Every datagram received is decoded by `protocol.decode`;
anything it rejects is counted by reason and dropped, including an authenticated heartbeat
that names another member than the address it came from (`wrong_sender`). Nothing a peer
sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from minisft.config.model import PoolConfig, PoolMemberConfig
from minisft.pools.protocol import (
    MAX_DATAGRAM,
    BadMessage,
    Heartbeat,
    ReplayState,
    decode,
    encode,
)

log = logging.getLogger("minisft.pools")

DROP_REASONS = ("malformed", "forged", "wrong_pool", "unknown_member", "stale", "replayed",
                "self", "wrong_sender")
# datagrams read per wake-up and socket: drains a queue that filled while the loop was busy,
# and still lets the loop run timers between two batches
DRAIN = 64


def peer_socket(local: ipaddress.IPv4Address | ipaddress.IPv6Address,
                peer: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> socket.socket:
    """A non-blocking UDP socket on local:port that receives only from peer:port."""
    family = socket.AF_INET6 if local.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((str(local), port))
        sock.connect((str(peer), port))
    except BaseException:
        sock.close()
        raise
    return sock


class PoolTransport:
    def __init__(self, pool: PoolConfig, me: str, *, on_heartbeat: Callable[[Heartbeat], None],
                 wall: Callable[[], float], window: float = 30.0) -> None:
        if pool.key is None:
            raise ValueError(f"pool {pool.name}: a key (key_file) is required")
        self.pool = pool
        self.me = me
        self.key = pool.key
        self.local = next(m for m in pool.members if m.name == me)
        self.peers = {m.name: m for m in pool.members if m.name != me}
        self.boot = secrets.token_hex(8)
        self.seq = 0
        self.replay = ReplayState(pool.name, frozenset(m.name for m in pool.members), window)
        self._on_heartbeat = on_heartbeat
        self._wall = wall
        self._sockets: dict[str, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
        self.last_error: str | None = None

    def open(self) -> None:
        """Open and bind the sockets now, before `start`: a reload whose new port is taken
        (by another program) fails here, before the running pool is touched. The running
        pool's own sockets on the same port do not stand in the way: they share it
        (SO_REUSEPORT), and once they close, the new ones receive."""
        self.close()
        try:
            for peer in self.peers.values():
                self._sockets[peer.name] = peer_socket(self.local.ip, peer.ip, self.pool.port)
        except BaseException:
            self.close()
            raise

    async def start(self) -> None:
        if not self._sockets:
            self.open()
        loop = asyncio.get_running_loop()
        self._loop = loop
        for peer in self.peers.values():
            loop.add_reader(self._sockets[peer.name].fileno(), self._drain, peer,
                            self._sockets[peer.name])

    @property
    def listening(self) -> bool:
        """Started and receiving from the members."""
        return self._loop is not None and bool(self._sockets)

    def close(self) -> None:
        for sock in self._sockets.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = {}
        self._loop = None

    # ------------------------------------------------------------- sending

    def send(self, fields: dict[str, Any]) -> None:
        """Send one heartbeat (state, holds, wants, lost, digest) to every other member."""
        if not self._sockets:
            return
        self.seq += 1
        msg = Heartbeat(pool=self.pool.name, member=self.me, boot=self.boot, seq=self.seq,
                        time=self._wall(), **fields)
        try:
            data = encode(msg, self.key)
        except ValueError as exc:
            self.counters["encode_errors"] += 1
            self.last_error = str(exc)
            log.error("pool %s: %s", self.pool.name, exc)
            return
        for name, sock in self._sockets.items():
            try:
                sock.send(data)
                self.counters["sent"] += 1
            except OSError as exc:  # e.g. link down, peer's port closed: counted, go on
                self.counters["send_errors"] += 1
                self.last_error = f"send to {name}: {exc}"

    # ------------------------------------------------------------- receiving

    def _drain(self, peer: PoolMemberConfig, sock: socket.socket) -> None:
        for _ in range(DRAIN):
            try:
                data = sock.recv(MAX_DATAGRAM + 1)
            except BlockingIOError:
                return
            except OSError as exc:
                # ICMP port unreachable from a member that is down, and the like
                self.counters["socket_errors"] += 1
                self.last_error = f"from {peer.name}: {exc}"
                continue
            self.datagram_received(data, peer)

    def datagram_received(self, data: bytes, peer: PoolMemberConfig) -> None:
        """One datagram from `peer`'s address and the pool port (the kernel checked both)."""
        self.counters["received"] += 1
        try:
            msg = decode(data, self.key, self.replay, self._wall(), sender=peer.name)
        except BadMessage as exc:
            self.dropped[exc.reason] += 1
            log.debug("pool %s: dropped datagram from %s: %s", self.pool.name, peer.name, exc)
            return
        if msg.member == self.me:
            self.dropped["self"] += 1
            return
        self.counters["accepted"] += 1
        try:
            self._on_heartbeat(msg)
        except Exception:  # a bug in the consumer must not kill the endpoint
            self.counters["handler_errors"] += 1
            log.exception("pool %s: heartbeat handler failed", self.pool.name)

    def status(self) -> dict[str, Any]:
        return {
            "boot": self.boot,
            "seq": self.seq,
            "counters": dict(self.counters),
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }
