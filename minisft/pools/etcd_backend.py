"""Pools coordinated through etcd: ownership and liveness are etcd leases (Patroni's rules).

`EtcdPoolRuntime` has the public interface of `minisft.pools.runtime.PoolRuntime` (same
constructor keywords, `start(held)`, `stop(release)`, `snapshot()`, `rebalance(by)`), so the
daemon picks one or the other by `pool.coordination.backend` and treats them alike. The
embedded `PoolMachine` is built around heartbeats (who heard whom, quorum of the members,
`wants`); here etcd is the single source of truth, so the decisions are different: they
are the pure `minisft.pools.etcd_machine.EtcdPoolMachine` (testable in simulated time),
which this module's runtime feeds with what it reads from etcd and whose actions it
carries out. Both share the formula (`minisft.pools.formula.assign`).

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
  owner. A holder that sees its key vanish (or another owner) releases at once. The one
  exception: a `rebalance` switchover binds on the formula's member for the one etcd call
  that moves the key to it (make-before-break; see `EtcdPoolMachine._on_rebalance`).
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
import importlib
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from minisft.config.model import CoordinationConfig, PoolConfig
from minisft.core.actions import Bind, BindDone, Emit, ProbeDone, StartProbe
from minisft.core.events import Notice
from minisft.pools.actions import (
    AddressGone,
    LinkChanged,
    Rebalance,
    RebalanceAnswer,
    Started,
    Tick,
)
from minisft.pools.etcd_definition import (
    decode_definition,
    definition_digest,
    definition_of,
    encode_definition,
)
from minisft.pools.etcd_machine import (
    AddressChecked,
    AddressRemoved,
    AnnounceAddress,
    Announced,
    Change,
    CheckAddress,
    ClaimOwnerKey,
    DefinitionPut,
    DefinitionRead,
    DeleteOwnerKey,
    EtcdAction,
    EtcdInput,
    EtcdPoolMachine,
    FenceReleased,
    FenceTiming,
    ForgetAddress,
    LeaseExpired,
    LeaseGranted,
    LeaseRenewed,
    MemberDeleted,
    MemberPut,
    MemberRecord,
    MemberSeen,
    MoveOwnerKey,
    Owner,
    OwnerDeleted,
    OwnerKeyDeleted,
    OwnerKeyRead,
    OwnerKeyWon,
    OwnerPut,
    OwnerRecord,
    Phase,
    PutMemberKey,
    ReadDone,
    ReadOwnerKey,
    ReleaseEverything,
    RemoveAddress,
    RenewalFailed,
    ReplaceOwnerKey,
    SessionLost,
    SessionOpened,
    Slot,
    StartupWindow,
    StepFailed,
    Watched,
)
from minisft.pools.machine import ANNOUNCE
from minisft.runtime.driver import ActionDriver, cancel_and_wait
from minisft.runtime.ports import Neighbours, Netlink, Pinger

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


class EtcdUnavailable(Exception):
    """No answer from etcd in time, or an error from it: the session is rotated."""




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


async def bounded(work: Awaitable[T], seconds: float) -> T:
    """`work`'s result, or TimeoutError after `seconds`. Unlike asyncio.wait_for, a timeout
    does not wait for the cancelled `work` to end: a gRPC call that swallows its cancel
    would hang the caller for good. Seen: after a partition the keepalive loop hung in
    one renewal, so each new lease expired unrenewed and the member never rejoined."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_consume)  # no "exception was never retrieved" later
        raise TimeoutError(f"no answer within {seconds:g}s")
    if task.cancelled():  # cancelled from inside (the library), not by our caller
        raise ConnectionError("the call was cancelled")
    return task.result()


async def within(work: Awaitable[Any], seconds: float, what: str) -> bool:
    """Run `work` for at most `seconds` (as `bounded`); True if it ended (its errors are
    logged, not raised). A cancel of the caller still propagates: what is left of `work`
    is cancelled and abandoned."""
    try:
        await bounded(work, seconds)
    except TimeoutError as exc:
        log.warning("%s: %s, abandoned", what, exc)
        return False
    except Exception as exc:
        log.warning("%s: %s", what, exc)
    return True


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


# gRPC codes that mean the request never reached etcd (no route, TLS handshake, timeout)
_NOT_REACHED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})


def _rpc_reason(exc: BaseException) -> tuple[str | None, str]:
    """(gRPC status code name or None, one line saying why). str() of a gRPC error is a
    multi-line repr with the detail twice (details and debug_error_string): the status
    line and the log want the detail once."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            name = str(getattr(code(), "name", code()))
            return name, str(details() or name)
        except Exception:  # not a gRPC error after all
            pass
    return None, str(exc) or type(exc).__name__


def _login_failure(url: str, exc: BaseException) -> str:
    """The reason for a failed Authenticate: a refusal by etcd is an authentication
    failure; a request that never reached it (an untrusted CA, no route) is not, and
    saying "authentication failed" would send the admin to the password."""
    code, reason = _rpc_reason(exc)
    if isinstance(exc, TimeoutError) or code in _NOT_REACHED:
        return f"{url}: cannot connect: {reason}"
    return f"{url}: authentication failed: {reason}"


_CLIENT_CLASSES: dict[int, type] = {}


def _client_class(aetcd: Any, rpc: Any) -> Any:
    """aetcd's Client on a channel built here (TLS, and the `hasleader` metadata that makes
    a member cut off from its quorum refuse instead of serving stale data).

    aetcd 1.0 opens only insecure channels and sends no metadata but the token: it has no
    channel, credentials or metadata argument. Every one of its calls goes through
    `connect()` first, so overriding it is the way in that leaves the calls, transactions
    and watches to aetcd. The constructor builds what aetcd's own connect builds, on our
    channel; `_watcher` is the attribute the base class reads in its watch methods. A
    closed client refuses instead of connecting again: aetcd's connect would open a plain
    channel, without TLS or credentials. Built once per aetcd module, which is imported
    only for etcd pools (an optional extra)."""
    cls = _CLIENT_CLASSES.get(id(aetcd))
    if cls is not None:
        return cls

    class ChannelClient(aetcd.Client):  # type: ignore[misc]
        def __init__(self, channel: Any, metadata: tuple[tuple[str, str], ...], *,
                     url: str, host: str, port: int, timeout: float) -> None:
            super().__init__(host=host, port=port, timeout=timeout)
            self.url = url
            self.channel = channel
            self.metadata = metadata
            self.kvstub = rpc.KVStub(channel)
            self.clusterstub = rpc.ClusterStub(channel)
            self.leasestub = rpc.LeaseStub(channel)
            self.maintenancestub = rpc.MaintenanceStub(channel)
            self._watcher = aetcd.Watcher(rpc.WatchStub(channel), timeout=timeout,
                                          metadata=metadata)

        async def connect(self) -> None:
            if self.channel is None:  # aetcd's close() clears it
                raise EtcdUnavailable(f"{self.url}: the client was closed")

    _CLIENT_CLASSES[id(aetcd)] = ChannelClient
    return ChannelClient


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
        metadata: list[tuple[str, str]] = [("hasleader", "true")]
        try:
            if self.coord.username is not None:
                resp = await bounded(rpc.AuthStub(channel).Authenticate(
                    rpc.AuthenticateRequest(name=self.coord.username,
                                            password=self.coord.password or ""),
                    timeout=self.timeout), self.timeout + 0.5)
                metadata.append(("token", resp.token))
        except BaseException as exc:
            await channel.close()
            if isinstance(exc, Exception):
                raise EtcdUnavailable(_login_failure(ep.url, exc)) from exc
            raise
        client = _client_class(aetcd, rpc)(channel, tuple(metadata), url=ep.url,
                                           host=ep.host, port=ep.port, timeout=self.timeout)
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
            return await bounded(fn(client), self.timeout + 0.5)
        except asyncio.CancelledError:
            raise
        except EtcdUnavailable:
            raise
        except Exception as exc:
            detail = _rpc_reason(exc)[1]
            raise EtcdUnavailable(f"{self.endpoint.url}: {what}: {detail}") from exc



# ====================================================================== the runtime


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
    """One pool member coordinated through etcd; the interface of `PoolRuntime`.

    The decisions are the `EtcdPoolMachine`'s: this class talks to etcd (`EtcdSession`),
    feeds what it reads and what its operations answer to the machine as typed inputs,
    and carries out the machine's actions, each step of an operation as a task (netlink,
    probes and announcements through the shared `ActionDriver`)."""

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
        resumed = resume is not None and resume.fits(pool)
        if resume is not None and resumed:
            # a reload restarting this pool: keep the lease (and the boot the owner keys
            # name), so the other members see no member lost and back
            self.boot = resume.boot
        self.machine = EtcdPoolMachine(
            pool, node, now=clock(), resumed_lease=resume.lease_id if resume and resumed
            else None, resumed_ok_at=resume.ok_at if resume and resumed else None)
        self._ops: dict[int, asyncio.Task[None]] = {}  # operation steps, by token
        self._background: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._broken = asyncio.Event()
        self._left = False  # stop(release=True) revoked the lease

    @property
    def pool(self) -> PoolConfig:
        """The definition in use (etcd's once read)."""
        return self.machine.pool

    # ------------------------------------------------------------- lifecycle

    async def start(self, held: Iterable[Any] = ()) -> None:
        """`held`: addresses already on the interface (interfaces, IPs or strings). They
        stay bound until etcd confirms this node as their owner, or are released."""
        ips = {ipaddress.ip_interface(x).ip for x in held}
        self.feed(Started(frozenset(k for k, a in self.machine.by_key.items()
                                    if a.ip in ips)))
        name = self.pool.name
        self._loops = [
            asyncio.create_task(self._session_loop(), name=f"pool-{name}-etcd-session"),
            asyncio.create_task(self._keepalive_loop(), name=f"pool-{name}-etcd-keepalive"),
            asyncio.create_task(self._tick_loop(), name=f"pool-{name}-etcd-tick"),
            asyncio.create_task(self._housekeeping_loop(),
                                name=f"pool-{name}-etcd-housekeeping"),
        ]

    def handover(self) -> LeaseHandover | None:
        """After `stop(release=False)`: what a new runtime for the same pool needs to go on
        with this one's lease (None if there is none, or it may have expired)."""
        m = self.machine
        if self._left or m.lease_id is None or m.lease_ok_at is None:
            return None
        return LeaseHandover(m.lease_id, m.lease_ok_at, self.boot, self.local.coordination)

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
        tasks = {*self._loops, *self._ops.values(), *self._background}
        if not await within(cancel_and_wait(tasks), STOP_GRACE, f"pool {self.pool.name}: "
                            "stopping the etcd loops"):
            log.error("pool %s: still running after %gs: %s", self.pool.name, STOP_GRACE,
                      ", ".join(sorted(t.get_name() for t in tasks if not t.done())))
        self._loops.clear()
        self._ops.clear()
        if release:
            # an operation under way may have bound its address already
            for key in self.machine.keys:
                if self.machine.needs_release_at_stop(key):
                    await within(self.driver.netlink(self._addresses.release, self._iface,
                                                     ipaddress.ip_interface(key)),
                                 STOP_GRACE, f"pool {self.pool.name}: release {key}")
            lease = self.machine.lease_id
            if lease is not None:
                await within(self._farewell(lease), 2 * (self.session.timeout + 0.5),
                             f"pool {self.pool.name}: leaving etcd (the lease expires "
                             f"after {self.timing.ttl}s instead)")
                self._left = True
        await self.session.close()

    async def _farewell(self, lease: int) -> None:
        """Mark this member leaving, then revoke its lease: its keys go at once."""
        with contextlib.suppress(EtcdUnavailable):
            await self.session.call(lambda c: c.put(
                self._members_prefix + self.node.encode(),
                self._member_value("leaving"), lease=lease), "leaving")
            await self.session.call(lambda c: c.revoke_lease(lease), "revoke")

    def rebalance(self, by: str = "cli") -> RebalanceAnswer:
        """Admin: hand addresses to the members the formula gives them (manual fallback);
        the machine's answer (see `EtcdPoolMachine._on_rebalance`)."""
        self.machine.last_rebalance = None
        self.feed(Rebalance(by))
        answer = self.machine.last_rebalance
        assert answer is not None  # every Rebalance input leaves its answer
        return answer

    def snapshot(self) -> dict[str, Any]:
        return self.machine.snapshot(self.clock(), endpoint=self.session.endpoint.url,
                                     endpoints=[e.url for e in self.session.endpoints])

    # ------------------------------------------------------------- the one entry point

    def feed(self, event: EtcdInput) -> list[PutMemberKey]:
        """Hand `event` to the machine and carry out its actions; the registrations it
        asks for are returned, for the session loop to make (in its own session)."""
        registrations = []
        for action in self.machine.handle(event, self.clock()):
            if isinstance(action, PutMemberKey):
                registrations.append(action)
            else:
                self._execute(action)
        return registrations

    def _execute(self, action: EtcdAction) -> None:
        if isinstance(action, Emit):
            self._emit_fn(action.notice)
        elif isinstance(action, ReleaseEverything):
            for task in list(self._ops.values()):
                task.cancel()  # the machine dropped them; a bind under way must not finish
            self._background_task(self._release_everything(action))
        elif isinstance(action, ForgetAddress):
            if action.held:
                log.warning("pool %s: %s left the pool definition: releasing it",
                            self.pool.name, action.address)
            self._background_task(self._forget(action))
        elif isinstance(action, PutMemberKey):
            pass  # returned by feed
        else:
            self._step(action)

    def _step(self, action: ClaimOwnerKey | ReplaceOwnerKey | MoveOwnerKey | ReadOwnerKey
              | DeleteOwnerKey | CheckAddress | StartProbe | Bind | RemoveAddress
              | AnnounceAddress) -> None:
        """One step of an address's operation, as a task that feeds its result back."""
        token, address = action.token, action.address

        async def run() -> None:
            try:
                result = await self._run(action)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("pool %s: %s: %s", self.pool.name, address, exc)
                result = StepFailed(token, str(exc) or type(exc).__name__)
            self.feed(result)

        task = asyncio.ensure_future(run())
        task.set_name(f"pool-{self.pool.name}-{address}")
        self._ops[token] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._ops.get(token) is t:
                del self._ops[token]
            if not t.cancelled() and t.exception() is not None:
                log.error("pool %s: %s: %s", self.pool.name, address, t.exception())

        task.add_done_callback(done)

    async def _run(self, action: ClaimOwnerKey | ReplaceOwnerKey | MoveOwnerKey | ReadOwnerKey
                   | DeleteOwnerKey | CheckAddress | StartProbe | Bind | RemoveAddress
                   | AnnounceAddress) -> EtcdInput:
        address = ipaddress.ip_interface(action.address)
        if isinstance(action, ClaimOwnerKey | ReplaceOwnerKey | MoveOwnerKey):
            return await self._claim(action)
        if isinstance(action, ReadOwnerKey):
            return await self._read_owner(action)
        if isinstance(action, DeleteOwnerKey):
            return await self._delete_owner(action)
        if isinstance(action, CheckAddress):
            bound = await self.driver.netlink(self._addresses.has_address, self._iface,
                                              address.ip)
            return AddressChecked(action.token, bool(bound))
        if isinstance(action, StartProbe):
            answer = await self.driver.probe(action.address, action.count, action.interval,
                                             action.on_prober)
            return ProbeDone(action.token, answer.mac if answer else None,
                             prober=answer.prober if answer else False)
        if isinstance(action, Bind):
            try:
                await self.driver.netlink(self._addresses.bind, self._iface, address)
            except Exception as exc:
                return BindDone(action.token, str(exc) or type(exc).__name__)
            return BindDone(action.token)
        if isinstance(action, RemoveAddress):
            try:
                await self.driver.netlink(self._addresses.release, self._iface, address)
            except Exception as exc:
                log.error("pool %s: could not remove %s: %s", self.pool.name,
                          action.address, exc)
                return AddressRemoved(action.token, str(exc) or type(exc).__name__)
            return AddressRemoved(action.token)
        await self.driver.announce(action.address)
        return Announced(action.token)

    def _background_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------- etcd: the keys

    def _owner_key(self, address: str) -> bytes:
        return self._owners_prefix + str(ipaddress.ip_interface(address).ip).encode()

    def _owner_value(self, taken_from: str | None = None, taken_by: str | None = None
                     ) -> bytes:
        value: dict[str, str] = {"member": self.node, "boot": self.boot}
        if taken_from is not None and taken_by is not None:
            # a switchover's key: the holder releases it as a switchover, not a yield
            value |= {"taken_from": taken_from, "taken_by": taken_by}
        return json.dumps(value).encode()

    def _member_value(self, state: str = "alive") -> bytes:
        return json.dumps({"member": self.node, "boot": self.boot, "state": state,
                           "digest": self.machine.local_digest}).encode()

    def _member_record(self, kv: Any) -> MemberRecord:
        name = bytes(kv.key)[len(self._members_prefix):].decode(errors="replace")
        try:
            value = json.loads(kv.value)
            state, digest = str(value.get("state", "alive")), value.get("digest")
        except (ValueError, AttributeError):
            state, digest = "alive", None
        return MemberRecord(name, int(kv.lease), state,
                            digest if isinstance(digest, str) else None)

    def _owner_record(self, kv: Any) -> OwnerRecord:
        ip = bytes(kv.key)[len(self._owners_prefix):].decode(errors="replace")
        taken_from = taken_by = None
        try:
            value = json.loads(kv.value)
            member = str(value["member"])
            if isinstance(value.get("taken_from"), str):
                taken_from, taken_by = value["taken_from"], str(value.get("taken_by"))
        except (ValueError, KeyError, TypeError, AttributeError):
            member = "?"
        return OwnerRecord(ip, member, int(kv.lease), int(kv.create_revision),
                           taken_from, taken_by)

    # ------------------------------------------------------------- etcd: operations

    async def _claim(self, action: ClaimOwnerKey | ReplaceOwnerKey | MoveOwnerKey
                     ) -> OwnerKeyWon:
        """Create the owner key (claim), or move an existing key to this lease if its
        create_revision is still the one read: a previous boot's (adopt), or the holder's
        in a switchover (marked as taken from it)."""
        okey = self._owner_key(action.address)
        lease = action.lease
        if isinstance(action, MoveOwnerKey):
            expect, what = action.create_revision, "switchover"
            value = self._owner_value(action.taken_from, action.taken_by)
        elif isinstance(action, ReplaceOwnerKey):
            expect, what, value = action.create_revision, "adopt", self._owner_value()
        else:
            expect, what, value = 0, "claim", self._owner_value()

        async def txn(c: Any) -> Any:
            t = c.transactions
            return await c.transaction(compare=[t.create(okey) == expect],
                                       success=[t.put(okey, value, lease=lease)], failure=[])

        try:
            won, responses = await self.session.call(txn, f"{what} {action.address}")
        except EtcdUnavailable as exc:
            return OwnerKeyWon(action.token, error=str(exc))
        revision = None
        if won and lease is not None and isinstance(action, ClaimOwnerKey):
            revision = int(responses[0].response_put.header.revision)
        return OwnerKeyWon(action.token, bool(won), revision)

    async def _read_owner(self, action: ReadOwnerKey) -> OwnerKeyRead:
        """Read the owner key again: bind only what etcd shows as this lease's, now."""
        okey = self._owner_key(action.address)
        try:
            kv = await self.session.call(lambda c: c.get(okey), f"confirm {action.address}")
        except EtcdUnavailable as exc:
            return OwnerKeyRead(action.token, error=str(exc))
        return OwnerKeyRead(action.token, None if kv is None else self._owner_record(kv))

    async def _delete_owner(self, action: DeleteOwnerKey) -> OwnerKeyDeleted:
        okey = self._owner_key(action.address)

        async def txn(c: Any) -> Any:
            t = c.transactions
            return await c.transaction(compare=[t.create(okey) == action.create_revision],
                                       success=[t.delete(okey)], failure=[])

        try:
            await self.session.call(txn, f"give up {action.address}")
        except EtcdUnavailable as exc:
            return OwnerKeyDeleted(action.token, str(exc))
        return OwnerKeyDeleted(action.token)

    async def _forget(self, action: ForgetAddress) -> None:
        """An address that left the pool: off the interface, and its key out of etcd."""
        address = ipaddress.ip_interface(action.address)
        if action.held:
            await self.driver.netlink(self._addresses.release, self._iface, address)
        revision = action.create_revision
        if revision is not None:
            okey = self._owner_key(action.address)

            async def txn(c: Any) -> Any:
                t = c.transactions
                return await c.transaction(compare=[t.create(okey) == revision],
                                           success=[t.delete(okey)], failure=[])

            with contextlib.suppress(EtcdUnavailable):
                await self.session.call(txn, f"forget {address}")

    async def _release_everything(self, action: ReleaseEverything) -> None:
        """The fence: every pool address off the interface, one after the other."""
        for key in action.addresses:
            try:
                await self.driver.netlink(self._addresses.release, self._iface,
                                          ipaddress.ip_interface(key))
            except Exception as exc:
                log.error("pool %s: could not remove %s: %s", self.pool.name, key, exc)
        self.feed(FenceReleased(action.token))

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
                error = str(exc)
                level = logging.DEBUG if error == self.machine.last_error else logging.WARNING
                log.log(level, "pool %s: etcd: %s", self.pool.name, exc)
            except Exception as exc:  # a bug here must not end coordination for good
                error = f"{type(exc).__name__}: {exc}"
                log.exception("pool %s: etcd session failed", self.pool.name)
            self.feed(SessionLost(error))
            failures += 1
            await self.session.rotate()
            self._broken.clear()
            # a refused connection fails at once: do not spin, but retry well within the
            # fence deadline so that a member recovers quickly
            await asyncio.sleep(min(0.1 * failures, self.timing.keepalive_interval, 1.0))

    async def _open_session(self) -> None:
        s = self.session
        self.feed(SessionOpened())
        await s.connect()
        if self.machine.lease_id is not None:
            await self._renew(remember=False)  # also tells whether it outlived the outage
        if self.machine.lease_id is None:
            sent = self.clock()
            lease = await s.call(lambda c: c.lease(self.timing.ttl), "lease grant")
            log.info("pool %s: etcd lease %x (ttl %ss) via %s", self.pool.name, lease.id,
                     self.timing.ttl, s.endpoint.url)
            self.feed(LeaseGranted(int(lease.id), sent, s.endpoint.url))
        await self._register()
        await self._sync_definition()
        self._broken.clear()

    async def _register(self) -> None:
        lease_id = self.machine.lease_id
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
            self.feed(DefinitionRead(encode_definition(self.local)))
        elif responses and responses[0]:
            self.feed(DefinitionRead(responses[0][0][0]))

    async def _read_all(self) -> None:
        resp = await self.session.call(lambda c: c.get_prefix(self._base), "read")
        members: list[MemberRecord] = []
        owners: list[OwnerRecord] = []
        config: bytes | None = None
        for kv in resp:
            key = bytes(kv.key)
            if key == self._config_key:
                config = bytes(kv.value)
            elif key.startswith(self._members_prefix):
                members.append(self._member_record(kv))
            elif key.startswith(self._owners_prefix):
                owners.append(self._owner_record(kv))
        first = self.machine.first_read
        registrations = self.feed(ReadDone(int(resp.header.revision), tuple(members),
                                           tuple(owners), config))
        if registrations:
            await self._register()  # deleted by hand, or written by a previous boot
        if first and self.machine.startup.is_open(self.clock()):
            log.info("pool %s: cold start (no other member owns an address): taking "
                     "nothing for %gs, the members that register meanwhile count from "
                     "the start", self.pool.name, self.timing.startup_window)

    def _watched(self, event: Any) -> Watched:
        """A watch event, as the machine's input."""
        kv = event.kv
        key = bytes(kv.key)
        put = event.kind == "PUT"
        change: Change | None = None
        if key == self._config_key:
            change = DefinitionPut(bytes(kv.value)) if put else None
        elif key.startswith(self._members_prefix):
            change = (MemberPut(self._member_record(kv)) if put else MemberDeleted(
                key[len(self._members_prefix):].decode(errors="replace")))
        elif key.startswith(self._owners_prefix):
            change = (OwnerPut(self._owner_record(kv)) if put else OwnerDeleted(
                key[len(self._owners_prefix):].decode(errors="replace")))
        return Watched(int(kv.mod_revision), change)

    async def _watch(self, duration: float) -> None:
        """Apply the watch's events for `duration` s; raise when the session breaks."""
        start = self.machine.revision + 1
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
                    raise EtcdUnavailable(self.machine.last_error or "keepalive failed")
                if getter in done:
                    item = getter.result()
                    if isinstance(item, Exception):
                        raise item
                    self.feed(self._watched(item))
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

    # ------------------------------------------------------------- lease: keepalive, fence

    async def _renew(self, *, remember: bool) -> None:
        """One keepalive; `remember`: a failure is the session's last error (the keepalive
        loop's; the session loop records its own)."""
        lease = self.machine.lease_id
        if lease is None:
            return
        sent = self.clock()
        try:
            reply = await self.session.call(lambda c: c.refresh_lease(lease), "keepalive")
        except EtcdUnavailable as exc:
            self.feed(RenewalFailed(str(exc) if remember else None))
            raise
        if reply is None or int(reply.TTL) <= 0:
            self.feed(LeaseExpired(lease))
        else:
            self.feed(LeaseRenewed(lease, sent, self.session.endpoint.url))

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.keepalive_interval)
            if self.machine.lease_id is None or self.session.client is None or \
                    not self.machine.synced:
                continue  # the session loop is (re)connecting; it renews when it is back
            generation = self.session.generation
            try:
                await self._renew(remember=True)
            except EtcdUnavailable:
                if generation == self.session.generation:
                    self._broken.set()  # rotate to the next endpoint now
            except Exception:  # a bug here must not end the renewals for good
                log.exception("pool %s: keepalive failed", self.pool.name)
            if self.machine.lease_id is None:
                self._broken.set()  # expired: the session loop grants a new one

    async def _tick_loop(self) -> None:
        """The fence check and the machine's timers (hold-down, retries, announcements)."""
        while True:
            await asyncio.sleep(TICK)
            try:
                self.feed(Tick())
            except Exception:  # a bug here must not end the fence checks for good
                log.exception("pool %s: tick failed", self.pool.name)

    # ------------------------------------------------------------- housekeeping

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            try:
                up = await self.driver.link_up()
                if up != self.machine.link_up:
                    self.feed(LinkChanged(up))
                for key in list(self.machine.keys):
                    if self.machine.slots.get(key) is not Slot.HELD or self.machine.busy(key):
                        continue
                    if not await self.driver.has_address(key):
                        self.feed(AddressGone(key))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pool %s: housekeeping: %s", self.pool.name, exc)


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
    "MemberSeen", "Owner", "Phase", "Slot", "StartupWindow", "decode_definition",
    "definition_digest", "definition_of", "encode_definition", "push_definition",
]
