"""The failover decision, driven step by step: what an admin would see the node do.

Every test feeds the real MonitorMachine through `core_driver` (a simulated LAN with a clock,
the local interface and the other host) and looks at the actions and events that come out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from minisft.cli.main import format_status
from minisft.config.model import FallbackMode, MonitorConfig, Role
from minisft.core.actions import (
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    ProbeDone,
    Release,
    StartProbe,
)
from minisft.core.events import EventKind
from minisft.core.io import (
    Command,
    ConflictSeen,
    Input,
    LateReply,
    LinkChanged,
    PingResult,
    ServiceResult,
    Started,
    Tick,
    Verb,
)
from minisft.core.monitor import (
    CONFLICT_QUIET,
    DEFEND_SPACING,
    AlreadyDone,
    CommandRefused,
    Health,
    IllegalInput,
    Purpose,
    State,
)
from minisft.core.rto import RTO_FLOOR
from minisft.status import MonitorStatus, StatusDocument
from tests.unit.core_driver import (
    HOLDER_MAC,
    INTRUDER_MAC,
    Host,
    Lan,
    Node,
    make_config,
    single,
)

K = EventKind


def backup(**kw: object) -> Node:
    """A backup watching an address that a live host holds."""
    holder = kw.pop("holder", None) or Host()
    assert isinstance(holder, Host)
    node = single(make_config(Role.BACKUP, **kw), holder=holder)  # type: ignore[arg-type]
    node.ping(True)
    return node


def took_over(**kw: object) -> Node:
    """A backup that took the address over after its holder died."""
    node = backup(**kw)
    holder = node.lan.holder
    assert holder is not None
    holder.has_address = False
    node.misses(node.config.looksalive.retry)
    node.settle()
    assert node.machine.state is State.HOLDING
    return node


def primary_holding(**kw: object) -> Node:
    node = single(make_config(Role.PRIMARY, **kw))  # type: ignore[arg-type]
    node.settle()
    assert node.machine.state is State.HOLDING
    return node


def state(node: Node) -> State:
    """The machine's state, read afresh (mypy would narrow `node.machine.state` for good)."""
    return node.machine.state


def of(actions: Sequence[object], kind: type) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


# =============================================================================== start-up


def test_address_already_bound_is_adopted_and_announced() -> None:
    node = single(make_config(Role.BACKUP), bound=True, start=False)
    out = node.start(bound=True)
    assert node.machine.state is State.HOLDING and node.machine.holds
    assert node.kinds() == [K.ADOPTED]
    assert of(out, Announce) and not of(out, Bind) and not of(out, StartProbe)
    assert node.machine.snapshot()["holder"] == "self"


def test_primary_with_free_address_probes_before_binding() -> None:
    node = single(make_config(Role.PRIMARY))
    assert node.machine.state is State.PROBING and node.machine.purpose is Purpose.STARTUP
    assert node.probe is not None and node.bind_token is None  # no Bind before the probe
    assert node.bind_count() == 0
    out = node.probe_done(None)
    assert of(out, Bind) and state(node) is State.BINDING
    node.bind_done()
    assert state(node) is State.HOLDING and node.bound
    claimed = node.last(K.CLAIMED)
    assert claimed.details["phase"] == "startup"
    assert "nobody answered the probe" in claimed.reason


def test_primary_finds_its_address_answered_and_does_not_bind() -> None:
    node = single(make_config(Role.PRIMARY), holder=Host())
    node.probe_done()
    assert node.machine.state is State.WATCHING and not node.machine.holds
    notice = node.last(K.ADDRESS_IN_USE)
    assert notice.details["mac"] == HOLDER_MAC and HOLDER_MAC in notice.reason
    assert "minisft release" in notice.reason  # tells the admin how to fall back
    node.lan.run(120)
    assert node.bind_count() == 0
    assert node.machine.looks.health is Health.UP and node.machine.holder == "other"


def test_a_primary_with_a_peer_finds_its_address_answered_and_is_told_of_switchover() -> None:
    node = single(make_config(Role.PRIMARY, peer_ip="192.0.2.2"), holder=Host())
    node.probe_done()
    reason = node.last(K.ADDRESS_IN_USE).reason
    assert node.bind_count() == 0
    assert "`minisft switchover web` here (if the holder is the peer 192.0.2.2)" in reason
    assert "`minisft claim web` here" in reason  # the way with an outage, still named


def test_backup_starts_watching_without_probing() -> None:
    node = single(make_config(Role.BACKUP), holder=Host())
    assert node.machine.state is State.WATCHING
    assert node.probe is None and node.machine.wants_looksalive
    node.ping()
    assert node.kinds() == [K.LOOKSALIVE_UP]


def test_primary_started_with_link_down_does_not_bind_blind() -> None:
    """Bug fix: a probe over a dead link hears nobody; it used to be taken as 'free'."""
    lan = Lan(holder=Host())
    node = lan.add(make_config(Role.PRIMARY))
    node.link(False)
    node.start(False)
    assert node.machine.state is State.WATCHING
    assert node.probe is None and node.bind_count() == 0
    node.link(True)
    lan.run(60)
    assert node.bind_count() == 0 and node.machine.holder == "other"


