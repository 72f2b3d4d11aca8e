"""The etcd pool's decisions (`EtcdPoolMachine`) in simulated time: no etcd, no asyncio.

`World` plays etcd and the interface for one member: it answers every action at once
(claims win unless told otherwise, probes find nobody, binds work) and keeps what is
bound, so a test reads what a user would see: which addresses are on the interface, when
they left, which events went out and why.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from minisft.config.model import (
    CoordinationBackend,
    CoordinationConfig,
    FallbackConfig,
    FallbackMode,
    PoolConfig,
    PoolMemberConfig,
)
from minisft.core.actions import Bind, BindDone, Emit, IllegalInput, ProbeDone, StartProbe
from minisft.core.edges import IllegalTransition
from minisft.core.events import EventKind, Notice
from minisft.pools.actions import LinkChanged, Rebalance, Started, Tick
from minisft.pools.etcd_definition import encode_definition
from minisft.pools.etcd_machine import (
    EDGES,
    AddressChecked,
    AddressRemoved,
    AnnounceAddress,
    Announced,
    CheckAddress,
    ClaimOwnerKey,
    DefinitionPut,
    DeleteOwnerKey,
    EtcdAction,
    EtcdInput,
    EtcdPoolMachine,
    FenceReleased,
    ForgetAddress,
    LeaseGranted,
    LeaseRenewed,
    MemberDeleted,
    MemberPut,
    MemberRecord,
    MoveOwnerKey,
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
    ReplaceOwnerKey,
    SessionOpened,
    Watched,
)
from minisft.pools.formula import assign

TTL = 3
ENDPOINT = "http://192.0.2.250:2379"
ADDRESSES = ("192.0.2.10/24", "192.0.2.11/24", "192.0.2.12/24", "192.0.2.13/24")
LEASES = {"a": 0xA, "b": 0xB, "c": 0xC}


def pool(fallback: FallbackConfig | None = None) -> PoolConfig:
    return PoolConfig(
        name="front",
        members=tuple(PoolMemberConfig(n, ipaddress.ip_address(f"192.0.2.{i}"))
                      for i, n in enumerate("abc", start=1)),
        addresses=tuple(ipaddress.ip_interface(a) for a in ADDRESSES),
        fallback=fallback or FallbackConfig(),
        coordination=CoordinationConfig(backend=CoordinationBackend.ETCD,
                                        endpoints=(ENDPOINT,), ttl=TTL),
    )


def ip(address: str) -> str:
    return address.split("/")[0]


def formula(p: PoolConfig, members: list[str]) -> dict[str, str]:
    weights = {m.name: m.weight for m in p.members}
    return assign(list(ADDRESSES), {m: weights[m] for m in members}, {}, weights,
                  pool=p.name)


class World:
    """etcd and the interface around member `node`'s machine, answering at once."""

    def __init__(self, p: PoolConfig, node: str = "a") -> None:
        self.pool = p
        self.node = node
        self.lease = LEASES[node]
        self.now = 0.0
        self.m = EtcdPoolMachine(p, node, now=0.0)
        self.renewing = True
        self.last_renewal = 0.0
        self.claims_win = True
        self.move: bool | str = True  # a switchover's transaction: won, lost, or this error
        self.probe_answer: str | None = None
        self.revision = 100
        self.bound: set[str] = set()
        self.log: list[tuple[float, EtcdAction]] = []
        self.held_back: list[EtcdAction] = []  # actions left unanswered (answer=False)
        self.answer = True

    # ------------------------------------------------------------- driving

    def feed(self, event: EtcdInput) -> None:
        for action in self.m.handle(event, self.now):
            self.log.append((self.now, action))
            if self.answer:
                self._answer(action)
            else:
                self.held_back.append(action)

    def _answer(self, a: EtcdAction) -> None:
        if isinstance(a, ClaimOwnerKey):
            if not self.claims_win:  # b created the key first: its put reaches the watch
                self.watch(OwnerPut(OwnerRecord(ip(a.address), "b", LEASES["b"],
                                                self.revision + 1)))
            self.revision += 1
            self.feed(OwnerKeyWon(a.token, self.claims_win,
                                  self.revision if self.claims_win else None))
        elif isinstance(a, ReplaceOwnerKey):
            self.feed(OwnerKeyWon(a.token, True))
        elif isinstance(a, MoveOwnerKey):
            if isinstance(self.move, str):
                self.feed(OwnerKeyWon(a.token, error=self.move))
                return
            if self.move:  # the put reaches the watch too
                self.watch(OwnerPut(OwnerRecord(ip(a.address), self.node, self.lease,
                                                a.create_revision, a.taken_from, a.taken_by)))
            self.feed(OwnerKeyWon(a.token, self.move))
        elif isinstance(a, StartProbe):
            self.feed(ProbeDone(a.token, self.probe_answer))
        elif isinstance(a, ReadOwnerKey):
            self.feed(OwnerKeyRead(a.token, OwnerRecord(ip(a.address), self.node,
                                                        self.lease, self.revision)))
        elif isinstance(a, Bind):
            self.bound.add(a.address)
            self.feed(BindDone(a.token))
        elif isinstance(a, AnnounceAddress):
            self.feed(Announced(a.token))
        elif isinstance(a, RemoveAddress):
            self.bound.discard(a.address)
            self.feed(AddressRemoved(a.token))
        elif isinstance(a, DeleteOwnerKey):
            self.feed(OwnerKeyDeleted(a.token))
        elif isinstance(a, CheckAddress):
            self.feed(AddressChecked(a.token, a.address in self.bound))
        elif isinstance(a, ReleaseEverything):
            self.bound -= set(a.addresses)
            self.feed(FenceReleased(a.token))

    def advance(self, seconds: float) -> None:
        """Let time pass in ticks of 0.1 s; the lease is renewed every ttl/6 while
        `renewing`."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + 0.1, 6)
            if self.renewing and self.now - self.last_renewal >= TTL / 6 - 1e-9:
                self.last_renewal = self.now
                self.feed(LeaseRenewed(self.lease, self.now, ENDPOINT))
            self.feed(Tick())

    def start(self, members: tuple[str, ...] = (), owners: dict[str, str] | None = None,
              ) -> None:
        """Started, lease granted, and the first read: `members` registered besides this
        one, `owners` (address -> member) holding owner keys."""
        self.feed(Started(frozenset()))
        self.feed(SessionOpened())
        self.feed(LeaseGranted(self.lease, self.now, ENDPOINT))
        self.last_renewal = self.now
        records = tuple(MemberRecord(n, LEASES[n]) for n in (self.node, *members))
        self.feed(ReadDone(self.revision, records, tuple(
            OwnerRecord(ip(k), n, LEASES[n], 50) for k, n in (owners or {}).items())))

    def watch(self, *changes: object) -> None:
        for change in changes:
            self.revision += 1
            self.feed(Watched(self.revision, change))  # type: ignore[arg-type]

    # ------------------------------------------------------------- reading

    def events(self, kind: EventKind) -> list[tuple[float, Notice]]:
        return [(t, a.notice) for t, a in self.log
                if isinstance(a, Emit) and a.notice.kind is kind]

    def actions(self, kind: type, since: float = -1.0) -> list[tuple[float, EtcdAction]]:
        return [(t, a) for t, a in self.log if isinstance(a, kind) and t >= since]


def holding(w: World, addresses: list[str]) -> None:
    """The world answers: `w` holds `addresses` in etcd and on its interface."""
    for k in addresses:
        w.watch(OwnerPut(OwnerRecord(ip(k), w.node, w.lease, w.revision)))


# ====================================================================== fencing


def test_a_lease_not_renewed_for_two_thirds_of_the_ttl_releases_everything_first() -> None:
    w = World(pool())
    w.start()
    w.advance(TTL + 0.5)  # past the cold start's window: a alone takes every address
    assert w.bound == set(ADDRESSES)
    renewed = w.last_renewal
    w.renewing = False  # etcd unreachable from here on
    w.advance(TTL * 2 / 3 - 0.15)
    assert w.bound == set(ADDRESSES), "released before the fence deadline"
    assert w.m.phase is Phase.ACTIVE
    w.advance(0.3)
    assert not w.bound, "still bound after two thirds of the TTL without a renewal"
    assert w.m.phase is Phase.FENCED
    [(at, lost)] = w.events(EventKind.LEASE_LOST)
    assert at - renewed < TTL, "released after the lease could have expired"
    assert "no etcd keepalive" in lost.reason and "released" in lost.reason
    assert lost.details["released"] == len(ADDRESSES)
    assert lost.details["released_after"] < TTL


def test_a_fenced_member_takes_nothing_even_when_addresses_fall_free() -> None:
    w = World(pool())
    w.start(members=("b",), owners={ADDRESSES[0]: "b"})  # a running pool: no window
    w.renewing = False
    w.advance(TTL)
    assert w.m.phase is Phase.FENCED
    fenced_at = w.now
    # b dies: its member key and owner key go; the formula now gives a everything
    w.watch(MemberDeleted("b"), OwnerDeleted(ip(ADDRESSES[0])))
    w.advance(1.0)
    assert not w.actions(ClaimOwnerKey, since=fenced_at)
    assert not w.actions(Bind, since=fenced_at)
    assert not w.bound
    # renewed again: the member takes part again and takes what the formula gives it
    w.renewing = True
    w.advance(1.0)
    assert w.m.phase is Phase.ACTIVE
    assert w.events(EventKind.REJOINED)
    assert w.bound == set(ADDRESSES)


# ====================================================================== transactions


def test_losing_the_owner_key_transaction_binds_nothing() -> None:
    w = World(pool())
    w.claims_win = False  # another member creates each key first
    w.start(members=("b",), owners={ADDRESSES[0]: "b"})
    w.advance(2.0)
    assert w.actions(ClaimOwnerKey), "the formula gives a some address: it must try"
    assert not w.actions(StartProbe) and not w.actions(Bind)
    assert not w.bound
    assert not w.events(EventKind.CLAIMED)


def test_a_probe_answer_gives_the_won_key_back_and_binds_nothing() -> None:
    w = World(pool())
    w.probe_answer = "02:00:00:00:00:99"
    w.start(members=("b",), owners={ADDRESSES[0]: "b"})
    w.advance(0.2)
    assert not w.bound
    conflicts = w.events(EventKind.ADDRESS_CONFLICT)
    assert conflicts and "02:00:00:00:00:99" in conflicts[0][1].reason
    given_back = {a.address for _, a in w.actions(DeleteOwnerKey)}
    assert given_back == {n.address for _, n in conflicts}


def test_a_key_that_changed_hands_during_the_probe_is_not_bound() -> None:
    w = World(pool())
    w.answer = False  # answer the steps by hand
    w.start(members=("b",), owners={ADDRESSES[0]: "b"})
    [claim] = [a for a in w.held_back if isinstance(a, ClaimOwnerKey)][:1]
    w.held_back.clear()
    w.feed(OwnerKeyWon(claim.token, True, 200))
    [probe] = [a for a in w.held_back if isinstance(a, StartProbe)]
    w.feed(ProbeDone(probe.token, None))
    [confirm] = [a for a in w.held_back if isinstance(a, ReadOwnerKey)]
    # the key is now b's (our lease expired and b won it meanwhile)
    w.feed(OwnerKeyRead(confirm.token, OwnerRecord(ip(claim.address), "b", LEASES["b"], 300)))
    assert not [a for a in w.held_back if isinstance(a, Bind)]


def test_a_stale_result_after_a_fence_is_ignored() -> None:
    w = World(pool())
    w.answer = False  # the claims get no answer before the fence
    w.start(members=("b",), owners={ADDRESSES[0]: "b"})
    claims = [a for a in w.held_back if isinstance(a, ClaimOwnerKey)]
    assert claims
    w.answer = True
    w.renewing = False
    w.advance(TTL)  # fenced meanwhile: the claims under way were dropped
    assert w.m.phase is Phase.FENCED
    for action in claims:  # etcd answers late: the keys were won
        w.feed(OwnerKeyWon(action.token, True, 999))
    assert not w.actions(StartProbe) and not w.actions(Bind) and not w.bound


# ====================================================================== cold start


def test_a_cold_start_places_by_the_formula_over_every_member_of_the_window() -> None:
    p = pool()
    w = World(p)
    w.start()  # nobody owns anything: a cold start, a waits one TTL
    w.advance(0.5)
    w.watch(MemberPut(MemberRecord("b", LEASES["b"])))
    w.advance(0.5)
    w.watch(MemberPut(MemberRecord("c", LEASES["c"])))
    w.advance(TTL - 1.0 - 0.2)
    assert not w.actions(ClaimOwnerKey), "took an address inside the startup window"
    w.advance(0.5)
    mine = {k for k, n in formula(p, ["a", "b", "c"]).items() if n == "a"}
    assert 0 < len(mine) < len(ADDRESSES)
    assert w.bound == mine
    assert not w.events(EventKind.MEMBER_BACK), "members of the window are not 'back'"


def test_a_member_registering_after_the_window_waits_for_its_hold_down() -> None:
    p = pool(FallbackConfig(FallbackMode.AUTO, hold_down=5.0))
    w = World(p)
    w.start()
    w.advance(TTL + 0.5)
    assert w.bound == set(ADDRESSES)  # alone after the window
    w.watch(MemberPut(MemberRecord("b", LEASES["b"])))
    holding(w, sorted(w.bound))
    [(back_at, back)] = w.events(EventKind.MEMBER_BACK)
    assert "after 5s" in back.reason
    w.advance(4.5)
    assert w.bound == set(ADDRESSES), "handed over before the hold-down"
    w.advance(1.0)
    bs = {k for k, n in formula(p, ["a", "b"]).items() if n == "b"}
    assert bs and w.bound == set(ADDRESSES) - bs
    released = w.events(EventKind.RELEASED)
    assert {n.address for _, n in released} == bs
    assert all(t - back_at >= 5.0 for t, _ in released)
    assert all("handed over to b" in n.reason for _, n in released)
    # break-before-make: the address leaves the interface, then its key goes
    for k in bs:
        removed = next(i for i, (_, a) in enumerate(w.log)
                       if isinstance(a, RemoveAddress) and a.address == k)
        deleted = next(i for i, (_, a) in enumerate(w.log)
                       if isinstance(a, DeleteOwnerKey) and a.address == k)
        assert removed < deleted


def test_manual_fallback_keeps_the_addresses_until_a_rebalance() -> None:
    p = pool(FallbackConfig(FallbackMode.MANUAL, hold_down=1.0))
    w = World(p)
    w.start()
    w.advance(TTL + 0.5)
    w.watch(MemberPut(MemberRecord("b", LEASES["b"])))
    holding(w, sorted(w.bound))
    w.advance(10.0)
    assert w.bound == set(ADDRESSES), "manual fallback handed over without an admin"
    w.feed(Rebalance("admin"))
    bs = {k for k, n in formula(p, ["a", "b"]).items() if n == "b"}
    assert w.bound == set(ADDRESSES) - bs
    assert all("rebalance by admin" in n.reason for _, n in w.events(EventKind.RELEASED))


# ====================================================================== switchover


def returned(fallback: FallbackMode = FallbackMode.MANUAL) -> tuple[World, set[str]]:
    """`a` back in a running pool where `b` holds every address (after a's failover),
    manual fallback: a takes nothing by itself; and the addresses the formula gives a."""
    p = pool(FallbackConfig(fallback, hold_down=1.0))
    w = World(p)
    w.start(members=("b",), owners=dict.fromkeys(ADDRESSES, "b"))
    w.advance(2.0)
    assert w.bound == set(), "manual fallback took addresses back without an admin"
    return w, {k for k, n in formula(p, ["a", "b"]).items() if n == "a"}


def test_a_rebalance_takes_the_addresses_make_before_break() -> None:
    w, mine = returned()
    w.feed(Rebalance("cli"))
    answer = w.m.last_rebalance
    assert answer is not None and answer.ok, answer
    assert set(answer.taking) == mine and mine
    assert w.bound == mine
    assert not w.actions(StartProbe), "the holder is known: no probe"
    for k in mine:
        # bound, then announced and the owner key moved; nothing removed on the way
        order = [type(a) for _, a in w.log if getattr(a, "address", None) == k]
        assert order.index(Bind) < order.index(AnnounceAddress) < order.index(MoveOwnerKey)
        assert RemoveAddress not in order
        move = next(a for _, a in w.actions(MoveOwnerKey) if a.address == k)
        assert (move.lease, move.create_revision, move.taken_from, move.taken_by) == (
            LEASES["a"], 50, "b", "cli")
    switched = w.events(EventKind.SWITCHOVER)
    assert {n.address for _, n in switched} == mine
    assert all("took it from b make-before-break (rebalance by cli)" in n.reason
               for _, n in switched)
    assert w.m.counters.switchovers == len(mine)
    assert all(w.m.owners[k].member == "a" for k in mine)
    w.advance(TTL * 2)
    assert w.bound == mine, "the switched addresses are kept"


def test_a_lost_switchover_transaction_releases_the_copy_at_once() -> None:
    w, mine = returned()
    w.move = False  # the key changed before the move (b lost it, another member took it)
    w.feed(Rebalance("cli"))
    assert w.bound == set()
    failed = w.events(EventKind.TAKEOVER_FAILED)
    assert {n.address for _, n in failed} == mine
    assert all("switchover from b failed" in n.reason and "released the copy" in n.reason
               for _, n in failed)
    assert not w.events(EventKind.SWITCHOVER)
    assert not w.actions(DeleteOwnerKey), "the key is not ours: not deleted"


def test_an_unanswered_switchover_transaction_releases_the_copy_at_once() -> None:
    w, mine = returned()
    w.move = "etcd: deadline exceeded"
    w.feed(Rebalance("cli"))
    assert w.bound == set()
    assert all("etcd did not answer" in n.reason
               for _, n in w.events(EventKind.TAKEOVER_FAILED))
    assert len(w.events(EventKind.TAKEOVER_FAILED)) == len(mine)


def test_a_fence_during_the_switchover_releases_the_copy() -> None:
    w, mine = returned()
    w.answer = False  # the transaction hangs
    w.feed(Rebalance("cli"))
    binds = [a for a in w.held_back if isinstance(a, Bind)]
    assert {a.address for a in binds} == mine
    w.answer = True
    for a in binds:
        w.bound.add(a.address)
        w.feed(BindDone(a.token))
    w.answer = False
    w.renewing = False
    w.advance(TTL * 2 / 3 + 0.2)
    fence = [a for a in w.held_back if isinstance(a, ReleaseEverything)]
    assert fence and mine <= set(fence[0].addresses)


@pytest.mark.parametrize("cut", ["link down", "lease not fresh", "fenced", "starting"])
def test_a_rebalance_is_refused_with_one_reason_and_binds_nothing(cut: str) -> None:
    if cut == "starting":  # a cold start: the window for the members starting together
        w = World(pool(FallbackConfig(FallbackMode.MANUAL, hold_down=1.0)))
        w.start()
        w.advance(0.5)
        expected = "waits for the members starting with it"
    else:
        w, _ = returned()
        if cut == "link down":
            w.feed(LinkChanged(False))
            expected = "link is down"
        elif cut == "lease not fresh":
            w.renewing = False
            w.advance(1.2)  # past fence_after - the transaction's deadline, not fenced yet
            assert w.m.phase is Phase.ACTIVE
            expected = "etcd lease was last renewed"
        else:
            w.renewing = False
            w.advance(TTL)
            expected = "not active"
    binds = len(w.actions(Bind))
    w.feed(Rebalance("cli"))
    answer = w.m.last_rebalance
    assert answer is not None and not answer.ok
    assert expected in answer.message and ";" not in answer.message.split(":")[0]
    assert len(w.actions(Bind)) == binds, "a refused rebalance bound something"
    assert not w.actions(MoveOwnerKey)


def test_a_holder_not_registered_under_the_keys_lease_is_not_switched_from() -> None:
    w, _ = returned()
    w.watch(MemberDeleted("b"))  # b's lease expired: its keys go with it, shortly
    w.feed(Rebalance("cli"))
    assert w.bound == set() and not w.actions(MoveOwnerKey)
    answer = w.m.last_rebalance
    assert answer is not None and not answer.ok and "not registered" in answer.message


def test_the_holder_releases_a_switched_address_as_a_switchover() -> None:
    p = pool(FallbackConfig(FallbackMode.MANUAL, hold_down=1.0))
    w = World(p)
    w.start()
    w.advance(TTL + 0.5)
    holding(w, sorted(w.bound))
    w.watch(MemberPut(MemberRecord("b", LEASES["b"])))
    w.advance(1.0)
    bs = {k for k, n in formula(p, ["a", "b"]).items() if n == "b"}
    taken, other = sorted(bs)[0], sorted(bs)[1:]
    w.watch(OwnerPut(OwnerRecord(ip(taken), "b", LEASES["b"], 200, "a", "cli")))
    assert taken not in w.bound
    switched = w.events(EventKind.SWITCHOVER)
    assert [n.address for _, n in switched] == [taken]
    assert "b took it make-before-break (rebalance by cli)" in switched[0][1].reason
    assert not w.events(EventKind.YIELDED)
    assert not [a for _, a in w.actions(DeleteOwnerKey) if a.address == taken]
    # a key that names b without the mark (b won it another way) is a plain yield
    if other:
        w.watch(OwnerPut(OwnerRecord(ip(other[0]), "b", LEASES["b"], 201)))
        assert [n.address for _, n in w.events(EventKind.YIELDED)] == [other[0]]
        assert len(w.events(EventKind.SWITCHOVER)) == 1


# ====================================================================== failover


def test_a_dead_members_addresses_move_once_etcd_deletes_its_keys() -> None:
    p = pool()
    w = World(p)
    before = formula(p, ["a", "b"])
    bs = {k: n for k, n in before.items() if n == "b"}
    w.start(members=("b",), owners=dict(bs))
    w.advance(0.5)
    mine_before = {k for k, n in before.items() if n == "a"}
    assert w.bound == mine_before
    # b's lease expires: etcd deletes its member key and its owner keys in one revision
    w.watch(MemberDeleted("b"))
    assert w.bound == mine_before, "took an address whose owner key still exists"
    w.watch(*(OwnerDeleted(ip(k)) for k in bs))
    assert w.bound == set(ADDRESSES)
    moved = w.events(EventKind.ADDRESS_MOVED)
    assert {n.address for _, n in moved} == set(bs)
    assert all(n.details["from"] == "b" and "b was lost" in n.reason for _, n in moved)
    assert w.events(EventKind.MEMBER_LOST)


def test_a_holder_that_sees_another_owner_releases_at_once() -> None:
    w = World(pool())
    w.start()
    w.advance(TTL + 0.5)
    k = ADDRESSES[0]
    w.watch(OwnerPut(OwnerRecord(ip(k), "b", LEASES["b"], 400)))
    assert k not in w.bound
    [(_, yielded)] = w.events(EventKind.YIELDED)
    assert "etcd names b as its owner" in yielded.reason
    # holding implies owning: the key is b's, a deletes nothing
    assert not [a for _, a in w.actions(DeleteOwnerKey) if a.address == k]


# ====================================================================== start-up


def test_addresses_bound_at_start_are_adopted_when_etcd_names_this_member() -> None:
    w = World(pool())
    k = ADDRESSES[0]
    w.bound.add(k)
    w.feed(Started(frozenset({k})))
    w.feed(SessionOpened())
    w.feed(LeaseGranted(w.lease, 0.0, ENDPOINT))
    # a previous boot's key (another lease) names this member: moved to the new lease
    w.feed(ReadDone(w.revision, (MemberRecord("a", w.lease), MemberRecord("b", LEASES["b"])),
                    (OwnerRecord(ip(k), "a", 0x99, 42),
                     OwnerRecord(ip(ADDRESSES[1]), "b", LEASES["b"], 43))))
    replaced = [a for _, a in w.actions(ReplaceOwnerKey)]
    assert [(a.address, a.create_revision) for a in replaced] == [(k, 42)]
    assert k in w.bound and w.events(EventKind.ADOPTED)


def test_the_read_reregisters_a_member_key_of_another_lease() -> None:
    w = World(pool())
    w.feed(Started(frozenset()))
    w.feed(LeaseGranted(w.lease, 0.0, ENDPOINT))
    w.feed(ReadDone(w.revision, (MemberRecord("a", 0x77),)))
    assert w.actions(PutMemberKey)


def test_an_address_leaving_the_definition_is_forgotten() -> None:
    p = pool()
    w = World(p)
    w.start()
    w.advance(TTL + 0.5)
    holding(w, sorted(w.bound))
    w.watch(DefinitionPut(encode_definition(replace(p, addresses=p.addresses[1:]))))
    forgotten = [a for _, a in w.actions(ForgetAddress)]
    assert [(a.address, a.held) for a in forgotten] == [(ADDRESSES[0], True)]
    assert forgotten[0].create_revision is not None  # this lease's key goes too
    assert w.events(EventKind.CONFIG_DRIFT)


# ====================================================================== the tables


def test_results_cannot_arrive_before_the_member_has_started() -> None:
    m = EtcdPoolMachine(pool(), "a", now=0.0)
    with pytest.raises(IllegalInput):
        m.handle(BindDone(1), 0.0)
    with pytest.raises(IllegalInput):
        m.handle(FenceReleased(1), 0.0)


def test_starting_is_left_for_good() -> None:
    assert all(Phase.STARTING not in targets for targets in EDGES.values())
    m = EtcdPoolMachine(pool(), "a", now=0.0)
    m.handle(LeaseGranted(LEASES["a"], 0.0, ENDPOINT), 0.0)
    assert m.phase is Phase.ACTIVE
    with pytest.raises(IllegalTransition):
        m._go(Phase.STARTING, "a bug")
    with pytest.raises(IllegalInput):
        m.handle(Started(frozenset()), 1.0)
