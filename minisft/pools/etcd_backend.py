"""Pools coordinated through etcd: ownership and liveness are etcd leases (Patroni's rules).

`EtcdPoolRuntime` has the public interface of `minisft.pools.runtime.PoolRuntime` (same
constructor keywords, `start(held)`, `stop(release)`, `snapshot()`, `rebalance(by)`), so the
daemon picks one or the other by `pool.coordination.backend` and treats them alike. The
embedded `PoolMachine` is built around heartbeats (who heard whom, quorum of the members,
`wants`); here etcd is the single source of truth, so the decisions are different and live
in this module. Both share the formula (`minisft.pools.formula.assign`).

Keys (``P`` = ``<prefix>/pools/<pool>``)::

    P/config            the pool definition (members, weights, addresses, preferred,
                        fallback): written by the first member if absent, or by
                        `push_definition` (``minisft pool push``); no lease
    P/members/<name>    one per live member, under its lease: liveness = lease alive
    P/owners/<ip>       the owner of an address (bare IP: no '/' in the key), under the
                        owner's lease, created only if absent (txn create_revision == 0)

Rules:

* **Taking** an address: only the member the formula names (over the members registered in
  etcd and listed in the definition), only after winning its owner key *and* a clean
  ARP/NDP probe. A probe that finds someone answering gives the key back.
* **Holding implies owning**: a member holds an address only while etcd shows it as the
  owner. A holder that sees its key vanish (or another owner) releases at once.
* **Handing over** (fallback ``auto``, or one `rebalance` pass): the holder removes the
  address from its interface, *then* deletes its key; the formula's member then takes it.
* **Fencing**: a member that cannot renew its lease gives every address up
  ``fence_after = ttl * 2/3`` after the *sending* of its last successful keepalive, and
  emits LEASE_LOST. etcd expires the lease no earlier than ``ttl`` after that keepalive
  reached it, so the survivors, which act only when the owner key is deleted, never find
  the address still bound: at least ``ttl/3`` of margin (measured in the integration test).
* **Reaction**: a watch on ``P/`` applies every change at once (an expired lease deletes
  the member key and its owner keys in one revision; the formula's next owner acts on that
  event). A full read every `RESYNC` seconds backs the watch up.
* **Definition**: etcd's definition is the one used, so members agree by construction. A
  local config that differs raises CONFIG_DRIFT (once per episode, a notice when it matches
  again). With a pool `key`, the definition carries an HMAC-SHA256 under it; one that does
  not verify is not used (CONFIG_DRIFT, the local definition is used instead).

Client: ``aetcd`` (asyncio gRPC, works with etcd 3.4's v3 API), imported only when an etcd
pool starts. aetcd 1.0 talks to one host and only over plain gRPC, so this module rotates
through the configured endpoints itself and builds the channel (TLS, user token, and the
``hasleader`` metadata that makes an etcd member cut off from its leader refuse requests
and end watches instead of serving stale data).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import importlib
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from minisft.config.model import (
    CoordinationConfig,
    FallbackConfig,
    FallbackMode,
    IPInterface,
    PoolConfig,
    PoolMemberConfig,
)
from minisft.core.actions import OnProber
from minisft.core.events import EventKind, Notice, Severity
from minisft.pools.actions import RebalanceAnswer
from minisft.pools.formula import assign, home
from minisft.pools.machine import ANNOUNCE, PROBE
from minisft.pools.placement import HolderHistory, placement
from minisft.runtime.driver import ActionDriver, cancel_and_wait
from minisft.runtime.ports import Neighbours, Netlink, Pinger
from minisft.status import PoolAddressStatus

log = logging.getLogger("minisft.pools.etcd")
T = TypeVar("T")

RESYNC = 5.0  # full read of the pool's keys, behind the watch
# stop(): how long the loops and operations get to end once cancelled, and the netlink
# call that removes one address; every step of a stop is bounded, so SIGTERM always ends
# the daemon within seconds, whatever etcd (or a library waiting on it) does
STOP_GRACE = 2.0
CLOSE_GRACE = 2.0  # closing the gRPC channel (aetcd's watcher shutdown included)
HOUSEKEEPING = 1.0  # own link state, held addresses still on the interface
TICK = 0.1  # fence check and timers (hold-down, retries)
DEFINITION_VERSION = 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)


class EtcdUnavailable(Exception):
    """No answer from etcd in time, or an error from it: the session is rotated."""


# ====================================================================== definition


def definition_of(pool: PoolConfig) -> dict[str, Any]:
    """What every member must share, as stored in etcd (plain JSON, canonical order)."""
    preferred = {}
    for raw, member in pool.preferred.items():
        with contextlib.suppress(ValueError):
            preferred[str(ipaddress.ip_interface(raw).ip)] = member
    return {
        "name": pool.name,
        "members": [{"name": m.name, "ip": str(m.ip), "weight": m.weight}
                    for m in pool.members],
        "addresses": [str(a) for a in pool.addresses],
        "preferred": dict(sorted(preferred.items())),
        "fallback": {"mode": pool.fallback.mode.value,
                     "hold_down": pool.fallback.hold_down},
    }


def _canonical(definition: dict[str, Any]) -> bytes:
    return json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()


def definition_digest(definition: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(definition)).hexdigest()[:32]


def encode_definition(pool: PoolConfig) -> bytes:
    d = definition_of(pool)
    mac = hmac.new(pool.key, _canonical(d), hashlib.sha256).hexdigest() if pool.key else None
    return json.dumps({"v": DEFINITION_VERSION, "definition": d, "mac": mac},
                      sort_keys=True).encode()


def decode_definition(raw: bytes, local: PoolConfig) -> PoolConfig:
    """The pool as etcd defines it, on top of `local` (key, coordination). ValueError names
    what is wrong: not JSON, bad MAC (with a local key), invalid content."""
    try:
        doc = json.loads(raw)
        d = doc["definition"]
        if doc.get("v") != DEFINITION_VERSION or not isinstance(d, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a MiniSFT pool definition") from None
    if local.key is not None:
        mac = doc.get("mac")
        good = hmac.new(local.key, _canonical(d), hashlib.sha256).hexdigest()
        if not isinstance(mac, str) or not hmac.compare_digest(mac, good):
            raise ValueError("its HMAC does not verify with this pool's key_file (written "
                             "without the key, with another key, or altered)")
    try:
        members = tuple(PoolMemberConfig(name=_checked_name(m["name"]),
                                         ip=ipaddress.ip_address(m["ip"]),
                                         weight=_checked_weight(m["weight"]))
                        for m in d["members"])
        addresses = tuple(ipaddress.ip_interface(a) for a in d["addresses"])
        names = {m.name for m in members}
        ips = {str(a.ip) for a in addresses}
        preferred = {str(k): str(v) for k, v in d.get("preferred", {}).items()}
        fb = d["fallback"]
        fallback = FallbackConfig(mode=FallbackMode(fb["mode"]),
                                  hold_down=float(fb["hold_down"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"invalid definition: {exc}") from None
    if d.get("name") != local.name:
        raise ValueError(f"it is the definition of pool {d.get('name')!r}")
    if len(names) != len(members) or len(members) < 2 or not addresses or \
            len(ips) != len(addresses):
        raise ValueError("invalid definition: duplicate or too few members or addresses")
    if any(k not in ips or v not in names for k, v in preferred.items()):
        raise ValueError("invalid definition: preferred names unknown addresses or members")
    return dataclasses.replace(local, members=members, addresses=addresses,
                               preferred=preferred, fallback=fallback)


def _checked_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(f"bad member name {value!r}")
    return value


def _checked_weight(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValueError(f"bad weight {value!r}")
    return value


def _differences(a: PoolConfig, b: PoolConfig) -> list[str]:
    da, db = definition_of(a), definition_of(b)
    return [k for k in ("members", "addresses", "preferred", "fallback") if da[k] != db[k]]


# ====================================================================== etcd session


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str  # bracketed for IPv6: what gRPC wants in "host:port"
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = urlsplit(url)
        host = u.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return cls(url, host, u.port or 2379, u.scheme == "https")


async def within(work: Awaitable[Any], seconds: float, what: str) -> bool:
    """Run `work` for at most `seconds`; True if it ended (its errors are logged, not
    raised). Unlike asyncio.wait_for this never waits for a cancelled `work` to end (one
    that swallows its cancel would hang the caller), and a cancel of the caller still
    propagates: what is left of `work` is cancelled and abandoned."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_consume)  # no "exception was never retrieved" later
        log.warning("%s: no end after %gs, abandoned", what, seconds)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s: %s", what, task.exception())
    return True


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class EtcdSession:
    """One gRPC connection to one endpoint at a time, every call bounded by `timeout`.

    Any failure raises `EtcdUnavailable`; `rotate()` closes the channel and moves to the
    next endpoint (the owner of the session decides when)."""

    def __init__(self, pool: PoolConfig, timeout: float) -> None:
        self.coord = pool.coordination
        self.endpoints = [Endpoint.parse(u) for u in self.coord.endpoints]
        if not self.endpoints:
            raise ValueError(f"pool {pool.name}: coordination.endpoints is empty")
        self.timeout = timeout
        self.index = 0
        self.client: Any = None
        self.generation = 0  # bumped by rotate: callers tell a stale failure from a new one
        self._aetcd: Any = None
        self._rpc: Any = None

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self.index]

    def _modules(self) -> tuple[Any, Any]:
        if self._aetcd is None:
            try:
                self._aetcd = importlib.import_module("aetcd")
                self._rpc = importlib.import_module("aetcd.rpc")
            except ImportError as exc:
                raise RuntimeError("etcd pools need the aetcd package (pip install "
                                   "'minisft[etcd]')") from exc
        return self._aetcd, self._rpc

    async def connect(self) -> Any:
        if self.client is not None:
            return self.client
        aetcd, rpc = self._modules()
        ep = self.endpoint
        target = f"{ep.host}:{ep.port}"
        # gRPC's own reconnect backoff grows to minutes; a failover daemon wants seconds
        options = [("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000),
                   ("grpc.keepalive_time_ms", 10_000)]
        if ep.tls:
            channel = rpc.secure_channel(target, self._credentials(), options=options)
        else:
            channel = rpc.insecure_channel(target, options=options)
        # aetcd.Client.connect opens only insecure channels and sends no metadata but the
        # token: build what it would build, on our channel
        client = aetcd.Client(host=ep.host, port=ep.port, timeout=self.timeout)
        metadata: list[tuple[str, str]] = [("hasleader", "true")]
        try:
            if self.coord.username is not None:
                resp = await asyncio.wait_for(rpc.AuthStub(channel).Authenticate(
                    rpc.AuthenticateRequest(name=self.coord.username,
                                            password=self.coord.password or ""),
                    timeout=self.timeout), self.timeout + 0.5)
                metadata.append(("token", resp.token))
        except BaseException as exc:
            await channel.close()
            if isinstance(exc, Exception):
                raise EtcdUnavailable(f"{ep.url}: authentication failed: {exc}") from exc
            raise
        client.channel = channel
        client.metadata = tuple(metadata)
        client.kvstub = rpc.KVStub(channel)
        client.clusterstub = rpc.ClusterStub(channel)
        client.leasestub = rpc.LeaseStub(channel)
        client.maintenancestub = rpc.MaintenanceStub(channel)
        client._watcher = aetcd.Watcher(rpc.WatchStub(channel), timeout=self.timeout,
                                        metadata=client.metadata)
        client._connected.set()
        self.client = client
        return client

    def _credentials(self) -> Any:
        grpc = importlib.import_module("grpc")
        tls = self.coord.tls

        def read(path: Any) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as f:
                data: bytes = f.read()
            return data

        return grpc.ssl_channel_credentials(
            root_certificates=read(tls.ca_file if tls else None),
            private_key=read(tls.key_file if tls else None),
            certificate_chain=read(tls.cert_file if tls else None))

    async def rotate(self) -> None:
        await self.close()
        self.index = (self.index + 1) % len(self.endpoints)

    async def close(self) -> None:
        client, self.client = self.client, None
        self.generation += 1
        if client is not None:
            # Not wait_for: on a timeout or a cancel it waits for the close to end, and
            # aetcd's watcher shutdown swallows a cancel (`except CancelledError: pass`
            # around its request handler), so the close could outlive any deadline.
            await within(client.close(), CLOSE_GRACE, f"{self.endpoint.url}: close")

    async def call(self, fn: Callable[[Any], Awaitable[T]], what: str) -> T:
        """Run `fn(client)` with the deadline; every failure becomes EtcdUnavailable."""
        try:
            client = await self.connect()
            return await asyncio.wait_for(fn(client), self.timeout + 0.5)
        except asyncio.CancelledError:
            raise
        except EtcdUnavailable:
            raise
        except Exception as exc:
            detail = str(exc) or type(exc).__name__
            raise EtcdUnavailable(f"{self.endpoint.url}: {what}: {detail}") from exc


# ====================================================================== the runtime


class Phase(StrEnum):
    STARTING = "starting"  # no lease yet
    ACTIVE = "active"  # lease renewed in time: takes, keeps and hands over
    FENCED = "fenced"  # lease not renewed in time: released everything, takes nothing
    STANDBY = "standby"  # etcd's definition does not list this node


class Slot(StrEnum):
    FREE = "free"
    ADOPTING = "adopting"  # bound at start-up, not yet confirmed by etcd
    BUSY = "busy"  # an operation (acquire, probe, bind, release) is running
    HELD = "held"


@dataclass
class MemberSeen:
    name: str
    lease: int
    state: str
    digest: str | None
    since: float  # local clock when this registration was first seen
    initial: bool  # present in the first read after start: no hold-down


@dataclass(frozen=True)
class Owner:
    member: str
    lease: int
    create_revision: int


@dataclass
class Counters:
    takeovers: int = 0
    claims: int = 0
    adoptions: int = 0
    handovers: int = 0
    yields: int = 0
    conflicts: int = 0
    bind_failures: int = 0
    keepalives: int = 0
    keepalive_failures: int = 0
    sessions: int = 0
    watch_events: int = 0
    fences: int = 0
    leases: int = 0


@dataclass
class FenceTiming:
    ttl: int
    keepalive_interval: float
    rpc_timeout: float
    fence_after: float
    startup_window: float  # see StartupWindow: one lease TTL


    @classmethod
    def for_ttl(cls, ttl: int) -> FenceTiming:
        # several keepalive attempts (and an endpoint rotation) fit before the fence
        interval = ttl / 6
        return cls(ttl=ttl, keepalive_interval=interval,
                   rpc_timeout=max(0.4, min(interval, 2.0)), fence_after=ttl * 2 / 3,
                   startup_window=float(ttl))


@dataclass(frozen=True)
class StartupWindow:
    """The first placement of a cold start waits for the members starting together.

    Members booted together (a rack after a power cut) register in etcd some tens of ms
    apart. Without a window the first to read the state sees itself alone, the formula gives
    it every address, and with manual fallback they stay there (auto hands them back only
    after a hold-down). So at a *cold* start -- no other member owns an address, nobody is
    returning to a running pool -- a member takes nothing until `ends_at`, and every
    member that registers by then counts as present from the start (no hold-down, no
    `member_back`): the first placement follows the formula over all of them, as embedded
    pools do after their listening period. A member joining a running pool (another
    member owns an address) or a reload that keeps its lease gets no window: the pool is
    already placed, and the usual fallback rules apply."""

    ends_at: float  # local clock; -inf without a window

    @classmethod
    def none(cls) -> StartupWindow:
        return cls(-math.inf)

    @classmethod
    def at_first_read(cls, now: float, length: float, node: str, owners: Iterable[Owner],
                      resumed: bool) -> StartupWindow:
        """The window decided at the first successful read of the pool's keys."""
        warm = resumed or any(o.member != node for o in owners)
        return cls.none() if warm else cls(now + length)

    def is_open(self, now: float) -> bool:
        return now < self.ends_at

    def present_from_start(self, first_seen: float) -> bool:
        return first_seen <= self.ends_at


@dataclass(frozen=True)
class LeaseHandover:
    """A stopped runtime's lease, for the runtime that replaces it on a reload."""

    lease_id: int
    ok_at: float  # clock time the last successful keepalive was sent
    boot: str
    coordination: CoordinationConfig

    def fits(self, pool: PoolConfig) -> bool:
        # another cluster, prefix or TTL: start afresh
        return pool.coordination == self.coordination


class EtcdPoolRuntime:
    """One pool member coordinated through etcd; the interface of `PoolRuntime`."""

    def __init__(
        self,
        pool: PoolConfig,
        *,
        node: str,
        clock: Callable[[], float],
        neighbours: Neighbours,
        addresses: Netlink,
        iface: Any,
        netlink_executor: Executor,
        emit: Callable[[Notice], object],
        pinger: Pinger | None = None,  # unused: etcd's quorum is the tie-breaker
        wall: Callable[[], float] = time.time,
        resume: LeaseHandover | None = None,
    ) -> None:
        if not pool.coordination.etcd:
            raise ValueError(f"pool {pool.name}: coordination.backend is not etcd")
        if node not in {m.name for m in pool.members}:
            raise ValueError(f"{node!r} is not a member of pool {pool.name!r}")
        self.local = pool  # the config file's definition
        self.pool = pool  # the definition in use (etcd's once read)
        self.node = node
        self.clock = clock
        self._addresses = addresses
        self._iface = iface
        self._emit_fn = emit
        # probes, netlink and announcements; no hooks: the config refuses them on etcd
        self.driver = ActionDriver(
            owner=pool.name, label=f"pool {pool.name}", task_prefix=f"pool-{pool.name}",
            report=lambda result: None, emit=emit, neighbours=neighbours, netlink=addresses,
            iface=iface, netlink_executor=netlink_executor, hooks=pool.hooks,
            announce=ANNOUNCE, log=log, replace_probes=False)
        self._wall = wall
        self.timing = FenceTiming.for_ttl(pool.coordination.ttl)
        self.session = EtcdSession(pool, self.timing.rpc_timeout)
        base = f"{pool.coordination.prefix}/pools/{pool.name}/"
        self._base = base.encode()
        self._config_key = (base + "config").encode()
        self._members_prefix = (base + "members/").encode()
        self._owners_prefix = (base + "owners/").encode()
        self.boot = secrets.token_hex(8)
        self.local_digest = definition_digest(definition_of(pool))
        self.etcd_digest: str | None = None
        self.drift: str | None = None  # why the local config differs, while it does
        self.phase = Phase.STARTING
        self.reason = "starting: connecting to etcd"
        self.last_change = clock()
        self.link_up = True
        self.lease_id: int | None = None
        self.lease_ok_at: float | None = None  # sending time of the last renewal that worked
        self._resumed = resume is not None and resume.fits(pool)
        if resume is not None and resume.fits(pool):
            # a reload restarting this pool: keep the lease, so the other members see no
            # member lost and back, and the owner keys stay ours without a transaction
            self.lease_id, self.lease_ok_at = resume.lease_id, resume.ok_at
            self.boot = resume.boot
        self.revision = 0
        self.synced = False  # caches reflect a read + watch on a live session
        self.last_error: str | None = None
        self.members: dict[str, MemberSeen] = {}
        self.owners: dict[str, Owner] = {}
        self.assignment: dict[str, str] = {}
        self.counters = Counters()
        self.last_holder = HolderHistory()
        self._set_definition(pool)
        self.slots: dict[str, Slot] = dict.fromkeys(self.keys, Slot.FREE)
        self._retry_at: dict[str, float] = {}
        self._conflict_open: set[str] = set()
        self._next_announce: dict[str, float] = {}
        self._ops: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._broken = asyncio.Event()
        self._rebalance_by: str | None = None
        self._first_read = True
        # until the first read: everyone seen then is present from the start anyway
        self.startup = StartupWindow.none()
        self._started_at = clock()
        self._running = False
        self._fencing = False

    # ------------------------------------------------------------- definition in use

    def _set_definition(self, pool: PoolConfig) -> None:
        self.pool = pool
        self.keys = [str(a) for a in pool.addresses]
        self._by_key: dict[str, IPInterface] = {str(a): a for a in pool.addresses}
        self._key_of_ip = {str(a.ip): str(a) for a in pool.addresses}
        self.weights = {m.name: m.weight for m in pool.members}
        self.preferred = {self._key_of_ip[ip]: m for ip, m in pool.preferred.items()
                          if ip in self._key_of_ip}

    def _owner_key(self, key: str) -> bytes:
        return self._owners_prefix + str(self._by_key[key].ip).encode()

    # ------------------------------------------------------------- lifecycle

    async def start(self, held: Iterable[Any] = ()) -> None:
        """`held`: addresses already on the interface (interfaces, IPs or strings). They
        stay bound until etcd confirms this node as their owner, or are released."""
        ips = {ipaddress.ip_interface(x).ip for x in held}
        for key, a in self._by_key.items():
            if a.ip in ips:
                self.slots[key] = Slot.ADOPTING
        self._started_at = self.clock()
        self._running = True
        name = self.pool.name
        self._loops = [
            asyncio.create_task(self._session_loop(), name=f"pool-{name}-etcd-session"),
            asyncio.create_task(self._keepalive_loop(), name=f"pool-{name}-etcd-keepalive"),
            asyncio.create_task(self._tick_loop(), name=f"pool-{name}-etcd-tick"),
            asyncio.create_task(self._reconcile_loop(), name=f"pool-{name}-etcd-reconcile"),
            asyncio.create_task(self._housekeeping_loop(),
                                name=f"pool-{name}-etcd-housekeeping"),
        ]

    def handover(self) -> LeaseHandover | None:
        """After `stop(release=False)`: what a new runtime for the same pool needs to go on
        with this one's lease (None if there is none, or it may have expired)."""
        if self.lease_id is None or self.lease_ok_at is None:
            return None
        return LeaseHandover(self.lease_id, self.lease_ok_at, self.boot, self.local.coordination)

    async def stop(self, release: bool) -> None:
        """Stop; with `release`, remove the addresses, then revoke the lease so the others
        take them over at once. Without, the lease is left to expire: a daemon restarted
        within `ttl` adopts its addresses (the key names this member).

        Every step is bounded (SIGTERM must end the daemon even while etcd does not
        answer): the loops and operations get STOP_GRACE to end, cancelled again and again
        meanwhile (a cancel that lands in a library's cleanup can be swallowed); the
        addresses go first, each removal bounded, as a fence would remove them (no lease
        renewal from now on means no address); the farewell to etcd gets two RPC
        deadlines, after which the lease simply expires; closing the channel CLOSE_GRACE."""
        self._running = False
        busy = set(self._ops)  # an operation under way may have bound its address already
        tasks = {*self._loops, *self._ops.values(), *self._background}
        if not await within(cancel_and_wait(tasks), STOP_GRACE, f"pool {self.pool.name}: "
                            "stopping the etcd loops"):
            log.error("pool %s: still running after %gs: %s", self.pool.name, STOP_GRACE,
                      ", ".join(sorted(t.get_name() for t in tasks if not t.done())))
        self._loops.clear()
        self._ops.clear()
        if release:
            for key in self.keys:
                if self.slots[key] is not Slot.FREE or key in busy:
                    await within(self.driver.netlink(self._addresses.release, self._iface,
                                                     self._by_key[key]),
                                 STOP_GRACE, f"pool {self.pool.name}: release {key}")
                    self.slots[key] = Slot.FREE
            if self.lease_id is not None:
                await within(self._farewell(self.lease_id), 2 * (self.session.timeout + 0.5),
                             f"pool {self.pool.name}: leaving etcd (the lease expires "
                             f"after {self.timing.ttl}s instead)")
                self.lease_id = None
        await self.session.close()

    async def _farewell(self, lease: int) -> None:
        """Mark this member leaving, then revoke its lease: its keys go at once."""
        with contextlib.suppress(EtcdUnavailable):
            await self.session.call(lambda c: c.put(
                self._members_prefix + self.node.encode(),
                self._member_value("leaving"), lease=lease), "leaving")
            await self.session.call(lambda c: c.revoke_lease(lease), "revoke")

    def rebalance(self, by: str = "cli") -> RebalanceAnswer:
        """Admin: hand addresses to the members the formula gives them (manual fallback).

        Break-before-make here: the holder releases, then deletes its owner key, and the
        formula's member takes it after its probe. The embedded pool's make-before-break
        switchover would need a bind before the owner key moves, which breaks "holding
        implies owning" (the fencing margin relies on it), so etcd pools do not do it."""
        self._rebalance_by = by
        self._wake.set()
        return RebalanceAnswer(True, "etcd pool: each address this member holds that the "
                               "formula gives to another member is handed over "
                               "break-before-make (run it on the holders; make-before-break "
                               "is for embedded pools only)")

    # ------------------------------------------------------------- helpers

    def _emit(self, kind: EventKind, reason: str, address: str | None = None, *,
              severity: Severity | None = None, extra: dict[str, Any] | None = None,
              **details: Any) -> None:
        self._emit_fn(Notice(kind=kind, reason=reason, monitor=self.pool.name,
                             address=address, state=self.phase.value, severity=severity,
                             details={**details, **(extra or {})}))

    def _go(self, phase: Phase, reason: str) -> None:
        if phase is not self.phase:
            self.last_change = self.clock()
        self.phase = phase
        self.reason = reason

    def _member_value(self, state: str = "alive") -> bytes:
        return json.dumps({"member": self.node, "boot": self.boot, "state": state,
                           "digest": self.local_digest}).encode()

    def _lease_fresh(self, margin: float = 0.0) -> bool:
        """The lease was renewed recently enough to act (bind, keep)."""
        return (self.lease_id is not None and self.lease_ok_at is not None
                and self.clock() - self.lease_ok_at < self.timing.fence_after - margin)

    # ------------------------------------------------------------- session: read + watch

    async def _session_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self._open_session()
                failures = 0
                while True:  # a fresh read and watch every RESYNC s: nothing missed lives
                    await self._read_all()
                    await self._watch(RESYNC)
            except asyncio.CancelledError:
                raise
            except EtcdUnavailable as exc:
                # one warning per distinct problem: a partition repeats it every round
                level = logging.DEBUG if str(exc) == self.last_error else logging.WARNING
                log.log(level, "pool %s: etcd: %s", self.pool.name, exc)
                self.last_error = str(exc)
            except Exception as exc:  # a bug here must not end coordination for good
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("pool %s: etcd session failed", self.pool.name)
            self.synced = False
            failures += 1
            await self.session.rotate()
            self._broken.clear()
            # a refused connection fails at once: do not spin, but retry well within the
            # fence deadline so that a member recovers quickly
            await asyncio.sleep(min(0.1 * failures, self.timing.keepalive_interval, 1.0))

    async def _open_session(self) -> None:
        s = self.session
        self.counters.sessions += 1
        await s.connect()
        if self.lease_id is not None:
            await self._renew()  # also tells whether the lease outlived the outage
        if self.lease_id is None:
            sent = self.clock()
            lease = await s.call(lambda c: c.lease(self.timing.ttl), "lease grant")
            self.lease_id = int(lease.id)
            self.lease_ok_at = sent
            self.counters.leases += 1
            log.info("pool %s: etcd lease %x (ttl %ss) via %s", self.pool.name, lease.id,
                     self.timing.ttl, s.endpoint.url)
            self._after_renewal()
        await self._register()
        await self._sync_definition()
        self._broken.clear()

    async def _register(self) -> None:
        lease_id = self.lease_id
        await self.session.call(lambda c: c.put(self._members_prefix + self.node.encode(),
                                                self._member_value(), lease=lease_id),
                                "register")

    async def _sync_definition(self) -> None:
        async def create_or_get(c: Any) -> Any:
            t = c.transactions
            return await c.transaction(
                compare=[t.create(self._config_key) == 0],
                success=[t.put(self._config_key, encode_definition(self.local))],
                failure=[t.get(self._config_key)])

        created, responses = await self.session.call(create_or_get, "pool definition")
        if created:
            log.info("pool %s: wrote the pool definition to etcd", self.pool.name)
            self._apply_definition(encode_definition(self.local))
        elif responses and responses[0]:
            self._apply_definition(responses[0][0][0])

    def _apply_definition(self, raw: bytes) -> None:
        try:
            remote = decode_definition(raw, self.local)
        except ValueError as exc:
            self.etcd_digest = None
            self._set_drift(f"the pool definition in etcd is not used: {exc}; using the "
                            "local configuration", theirs="invalid")
            remote = self.local
        else:
            self.etcd_digest = definition_digest(definition_of(remote))
            diff = _differences(self.local, remote)
            if diff:
                self._set_drift(f"the local configuration of pool {self.pool.name} differs "
                                f"from the definition in etcd ({', '.join(diff)}): using "
                                "etcd's, fix the config file or `minisft pool push`",
                                theirs=self.etcd_digest, differs=",".join(diff))
            else:
                self._set_drift(None)
        if definition_of(remote) != definition_of(self.pool):
            self._change_definition(remote)

    def _set_drift(self, why: str | None, **details: Any) -> None:
        if why is not None and self.drift is None:
            self._emit(EventKind.CONFIG_DRIFT, why, ours=self.local_digest, **details)
        elif why is None and self.drift is not None:
            self._emit(EventKind.CONFIG_DRIFT, "the local configuration matches the pool "
                       "definition in etcd again", severity=Severity.NOTICE, resolved=True)
        self.drift = why

    def _change_definition(self, pool: PoolConfig) -> None:
        kept = {str(a) for a in pool.addresses}
        gone = {k: (self._by_key[k], self._owner_key(k), self.owners.get(k))
                for k in self.keys if k not in kept}
        old_slots = self.slots
        self._set_definition(pool)
        self.slots = {k: old_slots.get(k, Slot.FREE) for k in self.keys}
        for key, (iface, okey, owner) in gone.items():
            # no longer a pool address: nobody else will take it, so remove it here
            if old_slots.get(key, Slot.FREE) is not Slot.FREE:
                log.warning("pool %s: %s left the pool definition: releasing it",
                            self.pool.name, key)
                self._emit(EventKind.RELEASED, "the address left the pool definition in "
                           "etcd: released", address=key)
            held = old_slots.get(key, Slot.FREE) is not Slot.FREE
            self._background_task(self._forget(iface, okey, owner, held))
            self.owners.pop(key, None)
        if self.node not in self.weights:
            self._go(Phase.STANDBY, "standby: the pool definition in etcd does not list "
                                    f"this node ({self.node})")
        elif self.phase is Phase.STANDBY:
            self._go(Phase.ACTIVE, "active: listed in the pool definition again")
        self._wake.set()

    async def _read_all(self) -> None:
        resp = await self.session.call(lambda c: c.get_prefix(self._base), "read")
        read_at = int(resp.header.revision)
        self.revision = read_at
        members: dict[str, MemberSeen] = {}
        owners: dict[str, Owner] = {}
        config: bytes | None = None
        for kv in resp:
            if bytes(kv.key) == self._config_key:
                config = bytes(kv.value)
            self._parse_into(kv, members, owners)
        if config is not None:
            self._apply_definition(config)
        # a key this node created after the read was served is newer than the read
        for key, owner in self.owners.items():
            if owner.create_revision > read_at and key not in owners:
                owners[key] = owner
        self._replace_members(members)
        self.owners = owners
        if self.lease_id is not None and (self.node not in members or
                                          members[self.node].lease != self.lease_id):
            await self._register()  # deleted by hand, or written by a previous boot
        for key, owner in owners.items():
            self.last_holder.saw(key, owner.member)
        if self._first_read:
            self.startup = StartupWindow.at_first_read(
                self.clock(), self.timing.startup_window, self.node, owners.values(),
                self._resumed)
            if self.startup.is_open(self.clock()):
                log.info("pool %s: cold start (no other member owns an address): taking "
                         "nothing for %gs, the members that register meanwhile count from "
                         "the start", self.pool.name, self.timing.startup_window)
        self._first_read = False
        self.synced = True
        self._wake.set()

    def _parse_into(self, kv: Any, members: dict[str, MemberSeen],
                    owners: dict[str, Owner]) -> None:
        key = bytes(kv.key)
        if key.startswith(self._members_prefix):
            name = key[len(self._members_prefix):].decode(errors="replace")
            try:
                value = json.loads(kv.value)
                state, digest = str(value.get("state", "alive")), value.get("digest")
            except (ValueError, AttributeError):
                state, digest = "alive", None
            old = self.members.get(name)
            same = old is not None and old.lease == int(kv.lease)
            now = self.clock()
            members[name] = MemberSeen(
                name, int(kv.lease), state, digest if isinstance(digest, str) else None,
                since=old.since if same and old else now,
                initial=(old.initial if same and old else
                         self._first_read or self.startup.present_from_start(now)))
        elif key.startswith(self._owners_prefix):
            ip = key[len(self._owners_prefix):].decode(errors="replace")
            addr = self._key_of_ip.get(ip)
            if addr is None:
                return
            try:
                member = str(json.loads(kv.value)["member"])
            except (ValueError, KeyError, TypeError):
                member = "?"
            owners[addr] = Owner(member, int(kv.lease), int(kv.create_revision))

    def _replace_members(self, new: dict[str, MemberSeen]) -> None:
        auto = self.pool.fallback.mode is FallbackMode.AUTO
        for name, old in self.members.items():
            if name == self.node or (name in new and new[name].lease == old.lease):
                continue
            if old.state == "leaving":
                self._emit(EventKind.MEMBER_LOST, f"member {name} is stopping and left the "
                           "pool", member=name)
            else:
                held = sorted(k for k, o in self.owners.items() if o.member == name)
                self._emit(EventKind.MEMBER_LOST,
                           f"member {name} is lost: its etcd lease expired (ttl "
                           f"{self.timing.ttl}s)" + (f"; it held {', '.join(held)}"
                                                     if held else ""),
                           member=name, held=len(held))
        for name, seen in new.items():
            if name == self.node or seen.initial:
                continue
            old_seen = self.members.get(name)
            if old_seen is None or old_seen.lease != seen.lease:
                plan = (f"it gets its addresses back after {self.pool.fallback.hold_down:g}s"
                        if auto else "fallback is manual: addresses stay where they are")
                self._emit(EventKind.MEMBER_BACK, f"member {name} registered in etcd: {plan}",
                           member=name)
        self.members = new

    async def _watch(self, duration: float) -> None:
        """Apply the watch's events for `duration` s; raise when the session breaks."""
        start = self.revision + 1
        watch = await self.session.call(
            lambda c: c.watch_prefix(self._base, start_revision=start), "watch")
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in watch:
                    queue.put_nowait(event)
                queue.put_nowait(EtcdUnavailable("the watch ended"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                queue.put_nowait(EtcdUnavailable(f"watch: {exc or type(exc).__name__}"))

        pumper = asyncio.create_task(pump())
        broken = asyncio.create_task(self._broken.wait())
        getter: asyncio.Task[Any] | None = None
        try:
            next_resync = self.clock() + duration
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getter, broken}, timeout=max(0.0, next_resync - self.clock()),
                    return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                if broken in done:
                    raise EtcdUnavailable(self.last_error or "keepalive failed")
                if getter in done:
                    item = getter.result()
                    if isinstance(item, Exception):
                        raise item
                    self._on_event(item)
                if self.clock() >= next_resync:
                    return
        finally:
            # a cancel (reload, stop) can land while the getter waits: cancel it too, or
            # asyncio logs "Task was destroyed but it is pending"
            if getter is not None:
                getter.cancel()
            broken.cancel()
            pumper.cancel()
            # bounded, and a cancel that lands here (stop, reload) is not swallowed: the
            # session loop would go on reading and renewing, and stop() wait for it
            await within(watch.cancel(), 1.0, f"pool {self.pool.name}: cancel the watch")

    def _on_event(self, event: Any) -> None:
        self.counters.watch_events += 1
        kv = event.kv
        key = bytes(kv.key)
        self.revision = max(self.revision, int(kv.mod_revision))
        if key == self._config_key:
            if event.kind == "PUT":
                self._apply_definition(bytes(kv.value))
            return
        if key.startswith(self._members_prefix):
            name = key[len(self._members_prefix):].decode(errors="replace")
            members = dict(self.members)
            if event.kind == "PUT":
                self._parse_into(kv, members, {})
            else:
                members.pop(name, None)
            self._replace_members(members)
        elif key.startswith(self._owners_prefix):
            ip = key[len(self._owners_prefix):].decode(errors="replace")
            addr = self._key_of_ip.get(ip)
            if addr is None:
                return
            if event.kind == "PUT":
                owners: dict[str, Owner] = {}
                self._parse_into(kv, {}, owners)
                if addr in owners:
                    self.owners[addr] = owners[addr]
                    self.last_holder.saw(addr, owners[addr].member)
            else:
                self.owners.pop(addr, None)
        self._wake.set()

    # ------------------------------------------------------------- lease: keepalive, fence

    async def _renew(self) -> None:
        lease = self.lease_id
        if lease is None:
            return
        sent = self.clock()
        try:
            reply = await self.session.call(lambda c: c.refresh_lease(lease), "keepalive")
        except EtcdUnavailable:
            self.counters.keepalive_failures += 1
            raise
        self.counters.keepalives += 1
        if reply is None or int(reply.TTL) <= 0:
            # expired on the server: its keys are gone; a new lease is granted next
            self.lease_id = None
            self.lease_ok_at = None
            self.owners = {k: o for k, o in self.owners.items() if o.lease != lease}
            if self.phase is not Phase.FENCED:
                await self._fence("the etcd lease expired")
            return
        if lease == self.lease_id:
            self.lease_ok_at = sent
            self._after_renewal()

    def _after_renewal(self) -> None:
        if self.phase in (Phase.STARTING, Phase.FENCED):
            was = self.phase
            if self.node in self.weights:
                self._go(Phase.ACTIVE, f"active: etcd lease renewed via "
                                       f"{self.session.endpoint.url}")
            else:
                self._go(Phase.STANDBY, "standby: the pool definition in etcd does not list "
                                        f"this node ({self.node})")
            if was is Phase.FENCED:
                self._emit(EventKind.REJOINED, "the etcd lease is renewed again: taking part "
                           "in the pool again", endpoint=self.session.endpoint.url)
            self._wake.set()

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.keepalive_interval)
            if self.lease_id is None or self.session.client is None or not self.synced:
                continue  # the session loop is (re)connecting; it renews when it is back
            generation = self.session.generation
            try:
                await self._renew()
            except EtcdUnavailable as exc:
                self.last_error = str(exc)
                if generation == self.session.generation:
                    self._broken.set()  # rotate to the next endpoint now
            if self.lease_id is None:
                self._broken.set()  # expired: the session loop grants a new one

    async def _tick_loop(self) -> None:
        next_wake = 0.0
        while True:
            await asyncio.sleep(TICK)
            now = self.clock()
            since = self.lease_ok_at if self.lease_ok_at is not None else self._started_at
            late = self.phase is not Phase.FENCED and now - since > self.timing.fence_after
            if late and (self.lease_id is not None or any(
                    s is not Slot.FREE for s in self.slots.values())):
                await self._fence(f"no etcd keepalive for {now - since:.2f}s")
            if now >= next_wake:
                next_wake = now + 0.5  # hold-down and retry timers
                self._wake.set()

    async def _fence(self, why: str) -> None:
        """Give every address up before the lease can expire (Patroni's rule)."""
        if self._fencing:
            return
        self._fencing = True
        try:
            since = (self.clock() - self.lease_ok_at) if self.lease_ok_at is not None else None
            self._go(Phase.FENCED, f"fenced: {why}; released everything, taking nothing")
            self.counters.fences += 1
            for task in list(self._ops.values()):
                task.cancel()
            held = [k for k in self.keys if self.slots[k] is not Slot.FREE]
            # every pool address, not only the held ones: a bind may be in flight
            for key in self.keys:
                try:
                    await self.driver.netlink(self._addresses.release, self._iface,
                                        self._by_key[key])
                except Exception as exc:
                    log.error("pool %s: could not remove %s: %s", self.pool.name, key, exc)
                self.slots[key] = Slot.FREE
            released_at = (self.clock() - self.lease_ok_at
                           if self.lease_ok_at is not None else None)
            self._emit(EventKind.LEASE_LOST,
                       f"{why} (ttl {self.timing.ttl}s, fencing at "
                       f"{self.timing.fence_after:.2f}s): released "
                       f"{', '.join(held) or 'nothing'} before the lease can expire, so a "
                       "survivor can take over without a duplicate",
                       released=len(held), ttl=self.timing.ttl,
                       since_keepalive=round(since, 3) if since is not None else None,
                       released_after=round(released_at, 3)
                       if released_at is not None else None)
        finally:
            self._fencing = False

    # ------------------------------------------------------------- housekeeping

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            try:
                up = await self.driver.netlink(self._addresses.link_up, self._iface)
                if up != self.link_up:
                    self.link_up = up
                    if up:
                        self._emit(EventKind.LINK_UP, "this node's link is back")
                    else:
                        self._emit(EventKind.LINK_DOWN, "this node's link is down: taking "
                                   "nothing over")
                for key in self.keys:
                    if self.slots[key] is not Slot.HELD or key in self._ops:
                        continue
                    present = await self.driver.netlink(self._addresses.has_address, self._iface,
                                                  self._by_key[key].ip)
                    if not present and self.slots[key] is Slot.HELD:
                        self.slots[key] = Slot.FREE
                        self._emit(EventKind.ADDRESS_REMOVED, "the address vanished from the "
                                   "interface; it is taken again if the formula still gives "
                                   "it to this node", address=key)
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pool %s: housekeeping: %s", self.pool.name, exc)

    # ------------------------------------------------------------- decisions

    def _counted(self, stable_only: bool) -> dict[str, int]:
        hold_down = self.pool.fallback.hold_down
        auto = self.pool.fallback.mode is FallbackMode.AUTO
        now = self.clock()
        out: dict[str, int] = {}
        for name, seen in self.members.items():
            if name not in self.weights or seen.state == "leaving":
                continue
            stable = (name == self.node or not auto or seen.initial
                      or now - seen.since >= hold_down)
            if stable or not stable_only:
                out[name] = self.weights[name]
        if self.node in self.weights and self.lease_id is not None:
            out[self.node] = self.weights[self.node]
        return out

    async def _reconcile_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._reconcile()
            except Exception:
                log.exception("pool %s: reconcile failed", self.pool.name)

    def _reconcile(self) -> None:
        if not self.synced or self._fencing:
            return
        alive = self._counted(stable_only=True)
        desired = assign(self.keys, alive, self.preferred, self.weights, pool=self.pool.name)
        self.assignment = desired
        if self.phase is Phase.STANDBY:
            for key in self.keys:
                if key not in self._ops and self.slots[key] in (Slot.HELD, Slot.ADOPTING):
                    self._spawn(key, self._drop(key, "this node is not in the pool definition "
                                                "in etcd: released", EventKind.YIELDED,
                                                delete=self.owners.get(key)))
            return
        if self.phase is not Phase.ACTIVE or not self._lease_fresh():
            return
        by, self._rebalance_by = self._rebalance_by, None
        auto = self.pool.fallback.mode is FallbackMode.AUTO or by is not None
        now = self.clock()
        for key in self.keys:
            if key in self._ops:
                continue
            slot = self.slots[key]
            owner = self.owners.get(key)
            mine = owner is not None and owner.lease == self.lease_id
            ours_before = (owner is not None and owner.member == self.node and not mine)
            want = desired.get(key) == self.node and self.link_up
            if slot is Slot.ADOPTING:
                if owner is None or ours_before or mine:
                    self._spawn(key, self._adopt(key, owner))
                else:
                    self._spawn(key, self._drop(key, f"bound here at start-up, but etcd "
                                                f"names {owner.member} as its owner",
                                                EventKind.YIELDED, delete=None))
            elif slot is Slot.HELD:
                if not mine:
                    why = ("etcd shows no owner" if owner is None
                           else f"etcd names {owner.member} as its owner")
                    self._spawn(key, self._drop(key, f"{why}: released (a node holds an "
                                                "address only while etcd shows it as the "
                                                "owner)", EventKind.YIELDED, delete=None))
                elif auto and desired.get(key) not in (None, self.node):
                    to = desired[key]
                    self._spawn(key, self._drop(
                        key, f"handed over to {to}, which the formula gives it to"
                        + (f" (rebalance by {by})" if by else ""), EventKind.RELEASED,
                        delete=owner, to=to))
                elif now >= self._next_announce.get(key, 0.0):
                    self._next_announce[key] = now + ANNOUNCE.refresh
                    self._spawn(key, self.driver.announce(key))
            elif slot is Slot.FREE:
                retry_ok = now >= self._retry_at.get(key, 0)
                if owner is not None and (mine or ours_before):
                    # a key of ours for an address not marked held: a previous boot's or
                    # runtime's, or this lease's after a reload handed the lease over
                    self._spawn(key, self._previous_key(key, owner,
                                                        acquire=mine and want and retry_ok))
                elif want and owner is None and retry_ok and not self.startup.is_open(now):
                    self._spawn(key, self._acquire(key, have_key=False))

    def _background_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _forget(self, iface: IPInterface, okey: bytes, owner: Owner | None,
                      held: bool) -> None:
        """An address that left the pool: off the interface, and its key out of etcd."""
        if held:
            await self.driver.netlink(self._addresses.release, self._iface, iface)
        if owner is not None and owner.lease == self.lease_id:

            async def txn(c: Any) -> Any:
                t = c.transactions
                return await c.transaction(compare=[t.create(okey) == owner.create_revision],
                                           success=[t.delete(okey)], failure=[])

            with contextlib.suppress(EtcdUnavailable):
                await self.session.call(txn, f"forget {iface}")

    def _spawn(self, key: str, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"pool-{self.pool.name}-{key}")
        self._ops[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._ops.get(key) is t:
                del self._ops[key]
            if not t.cancelled() and t.exception() is not None:
                log.error("pool %s: %s: %s", self.pool.name, key, t.exception())
            self._wake.set()

        task.add_done_callback(done)

    # ------------------------------------------------------------- operations

    def _owner_value(self) -> bytes:
        return json.dumps({"member": self.node, "boot": self.boot}).encode()

    async def _txn_create(self, key: str) -> bool:
        lease = self.lease_id
        okey = self._owner_key(key)

        async def txn(c: Any) -> Any:
            t = c.transactions
            return await c.transaction(compare=[t.create(okey) == 0],
                                       success=[t.put(okey, self._owner_value(), lease=lease)],
                                       failure=[])

        won, responses = await self.session.call(txn, f"claim {key}")
        if won and lease is not None:
            rev = int(responses[0].response_put.header.revision)
            self.owners[key] = Owner(self.node, lease, rev)
        return bool(won)

    async def _txn_replace(self, key: str, old: Owner) -> bool:
        """Move a previous boot's key to this lease (compare its create_revision)."""
        lease = self.lease_id
        okey = self._owner_key(key)

        async def txn(c: Any) -> Any:
            t = c.transactions
            return await c.transaction(
                compare=[t.create(okey) == old.create_revision],
                success=[t.put(okey, self._owner_value(), lease=lease)], failure=[])

        won, _ = await self.session.call(txn, f"adopt {key}")
        if won and lease is not None:
            # a put keeps the create_revision of an existing key
            self.owners[key] = Owner(self.node, lease, old.create_revision)
        return bool(won)

    async def _confirm(self, key: str) -> Owner | None:
        """Read the owner key again: bind only what etcd shows as this lease's, now."""
        okey = self._owner_key(key)
        try:
            kv = await self.session.call(lambda c: c.get(okey), f"confirm {key}")
        except EtcdUnavailable as exc:
            self.last_error = str(exc)
            return None
        if kv is None:
            self.owners.pop(key, None)
            return None
        if self.lease_id is None or int(kv.lease) != self.lease_id:
            return None
        owner = Owner(self.node, self.lease_id, int(kv.create_revision))
        self.owners[key] = owner
        return owner

    async def _delete_key(self, key: str, owner: Owner | None) -> None:
        if owner is None:
            return
        okey = self._owner_key(key)

        async def txn(c: Any) -> Any:
            t = c.transactions
            return await c.transaction(compare=[t.create(okey) == owner.create_revision],
                                       success=[t.delete(okey)], failure=[])

        try:
            await self.session.call(txn, f"give up {key}")
        except EtcdUnavailable as exc:
            self.last_error = str(exc)
            return
        if self.owners.get(key) == owner:
            del self.owners[key]

    async def _previous_key(self, key: str, owner: Owner, *, acquire: bool) -> None:
        """A key naming this node for an address not marked held: the address may still
        be bound here, e.g. after a reload restarted the pool with a local config that
        lacks it (held addresses are only known by the local definition at start). Bound:
        adopt it (deleting the key would let another member win it while the address is
        still here). Not bound: take it (`acquire`: the formula gives it to this node and
        the key is this lease's) or give the key up."""
        bound = await self.driver.netlink(self._addresses.has_address, self._iface,
                                    self._by_key[key].ip)
        if bound and self.slots.get(key) is Slot.FREE:
            self.slots[key] = Slot.ADOPTING
            await self._adopt(key, owner)
        elif acquire and owner.lease == self.lease_id:
            await self._acquire(key, have_key=True)
        else:
            await self._delete_key(key, owner)

    async def _adopt(self, key: str, owner: Owner | None) -> None:
        try:
            if owner is None:
                won = await self._txn_create(key)
            elif owner.lease == self.lease_id:
                won = True
            else:
                won = await self._txn_replace(key, owner)
        except EtcdUnavailable as exc:
            self.last_error = str(exc)
            return  # still ADOPTING: tried again, or released by the fence
        if not won:
            return  # the watch brings the new owner; the next pass releases it here
        self.slots[key] = Slot.HELD
        self.last_holder.saw(key, self.node)
        self.counters.adoptions += 1
        self._next_announce[key] = self.clock() + ANNOUNCE.refresh
        self._emit(EventKind.ADOPTED, "pool address already bound here at start-up: etcd "
                   "confirms this node as its owner; announced again", address=key)
        await self.driver.announce(key)

    async def _acquire(self, key: str, have_key: bool) -> None:
        before = self.last_holder.get(key)
        self.slots[key] = Slot.BUSY
        try:
            if not have_key:
                try:
                    won = await self._txn_create(key)
                except EtcdUnavailable as exc:
                    self.last_error = str(exc)
                    return
                if not won:
                    return  # another member was first: the watch brings its key
            answer = await self.driver.probe(key, PROBE.count, PROBE.interval, OnProber.YIELD)
            mac = answer.mac if answer else None
            if mac is not None:
                self.counters.conflicts += 1
                self._retry_at[key] = self.clock() + self.timing.ttl
                if key not in self._conflict_open:
                    self._conflict_open.add(key)
                    self._emit(EventKind.ADDRESS_CONFLICT,
                               f"this node won the owner key, but {mac} answers ARP/NDP for "
                               "the address: not binding, key given back, trying again later",
                               address=key, mac=mac)
                await self._delete_key(key, self.owners.get(key))
                return
            owner = await self._confirm(key)
            if owner is None or not self._lease_fresh(margin=0.2) or \
                    self.phase is not Phase.ACTIVE:
                return  # the world changed while probing: the next pass decides
            error: str | None = None
            try:
                await self.driver.netlink(self._addresses.bind, self._iface, self._by_key[key])
            except Exception as exc:
                error = str(exc) or type(exc).__name__
            if error is not None:
                self.counters.bind_failures += 1
                self._retry_at[key] = self.clock() + self.timing.ttl
                self._emit(EventKind.TAKEOVER_FAILED, f"could not bind the address: {error}",
                           address=key)
                await self._delete_key(key, owner)
                return
            self.slots[key] = Slot.HELD
            self._conflict_open.discard(key)
            self.last_holder.saw(key, self.node)
            self._next_announce[key] = self.clock() + ANNOUNCE.refresh
            if before is not None and before != self.node:
                self.counters.takeovers += 1
                gone = before not in self.members
                why = "was lost" if gone else "released it"
                self._emit(EventKind.ADDRESS_MOVED,
                           f"{before} {why}: address moved {before} -> {self.node} per the "
                           "formula; owner key won in etcd, probed, bound and announced",
                           address=key, extra={"from": before, "to": self.node})
            else:
                self.counters.claims += 1
                self._emit(EventKind.CLAIMED, "nobody held the address and the formula gives "
                           "it to this node: owner key won in etcd, probed, bound and "
                           "announced", address=key)
            await self.driver.announce(key)
        finally:
            if self.slots[key] is Slot.BUSY:
                self.slots[key] = Slot.FREE

    async def _drop(self, key: str, why: str, kind: EventKind, *, delete: Owner | None,
                    **details: Any) -> None:
        """Remove the address from the interface, *then* give the key up (if asked)."""
        self.slots[key] = Slot.BUSY
        try:
            await self.driver.netlink(self._addresses.release, self._iface, self._by_key[key])
        except Exception as exc:
            log.error("pool %s: could not remove %s: %s", self.pool.name, key, exc)
            self.slots[key] = Slot.HELD
            return
        self.slots[key] = Slot.FREE
        if kind is EventKind.RELEASED:
            self.counters.handovers += 1
        else:
            self.counters.yields += 1
        self._emit(kind, why, address=key, **details)
        if delete is not None:
            await self._delete_key(key, delete)

    # ------------------------------------------------------------- status

    def holders(self) -> dict[str, tuple[str, ...]]:
        """Who holds each address: the member its owner key in etcd names (one per key;
        while this member probes and binds after winning the key, that is itself)."""
        return {k: (self.owners[k].member,) if k in self.owners else () for k in self.keys}

    def placement(self) -> tuple[PoolAddressStatus, ...]:
        """Every address with its owner, its preferred owner (home, per the etcd
        definition in force) and state (held or free: an owner key has no half-way)."""
        return placement(self.keys, self.holders(),
                         home(self.keys, self.weights, self.preferred, pool=self.pool.name),
                         {}, self.last_holder.moves)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        members = []
        for m in self.pool.members:
            seen = self.members.get(m.name)
            mine = m.name == self.node
            alive = (seen is not None and seen.state != "leaving") or (
                mine and self.lease_id is not None)
            members.append({
                "name": m.name, "self": mine, "weight": m.weight, "alive": alive,
                "stable": m.name in self._counted(stable_only=True),
                "state": ("fenced" if mine and self.phase is Phase.FENCED
                          else seen.state if seen else "absent"),
                "holds": sorted(k for k, o in self.owners.items() if o.member == m.name),
                "lease": f"{seen.lease:x}" if seen else None,
                "drift": bool(seen and seen.digest and self.etcd_digest
                              and seen.digest != self.etcd_digest),
            })
        held = [k for k in self.keys if self.slots[k] is Slot.HELD]
        return {
            "name": self.pool.name,
            "member": self.node,
            "backend": "etcd",
            "phase": self.phase.value,
            "reason": self.reason,
            "isolated": self.phase is not Phase.ACTIVE,
            "link_up": self.link_up,
            "witness": None,
            "witness_ok": None,
            "fallback": self.pool.fallback.mode.value,
            "config_digest": self.local_digest,
            "definition_digest": self.etcd_digest,
            "drift": sorted(m["name"] for m in members if m["drift"]),
            "config_drift": self.drift,
            "members": members,
            "assignment": dict(self.assignment),
            "owners": {k: o.member for k, o in sorted(self.owners.items())},
            "addresses": {k: self.slots[k].value for k in self.keys},
            "placement": [p.to_dict() for p in self.placement()],
            "held": held,
            "wants": [],
            "counters": dict(vars(self.counters)),
            "seconds_since_change": round(max(0.0, now - self.last_change), 3),
            "etcd": {
                "endpoint": self.session.endpoint.url,
                "endpoints": [e.url for e in self.session.endpoints],
                "connected": self.synced,
                "prefix": self.pool.coordination.prefix,
                "revision": self.revision,
                "lease": f"{self.lease_id:x}" if self.lease_id is not None else None,
                "ttl": self.timing.ttl,
                "keepalive_interval": round(self.timing.keepalive_interval, 3),
                "fence_after": round(self.timing.fence_after, 3),
                # > 0 during a cold start's window: nothing is taken yet
                "startup_window_left": round(max(0.0, self.startup.ends_at - now), 3),
                "since_keepalive": round(now - self.lease_ok_at, 3)
                if self.lease_ok_at is not None else None,
                "last_error": self.last_error,
            },
        }


# ====================================================================== admin


async def push_definition(pool: PoolConfig) -> dict[str, Any]:
    """`minisft pool push`: write this config's pool definition to etcd (overwriting).

    Every member applies it from its watch at once. Returns what was written and the
    digest of the definition that was there before (None if none)."""
    timing = FenceTiming.for_ttl(pool.coordination.ttl)
    session = EtcdSession(pool, max(2.0, timing.rpc_timeout))
    key = f"{pool.coordination.prefix}/pools/{pool.name}/config".encode()
    last: EtcdUnavailable | None = None
    try:
        for _ in session.endpoints:
            try:
                resp = await session.call(lambda c: c.put(key, encode_definition(pool),
                                                          prev_kv=True), "push")
            except EtcdUnavailable as exc:
                last = exc
                await session.rotate()
                continue
            before = None
            if resp.prev_kv is not None:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    before = definition_digest(json.loads(resp.prev_kv.value)["definition"])
            return {"pool": pool.name, "key": key.decode(), "endpoint": session.endpoint.url,
                    "digest": definition_digest(definition_of(pool)), "previous": before,
                    "signed": pool.key is not None}
        raise last or EtcdUnavailable("no endpoint")
    finally:
        await session.close()


__all__ = [
    "EtcdPoolRuntime", "EtcdSession", "EtcdUnavailable", "FenceTiming", "LeaseHandover",
    "decode_definition",
    "definition_digest", "definition_of", "encode_definition", "push_definition",
]

