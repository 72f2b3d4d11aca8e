"""`minisft switchover`: the primary takes its address back make-before-break.

The core's side, in simulated time (`core_driver`): the primary binds and announces at
once, the backup that holds the address hears the announcement and yields; both report
`switchover`. And every refusal, with the reason the admin reads.
"""

from __future__ import annotations

import asyncio
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from minisft.config.model import MonitorConfig, Role
from minisft.core.actions import Bind, IllegalInput, Release, StartProbe
from minisft.core.events import EventKind, Notice
from minisft.core.io import Command, PeerAsked, PeerLinkAddress, SwitchoverFacts, Verb
from minisft.core.monitor import AlreadyDone, CommandRefused, Purpose, State
from minisft.net.neighbour import ProbeAnswer
from minisft.runtime.monitor_runtime import MonitorRuntime
from tests.unit.core_driver import INTRUDER_MAC, Lan, Node, make_config

K = EventKind
PRIMARY_MAC, BACKUP_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
PRIMARY_IP, BACKUP_IP = "192.0.2.1", "192.0.2.2"


def config(role: Role, **kw: object) -> MonitorConfig:
    peer = BACKUP_IP if role is Role.PRIMARY else PRIMARY_IP
    kw.setdefault("peer_ip", peer)
    return make_config(role, interval=1.0, retry=3, timeout=0.3, **kw)  # type: ignore[arg-type]


def after_failover(**primary_kw: object) -> tuple[Lan, Node, Node]:
    """A pair after a failover: the primary's link went down, the backup took the address
    over, the primary's link came back and it watches the address at the backup."""
    lan = Lan()
    primary = lan.add(config(Role.PRIMARY, **primary_kw), PRIMARY_MAC)
    backup = lan.add(config(Role.BACKUP), BACKUP_MAC)
    lan.peer_node = primary
    lan.run(10.0)
    assert primary.bound and not backup.bound
    lan.set_link(primary, False)
    lan.run(10.0)
    assert backup.bound and backup.machine.state is State.HOLDING
    lan.set_link(primary, True)  # it re-probes, finds the backup holding and yields
    lan.run(10.0)
    assert primary.machine.state is State.WATCHING and backup.bound
    return lan, primary, backup


def facts(holder: str | None = BACKUP_MAC, peer: str | None = BACKUP_MAC,
          own_ok: bool | None = None, detail: str = "") -> SwitchoverFacts:
    return SwitchoverFacts(holder_mac=holder, peer_mac=peer, own_check_ok=own_ok,
                           own_check_detail=detail)


def switchover(node: Node, f: SwitchoverFacts | None = None, by: str = "admin") -> list[object]:
    return list(node.feed(Command(Verb.SWITCHOVER, by=by, facts=f or facts())))


def holders(lan: Lan) -> list[Node]:
    return [n for n in lan.nodes if n.bound]


def test_switchover_binds_at_once_and_the_watching_peer_yields() -> None:
    lan, primary, backup = after_failover()
    # the primary's kernel resolved the address when it began pinging it again: the
    # backup's neighbour watch saw the request from peer_ip (the runtime feeds this)
    backup.feed(PeerAsked(PRIMARY_MAC))
    mark_p, mark_b = primary.mark(), backup.mark()
    out = primary.command(Verb.SWITCHOVER, by="bob")  # the facts as the wire has them
    # no probe first: the address is held, by the peer, on purpose
    assert [a for a in out if isinstance(a, Bind)] and not [a for a in out
                                                            if isinstance(a, StartProbe)]
    assert primary.machine.state is State.BINDING
    assert primary.machine.purpose is Purpose.SWITCHOVER
    switched_at = lan.now
    lan.run(5.0)
    assert holders(lan) == [primary]
    assert primary.machine.state is State.HOLDING and backup.machine.state is State.WATCHING
    # make-before-break: the primary had it bound before the backup let go
    bound_at = next(s.at for s in primary.trace if s.at >= switched_at and s.bound_after)
    released_at = next(s.at for s in backup.trace
                       if s.at >= switched_at and not s.bound_after)
    assert bound_at <= released_at
    took = [n for n in primary.notices[mark_p:] if n.kind is K.SWITCHOVER]
    assert len(took) == 1 and took[0].details == {"mac": BACKUP_MAC, "peer": BACKUP_IP,
                                                  "side": "took over"}
    assert BACKUP_IP in took[0].reason
    gave = [n for n in backup.notices[mark_b:] if n.kind is K.SWITCHOVER]
    assert len(gave) == 1 and gave[0].details == {"mac": PRIMARY_MAC, "peer": PRIMARY_IP,
                                                  "side": "yielded"}
    assert K.YIELDED not in backup.kinds(mark_b), "a switchover is no split brain"
    assert backup.releases >= 1 and not backup.machine.paused  # it watches again
    # and it stays so: the backup watches the address answer at the primary
    lan.run(30.0)
    assert holders(lan) == [primary] and backup.machine.state is State.WATCHING


