"""Stopping an etcd pool member (SIGTERM) while etcd does not answer: the daemon's own
`EtcdPoolRuntime` on a `FakeEtcd` in virtual time, on a `FakeHost`."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from minisft.config.model import (
    CoordinationBackend,
    CoordinationConfig,
    PoolConfig,
    PoolMemberConfig,
)
from minisft.core.events import Notice
from minisft.pools.etcd_backend import (
    EtcdPoolRuntime,
    EtcdSession,
    EtcdUnavailable,
    _login_failure,
)
from minisft.testing.fake_etcd import FakeEtcd, FakeEtcdSession
from minisft.testing.fakes import FakeHost, InlineExecutor, run_virtual

ADDRESSES = ("192.0.2.101/24", "192.0.2.102/24")
TTL = 3


def one_member_pool() -> PoolConfig:
    return PoolConfig(
        name="front",
        members=(PoolMemberConfig("a", ipaddress.ip_address("192.0.2.1")),),
        addresses=tuple(ipaddress.ip_interface(a) for a in ADDRESSES),
        coordination=CoordinationConfig(backend=CoordinationBackend.ETCD,
                                        endpoints=("http://192.0.2.250:2379",), ttl=TTL),
    )


def runtime_on_fakes(pool: PoolConfig, etcd: FakeEtcd, host: FakeHost,
                     events: list[Notice]) -> EtcdPoolRuntime:
    """The daemon's own etcd runtime, member "a", on a fake etcd and a fake host, in the
    running loop's (virtual) time."""
    rt = EtcdPoolRuntime(pool, node="a", clock=asyncio.get_running_loop().time,
                         neighbours=host, addresses=host, iface=host.iface,
                         netlink_executor=InlineExecutor(), emit=events.append)
    rt.session = FakeEtcdSession(pool, rt.timing.rpc_timeout, etcd)
    return rt


async def until(what: str, ok: object, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not ok():  # type: ignore[operator]
        assert loop.time() < end, f"not {what} within {seconds}s"
        await asyncio.sleep(0.05)


def test_sigterm_while_etcd_stops_answering_ends_promptly_and_releases() -> None:
    """The member holds both addresses; etcd stops answering, which ends the watch, and
    the stop (SIGTERM) lands while the runtime is cancelling that watch -- a request that
    never comes back. The cancel was swallowed there: the session loop went on
    reconnecting for good and stop() waited for it, so the daemon never exited and kept
    the addresses bound. Now the stop ends within seconds and the addresses are gone."""
    pool = one_member_pool()
    host = FakeHost()
    events: list[Notice] = []

    async def main() -> None:
        etcd = FakeEtcd()
        rt = runtime_on_fakes(pool, etcd, host, events)
        await rt.start()
        try:
            await until("both addresses held", lambda: all(host.holds(a) for a in ADDRESSES),
                        TTL + 5.0)
            etcd.stop_answering()
            # the watch ends at once; the runtime then cancels it and waits for etcd
            await until("the runtime cancelling its watch",
                        lambda: "watch cancel" in etcd.waiting, 1.0)
            stopping = asyncio.ensure_future(rt.stop(release=True))
            done, _ = await asyncio.wait({stopping}, timeout=10.0)
            assert stopping in done, "stop() still running 10s after SIGTERM"
            assert not host.bound, f"still bound after the stop: {sorted(map(str, host.bound))}"
        finally:
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

    run_virtual(main())


def test_an_etcd_call_that_swallows_its_cancel_still_ends_at_its_deadline() -> None:
    """aetcd/gRPC calls can swallow a cancel. With asyncio.wait_for, the first such call
    after a partition hung the keepalive loop for good: every new lease then expired
    unrenewed and the member never rejoined (test_pools_etcd's quorum-loss test, 1 run in
    2 under load). The session's deadline must hold whatever the call does with it."""
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.append(True)  # as aetcd's watcher does; then it goes on a while
            await asyncio.sleep(30)

    async def main() -> tuple[str, float]:
        session = EtcdSession(one_member_pool(), timeout=0.05)
        session.client = object()  # connected: call() goes straight to the request
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await session.call(lambda client: stubborn(), "keepalive")
        except EtcdUnavailable as exc:
            return str(exc), loop.time() - started
        raise AssertionError("the call returned")

    error, took = run_virtual(main())
    assert "keepalive: no answer within 0.55s" in error
    assert took < 1.0
    assert swallowed == [True]


def test_the_session_client_runs_aetcd_on_its_own_channel_and_never_reconnects_plain() -> None:
    """aetcd's calls go through its connect(): the session's client keeps the channel the
    session built (TLS, the hasleader metadata), and once closed it refuses instead of
    letting aetcd open a plain channel without TLS or credentials."""
    pytest.importorskip("aetcd")

    async def main() -> tuple[bool, bool, str]:
        session = EtcdSession(one_member_pool(), timeout=0.05)
        client = await session.connect()  # builds the channel; nothing is sent yet
        ours = client.channel
        await client.connect()  # what every aetcd call does first
        kept = client.channel is ours and client.kvstub is not None
        hasleader = ("hasleader", "true") in client.metadata
        await session.close()
        try:
            await client.get(b"/minisft/front/members/alpha")
        except EtcdUnavailable as exc:
            return kept, hasleader, str(exc)
        raise AssertionError("a closed client answered")

    kept, hasleader, refused = asyncio.run(main())
    assert kept and hasleader
    assert "the client was closed" in refused


class RpcError(Exception):
    """What grpc.aio raises: code() and details(), and a multi-line str()."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"<AioRpcError\n\tstatus = {code}\n\tdetails = {details!r}\n"
                         f"\tdebug_error_string = {details!r}\n>")
        self._code, self._details = code, details

    def code(self) -> object:
        return type("StatusCode", (), {"name": self._code})()

    def details(self) -> str:
        return self._details


def test_a_failed_login_says_whether_etcd_refused_it_or_was_never_reached() -> None:
    """Seen against a real etcd with an untrusted CA: "authentication failed:" and the
    gRPC error's repr over five lines, which sends the admin to the password."""
    url = "https://192.0.2.250:2379"
    refused = _login_failure(url, RpcError(
        "INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password"))
    assert refused == (f"{url}: authentication failed: etcdserver: authentication failed, "
                       "invalid user ID or password")
    handshake = _login_failure(url, RpcError(
        "UNAVAILABLE", "failed to connect to all addresses; last error: Tls handshake "
        "failed: CERTIFICATE_VERIFY_FAILED"))
    assert handshake.startswith(f"{url}: cannot connect: failed to connect")
    assert "\n" not in handshake and "authentication" not in handshake
    assert _login_failure(url, TimeoutError("no answer within 1.5s")) == \
        f"{url}: cannot connect: no answer within 1.5s"


def test_a_failed_call_reports_the_grpc_detail_on_one_line() -> None:
    async def main() -> str:
        session = EtcdSession(one_member_pool(), timeout=0.05)
        session.client = object()

        async def fail(client: object) -> None:
            raise RpcError("PERMISSION_DENIED", "etcdserver: permission denied")
        try:
            await session.call(fail, "lease grant")
        except EtcdUnavailable as exc:
            return str(exc)
        raise AssertionError("the call returned")

    assert asyncio.run(main()) == \
        "http://192.0.2.250:2379: lease grant: etcdserver: permission denied"