def test_adopted_while_link_down_reprobes_when_link_returns() -> None:
    """Bug fix: the link went down before start-up; the adopted address must be re-probed."""
    lan = Lan(holder=Host(has_address=False))
    node = lan.add(make_config(Role.BACKUP))
    node.link(False)
    node.start(bound=True)
    assert node.machine.state is State.HOLDING
    lan.holder = Host()  # somebody took the address while we were cut off
    node.link(True)
    assert state(node) is State.PROBING and node.machine.purpose is Purpose.REPROBE
    out = node.probe_done()
    assert of(out, Release) and node.last(K.YIELDED)


# =============================================================================== LooksAlive


def test_one_lost_ping_never_takes_over() -> None:
    node = backup()
    node.ping(False)
    assert node.probe is not None  # the miss asks ARP at once
    node.probe_done(None)  # even an ARP glitch on top of it
    node.ping(True)
    node.lan.run(300)  # and a healthy holder for a long time after
    assert node.bind_count() == 0
    assert K.LOOKSALIVE_DOWN not in node.kinds() and K.TAKEOVER not in node.kinds()


def test_retry_misses_without_arp_answer_take_over() -> None:
    node = backup()
    assert node.lan.holder is not None
    node.lan.holder.has_address = False
    mark = node.mark()
    node.misses(2)
    assert node.bind_count() == 0 and node.kinds(mark) == []
    node.misses(1)
    assert node.kinds(mark) == [K.LOOKSALIVE_DOWN]
    assert node.bind_token is not None  # a clear probe round had completed: bind now
    node.bind_done()
    assert node.kinds(mark) == [K.LOOKSALIVE_DOWN, K.TAKEOVER]
    assert node.machine.state is State.HOLDING and node.bound
    assert node.machine.counters.takeovers == 1
    assert "3 pings" in node.last(K.TAKEOVER).reason
    assert node.last(K.LOOKSALIVE_DOWN).details["misses"] == 3


def test_takeover_waits_for_a_complete_probe_round() -> None:
    """Misses faster than the probe: the node goes to a last probe round before binding."""
    node = backup()
    assert node.lan.holder is not None
    node.lan.holder.has_address = False
    for _ in range(3):
        node.ping(False)  # the probe started by the first miss is still running
    assert node.machine.state is State.PROBING and node.machine.purpose is Purpose.TAKEOVER
    assert node.bind_count() == 0
    node.probe_done()
    assert node.bind_token is not None


def test_arp_answer_during_misses_resets_the_count() -> None:
    node = backup(holder=Host(icmp=False))
    for _ in range(10):
        node.ping(False)
        node.ping(False)
        node.probe_done()  # the holder answers ARP
        assert node.machine.looks.misses == 0
    assert node.bind_count() == 0
    assert K.LOOKSALIVE_DOWN not in node.kinds()


def test_icmp_dead_but_arp_alive_is_degraded_once_and_never_taken() -> None:
    node = backup(holder=Host(icmp=False))
    node.lan.run(600)
    assert node.count(K.LOOKSALIVE_DEGRADED) == 1
    assert node.last(K.LOOKSALIVE_DEGRADED).details["mac"] == HOLDER_MAC
    assert node.bind_count() == 0 and K.LOOKSALIVE_DOWN not in node.kinds()
    assert node.machine.holder == "other"
    assert node.machine.looks.health is Health.DEGRADED


def test_probe_answered_at_the_final_step_is_a_conflict_not_a_bind() -> None:
    node = backup(holder=Host(icmp=False))
    for _ in range(3):
        node.ping(False)
    assert node.machine.purpose is Purpose.TAKEOVER
    node.probe_done()  # somebody answers the last probe round
    assert node.bind_count() == 0
    assert node.machine.state is State.WATCHING and node.machine.conflict_open
    conflict = node.last(K.ADDRESS_CONFLICT)
    assert conflict.details == {"mac": HOLDER_MAC, "phase": "takeover"}
    assert node.machine.holder == "other"


def test_pings_answering_again_report_up_and_clear_the_conflict() -> None:
    node = backup(holder=Host(icmp=False))
    for _ in range(3):
        node.ping(False)
    node.probe_done()
    mark = node.mark()
    assert node.lan.holder is not None
    node.lan.holder.icmp = True
    node.ping()
    assert node.kinds(mark) == [K.LOOKSALIVE_UP, K.CONFLICT_CLEARED]
    assert not node.machine.conflict_open


def test_conflict_is_reported_over_before_a_later_takeover() -> None:
    """Bug fix: the conflicting host vanished; the conflict alarm must be cleared, and it is
    cleared before the node binds, never silently by the bind."""
    node = backup(holder=Host(icmp=False))
    for _ in range(3):
        node.ping(False)
    node.probe_done()
    assert node.lan.holder is not None
    node.lan.holder.has_address = False
    node.lan.run(30)
    kinds = node.kinds()
    assert kinds.index(K.ADDRESS_CONFLICT) < kinds.index(K.CONFLICT_CLEARED) \
        < kinds.index(K.TAKEOVER)
    bind_steps = [s for s in node.trace if s.binds]
    assert bind_steps and not any(s.after.conflict_open for s in bind_steps)


def test_ping_after_looksalive_down_reports_up_again() -> None:
    node = backup()
    assert node.lan.holder is not None
    node.command(Verb.PAUSE)  # nothing taken over while paused ...
    node.command(Verb.RESUME)
    node.lan.holder.has_address = False
    for _ in range(3):
        node.ping(False)
    assert node.machine.looks.health is Health.DOWN
    node.lan.holder.has_address = True
    mark = node.mark()
    node.ping()
    assert node.kinds(mark) == [K.LOOKSALIVE_UP]
    assert "again" in node.last(K.LOOKSALIVE_UP).reason
    assert node.machine.state is State.WATCHING and node.bind_count() == 0