def test_switchover_where_the_peer_was_not_seen_watching_still_yields_as_split_brain() -> None:
    """No evidence that the announcing peer was watching (the backup restarted since, say):
    the backup still yields by the two-holders rule, and reports what it knows."""
    lan, primary, backup = after_failover()
    mark = backup.mark()
    switchover(primary)
    lan.run(5.0)
    assert holders(lan) == [primary]
    assert backup.kinds(mark).count(K.YIELDED) == 1
    assert backup.last(K.YIELDED).details == {"mac": PRIMARY_MAC, "split_brain": True}


def test_a_peer_that_stopped_answering_since_it_asked_is_a_split_brain() -> None:
    """Partition after the peer watched: it may have taken the address over meanwhile, so
    its announcement afterwards is a split brain healing, not a switchover."""
    _lan, _primary, backup = after_failover()
    backup.feed(PeerAsked(PRIMARY_MAC))
    backup.peer_ping(False)
    backup.peer_ping(True)
    mark = backup.mark()
    backup.conflict(PRIMARY_MAC)
    assert backup.kinds(mark) == [K.YIELDED]
    assert backup.last(K.YIELDED).details["split_brain"] is True


def test_the_last_lost_ping_of_the_peer_outage_does_not_drop_its_first_request() -> None:
    """The peer's link comes back: its first ARP request can arrive while the backup's ping
    sent during the outage is still waiting to time out. That miss is from before."""
    lan, primary, backup = after_failover()
    lan.set_link(primary, False)
    for _ in range(backup.config.looksalive.retry):
        backup.peer_ping(False)
    assert backup.machine.peer.health.value == "down"
    backup.feed(PeerAsked(PRIMARY_MAC))
    backup.peer_ping(False)  # sent while the peer was still down
    assert backup.machine.peer.watching_mac == PRIMARY_MAC
    mark = backup.mark()
    backup.conflict(PRIMARY_MAC)
    assert backup.kinds(mark) == [K.SWITCHOVER]


def test_an_announcement_from_another_mac_than_the_watching_peer_is_no_switchover() -> None:
    _lan, _primary, backup = after_failover()
    backup.feed(PeerAsked(PRIMARY_MAC))
    mark = backup.mark()
    backup.conflict(INTRUDER_MAC)
    assert backup.kinds(mark) == [K.YIELDED]
    assert INTRUDER_MAC in backup.last(K.YIELDED).reason


def test_the_peer_asking_from_its_link_local_address_makes_a_switchover() -> None:
    """Issue 14, IPv6: Linux re-checks a neighbour it already resolved with a unicast
    solicitation from its link-local address, not from peer_ip. The backup knows the
    peer's MAC from its frames for peer_ip, so that solicitation is the peer watching."""
    _lan, _primary, backup = after_failover()
    backup.feed(PeerLinkAddress(PRIMARY_MAC))
    backup.feed(PeerAsked(PRIMARY_MAC, link_local=True))
    mark = backup.mark()
    backup.conflict(PRIMARY_MAC)
    assert backup.kinds(mark) == [K.SWITCHOVER]
    assert backup.last(K.SWITCHOVER).details["side"] == "yielded"


def test_a_link_local_asker_that_is_not_the_peer_leaves_a_split_brain() -> None:
    """A link-local address says nothing about who sent it: only the peer's MAC counts.
    Not learned yet, or another host's MAC: the announcement is a split brain."""
    _lan, _primary, backup = after_failover()
    backup.feed(PeerAsked(PRIMARY_MAC, link_local=True))  # the peer's MAC is not known yet
    backup.feed(PeerLinkAddress(PRIMARY_MAC))
    backup.feed(PeerAsked(INTRUDER_MAC, link_local=True))
    assert backup.machine.peer.watching_mac is None
    mark = backup.mark()
    backup.conflict(PRIMARY_MAC)
    assert backup.kinds(mark) == [K.YIELDED]
    assert backup.last(K.YIELDED).details["split_brain"] is True


