"""Interface lookup, address bind/release and link state over rtnetlink (pyroute2).

Synchronous and fast; the runtime calls it from a worker thread. Internally every netlink
request runs on one private thread that owns the pyroute2 socket, because pyroute2 0.9's
sync `IPRoute` drives an asyncio loop of its own: it cannot be created or used in a thread
whose event loop is running, and one socket must not be used by two threads at once.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from socket import AF_INET, AF_INET6
from typing import Any, TypeVar

from minisft.net.pyroute2_lite import rtnetlink

T = TypeVar("T")

# Not `from pyroute2 import IPRoute`: that loads every netlink family pyroute2 has (+6 MiB).
IPRoute, NetlinkError = rtnetlink()

IFA_F_NODAD = 0x02
IFF_UP = 0x1
IFF_RUNNING = 0x40

# A kernel that does not answer rtnetlink within this long is wedged; say so, don't hang.
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mac: str  # "aa:bb:cc:dd:ee:ff", lower case


class LinkError(Exception):
    """A netlink operation failed; the message names the address/interface, for admins."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        name = errno.errorcode.get(exc.code, str(exc.code))
        return f"{exc.args[1]} ({name})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Netlink:
    def __init__(self) -> None:
        # IPRoute is created lazily on the private thread: creating it here would fail when
        # the caller runs inside an asyncio loop (the daemon does).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minisft-netlink")
        self._ipr: Any = None
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        with self._lock:
            if self._closed:
                raise LinkError(f"{what}: netlink connection is closed")
            future = self._pool.submit(self._run, fn)
        try:
            return future.result(timeout=CALL_TIMEOUT)
        except FutureTimeout:
            raise LinkError(f"{what}: the kernel did not answer within "
                            f"{CALL_TIMEOUT:g} s") from None

    def _run(self, fn: Callable[[Any], T]) -> T:
        if self._ipr is None:
            # no multicast groups: nobody reads notifications, they would only pile up
            self._ipr = IPRoute(groups=0)
        return fn(self._ipr)

    # ------------------------------------------------------------ queries

    def interface_for(self, local_ip: IPv4Address | IPv6Address) -> Interface:
        ip = ip_address(local_ip)

        def lookup(ipr: Any) -> Interface | None:
            family = AF_INET if ip.version == 4 else AF_INET6
            for msg in ipr.get_addr(family=family):
                if _msg_ip(msg) == ip:
                    return _interface(ipr, int(msg["index"]))
            return None

        try:
            found = self._call(f"node.local_ip {ip}", lookup)
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"node.local_ip {ip}: cannot list addresses: "
                            f"{_reason(exc)}") from exc
        if found is None:
            raise LinkError(f"node.local_ip {ip} is not configured on any interface "
                            "of this host")
        return found

    def has_address(self, iface: Interface, ip: IPv4Address | IPv6Address) -> bool:
        wanted = ip_address(ip)

        def look(ipr: Any) -> bool:
            family = AF_INET if wanted.version == 4 else AF_INET6
            return any(int(m["index"]) == iface.index and _msg_ip(m) == wanted
                       for m in ipr.get_addr(family=family))

        try:
            return self._call(f"{wanted} on {iface.name}", look)
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"cannot list addresses of {iface.name} to look for {wanted}: "
                            f"{_reason(exc)}") from exc

    def link_up(self, iface: Interface) -> bool:
        """Admin-up with carrier. An interface that vanished counts as down."""

        def look(ipr: Any) -> bool:
            try:
                links = ipr.get_links(iface.index)
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return False
                raise
            if not links:
                return False
            msg = links[0]
            flags = int(msg["flags"])
            oper = msg.get("IFLA_OPERSTATE") or msg.get("operstate") or ""
            if not flags & IFF_UP:
                return False
            # veth/physical report UP; some virtual devices only report UNKNOWN + RUNNING
            return bool(oper == "UP" or (oper == "UNKNOWN" and flags & IFF_RUNNING))

        try:
            return self._call(f"link state of {iface.name}", look)
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"cannot read link state of {iface.name}: "
                            f"{_reason(exc)}") from exc

    # ------------------------------------------------------------ changes

    def bind(self, iface: Interface, address: IPv4Interface | IPv6Interface) -> None:
        """Add `address` with its prefix; already present is fine. IPv6 without kernel DAD:
        the daemon probed the address itself and cannot wait for a tentative address."""
        spec: dict[str, Any] = {"index": iface.index, "address": str(address.ip),
                                "prefixlen": address.network.prefixlen}
        if address.version == 6:
            spec["flags"] = IFA_F_NODAD
        else:
            spec["broadcast"] = True  # like `ip addr add ... brd +`

        def add(ipr: Any) -> None:
            try:
                ipr.addr("add", **spec)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise

        try:
            self._call(f"cannot add {address} to {iface.name}", add)
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"cannot add {address} to {iface.name}: "
                            f"{_reason(exc)}") from exc

    def release(self, iface: Interface, address: IPv4Interface | IPv6Interface) -> None:
        """Remove `address`; already gone (or the interface with it) is fine."""

        def delete(ipr: Any) -> None:
            try:
                ipr.addr("del", index=iface.index, address=str(address.ip),
                         prefixlen=address.network.prefixlen)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                    raise

        try:
            self._call(f"cannot remove {address} from {iface.name}", delete)
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"cannot remove {address} from {iface.name}: "
                            f"{_reason(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # best effort: the process is usually exiting
        with contextlib.suppress(Exception):
            self._pool.submit(self._close_socket).result(timeout=CALL_TIMEOUT)
        self._pool.shutdown(wait=False)

    def _close_socket(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()


def _msg_ip(msg: Any) -> IPv4Address | IPv6Address | None:
    # IPv4: IFA_LOCAL is our address (IFA_ADDRESS is the peer on point-to-point links);
    # IPv6 only sends IFA_ADDRESS
    raw = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
    if not raw:
        return None
    try:
        return ip_address(raw)
    except ValueError:
        return None


def _interface(ipr: Any, index: int) -> Interface:
    msg = ipr.get_links(index)[0]
    mac = msg.get("IFLA_ADDRESS") or "00:00:00:00:00:00"
    return Interface(name=str(msg.get("IFLA_IFNAME")), index=index, mac=str(mac).lower())