def test_detection_time_is_interval_plus_retries_on_the_rto() -> None:
    """Retries time out on the RTO measured from the replies (2 ms here, floored at 5 ms
    and doubled per miss), not on the configured 1 s timeout: a dead holder is detected
    in about interval + probe round, not interval + 3 x 1 s (issue 14)."""
    node = backup()
    assert node.lan.holder is not None
    node.lan.run(10)
    c = node.config
    rto = node.machine.ping_timeout
    assert rto == RTO_FLOOR  # 2 ms replies: the estimate is under the floor
    died = node.lan.now
    node.lan.holder.has_address = False
    node.lan.run(30)
    took = next(s for s in node.trace if s.binds)
    misses = [s for s in node.trace if s.at >= died and isinstance(s.event, PingResult)
              and not s.event.ok and s.at <= took.at]
    assert len(misses) >= c.looksalive.retry  # still `retry` misses and a probe round
    retries = sum(rto * 2 ** n for n in range(c.looksalive.retry))  # backoff: 1, 2, 4 x RTO
    assert took.at - died <= c.looksalive.interval + max(retries, c.probe.duration) + 0.1
    assert took.at - died < c.detection_time  # the configured-timeout formula: 6 s


def test_status_shows_the_rto_next_to_the_rtt() -> None:
    node = backup(interval=1.0, timeout=0.3)
    for _ in range(20):
        node.feed(PingResult(True, 0.02))
    snapshot = node.machine.snapshot()
    line = next(row for row in format_status(
        StatusDocument(monitors=(MonitorStatus.from_dict(snapshot),))).splitlines()
                if row.startswith("web "))
    assert f"up 20.0ms rto {snapshot['looksalive']['rto_ms']:g}ms" in line
    assert 20 <= snapshot["looksalive"]["rto_ms"] < 30


def test_a_slow_reply_raises_the_rto_and_a_miss_backs_it_off() -> None:
    node = backup(interval=1.0, timeout=0.1)
    for _ in range(20):
        node.feed(PingResult(True, 0.02))
    settled = node.machine.ping_timeout
    assert 0.02 <= settled < 0.03  # converged on the 20 ms round trip
    assert node.machine.snapshot()["looksalive"]["rto_ms"] == round(settled * 1000, 3)
    node.feed(PingResult(False, None, "timeout"))
    assert node.machine.ping_timeout == pytest.approx(2 * settled)
    node.feed(PingResult(False, None, "timeout"))
    node.feed(PingResult(False, None, "timeout"))
    assert node.machine.ping_timeout == 0.1  # capped at the configured timeout


def test_a_late_reply_is_not_a_lost_ping_and_stops_the_probe() -> None:
    """A ping waits only the RTO, so on a busy host a reply can come after its ping was
    counted missed (but within the configured timeout). That reply is an answer: the ping
    is not lost, the misses and the probe round it started are undone, no alarm."""
    node = backup(interval=1.0, timeout=0.3)
    for _ in range(20):
        node.feed(PingResult(True, 0.001))
    looks = node.machine.looks
    sent, lost = looks.sent, looks.lost
    out = node.feed(PingResult(False, None, "no reply within 0.005s"))
    assert of(out, StartProbe) and looks.lost == lost + 1 and looks.misses == 1
    out = node.feed(LateReply(0.012))
    assert of(out, CancelProbe)
    assert (looks.sent, looks.lost, looks.misses, looks.icmp_misses) == (sent + 1, lost, 0, 0)
    assert looks.last_rtt == 0.012 and looks.loss < 0.01
    assert node.machine.state is State.WATCHING
    assert K.LOOKSALIVE_DOWN not in node.kinds()


def test_a_late_reply_after_the_address_came_here_changes_nothing() -> None:
    node = took_over()
    before = node.machine.snapshot()
    assert node.feed(LateReply(0.2)) == []
    assert node.machine.snapshot() == before


# =============================================================================== ping pacing


def test_retries_are_back_to_back_after_a_miss() -> None:
    node = backup()
    m = node.machine
    assert m.next_ping_delay(0.002) == pytest.approx(3.0 - 0.002)
    node.ping(False)
    assert m.next_ping_delay(1.0) == 0.0
    node.ping(False)
    assert m.next_ping_delay(1.0) == 0.0
    node.ping(True)
    assert m.next_ping_delay(0.002) == pytest.approx(2.998)


def test_normal_interval_once_arp_vouched_for_the_holder() -> None:
    node = backup(holder=Host(icmp=False))
    node.ping(False)
    assert node.machine.next_ping_delay(1.0) == 0.0
    node.probe_done()
    assert node.machine.next_ping_delay(1.0) == pytest.approx(2.0)
    assert node.machine.next_ping_delay(5.0) == 0.0  # never negative


# =============================================================================== IsAlive


def test_isalive_runs_only_while_looksalive_is_up() -> None:
    node = single(make_config(check="http"), holder=Host())
    assert not node.machine.wants_isalive  # LooksAlive has not seen the holder yet
    node.ping()
    assert node.machine.wants_isalive
    assert node.lan.holder is not None
    node.lan.holder.has_address = False
    node.misses(3)
    assert not node.machine.wants_isalive
    plain = backup()
    assert not plain.machine.wants_isalive  # check "always": IsAlive disabled


