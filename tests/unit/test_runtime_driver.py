"""The runtime layer on fake ports in virtual time: the daemon's own ActionDriver and
MonitorRuntime, with an in-memory host (minisft.testing.fakes) instead of netlink,
ARP/NDP and ICMP. A minute of failover runs in milliseconds, in the same order each run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from minisft.config.model import AddressHooksConfig, AnnounceConfig, Role
from minisft.core.actions import (
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    OnProber,
    ProbeDone,
    Release,
    StartProbe,
)
from minisft.core.events import EventKind, Notice
from minisft.core.io import Command, Tick, Verb
from minisft.core.monitor import State
from minisft.runtime.driver import PROBE_FAILED, ActionDriver
from minisft.runtime.monitor_runtime import MonitorRuntime
from minisft.testing.fakes import (
    FakeHost,
    InlineExecutor,
    TimeStandsStill,
    VirtualClock,
    run_virtual,
)
from tests.unit.core_driver import HOLDER_MAC, make_config

ADDRESS = "192.0.2.10/24"
IP = "192.0.2.10"


@dataclass
class Reports:
    results: list[ProbeDone | BindDone] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


def driver(host: FakeHost, reports: Reports, *, replace_probes: bool = True) -> ActionDriver:
    import logging

    return ActionDriver(
        owner="web", task_prefix="web", report=reports.results.append,
        emit=reports.notices.append, neighbours=host, netlink=host, iface=host.iface,
        netlink_executor=InlineExecutor(), hooks=AddressHooksConfig(),
        announce=AnnounceConfig(count=3, interval=0.5), log=logging.getLogger("test"),
        replace_probes=replace_probes)


async def until(what: str, predicate: Callable[[], bool], within: float) -> None:
    """Wait in virtual time for `predicate`; fail after `within` virtual seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"not within {within:g}s: {what}"
        await asyncio.sleep(0.01)


# ====================================================================== virtual time


def test_virtual_time_jumps_when_every_task_sleeps() -> None:
    clock = VirtualClock(start=100.0)

    async def main() -> float:
        await asyncio.sleep(3600)
        return asyncio.get_running_loop().time()

    assert run_virtual(main(), clock) == pytest.approx(3700.0)
    assert clock.now() == pytest.approx(3700.0)


def test_without_autojump_a_sleep_nobody_advances_fails_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.sleep(1)

    with pytest.raises(TimeStandsStill):
        run_virtual(main(), VirtualClock(autojump=False))


# ====================================================================== the driver


def test_bind_adds_the_address_announces_and_reports_its_token() -> None:
    host, reports = FakeHost(), Reports()

    async def main() -> None:
        d = driver(host, reports)
        d.execute(Bind(7, ADDRESS))
        await until("bind reported", lambda: bool(reports.results), 1)
        await d.stop()

    run_virtual(main())
    assert reports.results == [BindDone(7, None)]
    assert host.holds(ADDRESS)
    assert host.log == ["bind 192.0.2.10/24", "announce 192.0.2.10"]


def test_a_failed_bind_reports_the_error_and_announces_nothing() -> None:
    host, reports = FakeHost(), Reports()
    host.fail_bind = "Operation not permitted"

    async def main() -> None:
        d = driver(host, reports)
        d.execute(Bind(3, ADDRESS))
        await until("bind reported", lambda: bool(reports.results), 1)

    run_virtual(main())
    assert reports.results == [BindDone(3, "Operation not permitted")]
    assert host.log == [] and not host.holds(ADDRESS)


def test_a_probe_that_cannot_be_sent_does_not_look_like_a_free_address() -> None:
    host, reports = FakeHost(), Reports()
    host.probe_error = "Network is down"

    async def main() -> None:
        driver(host, reports).execute(StartProbe(1, ADDRESS, 3, 0.2, OnProber.YIELD))
        await until("probe reported", lambda: bool(reports.results), 1)

    run_virtual(main())
    assert reports.results == [ProbeDone(1, PROBE_FAILED)]


def test_a_probe_reports_the_holder_at_its_first_answer() -> None:
    host, reports = FakeHost(), Reports()
    host.add_neighbour(HOLDER_MAC, IP)

    async def main() -> float:
        started = asyncio.get_running_loop().time()
        driver(host, reports).execute(StartProbe(1, ADDRESS, 3, 0.2, OnProber.YIELD))
        await until("probe reported", lambda: bool(reports.results), 5)
        return asyncio.get_running_loop().time() - started

    took = run_virtual(main())
    assert reports.results == [ProbeDone(1, HOLDER_MAC)]
    assert took < 0.2  # did not wait out its rounds


def test_a_cancelled_probe_never_reports_and_a_new_one_replaces_the_old() -> None:
    host, reports = FakeHost(), Reports()

    async def main() -> None:
        d = driver(host, reports)
        d.execute(StartProbe(1, ADDRESS, 3, 0.2, OnProber.YIELD))
        d.execute(StartProbe(2, ADDRESS, 3, 0.2, OnProber.YIELD))  # replaces 1
        d.execute(StartProbe(3, "192.0.2.11/24", 3, 0.2, OnProber.YIELD))
        d.execute(CancelProbe(3, "192.0.2.11/24"))
        await asyncio.sleep(5)

    run_virtual(main())
    assert reports.results == [ProbeDone(2, None)]


def test_an_announcement_asked_just_before_a_release_is_not_sent() -> None:
    host, reports = FakeHost(), Reports()

    async def main() -> None:
        d = driver(host, reports)
        d.execute(Bind(1, ADDRESS))
        await until("bound", lambda: host.holds(ADDRESS), 1)
        d.execute(Announce(ADDRESS))
        d.execute(Release(ADDRESS))
        await until("released", lambda: not host.holds(ADDRESS), 1)
        await d.stop()

    run_virtual(main())
    # the release came after: the address is leaving, a frame for it would mislead
    assert host.log == ["bind 192.0.2.10/24", "announce 192.0.2.10", "release 192.0.2.10/24"]


def test_a_release_stops_the_announcements_under_way() -> None:
    """A frame sent after the address left would point the neighbours back at this node
    after the new holder's announcement had moved them (a switchover's gap)."""
    host, reports = FakeHost(), Reports()

    async def main() -> None:
        d = driver(host, reports)  # 3 frames 0.5 s apart
        d.execute(Bind(1, ADDRESS))
        await until("bound", lambda: host.holds(ADDRESS), 1)
        await asyncio.sleep(0.6)  # the bind's burst has sent 2 of its 3 frames
        d.execute(Announce(ADDRESS))  # a refresh starts another burst: 1 frame so far
        await asyncio.sleep(0.1)
        d.execute(Release(ADDRESS))
        await until("released", lambda: not host.holds(ADDRESS), 1)
        await asyncio.sleep(3.0)
        await d.stop()

    run_virtual(main())
    assert host.log == ["bind 192.0.2.10/24"] + ["announce 192.0.2.10"] * 3 + [
        "release 192.0.2.10/24"]
    assert not [r for r in reports.results if not isinstance(r, BindDone)]


def test_a_bind_released_before_its_announcements_end_runs_no_up_hook() -> None:
    host, reports = FakeHost(), Reports()

    hooks_run: list[str] = []

    async def main() -> None:
        d = driver(host, reports)

        async def run_hook(hook: str, address: object) -> None:
            hooks_run.append(f"{hook} {address}")

        d.run_hook = run_hook  # type: ignore[method-assign,assignment]
        d.execute(Bind(1, ADDRESS))
        await until("bound", lambda: host.holds(ADDRESS), 1)
        d.execute(Release(ADDRESS))
        await until("released", lambda: not host.holds(ADDRESS), 1)
        await asyncio.sleep(2.0)
        d.execute(Bind(2, ADDRESS))  # held to the end of its burst: up, as before
        await asyncio.sleep(2.0)
        await d.stop()

    run_virtual(main())
    assert host.log == ["bind 192.0.2.10/24", "announce 192.0.2.10", "release 192.0.2.10/24",
                        "bind 192.0.2.10/24"] + ["announce 192.0.2.10"] * 3
    # the up hook would have said the address is here when it no longer was
    assert hooks_run == ["down 192.0.2.10/24", "up 192.0.2.10/24"]


def test_stop_lets_a_bind_under_way_finish_and_report() -> None:
    host, reports = FakeHost(), Reports()

    async def main() -> None:
        d = driver(host, reports)
        d.execute(Bind(4, ADDRESS))
        d.execute(StartProbe(5, "192.0.2.11/24", 3, 0.2, OnProber.YIELD))
        await d.stop()

    run_virtual(main())
    assert reports.results == [BindDone(4, None)]  # the probe was cancelled, the bind not
    assert host.holds(ADDRESS)


# ====================================================================== MonitorRuntime


@dataclass
class Monitor:
    rt: MonitorRuntime
    host: FakeHost
    notices: list[Notice]

    def kinds(self) -> list[EventKind]:
        return [n.kind for n in self.notices]


def monitor(host: FakeHost, role: Role = Role.BACKUP, **config: object) -> Monitor:
    notices: list[Notice] = []
    settings: dict[str, object] = {"interval": 1.0, "retry": 3, "timeout": 0.5,
                                   "probe_interval": 0.2, **config}
    cfg = make_config(role, address=ADDRESS, **settings)  # type: ignore[arg-type]
    rt = MonitorRuntime(
        cfg, clock=asyncio.get_running_loop().time, pinger=host, neighbours=host,
        addresses=host, iface=host.iface, netlink_executor=InlineExecutor(),
        emit=notices.append, check=None)
    return Monitor(rt, host, notices)


async def ticking(rt: MonitorRuntime) -> None:
    """The daemon's tick loop (timers: grace, refresh, hold-down)."""
    while True:
        await asyncio.sleep(0.25)
        rt.feed(Tick())


def test_backup_takes_the_address_over_when_its_holder_dies() -> None:
    host = FakeHost()
    holder = host.add_neighbour(HOLDER_MAC, IP)

    async def main() -> float:
        m = monitor(host, startup_grace=5.0)
        m.rt.start(address_bound=False)
        ticks = asyncio.create_task(ticking(m.rt))
        await asyncio.sleep(30)
        assert m.rt.machine.state is State.WATCHING and not host.bound
        died = asyncio.get_running_loop().time()
        holder.holds.clear()
        await until("holding", lambda: m.rt.machine.state is State.HOLDING, 30)
        took = asyncio.get_running_loop().time() - died
        assert EventKind.TAKEOVER in m.kinds()
        ticks.cancel()
        await m.rt.stop()
        return took

    took = run_virtual(main())
    assert host.holds(ADDRESS)
    assert host.log[-2:] == ["bind 192.0.2.10/24", "announce 192.0.2.10"]
    # the misses come at the RTO (fast on a quiet LAN), then one clear probe round
    # (3 x 0.2 s); never later than the configured detection time (3 x 1 s + 0.5 s)
    assert 0.6 < took < 3.5


def test_one_lost_reply_does_not_take_over() -> None:
    host = FakeHost()
    # worst case: its ARP answers are lost too, so only the ping retries protect it
    host.add_neighbour(HOLDER_MAC, IP).answers_arp = False

    async def main() -> Monitor:
        m = monitor(host, startup_grace=5.0)
        m.rt.start(address_bound=False)
        ticks = asyncio.create_task(ticking(m.rt))
        await asyncio.sleep(20)
        host.lose_replies = 1
        await asyncio.sleep(20)
        ticks.cancel()
        await m.rt.stop()
        return m

    m = run_virtual(main())
    assert m.rt.machine.state is State.WATCHING
    assert m.rt.machine.looks.lost == 1  # the loss was seen ...
    # ... and the retries covered it: the early probe found nobody, but one miss is no
    # outage: never declared down, never bound
    assert host.log == ["probe 192.0.2.10"] and not host.bound
    assert EventKind.LOOKSALIVE_DOWN not in m.kinds()


