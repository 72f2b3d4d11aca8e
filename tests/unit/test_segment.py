"""The simulated segment the core tests run the real runtime on (minisft.testing.segment):
what one node does is what the others see."""

from __future__ import annotations

import asyncio
import ipaddress

from minisft.runtime.ports import OnProberRule
from minisft.testing.fakes import VirtualClock, run_virtual
from minisft.testing.segment import WIRE_LATENCY, Segment, SegmentPort

VIP = ipaddress.ip_address("192.0.2.10")
VIP_IF = ipaddress.ip_interface("192.0.2.10/24")
PEER = ipaddress.ip_address("192.0.2.2")
LOW, HIGH, OTHER = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:aa"


def test_an_address_bound_on_one_node_answers_ping_and_arp_for_the_others() -> None:
    seg = Segment()
    a, b = seg.port(LOW), seg.port(HIGH)
    a.bind(a.iface, VIP_IF)

    async def main() -> None:
        assert (await b.ping(VIP, 1.0)).ok
        answer = await b.probe_answer(VIP, 3, 0.05)
        assert answer is not None and answer.mac == LOW and not answer.prober
        assert not (await a.ping(PEER, 1.0)).ok  # nobody holds peer_ip

    run_virtual(main())


def test_a_running_probe_hears_another_under_its_on_prober_rule() -> None:
    seg = Segment()
    low, high = seg.port(LOW), seg.port(HIGH)

    async def heard(rule: OnProberRule, first: SegmentPort, second: SegmentPort
                    ) -> list[str | None]:
        answers = await asyncio.gather(first.probe_answer(VIP, 3, 0.05, on_prober=rule),
                                       second.probe_answer(VIP, 3, 0.05, on_prober=rule))
        return [a.mac if a else None for a in answers]

    assert run_virtual(heard("ignore", low, high)) == [None, None]
    assert run_virtual(heard("yield", low, high)) == [None, LOW]  # the second hears the first
    assert run_virtual(heard("yield", high, low)) == [None, HIGH]
    # tiebreak: only the higher MAC backs off, whoever started first
    assert run_virtual(heard("tiebreak", low, high)) == [None, LOW]
    assert run_virtual(heard("tiebreak", high, low)) == [LOW, None]
    seen = low.neighbour()
    assert seen is not None and not seen.probing  # the probes are over: forgotten


def test_an_announcement_reaches_the_watch_of_every_other_node_holding_the_address() -> None:
    seg = Segment()
    sender, holder, watcher = seg.port(LOW), seg.port(HIGH), seg.port("02:00:00:00:00:03")
    holder.bind(holder.iface, VIP_IF)
    heard: dict[str, list[str]] = {"holder": [], "watcher": []}
    holder.watch(VIP, heard["holder"].append)
    watcher.watch(VIP, heard["watcher"].append)  # watches, but does not hold it

    async def main() -> None:
        await sender.announce(VIP, 1, 0.0)
        assert heard["holder"] == []  # on the wire for a moment
        await asyncio.sleep(2 * WIRE_LATENCY)

    run_virtual(main())
    assert heard == {"holder": [LOW], "watcher": []}


def test_an_announcement_made_between_loops_is_delivered_in_the_next() -> None:
    seg = Segment()
    sender, holder = seg.port(LOW), seg.port(HIGH)
    holder.bind(holder.iface, VIP_IF)
    heard: list[str] = []
    holder.watch(VIP, heard.append)
    seg.announce(sender, VIP, now=1000.0)

    async def main() -> None:
        seg.resume()
        await asyncio.sleep(1.0)

    run_virtual(main(), VirtualClock(1000.0))
    assert heard == [LOW]
    run_virtual(main(), VirtualClock(1001.0))
    assert heard == [LOW], "delivered twice"


def test_links_partitions_and_hosts_that_do_not_run_minisft() -> None:
    seg = Segment()
    a, b = seg.port(LOW), seg.port(HIGH, local=[PEER])
    holder = seg.host(OTHER, VIP, answers_ping=False)

    async def who_answers() -> tuple[str | None, bool, bool, bool]:
        answer = await a.probe_answer(VIP, 1, 0.01)
        peer = (await a.ping(PEER, 1.0)).ok
        service = (await a.check().run(str(PEER))).ok
        vip_service = (await a.check().run(str(VIP))).ok
        return answer.mac if answer else None, peer, service, vip_service

    # the holder answers ARP, not ping: the check finds nobody serving the address
    assert run_virtual(who_answers()) == (OTHER, True, True, False)
    seg.split([a], [b])  # the nodes lose each other; the holder is in no group: both see it
    assert run_virtual(who_answers()) == (OTHER, False, False, False)
    seg.heal()
    b.link = False
    assert run_virtual(who_answers()) == (OTHER, False, False, False)
    a.link = False
    assert run_virtual(who_answers()) == (None, False, False, False)
    a.link = b.link = True
    holder.up = False
    assert run_virtual(who_answers()) == (None, True, True, False)