def test_dead_service_with_ping_up_alarms_once_and_never_takes_over() -> None:
    node = single(make_config(check="http"), holder=Host(service=False))
    node.lan.run(600)
    assert node.count(K.SERVICE_DEAD) == 1
    dead = node.last(K.SERVICE_DEAD)
    assert "no takeover" in dead.reason and dead.details["detail"]
    assert node.bind_count() == 0 and node.machine.state is State.WATCHING
    assert node.machine.counters.service_alarms == 1


def test_service_dead_after_retry_failures_then_recovered() -> None:
    node = single(make_config(check="http", isalive_retry=3), holder=Host())
    node.ping()
    node.service(False)
    node.service(False)
    assert K.SERVICE_DEAD not in node.kinds()
    node.service(False)
    assert node.kinds().count(K.SERVICE_DEAD) == 1
    node.service(False)
    node.service(True)
    node.service(True)
    assert node.kinds().count(K.SERVICE_RECOVERED) == 1
    assert node.kinds()[-1] is K.SERVICE_RECOVERED


def test_service_results_while_not_wanted_are_ignored() -> None:
    node = single(make_config(check="http"), holder=Host())
    for _ in range(5):
        assert node.service(False) == []
    assert node.machine.service.failures == 0


def test_holder_checks_its_own_service_when_on_holder() -> None:
    node = took_over(check="tcp", on_holder=True)
    assert node.machine.wants_isalive
    node.service(False)
    node.service(False)
    dead = node.last(K.SERVICE_DEAD)
    assert "on this node" in dead.reason
    assert node.machine.state is State.HOLDING  # an alarm, never a release
    other = took_over(check="tcp", on_holder=False)
    assert not other.machine.wants_isalive


# =============================================================================== holding


def test_conflict_as_backup_releases_and_yields() -> None:
    node = took_over()
    out = node.conflict(INTRUDER_MAC)
    assert of(out, Release) and not node.bound
    assert node.machine.state is State.WATCHING and node.machine.holder_mac == INTRUDER_MAC
    yielded = node.last(K.YIELDED)
    assert INTRUDER_MAC in yielded.reason and "backup" in yielded.reason
    assert node.machine.counters.yields == 1


def test_conflict_as_primary_defends_with_rate_limited_announcements() -> None:
    node = primary_holding()
    before = node.announces
    node.conflict()
    node.lan.advance(0.3)
    node.conflict()
    node.lan.advance(0.3)
    node.conflict()
    assert node.announces - before == 1  # at most one defence per DEFEND_SPACING
    node.lan.advance(DEFEND_SPACING)
    node.conflict()
    assert node.announces - before == 2
    assert node.count(K.ADDRESS_CONFLICT) == 1  # one alarm per episode
    assert node.machine.state is State.HOLDING and node.bound
    assert node.last(K.ADDRESS_CONFLICT).details == {"mac": INTRUDER_MAC, "phase": "holding"}
    node.wait(CONFLICT_QUIET - 1)
    assert K.CONFLICT_CLEARED not in node.kinds()
    node.wait(2)
    assert node.count(K.CONFLICT_CLEARED) == 1 and not node.machine.conflict_open
    node.conflict()
    assert node.count(K.ADDRESS_CONFLICT) == 2  # a new episode


def test_link_down_keeps_the_address_then_reprobes() -> None:
    node = took_over()
    out = node.link(False)
    assert not of(out, Release) and node.machine.holds and node.bound
    assert "re-probed" in node.last(K.LINK_DOWN).reason
    before = node.announces
    node.wait(30)
    assert node.announces == before  # no refresh announcements while cut off
    out = node.link(True)
    assert of(out, StartProbe)
    assert node.machine.state is State.PROBING and node.machine.purpose is Purpose.REPROBE
    assert node.machine.holds and K.LINK_UP in node.kinds()


def test_reprobe_answered_releases_and_yields() -> None:
    node = took_over()
    node.link(False)
    node.lan.holder = Host(mac=INTRUDER_MAC)
    node.link(True)
    out = node.probe_done()
    assert of(out, Release) and not node.bound
    assert node.machine.state is State.WATCHING
    assert INTRUDER_MAC in node.last(K.YIELDED).reason


def test_reprobe_clear_rebinds() -> None:
    node = primary_holding()
    node.link(False)
    node.link(True)
    node.probe_done(None)
    node.bind_done()
    assert node.machine.state is State.HOLDING and not node.machine.cut_off
    assert node.last(K.CLAIMED).details["phase"] == "reprobe"


def test_failed_rebind_after_link_flap_releases_the_address() -> None:
    """Bug fix: the machine went back to watching with the address still on the interface,
    where it answered its own pings for ever and `release` was refused."""
    node = primary_holding()
    node.link(False)
    node.link(True)
    node.probe_done(None)
    out = node.bind_done("Operation not permitted")
    assert of(out, Release) and not node.bound
    assert node.machine.state is State.WATCHING
    assert "Operation not permitted" in node.last(K.TAKEOVER_FAILED).reason


def test_cut_off_primary_yields_to_a_conflict() -> None:
    node = primary_holding()
    node.link(False)
    out = node.conflict()
    assert of(out, Release) and "link was down" in node.last(K.YIELDED).reason
    assert "split_brain" not in node.last(K.YIELDED).details  # nobody reached it meanwhile


def test_a_healed_split_brain_is_reported_by_the_backup_whichever_refresh_comes_first() -> None:
    """A partition between primary and backup: both hold the address. After the heal the
    backup yields and reports the split brain, naming the primary's MAC, whether the
    primary's refresh reached it first (the primary then never hears of the backup) or
    the backup's reached the primary first (the primary also raises address_conflict,
    which clears once the backup has gone quiet). The heal is moved across a whole refresh
    period so that both orders happen."""
    primary_mac, backup_mac = "02:00:00:00:00:01", "02:00:00:00:00:02"

    def config(role: Role, peer_ip: str | None = None) -> MonitorConfig:
        return make_config(role, peer_ip=peer_ip, interval=1.0, retry=3, timeout=0.3,
                           refresh=1.0)

    primary_heard_first: set[bool] = set()
    for step in range(20):
        lan = Lan()
        primary = lan.add(config(Role.PRIMARY), primary_mac)
        lan.peer_node = primary
        lan.run(2.25)  # off the whole second, so the two refresh timers are not in phase
        backup = lan.add(config(Role.BACKUP, peer_ip="192.0.2.1"), backup_mac)
        lan.run(3.0)
        lan.partitioned = True
        lan.run(8.0 + step * 0.05)
        assert primary.bound and backup.bound, "split brain while partitioned"
        mark_primary, mark_backup = primary.mark(), backup.mark()
        lan.partitioned = False
        lan.run(CONFLICT_QUIET + 5.0)
        assert primary.bound and primary.machine.holds and not backup.bound
        yielded = [n for n in backup.notices[mark_backup:] if n.kind is K.YIELDED]
        assert len(yielded) == 1, step
        assert yielded[0].details == {"mac": primary_mac, "split_brain": True}
        assert "split brain" in yielded[0].reason and primary_mac in yielded[0].reason
        primary_kinds = primary.kinds(mark_primary)
        assert primary_kinds in ([], [K.ADDRESS_CONFLICT, K.CONFLICT_CLEARED]), step
        assert not primary.machine.conflict_open
        primary_heard_first.add(bool(primary_kinds))
    assert primary_heard_first == {True, False}, "both orders must have been exercised"


def test_address_removed_behind_our_back() -> None:
    node = took_over()
    out = node.vanish()
    assert not of(out, Release) and node.machine.state is State.WATCHING
    assert "minisft release" in node.last(K.ADDRESS_REMOVED).reason
    node2 = took_over()
    node2.link(False)
    assert node2.feed(_vanished()) == [] and node2.machine.state is State.HOLDING


def _vanished() -> Input:
    from minisft.core.io import AddressVanished

    return AddressVanished()


def test_periodic_refresh_announces_while_holding() -> None:
    node = took_over(refresh=10.0)
    first = node.announces
    node.wait(35)
    assert node.announces - first == 3
    quiet = took_over(refresh=0.0)
    first = quiet.announces
    quiet.wait(35)
    assert quiet.announces == first


# =============================================================================== admin


def test_release_only_when_holding_and_then_paused() -> None:
    node = backup()
    with pytest.raises(CommandRefused, match="does not hold"):
        node.command(Verb.RELEASE)
    node = took_over()
    out = node.command(Verb.RELEASE, by="alice")
    assert of(out, Release) and not node.bound
    assert node.machine.state is State.WATCHING and node.machine.paused
    released = node.last(K.RELEASED)
    assert "alice" in released.reason and "minisft resume" in released.reason
    assert released.state == "watching (paused)"
    node.lan.run(120)  # the address is free, but a released node does not take it back
    assert node.bind_count() == 1 and not node.machine.wants_looksalive


def test_claim_probes_then_binds() -> None:
    lan = Lan(holder=None)
    node = lan.add(make_config(Role.BACKUP))
    node.start()
    out = node.command(Verb.CLAIM, by="bob")
    assert of(out, StartProbe) and not of(out, Bind)
    assert node.machine.purpose is Purpose.CLAIM
    node.settle()
    assert node.machine.state is State.HOLDING
    assert node.last(K.CLAIMED).details["phase"] == "claim"
    with pytest.raises(AlreadyDone, match="already holds"):
        node.command(Verb.CLAIM)


def test_admin_commands_are_idempotent() -> None:
    """The manual fallback at human speed: `release` on the backup, the primary takes the
    free address over by itself, then the admin's `claim` there finds it done. Each command
    whose end state already holds says so (AlreadyDone: exit 0) and changes nothing."""
    lan = Lan(holder=None)
    backup_node = lan.add(make_config(Role.BACKUP))
    lan.run(60)
    assert backup_node.machine.state is State.HOLDING
    primary_node = lan.add(make_config(Role.PRIMARY))
    lan.run(10)  # a returning primary finds its address in use and watches
    assert primary_node.machine.state is State.WATCHING
    backup_node.command(Verb.RELEASE)
    lan.run(30)  # the admin is slow: the primary took the free address over meanwhile
    assert primary_node.machine.state is State.HOLDING
    before = _unchanged(primary_node)
    with pytest.raises(AlreadyDone, match="already holds"):
        primary_node.command(Verb.CLAIM)
    assert _unchanged(primary_node) == before
    before = _unchanged(backup_node)
    with pytest.raises(AlreadyDone, match="already released"):
        backup_node.command(Verb.RELEASE)
    assert _unchanged(backup_node) == before
    backup_node.command(Verb.RESUME)
    with pytest.raises(AlreadyDone, match="already watching"):
        backup_node.command(Verb.RESUME)
    backup_node.command(Verb.PAUSE)
    with pytest.raises(AlreadyDone, match="already paused"):
        backup_node.command(Verb.PAUSE)


def _unchanged(node: Node) -> dict[str, object]:
    snap = node.machine.snapshot()
    snap.pop("seconds_since_change")
    return snap


def test_release_of_an_address_held_elsewhere_is_still_refused() -> None:
    """Idempotent is not lax: `release` on a node that watches (wrong node?) is refused."""
    node = backup()
    with pytest.raises(CommandRefused, match="does not hold"):
        node.command(Verb.RELEASE)


def test_claim_refused_while_busy() -> None:
    node = single(make_config(Role.PRIMARY))  # start-up probe running
    with pytest.raises(CommandRefused, match="busy"):
        node.command(Verb.CLAIM)
    node.probe_done(None)  # binding
    with pytest.raises(CommandRefused, match="busy"):
        node.command(Verb.CLAIM)


def test_claim_of_an_address_in_use_does_not_bind() -> None:
    node = backup()
    node.command(Verb.CLAIM)
    node.probe_done()
    assert node.bind_count() == 0 and node.machine.state is State.WATCHING
    notice = node.last(K.ADDRESS_IN_USE)
    assert "claim refused" in notice.reason and notice.details["phase"] == "claim"


def test_claim_refused_while_the_link_is_down() -> None:
    """Bug fix: a claim with the link down probed a dead wire and bound blind."""
    lan = Lan(holder=Host())
    node = lan.add(make_config(Role.BACKUP))
    node.start()
    node.link(False)
    with pytest.raises(CommandRefused, match="link is down"):
        node.command(Verb.CLAIM)
    assert node.probe is None and node.bind_count() == 0


def test_claim_resumes_a_paused_node() -> None:
    node = took_over()
    node.command(Verb.RELEASE)
    node.command(Verb.CLAIM)
    assert not node.machine.paused
    node.settle()
    assert node.machine.state is State.HOLDING


def test_pause_and_resume() -> None:
    node = backup()
    node.command(Verb.PAUSE, by="carol")
    assert node.machine.paused and not node.machine.wants_looksalive
    assert "carol" in node.last(K.PAUSED).reason
    with pytest.raises(AlreadyDone, match="already paused"):
        node.command(Verb.PAUSE)
    assert node.lan.holder is not None
    node.lan.holder.has_address = False
    for _ in range(5):
        assert node.ping(False) == []  # results in flight are dropped
    node.wait(30)
    assert node.bind_count() == 0
    node.command(Verb.RESUME)
    assert node.kinds()[-1] is K.RESUMED and node.machine.looks.misses == 0
    with pytest.raises(AlreadyDone, match="already watching"):
        node.command(Verb.RESUME)
    node.lan.run(30)
    assert node.machine.state is State.HOLDING  # watching again: the free address is taken


def test_pause_while_holding_keeps_the_address() -> None:
    node = took_over()
    out = node.command(Verb.PAUSE)
    assert not of(out, Release) and node.machine.state is State.HOLDING
    assert "stays bound" in node.last(K.PAUSED).reason


def test_pause_during_the_last_probe_round_cancels_the_takeover() -> None:
    node = backup()
    assert node.lan.holder is not None
    node.lan.holder.has_address = False
    for _ in range(3):
        node.ping(False)
    assert node.machine.state is State.PROBING
    assert node.probe is not None
    token = node.probe.token
    out = node.command(Verb.PAUSE)
    assert CancelProbe(token, node.machine.address) in out
    assert state(node) is State.WATCHING
    node.stale_probe_done(None)
    assert node.bind_count() == 0


@pytest.mark.parametrize("verb", list(Verb))
def test_commands_while_starting_are_refused_with_a_reason(verb: Verb) -> None:
    node = single(make_config(Role.BACKUP), start=False)
    with pytest.raises(CommandRefused) as info:
        node.command(verb)
    assert str(info.value).startswith("web: ") and len(str(info.value)) > 10


# =============================================================================== fallback


def fallback_backup(**kw: object) -> Node:
    """A backup in auto fallback mode that took over from a dead primary."""
    kw.setdefault("peer_ip", "192.0.2.1")
    kw.setdefault("fallback", FallbackMode.AUTO)
    node = took_over(**kw)
    node.lan.peer = Host(mac="02:00:00:00:00:01")  # the primary's host: up, service up
    return node


def peer_up_for(node: Node, seconds: float, every: float = 3.0) -> None:
    """The peer answers every `every` seconds for `seconds`, with ticks in between."""
    end = node.lan.now + seconds
    while node.lan.now < end - 1e-9:
        node.peer_ping(True)
        node.wait(every)


def test_auto_fallback_after_hold_down() -> None:
    node = fallback_backup(hold_down=60.0)
    peer_up_for(node, 57)
    assert node.releases == 0
    up = node.last(K.PEER_UP)
    assert "automatic fallback" in up.reason and "60s" in up.reason
    peer_up_for(node, 6)
    assert node.releases == 1 and node.machine.state is State.WATCHING
    fallback = node.last(K.FALLBACK)
    assert "hold-down 60s" in fallback.reason
    assert node.machine.counters.fallbacks == 1


def test_any_peer_miss_restarts_the_hold_down() -> None:
    node = fallback_backup(hold_down=60.0)
    peer_up_for(node, 45)
    node.peer_ping(False)
    peer_up_for(node, 45)
    assert node.releases == 0
    peer_up_for(node, 18)
    assert node.releases == 1


