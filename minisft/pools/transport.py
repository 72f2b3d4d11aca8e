"""The pool's UDP endpoint: send heartbeats to every member, receive and check theirs.

One socket per pool, bound to this member's own address and the pool port. Heartbeats go
unicast to each other member (no multicast: it needs switch support and crosses fewer
firewalls). Every datagram received is decoded by `protocol.decode`; anything it rejects
is counted by reason and dropped. Nothing a peer sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from minisft.config.model import PoolConfig
from minisft.pools.protocol import BadMessage, Heartbeat, ReplayState, decode, encode

log = logging.getLogger("minisft.pools")

DROP_REASONS = ("malformed", "forged", "wrong_pool", "unknown_member", "stale", "replayed",
                "self")


class PoolTransport(asyncio.DatagramProtocol):
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
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None  # opened, not yet handed to a transport
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
        self.last_error: str | None = None

    def open(self, inherit: PoolTransport | None = None) -> None:
        """Open and bind the socket now, before `start`: a reload whose new port is taken
        fails here, before the running pool is touched. `inherit` is the running pool's
        transport: when it listens on the same address and port its socket is shared (a
        dup; binding a second socket would fail while it runs) and outlives its close."""
        if inherit is not None and inherit._transport is not None and \
                (inherit.local.ip, inherit.pool.port) == (self.local.ip, self.pool.port):
            sock: socket.socket = inherit._transport.get_extra_info("socket").dup()
        else:
            family = socket.AF_INET6 if self.local.ip.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((str(self.local.ip), self.pool.port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        self.close()
        self._sock = sock

    async def start(self) -> None:
        if self._sock is None:
            self.open()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=self._sock)
        self._sock = None  # the transport owns it now
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ------------------------------------------------------------- sending

    def send(self, fields: dict[str, Any]) -> None:
        """Send one heartbeat (state, holds, wants, lost, digest) to every other member."""
        if self._transport is None:
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
        for peer in self.peers.values():
            try:
                self._transport.sendto(data, (str(peer.ip), self.pool.port))
                self.counters["sent"] += 1
            except OSError as exc:  # e.g. link down: counted, heartbeats go on
                self.counters["send_errors"] += 1
                self.last_error = f"send to {peer.name}: {exc}"

    # ------------------------------------------------------------- receiving

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.counters["received"] += 1
        try:
            msg = decode(data, self.key, self.replay, self._wall())
        except BadMessage as exc:
            self.dropped[exc.reason] += 1
            log.debug("pool %s: dropped datagram from %s: %s", self.pool.name, addr[0], exc)
            return
        if msg.member == self.me:
            self.dropped["self"] += 1
            return
        peer = self.peers[msg.member]
        if addr[0].split("%")[0] != str(peer.ip) and \
                addr[0].removeprefix("::ffff:") != str(peer.ip):
            # authenticated, but not from the member's configured address: count it and
            # still accept it (NAT or a second address); the key is what authenticates
            self.counters["from_other_address"] += 1
        self.counters["accepted"] += 1
        try:
            self._on_heartbeat(msg)
        except Exception:  # a bug in the consumer must not kill the endpoint
            self.counters["handler_errors"] += 1
            log.exception("pool %s: heartbeat handler failed", self.pool.name)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a member that is down, and the like
        self.counters["socket_errors"] += 1
        self.last_error = str(exc)

    def status(self) -> dict[str, Any]:
        return {
            "boot": self.boot,
            "seq": self.seq,
            "counters": dict(self.counters),
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }
