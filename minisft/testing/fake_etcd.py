"""An in-memory etcd behind the calls `minisft.pools.etcd_backend` makes of aetcd.

`FakeEtcd` keeps keys, revisions and leases the way etcd does for the calls the pool
runtime makes (lease grant/refresh/revoke, put, get, get_prefix, the create-revision
transactions, a prefix watch). `FakeEtcdSession` is the runtime's real `EtcdSession`
(deadlines, error mapping, rotation) with the gRPC connection replaced by the fake, so
the code under test is the daemon's own.

Faults: `answering = False` makes every request wait forever, like an etcd cut off by
a partition (the session's deadlines are what ends them), and breaks the open watches.
Requests on a watch (its cancel) then never come back either: aetcd's watcher cancels
under a lock that a blocked stream holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from minisft.config.model import PoolConfig
from minisft.pools.etcd_backend import EtcdSession


@dataclass
class KeyValue:
    key: bytes
    value: bytes
    lease: int
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class Header:
    revision: int


class Range(list[KeyValue]):
    """What get_prefix answers: the keys, and the header with the store's revision."""

    def __init__(self, kvs: list[KeyValue], revision: int) -> None:
        super().__init__(kvs)
        self.header = Header(revision)


@dataclass(frozen=True)
class Event:
    kind: str  # "PUT" or "DELETE"
    kv: KeyValue


@dataclass(frozen=True)
class _Compare:
    key: bytes
    create_revision: int


@dataclass(frozen=True)
class _Op:
    kind: str  # "put", "delete" or "get"
    key: bytes
    value: bytes = b""
    lease: int = 0


class _CreateRevision:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def __eq__(self, other: object) -> _Compare:  # type: ignore[override]
        assert isinstance(other, int)
        return _Compare(self.key, other)

    __hash__ = None  # type: ignore[assignment]


class _Transactions:
    """aetcd's `client.transactions`: the builders of compares and operations."""

    def create(self, key: bytes) -> _CreateRevision:
        return _CreateRevision(key)

    def put(self, key: bytes, value: bytes, lease: int | None = None) -> _Op:
        return _Op("put", key, value, lease or 0)

    def delete(self, key: bytes) -> _Op:
        return _Op("delete", key)

    def get(self, key: bytes) -> _Op:
        return _Op("get", key)


@dataclass(frozen=True)
class _Lease:
    id: int


@dataclass(frozen=True)
class _LeaseTTL:
    TTL: int


@dataclass(frozen=True)
class _PutResponse:
    header: Header


@dataclass(frozen=True)
class _TxnPut:
    response_put: _PutResponse


@dataclass
class _Watch:
    etcd: FakeEtcd
    prefix: bytes
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> Event:
        event = await self.queue.get()
        if event is None:
            raise StopAsyncIteration  # the stream ended
        return event

    async def cancel(self) -> None:
        await self.etcd.answer("watch cancel")
        if self in self.etcd.watches:
            self.etcd.watches.remove(self)


class FakeEtcd:
    """One etcd cluster, as the pool runtime sees it through aetcd."""

    def __init__(self) -> None:
        self.revision = 1
        self.kvs: dict[bytes, KeyValue] = {}
        self.leases: dict[int, int] = {}  # id -> ttl
        self.watches: list[_Watch] = []
        self.answering = True
        self.transactions = _Transactions()
        self.requests: list[str] = []  # what reached etcd, in order ("revoke", "put ...")
        self.waiting: list[str] = []  # requests not answered yet ("watch cancel", "put")
        self._next_lease = 0x1000
        self._back = asyncio.Event()

    # ------------------------------------------------------------- faults

    def stop_answering(self) -> None:
        """Requests wait forever from now on; open watches end, as with a partition."""
        self.answering = False
        self._back.clear()
        for watch in self.watches:
            watch.queue.put_nowait(None)
        self.watches.clear()

    def answer_again(self) -> None:
        self.answering = True
        self._back.set()

    async def answer(self, what: str) -> None:
        """Every request goes through here: it waits while etcd does not answer (`waiting`
        names the requests doing so)."""
        if self.answering:
            return
        self.waiting.append(what)
        try:
            while not self.answering:
                await self._back.wait()
        finally:
            self.waiting.remove(what)

    # ------------------------------------------------------------- the store

    def _put(self, key: bytes, value: bytes, lease: int) -> None:
        self.revision += 1
        old = self.kvs.get(key)
        kv = KeyValue(key, value, lease, old.create_revision if old else self.revision,
                      self.revision)
        self.kvs[key] = kv
        self._notify(Event("PUT", kv))

    def _delete(self, key: bytes) -> None:
        kv = self.kvs.pop(key, None)
        if kv is not None:
            self.revision += 1
            self._notify(Event("DELETE", KeyValue(key, b"", 0, 0, self.revision)))

    def _notify(self, event: Event) -> None:
        for watch in self.watches:
            if event.kv.key.startswith(watch.prefix):
                watch.queue.put_nowait(event)

    def owned_by(self, lease: int) -> list[bytes]:
        return sorted(k for k, kv in self.kvs.items() if kv.lease == lease)

    # ------------------------------------------------------------- aetcd's client calls

    async def lease(self, ttl: int) -> _Lease:
        await self.answer("lease grant")
        self._next_lease += 1
        self.leases[self._next_lease] = ttl
        return _Lease(self._next_lease)

    async def refresh_lease(self, lease: int) -> _LeaseTTL:
        await self.answer("refresh lease")
        return _LeaseTTL(self.leases.get(lease, 0))

    async def revoke_lease(self, lease: int) -> None:
        await self.answer("revoke lease")
        self.requests.append("revoke")
        self.leases.pop(lease, None)
        for key in self.owned_by(lease):
            self._delete(key)

    async def put(self, key: bytes, value: bytes, lease: int | None = None) -> None:
        await self.answer("put")
        self.requests.append(f"put {key.decode()}")
        self._put(key, value, lease or 0)

    async def get(self, key: bytes) -> KeyValue | None:
        await self.answer("get")
        return self.kvs.get(key)

    async def get_prefix(self, prefix: bytes) -> Range:
        await self.answer("get prefix")
        return Range([kv for k, kv in sorted(self.kvs.items()) if k.startswith(prefix)],
                     self.revision)

    async def transaction(self, compare: list[_Compare], success: list[_Op],
                          failure: list[_Op]) -> tuple[bool, list[Any]]:
        await self.answer("transaction")
        won = all((self.kvs[c.key].create_revision if c.key in self.kvs else 0)
                  == c.create_revision for c in compare)
        responses: list[Any] = []
        for op in success if won else failure:
            if op.kind == "put":
                self._put(op.key, op.value, op.lease)
                responses.append(_TxnPut(_PutResponse(Header(self.revision))))
            elif op.kind == "delete":
                self._delete(op.key)
                responses.append(None)
            else:
                kv = self.kvs.get(op.key)
                responses.append([(kv.value, kv)] if kv else [])
        return won, responses

    async def watch_prefix(self, prefix: bytes, start_revision: int = 0) -> _Watch:
        await self.answer("watch prefix")
        watch = _Watch(self, prefix)
        self.watches.append(watch)
        return watch

    async def close(self) -> None:
        pass


class FakeEtcdSession(EtcdSession):
    """`EtcdSession` connected to a `FakeEtcd` instead of a gRPC channel."""

    def __init__(self, pool: PoolConfig, timeout: float, etcd: FakeEtcd) -> None:
        super().__init__(pool, timeout)
        self.etcd = etcd

    async def connect(self) -> Any:
        self.client = self.etcd
        return self.client
