"""Socket options shared by the hub's ICMP sockets and the neighbour watch's packet sockets."""

from __future__ import annotations

import socket
from typing import Protocol

# Not exported by Python's socket module: the root-only variant of SO_RCVBUF, which may
# exceed net.core.rmem_max (the daemon runs with CAP_NET_ADMIN, which allows it).
SO_RCVBUFFORCE = 33


class _Settable(Protocol):
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...
    def getsockopt(self, level: int, option: int, /) -> int: ...


def enlarge_receive_buffer(sock: _Settable, size: int) -> int:
    """Ask for a receive buffer of `size` bytes and return what the kernel granted.

    Why: the default (about 200 KiB) holds a few hundred replies. With thousands of pings
    in flight a loaded host may not read for a moment; a reply dropped because the buffer
    was full reads as a lost ping, and enough of them as a dead peer -- a false takeover.
    SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it SO_RCVBUF is capped at rmem_max, which
    is still better than the default and never an error."""
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        return 0