def test_peer_asked_while_not_holding_is_ignored() -> None:
    lan, primary, backup = after_failover()
    primary.feed(PeerAsked(BACKUP_MAC))  # a primary never yields as a switchover
    assert primary.machine.peer.watching_mac is None
    switchover(primary)
    lan.run(5.0)
    backup.feed(PeerAsked(PRIMARY_MAC))  # watching now
    assert backup.machine.peer.watching_mac is None


def test_switchover_on_the_holder_is_already_done_and_changes_nothing() -> None:
    lan, primary, _backup = after_failover()
    switchover(primary)
    lan.run(5.0)
    before = len(primary.trace)
    with pytest.raises(AlreadyDone, match="already holds"):
        switchover(primary)
    with pytest.raises(AlreadyDone, match="already holds"):  # facts are not needed then
        primary.feed(Command(Verb.SWITCHOVER))
    assert len(primary.trace) == before and primary.bound


def test_switchover_without_the_runtime_facts_is_a_caller_bug() -> None:
    _lan, primary, _backup = after_failover()
    with pytest.raises(IllegalInput, match="SwitchoverFacts"):
        primary.feed(Command(Verb.SWITCHOVER))


@pytest.mark.parametrize(("why", "f", "message"), [
    ("own check", facts(own_ok=False, detail="HTTP 503"),
     "fails its own IsAlive check .*HTTP 503"),
    ("third node", facts(holder=INTRUDER_MAC),
     f"held by {INTRUDER_MAC}, which is not the peer {BACKUP_IP} \\({BACKUP_MAC}\\)"),
    ("nobody holds", facts(holder=None), "nobody answers ARP/NDP .*minisft claim web"),
    ("peer silent", facts(peer=None), f"the peer {BACKUP_IP} does not answer"),
])
def test_switchover_refusals_say_why_and_change_nothing(why: str, f: SwitchoverFacts,
                                                         message: str) -> None:
    lan, primary, backup = after_failover()
    binds = primary.bind_count()
    with pytest.raises(CommandRefused, match=message):
        switchover(primary, f)
    assert primary.bind_count() == binds and primary.machine.state is State.WATCHING
    lan.run(5.0)
    assert holders(lan) == [backup], why


def test_switchover_refused_while_the_link_is_down() -> None:
    lan, primary, backup = after_failover()
    lan.set_link(primary, False)
    with pytest.raises(CommandRefused, match="link is down"):
        switchover(primary)
    assert not primary.bound and backup.bound


def test_switchover_refused_on_a_primary_holding_behind_a_dead_link() -> None:
    """Cut off, the primary still has the address bound, but nobody reaches it there: that
    is no "already holds"."""
    lan = Lan()
    primary = lan.add(config(Role.PRIMARY), PRIMARY_MAC)
    lan.run(5.0)
    assert primary.bound
    lan.set_link(primary, False)
    with pytest.raises(CommandRefused, match="link is down"):
        primary.command(Verb.SWITCHOVER)


def test_switchover_refused_without_peer_ip() -> None:
    _lan, primary, _backup = after_failover(peer_ip=None)
    assert primary.config.peer_ip is None
    with pytest.raises(CommandRefused, match="no peer_ip configured"):
        switchover(primary)


def test_switchover_refused_on_the_backup() -> None:
    """The primary keeps its address against a backup's announcement, so a switchover to a
    backup could not work: refused, with the manual procedure."""
    lan, primary, backup = after_failover()
    switchover(primary)
    lan.run(5.0)
    with pytest.raises(CommandRefused, match=r"backup .*minisft release web"):
        switchover(backup, facts(holder=PRIMARY_MAC, peer=PRIMARY_MAC))


def test_switchover_refused_while_busy() -> None:
    lan = Lan()
    primary = lan.add(config(Role.PRIMARY), PRIMARY_MAC)
    primary.start()  # start-up probe running
    with pytest.raises(CommandRefused, match="busy"):
        switchover(primary)


def test_switchover_resumes_a_paused_primary() -> None:
    lan, primary, _backup = after_failover()
    primary.command(Verb.PAUSE)
    switchover(primary)
    assert not primary.machine.paused
    lan.run(5.0)
    assert primary.machine.state is State.HOLDING


def test_failed_bind_reports_and_watches_again() -> None:
    lan, primary, backup = after_failover()
    switchover(primary)
    primary.bind_done("Operation not permitted")
    assert primary.machine.state is State.WATCHING
    failed = primary.last(K.TAKEOVER_FAILED)
    assert failed.details["phase"] == "switchover"
    lan.run(5.0)
    assert holders(lan) == [backup] and not [a for a in backup.actions()
                                             if isinstance(a, Release)
                                             and backup.machine.state is State.WATCHING]


