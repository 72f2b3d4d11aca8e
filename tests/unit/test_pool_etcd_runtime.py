"""The etcd runtime carrying out its machine's fence: the daemon's own `EtcdPoolRuntime` on
a `FakeEtcd` in virtual time, on a `FakeHost` (the rules themselves are tested on the pure
machine in test_etcd_machine.py; this is the wiring: a keepalive that gets no answer
reaches the machine, and its ReleaseEverything reaches the interface)."""

from __future__ import annotations

import asyncio

from minisft.core.events import EventKind, Notice
from minisft.testing.fake_etcd import FakeEtcd
from minisft.testing.fakes import FakeHost, run_virtual
from tests.unit.test_pool_etcd_stop import (
    ADDRESSES,
    TTL,
    one_member_pool,
    runtime_on_fakes,
    until,
)


def test_etcd_not_answering_releases_everything_before_the_lease_can_expire() -> None:
    pool = one_member_pool()
    host = FakeHost()
    events: list[Notice] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        etcd = FakeEtcd()
        rt = runtime_on_fakes(pool, etcd, host, events)
        await rt.start()
        try:
            await until("both addresses held", lambda: all(host.holds(a) for a in ADDRESSES),
                        TTL + 5.0)
            cut = loop.time()
            etcd.stop_answering()
            await until("the fence", lambda: not host.bound, TTL)
            assert loop.time() - cut < TTL, "released after the lease could have expired"
            [lost] = [e for e in events if e.kind is EventKind.LEASE_LOST]
            assert lost.details["released"] == len(ADDRESSES)
            assert rt.snapshot()["phase"] == "fenced"
            etcd.answer_again()  # the lease was kept alive nowhere else: still ours
            await until("both addresses back", lambda: all(host.holds(a) for a in ADDRESSES),
                        TTL + 5.0)
            assert [e for e in events if e.kind is EventKind.REJOINED]
        finally:
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

    run_virtual(main())