def test_no_retakeover_during_grace_then_suspended_fallback() -> None:
    node = fallback_backup(hold_down=30.0)
    peer_up_for(node, 33)
    assert node.releases == 1
    fell = next(s.at for s in node.trace if any(isinstance(a, Release) for a in s.actions))
    grace_end = fell + node.machine.fallback_grace
    # the primary never claims the address: nobody answers
    node.lan.run(grace_end - node.lan.now - 0.5)
    assert node.machine.state is not State.HOLDING and node.bind_count() == 1
    assert node.machine.looks.health is Health.DOWN
    node.lan.run(20)
    retake = [s for s in node.trace if s.binds][-1]
    assert retake.at >= grace_end
    assert state(node) is State.HOLDING
    assert "suspended" in node.last(K.TAKEOVER).reason
    # the peer host stays up for far longer than the hold-down: no ping-pong
    peer_up_for(node, 120)
    assert node.releases == 1
    assert "suspended" in node.last(K.PEER_UP).reason
    # the peer goes down and comes back: automatic fallback again
    for _ in range(node.config.looksalive.retry):
        node.peer_ping(False)
    assert K.PEER_DOWN in node.kinds()
    peer_up_for(node, 33)
    assert node.releases == 2


def test_primary_claiming_after_fallback_is_watched() -> None:
    node = fallback_backup(hold_down=30.0)
    peer_up_for(node, 33)
    assert node.lan.holder is not None
    node.lan.holder.has_address = True  # the primary claims it
    node.lan.run(120)
    assert node.machine.state is State.WATCHING and node.bind_count() == 1
    assert node.machine.holder == "other"


def test_flapping_peer_never_causes_a_release() -> None:
    node = fallback_backup(hold_down=30.0)
    for _ in range(20):
        peer_up_for(node, 24)
        node.peer_ping(False)
        node.wait(3)
    assert node.releases == 0 and node.machine.state is State.HOLDING


def test_peer_isalive_is_required_when_configured() -> None:
    node = fallback_backup(hold_down=30.0, check="http")
    node.peer_ping(True)
    assert node.machine.wants_peer_isalive
    for _ in range(30):
        node.peer_ping(True)
        node.peer_service(False)
        node.wait(3)
    assert node.releases == 0
    node.peer_service(True)
    peer_up_for(node, 33)
    assert node.releases == 1
    assert "LooksAlive and IsAlive" in node.last(K.FALLBACK).reason


def test_manual_fallback_never_releases() -> None:
    node = took_over(peer_ip="192.0.2.1", fallback=FallbackMode.MANUAL)
    peer_up_for(node, 600, every=6.0)
    assert node.releases == 0
    reason = node.last(K.PEER_UP).reason
    assert "fallback is manual" in reason
    assert "`minisft switchover web` on the peer" in reason, reason  # the no-outage way


def test_peer_is_watched_only_by_a_holding_backup() -> None:
    node = fallback_backup()
    assert node.machine.wants_peer_watch
    node.command(Verb.PAUSE)
    assert not node.machine.wants_peer_watch
    watcher = backup(peer_ip="192.0.2.1", fallback=FallbackMode.AUTO)
    assert not watcher.machine.wants_peer_watch
    assert watcher.peer_ping(True) == []


# =============================================================================== stale / illegal


def test_stale_probe_result_is_ignored() -> None:
    node = backup()
    node.ping(False)  # probe 1
    node.ping(True)  # cancels it
    assert node.stale_probe_done(None) == []
    assert node.machine.state is State.WATCHING and node.machine.looks.misses == 0


def test_stale_probe_result_while_holding_is_ignored() -> None:
    node = took_over()
    assert node.stale_probe_done(HOLDER_MAC) == []
    assert node.machine.state is State.HOLDING


def test_stale_bind_result_is_ignored() -> None:
    node = took_over()
    node.command(Verb.RELEASE)
    node.command(Verb.CLAIM)
    node.probe_done(None)
    assert node.machine.state is State.BINDING
    assert node.stale_bind_done("boom") == []
    assert node.machine.state is State.BINDING
    node.bind_done()
    assert state(node) is State.HOLDING


@pytest.mark.parametrize(
    ("setup", "event"),
    [
        ("watching", BindDone(1)),
        ("starting", ProbeDone(1, None)),
        ("starting", BindDone(1)),
        ("starting", PingResult(True, 0.001)),
        ("starting", ConflictSeen(INTRUDER_MAC)),
        ("watching", Started(False)),
        ("holding", Started(True)),
        ("holding", BindDone(2)),
    ],
)
def test_illegal_inputs_raise_and_change_nothing(setup: str, event: Input) -> None:
    if setup == "starting":
        node = single(make_config(), start=False)
    elif setup == "watching":
        node = backup()
    else:
        node = took_over()
    before = node.machine.snapshot()
    with pytest.raises(IllegalInput, match=type(event).__name__):
        node.feed(event)
    assert node.machine.snapshot() == before


def test_starting_accepts_ticks_and_link_changes() -> None:
    node = single(make_config(), start=False)
    assert node.feed(Tick()) == []
    node.feed(LinkChanged(False))
    assert node.machine.state is State.STARTING and not node.machine.link_up


# =============================================================================== events