# ================================================================ the runtime's side


class _Neighbours:
    """Who answers ARP/NDP for which address, as the neighbour watch would report."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.probed: list[tuple[str, str]] = []

    async def probe_answer(self, ip: Any, count: int, interval: float, *,
                           on_prober: str = "yield") -> ProbeAnswer | None:
        self.probed.append((str(ip), on_prober))
        mac = self.answers.get(str(ip))
        return ProbeAnswer(mac, prober=False) if mac else None

    async def announce(self, ip: Any, count: int, interval: float) -> None:
        return None


@dataclass
class _Result:
    ok: bool
    detail: str = ""
    latency: float | None = None


class _OwnCheck:
    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.checked: list[str] = []

    async def run(self, address: str) -> _Result:
        self.checked.append(address)
        return _Result(self.ok, "" if self.ok else "connection refused")


def _runtime(neighbours: _Neighbours, check: _OwnCheck | None,
             notices: list[Notice]) -> MonitorRuntime:
    return MonitorRuntime(
        config(Role.BACKUP), clock=asyncio.get_running_loop().time,
        pinger=None,  # type: ignore[arg-type]  # no loop runs in these tests
        neighbours=neighbours, addresses=None,  # type: ignore[arg-type]
        iface=None, netlink_executor=ThreadPoolExecutor(1), emit=notices.append,
        check=check)  # type: ignore[arg-type]


def test_the_runtime_finds_holder_peer_and_own_health_for_the_core() -> None:
    async def case() -> None:
        neighbours = _Neighbours({"192.0.2.10": BACKUP_MAC, PRIMARY_IP: PRIMARY_MAC})
        check = _OwnCheck(ok=False)
        rt = _runtime(neighbours, check, [])
        got = await rt.switchover_facts(ipaddress.ip_address("192.0.2.2"))
        assert got == SwitchoverFacts(holder_mac=BACKUP_MAC, peer_mac=PRIMARY_MAC,
                                      own_check_ok=False,
                                      own_check_detail="connection refused")
        # the check runs against this node's own address, not the service address
        assert check.checked == ["192.0.2.2"]
        # a simultaneous prober does not count: only a host that has the address answers
        assert sorted(neighbours.probed) == [(PRIMARY_IP, "ignore"), ("192.0.2.10", "ignore")]
        no_check = await _runtime(_Neighbours({}), None, []).switchover_facts("192.0.2.2")
        assert no_check == SwitchoverFacts(None, None, None, "")

    asyncio.run(case())


def test_only_the_configured_peer_resolving_the_address_reaches_the_core() -> None:
    async def case() -> None:
        rt = _runtime(_Neighbours({}), None, [])
        rt.start(address_bound=True)  # holding (adopted)
        try:
            rt.peer_asked(ipaddress.ip_address("192.0.2.77"), INTRUDER_MAC)
            assert rt.machine.peer.watching_mac is None
            rt.peer_asked(ipaddress.ip_address(PRIMARY_IP), PRIMARY_MAC)
            assert rt.machine.peer.watching_mac == PRIMARY_MAC
        finally:
            await rt.stop()

    asyncio.run(case())


def test_the_neighbour_watch_reports_who_resolves_the_address_and_nothing_else() -> None:
    """What makes PeerAsked: an ARP request for the address from a host's own address.
    Not a probe (sender 0.0.0.0: a host about to claim it), not an announcement (sender
    is the address itself: a host that holds it), not a request for another address."""
    from ipaddress import IPv4Address

    from minisft.net import arp
    from minisft.net.link import Interface
    from minisft.net.neighbour import NeighbourWatch

    watch = NeighbourWatch(Interface("eth0", 2, BACKUP_MAC))
    seen: list[tuple[str, str]] = []
    watch.watch_askers(IPv4Address("192.0.2.10"), lambda ip, mac: seen.append((str(ip), mac)))
    broadcast, peer = arp.mac_to_bytes(arp.BROADCAST_MAC), arp.mac_to_bytes(PRIMARY_MAC)

    def request(sender: str, target: str) -> bytes:
        return arp._frame(broadcast, peer, arp.OP_REQUEST, IPv4Address(sender), bytes(6),
                          IPv4Address(target))

    watch._on_arp(arp.build_probe(PRIMARY_MAC, IPv4Address("192.0.2.10")))
    watch._on_arp(arp.build_announcement(PRIMARY_MAC, IPv4Address("192.0.2.10")))
    watch._on_arp(request(PRIMARY_IP, "192.0.2.11"))
    assert seen == []
    watch._on_arp(request(PRIMARY_IP, "192.0.2.10"))
    assert seen == [(PRIMARY_IP, PRIMARY_MAC)]
    watch.unwatch(IPv4Address("192.0.2.10"))
    watch._on_arp(request(PRIMARY_IP, "192.0.2.10"))
    assert len(seen) == 1


PRIMARY_IP6, PRIMARY_LINK_LOCAL = "2001:db8::1", "fe80::1"


def test_an_ipv6_peer_solicitation_from_its_link_local_address_reaches_the_core() -> None:
    """The runtime passes a link-local asker on, marked as such (the core checks the MAC);
    the peer's MAC reaches the core from the frames for peer_ip."""
    async def case() -> None:
        cfg = make_config(Role.BACKUP, address="2001:db8::10/64", peer_ip=PRIMARY_IP6,
                          interval=1.0, retry=3, timeout=0.3)
        rt = MonitorRuntime(
            cfg, clock=asyncio.get_running_loop().time,
            pinger=None,  # type: ignore[arg-type]  # no loop runs in this test
            neighbours=_Neighbours({}), addresses=None,  # type: ignore[arg-type]
            iface=None, netlink_executor=ThreadPoolExecutor(1), emit=[].append,  # type: ignore[arg-type]
            check=None)
        rt.start(address_bound=True)  # holding (adopted)
        try:
            rt.peer_link_address(PRIMARY_MAC)
            rt.peer_asked(ipaddress.ip_address("fe80::77"), INTRUDER_MAC)
            assert rt.machine.peer.watching_mac is None
            rt.peer_asked(ipaddress.ip_address(PRIMARY_LINK_LOCAL), PRIMARY_MAC)
            assert rt.machine.peer.watching_mac == PRIMARY_MAC
        finally:
            await rt.stop()

    asyncio.run(case())