def test_a_probe_result_that_outlives_its_cancel_is_caught_by_its_token() -> None:
    """A pause cancels the takeover probe; a probe that reports all the same (the 3.11
    wait_for race) carries a stale token, and the machine binds nothing on it."""
    host = FakeHost()
    holder = host.add_neighbour(HOLDER_MAC, IP)
    host.probe_ignores_cancel = True

    async def main() -> Monitor:
        m = monitor(host, startup_grace=5.0, probe_count=10)
        machine_feed = m.rt.driver.report

        def report(result: ProbeDone | BindDone) -> None:
            machine_feed(result)  # raises if the machine cannot take it
            handled.append(result)

        m.rt.driver.report = report
        m.rt.start(address_bound=False)
        ticks = asyncio.create_task(ticking(m.rt))
        await asyncio.sleep(10)
        holder.holds.clear()
        await until("probing", lambda: m.rt.machine.state is State.PROBING, 10)
        probes = host.log.count("probe 192.0.2.10")
        stale = m.rt.machine._probe_token
        m.rt.feed(Command(Verb.PAUSE, by="test"))
        await asyncio.sleep(10)
        assert host.log.count("probe 192.0.2.10") == probes  # paused: no new probe
        assert any(isinstance(r, ProbeDone) and r.token == stale for r in handled)
        ticks.cancel()
        await m.rt.stop()
        return m

    handled: list[ProbeDone | BindDone] = []
    m = run_virtual(main())
    assert m.rt.machine.state is State.WATCHING and m.rt.machine.paused
    assert not host.bound and "bind 192.0.2.10/24" not in host.log
    assert EventKind.TAKEOVER not in m.kinds()


def test_a_late_reply_undoes_the_miss_it_followed() -> None:
    host = FakeHost()
    host.add_neighbour(HOLDER_MAC, IP).answers_arp = False  # only the late replies save it

    async def main() -> Monitor:
        m = monitor(host, startup_grace=5.0, timeout=2.0)
        m.rt.start(address_bound=False)
        ticks = asyncio.create_task(ticking(m.rt))
        await asyncio.sleep(20)
        host.rtt = 0.3  # replies slow down far past the RTO (5 ms), within the timeout
        await asyncio.sleep(20)
        ticks.cancel()
        await m.rt.stop()
        return m

    m = run_virtual(main())
    assert m.rt.machine.state is State.WATCHING
    # the slow replies were counted as answers, not losses, and nothing was taken over
    assert m.rt.machine.looks.lost == 0
    assert "bind 192.0.2.10/24" not in host.log and not host.bound
    assert m.rt.machine.looks.last_rtt == pytest.approx(0.3)


def test_an_admin_claim_is_answered_with_its_outcome() -> None:
    host = FakeHost()
    holder = host.add_neighbour(HOLDER_MAC, IP)

    async def main() -> tuple[str | None, str | None]:
        m = monitor(host, startup_grace=5.0)
        m.rt.start(address_bound=False)
        await asyncio.sleep(10)
        refused = await m.rt.command(Command(Verb.CLAIM, by="admin"))
        holder.holds.clear()  # the holder gives the address up (its admin released it)
        await asyncio.sleep(0.1)
        claimed = await m.rt.command(Command(Verb.CLAIM, by="admin"))
        await m.rt.stop()
        return refused, claimed

    refused, claimed = run_virtual(main())
    assert refused is not None and HOLDER_MAC in refused  # says who has the address
    assert claimed is None and host.holds(ADDRESS)


def test_an_address_removed_behind_the_daemons_back_is_noticed() -> None:
    host = FakeHost()

    async def main() -> Monitor:
        m = monitor(host, role=Role.PRIMARY)
        m.rt.start(address_bound=False)
        await until("holding", lambda: m.rt.machine.state is State.HOLDING, 10)
        await m.rt.look_for_vanished_address()
        assert EventKind.ADDRESS_REMOVED not in m.kinds()  # still there: nothing to say
        host.bound.clear()  # `ip addr del` by someone else
        await m.rt.look_for_vanished_address()
        await asyncio.sleep(5)
        await m.rt.stop()
        return m

    m = run_virtual(main())
    assert EventKind.ADDRESS_REMOVED in m.kinds()
    assert host.holds(ADDRESS)  # probed and bound again: nobody else has it
