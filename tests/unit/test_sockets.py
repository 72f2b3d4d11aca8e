"""minisft.net.sockets: the receive buffer the hub and the neighbour watch ask for."""

from __future__ import annotations

import os
import socket

from minisft.net.sockets import SO_RCVBUFFORCE, enlarge_receive_buffer


def test_a_real_socket_gets_a_larger_buffer_than_the_default() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        granted = enlarge_receive_buffer(sock, 4 * default)
    assert granted > default
    if os.geteuid() == 0:  # CAP_NET_ADMIN: past rmem_max (the kernel doubles the ask)
        assert granted >= 4 * default


class _NoForce:
    """A socket whose owner lacks CAP_NET_ADMIN: SO_RCVBUFFORCE fails with EPERM."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        if option == SO_RCVBUFFORCE:
            raise PermissionError(1, "Operation not permitted")
        self.asked.append((option, value))

    def getsockopt(self, level: int, option: int, /) -> int:
        return self.asked[-1][1] if self.asked else 0


def test_without_the_capability_it_falls_back_to_the_capped_option() -> None:
    size = 1 << 20
    sock = _NoForce()
    assert enlarge_receive_buffer(sock, size) == size
    assert sock.asked == [(socket.SO_RCVBUF, size)]