def test_the_neighbour_watch_reports_ipv6_askers_and_the_peers_link_address() -> None:
    """The frames Linux sends for an IPv6 address it watches: a multicast solicitation from
    the address it pings from, then unicast re-checks from its link-local address. Both
    resolve the address. And the advertisement for peer_ip shows the peer's MAC."""
    from ipaddress import IPv6Address

    from minisft.net import ndp
    from minisft.net.link import Interface
    from minisft.net.neighbour import NeighbourWatch

    vip, peer = IPv6Address("2001:db8::10"), IPv6Address(PRIMARY_IP6)
    link_local = IPv6Address(PRIMARY_LINK_LOCAL)
    watch = NeighbourWatch(Interface("eth0", 2, BACKUP_MAC))
    asked: list[tuple[str, str]] = []
    users: list[str] = []
    watch.watch_askers(vip, lambda ip, mac: asked.append((str(ip), mac)))
    watch.watch_users(peer, users.append)
    slla = bytes([ndp.OPT_SOURCE_LLA, 1]) + ndp.mac_to_bytes(PRIMARY_MAC)

    def solicitation(src: IPv6Address, dst: IPv6Address, eth_dst: str) -> bytes:
        return ndp._frame(eth_dst, PRIMARY_MAC, src, dst, ndp.NdpType.NS, 0, vip, slla)

    watch._on_ndp(ndp.build_dad_probe(PRIMARY_MAC, vip))  # about to claim it: not asking
    watch._on_ndp(ndp.build_unsolicited_na(PRIMARY_MAC, vip))  # holds it: not asking
    assert asked == []
    group = ndp.solicited_node(vip)
    watch._on_ndp(solicitation(peer, group, ndp.multicast_mac(group)))
    watch._on_ndp(solicitation(link_local, vip, BACKUP_MAC))  # the NUD re-check
    assert asked == [(PRIMARY_IP6, PRIMARY_MAC), (PRIMARY_LINK_LOCAL, PRIMARY_MAC)]
    assert users == [PRIMARY_MAC]  # the solicitation sent from peer_ip
    tlla = bytes([ndp.OPT_TARGET_LLA, 1]) + ndp.mac_to_bytes(PRIMARY_MAC)
    watch._on_ndp(ndp._frame(BACKUP_MAC, PRIMARY_MAC, peer, IPv6Address("2001:db8::2"),
                             ndp.NdpType.NA, ndp.NA_FLAG_SOLICITED << 24, peer, tlla))
    assert users == [PRIMARY_MAC, PRIMARY_MAC]  # its answer when this node resolves peer_ip
    watch.unwatch_users(peer, users.append)
    watch._on_ndp(solicitation(peer, group, ndp.multicast_mac(group)))
    assert len(users) == 2