def test_every_event_names_monitor_address_state_and_reason() -> None:
    lan = Lan(holder=Host())
    b = lan.add(make_config(Role.BACKUP, peer_ip="192.0.2.1", fallback=FallbackMode.AUTO,
                            hold_down=10, check="http"))
    p = lan.add(make_config(Role.PRIMARY, name="web"))
    lan.run(20)
    assert lan.holder is not None
    lan.holder.has_address = False
    lan.run(30)
    lan.set_link(b, False)
    lan.run(5)
    lan.set_link(b, True)
    lan.partitioned = True
    lan.run(30)
    lan.partitioned = False
    lan.run(40)
    for node in (b, p):
        node.command(Verb.PAUSE)
        node.command(Verb.RESUME)
        if node.machine.holds:
            node.feed(Command(Verb.RELEASE))
    notices = b.notices + p.notices
    assert len({n.kind for n in notices}) >= 10
    for n in notices:
        assert n.monitor == "web" and n.address == "192.0.2.10"
        assert n.state and n.state.split(" ")[0] in {s.value for s in State}
        assert n.reason.strip()


def test_snapshot_is_json_and_tells_who_holds_it() -> None:
    node = backup()
    snap = node.machine.snapshot()
    json.dumps(snap)
    assert snap["holder"] == "other" and snap["looksalive"]["health"] == "up"
    node2 = took_over()
    assert node2.machine.snapshot()["holder"] == "self"
    fresh = single(make_config(startup_grace=0.0), holder=Host(has_address=False))
    fresh.misses(3)
    fresh.machine.handle(ServiceResult(True), fresh.lan.now)  # ignored, legal
    assert fresh.machine.snapshot()["holder"] in ("none", "self")
    # a backup in its start-up grace has not judged the address yet: its primary may be
    # binding it right now
    booting = single(make_config(), holder=Host(has_address=False))
    booting.misses(3)
    snap = booting.machine.snapshot()
    assert snap["holder"] == "unknown" and "start-up grace" in snap["reason"]


def test_a_primary_that_claimed_then_died_does_not_suspend_auto_fallback() -> None:
    node = fallback_backup(hold_down=30.0)
    peer_up_for(node, 33)
    assert node.releases == 1
    assert node.lan.holder is not None
    node.lan.holder.has_address = True  # the primary claims it: pings answer
    node.lan.run(5)
    node.lan.holder.has_address = False  # ...then dies soon after, within 2 x grace
    node.lan.run(10)
    assert state(node) is State.HOLDING and node.machine.counters.takeovers == 2
    assert "suspended" not in node.last(K.TAKEOVER).reason
    peer_up_for(node, 33)
    assert node.releases == 2, "automatic fallback must still work after a real failover"


def test_a_service_alarm_is_closed_when_the_address_moves_here() -> None:
    node = single(make_config(check="http", isalive_retry=2), holder=Host())
    node.ping()
    node.service(False)
    node.service(False)
    assert node.count(K.SERVICE_DEAD) == 1
    assert node.lan.holder is not None
    node.lan.holder.has_address = False  # now the whole host dies
    node.lan.run(15)
    assert state(node) is State.HOLDING
    kinds = node.kinds()
    assert kinds.index(K.SERVICE_RECOVERED) > kinds.index(K.SERVICE_DEAD)
    assert "moved to this node" in node.last(K.SERVICE_RECOVERED).reason


def lossy_history(node: Node, rounds: int = 60) -> None:
    """A live holder behind a path that loses one ping in three (ARP answers each time)."""
    for _ in range(rounds):
        node.ping(True)
        node.ping(True)
        node.misses(1)
    node.ping(True)


def unanswered_rounds_before_bind(node: Node, since: int) -> int:
    """Run the outstanding probes until the node binds; count the unanswered rounds."""
    while not node.bind_count():
        assert node.probe is not None, node.machine.reason
        node.probe_done()
    return sum(1 for step in node.trace[since:]
               if isinstance(step.event, ProbeDone) and step.event.answered_by is None)


@pytest.mark.parametrize(("lossy", "rounds"), [(False, 1), (True, 4)])
def test_a_dead_holder_behind_a_lossy_path_needs_more_unanswered_probe_rounds(
        lossy: bool, rounds: int) -> None:
    """At a third of pings lost a live holder misses a whole 3-probe round 3.7% of the
    time: a takeover then needs 4 unanswered rounds in a row (3.7% ** 4 < 1e-5)."""
    node = backup(interval=0.05, timeout=0.017)
    if lossy:
        lossy_history(node)
    assert node.lan.holder is not None
    node.lan.holder.has_address = False
    died = len(node.trace)
    for _ in range(node.config.looksalive.retry):
        node.ping()  # unanswered; the probe round started at the first miss runs on
    assert node.machine.probe_rounds_needed == rounds
    assert unanswered_rounds_before_bind(node, died) == rounds
    node.bind_done()
    assert K.TAKEOVER in node.kinds() and node.machine.holds


def test_one_lost_probe_round_on_a_lossy_path_does_not_take_over_a_live_holder() -> None:
    node = backup(interval=0.05, timeout=0.017)
    lossy_history(node)
    for _ in range(node.config.looksalive.retry):
        node.ping(False)
    assert node.probe is not None
    node.probe_done(None)  # every probe of the round lost, as 20% loss each way can do
    assert node.machine.state is State.PROBING and node.bind_count() == 0
    node.ping(True)  # the holder was alive all along
    assert node.machine.state is State.WATCHING and node.bind_count() == 0
