"""One member's decisions for a pool coordinated through etcd, as a pure state machine.

Same style as `minisft.pools.machine.PoolMachine`: no I/O, no asyncio, no etcd client;
`handle(input, now)` returns the actions to carry out, the legal inputs per phase are the
table `TRANSITIONS`, anything else raises `IllegalInput`, and every phase change is checked
against `EDGES`. `minisft.pools.etcd_backend.EtcdPoolRuntime` talks to etcd, turns what it
reads into these inputs (parsed and typed: no etcd key or JSON value reaches the machine)
and carries out the actions; the rules themselves are described there.

An address is worked on by at most one operation at a time (`ops`): taking it (claim the
owner key, probe, confirm the key, bind, announce), adopting it, handing it over, ... Each
step is an action with a `token`; its result carries the token back, and a result whose
token is not the operation's current one (the operation was dropped by a fence, or the
address left the pool) is stale and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from minisft.config.model import FallbackMode, IPInterface, PoolConfig
from minisft.core.actions import (
    Bind,
    BindDone,
    Emit,
    IllegalInput,
    OnProber,
    ProbeDone,
    StartProbe,
)
from minisft.core.edges import check_edge
from minisft.core.events import EventKind, Notice, Severity
from minisft.pools.actions import (
    AddressGone,
    LinkChanged,
    Rebalance,
    RebalanceAnswer,
    Started,
    Tick,
)
from minisft.pools.counters import AddressCounters
from minisft.pools.etcd_definition import (
    decode_definition,
    definition_digest,
    definition_of,
    differences,
)
from minisft.pools.formula import assign, home
from minisft.pools.machine import ANNOUNCE, PROBE
from minisft.pools.placement import HolderHistory, placement
from minisft.status import PoolAddressStatus

WAKE = 0.5  # a Tick re-runs the decisions this often: hold-down and retry timers

# ====================================================================== state


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
    # written by a switchover's MoveOwnerKey: the member it was taken from, and who asked
    taken_from: str | None = None
    taken_by: str | None = None


@dataclass
class Counters(AddressCounters):
    adoptions: int = 0  # addresses found bound at start-up and confirmed by etcd
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


# ====================================================================== inputs

# What etcd holds, parsed by the runtime: a member key and an owner key.


@dataclass(frozen=True)
class MemberRecord:
    """``P/members/<name>``: a live member under its lease (state "alive" or "leaving")."""

    name: str
    lease: int
    state: str = "alive"
    digest: str | None = None  # its local config's definition digest


@dataclass(frozen=True)
class OwnerRecord:
    """``P/owners/<ip>``: the owner of an address (`ip` bare, as in the key)."""

    ip: str
    member: str  # "?" when the value does not name one
    lease: int
    create_revision: int
    # a switchover's key: the member it was taken from (released make-before-break), and
    # who asked for the rebalance
    taken_from: str | None = None
    taken_by: str | None = None


@dataclass(frozen=True)
class SessionOpened:
    """A session to an endpoint is being opened (counted in the status)."""


@dataclass(frozen=True)
class SessionLost:
    """The session failed (`error` says why): the caches no longer follow etcd."""

    error: str


@dataclass(frozen=True)
class LeaseGranted:
    lease: int
    sent_at: float  # clock time the grant request was sent
    endpoint: str


@dataclass(frozen=True)
class LeaseRenewed:
    """A keepalive of `lease`, sent at `sent_at`, was answered: the lease lives."""

    lease: int
    sent_at: float
    endpoint: str


@dataclass(frozen=True)
class LeaseExpired:
    """A keepalive of `lease` was answered with TTL 0: etcd expired it (its keys are gone)."""

    lease: int


@dataclass(frozen=True)
class RenewalFailed:
    """A keepalive got no answer; `error` is recorded as the session's last error (None:
    the caller records its own)."""

    error: str | None = None


@dataclass(frozen=True)
class DefinitionRead:
    """The pool definition key's value (written by this member, or found there)."""

    raw: bytes


@dataclass(frozen=True)
class ReadDone:
    """A full read of the pool's keys, as of etcd revision `revision`."""

    revision: int
    members: tuple[MemberRecord, ...] = ()
    owners: tuple[OwnerRecord, ...] = ()
    definition: bytes | None = None


@dataclass(frozen=True)
class MemberPut:
    record: MemberRecord


@dataclass(frozen=True)
class MemberDeleted:
    name: str


@dataclass(frozen=True)
class OwnerPut:
    record: OwnerRecord


@dataclass(frozen=True)
class OwnerDeleted:
    ip: str


@dataclass(frozen=True)
class DefinitionPut:
    raw: bytes


Change = MemberPut | MemberDeleted | OwnerPut | OwnerDeleted | DefinitionPut


@dataclass(frozen=True)
class Watched:
    """One watch event at `revision`; `change` None: a key of the pool's prefix that the
    machine does not use (a deleted definition, an unknown key)."""

    revision: int
    change: Change | None


# results of the operations' steps (each carries the token of the action it answers)


@dataclass(frozen=True)
class OwnerKeyWon:
    """Answer to ClaimOwnerKey / ReplaceOwnerKey: `won` the transaction; `revision`: the
    revision of the put that created the key (a claim that won); `error`: no answer."""

    token: int
    won: bool = False
    revision: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class OwnerKeyRead:
    token: int
    owner: OwnerRecord | None = None
    error: str | None = None


@dataclass(frozen=True)
class OwnerKeyDeleted:
    token: int
    error: str | None = None


@dataclass(frozen=True)
class AddressChecked:
    """Answer to CheckAddress: is the address on the interface (None: could not tell)."""

    token: int
    bound: bool | None


@dataclass(frozen=True)
class AddressRemoved:
    token: int
    error: str | None = None


@dataclass(frozen=True)
class Announced:
    token: int


@dataclass(frozen=True)
class StepFailed:
    """A step of an operation failed unexpectedly (a bug, logged): the operation ends."""

    token: int
    error: str


@dataclass(frozen=True)
class FenceReleased:
    """Every address of a ReleaseEverything is off the interface (or its removal failed,
    logged): the fence is complete."""

    token: int


EtcdInput = (Started | Tick | LinkChanged | AddressGone | Rebalance | SessionOpened
             | SessionLost | LeaseGranted | LeaseRenewed | LeaseExpired | RenewalFailed
             | DefinitionRead | ReadDone | Watched | OwnerKeyWon | OwnerKeyRead
             | OwnerKeyDeleted | AddressChecked | ProbeDone | BindDone | AddressRemoved
             | Announced | StepFailed | FenceReleased)

# ====================================================================== actions
# Besides the shared StartProbe, Bind (the etcd runtime binds only: the announcement is
# AnnounceAddress, an operation step of its own) and Emit.


@dataclass(frozen=True)
class ClaimOwnerKey:
    """Create the address's owner key under `lease`, only if absent (create_revision 0);
    answer OwnerKeyWon."""

    token: int
    address: str
    lease: int | None


@dataclass(frozen=True)
class ReplaceOwnerKey:
    """Put the owner key under `lease` if its create_revision is still `create_revision`
    (a previous boot's key); answer OwnerKeyWon."""

    token: int
    address: str
    lease: int | None
    create_revision: int


@dataclass(frozen=True)
class MoveOwnerKey:
    """A switchover: put the owner key under `lease` (this member's), marked as taken from
    `taken_from` by `taken_by`, if its create_revision is still `create_revision` (the
    holder's key as read); answer OwnerKeyWon."""

    token: int
    address: str
    lease: int
    create_revision: int
    taken_from: str
    taken_by: str


@dataclass(frozen=True)
class ReadOwnerKey:
    """Read the owner key again; answer OwnerKeyRead."""

    token: int
    address: str


@dataclass(frozen=True)
class DeleteOwnerKey:
    """Delete the owner key if its create_revision is `create_revision`; answer
    OwnerKeyDeleted."""

    token: int
    address: str
    create_revision: int


@dataclass(frozen=True)
class PutMemberKey:
    """(Re-)register this member under its lease: the read found its key missing or
    written under another lease."""


@dataclass(frozen=True)
class CheckAddress:
    token: int
    address: str


@dataclass(frozen=True)
class RemoveAddress:
    """Remove the address from the interface; answer AddressRemoved."""

    token: int
    address: str


@dataclass(frozen=True)
class AnnounceAddress:
    """Gratuitous ARP / unsolicited NA for the address; answer Announced."""

    token: int
    address: str


@dataclass(frozen=True)
class ReleaseEverything:
    """The fence: stop every operation under way, remove every address in `addresses`
    from the interface (not only the held ones: a bind may be in flight), answer
    FenceReleased."""

    token: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class ForgetAddress:
    """An address left the pool definition: remove it from the interface (`held`), and
    delete its owner key if this lease owns it (`create_revision`)."""

    address: str
    held: bool
    create_revision: int | None


EtcdAction = (StartProbe | Bind | Emit | ClaimOwnerKey | ReplaceOwnerKey | MoveOwnerKey
              | ReadOwnerKey
              | DeleteOwnerKey | PutMemberKey | CheckAddress | RemoveAddress
              | AnnounceAddress | ReleaseEverything | ForgetAddress)


# ====================================================================== operations


class Step(StrEnum):
    """Where an address's operation is: which result it waits for."""

    CHECK = "check"  # CheckAddress: a key of ours for an address not marked held
    ADOPT = "adopt"  # ClaimOwnerKey / ReplaceOwnerKey for an address bound at start
    CLAIM = "claim"  # ClaimOwnerKey before taking
    PROBE = "probe"
    CONFIRM = "confirm"  # ReadOwnerKey: bind only what etcd shows as ours now
    BIND = "bind"
    ANNOUNCE = "announce"
    REMOVE = "remove"  # RemoveAddress: dropping the address
    SWITCH_BIND = "switch bind"  # a switchover's Bind, while the holder still holds it
    MOVE_KEY = "move key"  # a switchover's MoveOwnerKey, bound here (announced)
    GIVE_BACK = "give back"  # DeleteOwnerKey


@dataclass
class Operation:
    token: int
    step: Step
    owner: Owner | None = None  # the key the operation works with
    before: str | None = None  # taking: who held the address last
    by: str | None = None  # a switchover: who asked for the rebalance
    lease: int | None = None  # the lease a claim or replace was made under
    acquire: bool = False  # CHECK: take it if not bound here
    # REMOVE: the event once the address is off the interface, and the key to delete
    kind: EventKind | None = None
    why: str = ""
    details: dict[str, Any] = field(default_factory=dict)


# ====================================================================== the machine


class EtcdPoolMachine:
    """The decisions of one etcd pool member: see the module and `etcd_backend` docs."""

    def __init__(self, pool: PoolConfig, node: str, *, now: float, resumed_lease: int | None
                 = None, resumed_ok_at: float | None = None) -> None:
        if node not in {m.name for m in pool.members}:
            raise ValueError(f"{node!r} is not a member of pool {pool.name!r}")
        self.local = pool  # the config file's definition
        self.pool = pool  # the definition in use (etcd's once read)
        self.node = node
        self.now = now
        self.timing = FenceTiming.for_ttl(pool.coordination.ttl)
        self.local_digest = definition_digest(definition_of(pool))
        self.etcd_digest: str | None = None
        self.drift: str | None = None  # why the local config differs, while it does
        self.phase = Phase.STARTING
        self.reason = "starting: connecting to etcd"
        self.last_change = now
        self.link_up = True
        # a reload restarting this pool keeps the lease, so the other members see no
        # member lost and back, and the owner keys stay ours without a transaction
        self.resumed = resumed_lease is not None
        self.lease_id: int | None = resumed_lease
        self.lease_ok_at: float | None = resumed_ok_at  # sending time of the last renewal
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
        self.ops: dict[str, Operation] = {}
        self._retry_at: dict[str, float] = {}
        self._conflict_open: set[str] = set()
        self._next_announce: dict[str, float] = {}
        self._rebalance_by: str | None = None
        self.last_rebalance: RebalanceAnswer | None = None
        self.first_read = True
        # until the first read: everyone seen then is present from the start anyway
        self.startup = StartupWindow.none()
        self.started_at = now
        self.fencing: int | None = None  # the token of the fence's ReleaseEverything
        self._fence_note: tuple[str, list[str], float | None] | None = None
        self._next_wake = 0.0
        self._token = 0
        self._pending: list[EtcdAction] = []

    # ------------------------------------------------------------- the entry point

    def handle(self, event: EtcdInput, now: float) -> list[EtcdAction]:
        handlers = TRANSITIONS[self.phase]
        kind = type(event)
        if kind not in handlers:
            raise IllegalInput(f"pool {self.pool.name}: {kind.__name__} cannot happen in "
                               f"phase {self.phase.value}")
        self.now = now
        self._pending = []
        handlers[kind](self, event)
        if not isinstance(event, Tick) or now >= self._next_wake:
            if isinstance(event, Tick):
                self._next_wake = now + WAKE
            self._reconcile()
        out, self._pending = self._pending, []
        return out

    # ------------------------------------------------------------- definition in use

    def _set_definition(self, pool: PoolConfig) -> None:
        self.pool = pool
        self.keys = [str(a) for a in pool.addresses]
        self.by_key: dict[str, IPInterface] = {str(a): a for a in pool.addresses}
        self._key_of_ip = {str(a.ip): str(a) for a in pool.addresses}
        self.weights = {m.name: m.weight for m in pool.members}
        self.preferred = {self._key_of_ip[ip]: m for ip, m in pool.preferred.items()
                          if ip in self._key_of_ip}

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
            diff = differences(self.local, remote)
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
        gone = [k for k in self.keys if k not in kept]
        old_slots = self.slots
        for key in gone:
            held = old_slots.get(key, Slot.FREE) is not Slot.FREE
            if held:
                self._emit(EventKind.RELEASED, "the address left the pool definition in "
                           "etcd: released", address=key)
            # no longer a pool address: nobody else will take it, so remove it here
            owner = self.owners.get(key)
            mine = owner is not None and owner.lease == self.lease_id
            self._do(ForgetAddress(key, held, owner.create_revision
                                   if owner is not None and mine else None))
            self.owners.pop(key, None)
            self.ops.pop(key, None)  # its results are stale from now on
        self._set_definition(pool)
        self.slots = {k: old_slots.get(k, Slot.FREE) for k in self.keys}
        if self.node not in self.weights:
            self._go(Phase.STANDBY, "standby: the pool definition in etcd does not list "
                                    f"this node ({self.node})")
        elif self.phase is Phase.STANDBY:
            self._go(Phase.ACTIVE, "active: listed in the pool definition again")

    # ------------------------------------------------------------- helpers

    def _do(self, action: EtcdAction) -> None:
        self._pending.append(action)

    def _next_token(self) -> int:
        self._token += 1
        return self._token

    def _emit(self, kind: EventKind, reason: str, address: str | None = None, *,
              severity: Severity | None = None, extra: dict[str, Any] | None = None,
              **details: Any) -> None:
        self._do(Emit(Notice(kind=kind, reason=reason, monitor=self.pool.name,
                             address=address, state=self.phase.value, severity=severity,
                             details={**details, **(extra or {})})))

    def _go(self, phase: Phase, reason: str) -> None:
        if phase is not self.phase:
            check_edge(EDGES, f"pool {self.pool.name}", self.phase, phase)
            self.last_change = self.now
        self.phase = phase
        self.reason = reason

    def lease_fresh(self, margin: float = 0.0) -> bool:
        """The lease was renewed recently enough to act (bind, keep)."""
        return (self.lease_id is not None and self.lease_ok_at is not None
                and self.now - self.lease_ok_at < self.timing.fence_after - margin)

    def busy(self, key: str) -> bool:
        """An operation is under way on the address."""
        return key in self.ops

    def needs_release_at_stop(self, key: str) -> bool:
        """Might the address be bound here (held, adopting, an operation under way, or a
        fence still removing it)?"""
        return (self.slots.get(key, Slot.FREE) is not Slot.FREE or key in self.ops
                or self.fencing is not None)

    # ------------------------------------------------------------- lifecycle inputs

    def _on_started(self, event: Started) -> None:
        """`held`: addresses already on the interface; bound until etcd confirms this node
        as their owner, or released."""
        for key in event.held:
            if key in self.slots:
                self.slots[key] = Slot.ADOPTING
        self.started_at = self.now

    def _on_session_opened(self, event: SessionOpened) -> None:
        self.counters.sessions += 1

    def _on_session_lost(self, event: SessionLost) -> None:
        self.last_error = event.error
        self.synced = False

    def _on_link(self, event: LinkChanged) -> None:
        if event.up == self.link_up:
            return
        self.link_up = event.up
        if event.up:
            self._emit(EventKind.LINK_UP, "this node's link is back")
        else:
            self._emit(EventKind.LINK_DOWN, "this node's link is down: taking nothing over")

    def _on_gone(self, event: AddressGone) -> None:
        key = event.address
        if self.slots.get(key) is Slot.HELD and key not in self.ops:
            self.slots[key] = Slot.FREE
            self._emit(EventKind.ADDRESS_REMOVED, "the address vanished from the interface; "
                       "it is taken again if the formula still gives it to this node",
                       address=key)

    def _on_rebalance(self, event: Rebalance) -> None:
        """Admin: move addresses to the members the formula gives them (manual fallback).

        On the member the formula (over every registered member) gives an address that
        another member holds, a switchover, make-before-break as in embedded pools: bind
        and announce here while the holder still holds it, then move the owner key to this
        member's lease in one transaction that succeeds only if the key is still the
        holder's as read (`MoveOwnerKey`); the holder, seeing the key name this member,
        releases it. Until the transaction answers this member holds an address it does
        not own, which "holding implies owning" (the fencing margin) otherwise forbids; it
        is bounded by one etcd call, started only with the lease fresh by more than that
        call's deadline (`SWITCH_MARGIN`), and any other taker probes first and finds this
        copy. A transaction lost or unanswered releases the copy at once.

        On a holder the old break-before-make hand-over also runs once: it releases, then
        deletes its key, the formula's member takes it after its probe."""
        refusal = self._rebalance_refusal()
        if refusal is not None:
            self.last_rebalance = RebalanceAnswer(False, refusal)
            return
        self._rebalance_by = event.by  # the holder's hand-over pass, in this reconcile
        everyone = assign(self.keys, self.counted(stable_only=False), self.preferred,
                          self.weights, pool=self.pool.name)
        taking: dict[str, Owner] = {}
        refused: list[str] = []
        for key in self.keys:
            owner = self.owners.get(key)
            if (everyone.get(key) != self.node or self.slots[key] is not Slot.FREE
                    or key in self.ops or owner is None or owner.member == self.node
                    or owner.lease == self.lease_id):
                continue  # not ours by the formula, ours already, or free (the usual path)
            why = self._switchover_refusal(owner)
            if why is None:
                taking[key] = owner
            else:
                refused.append(f"{key}: {why}")
        stable = assign(self.keys, self.counted(stable_only=True), self.preferred,
                        self.weights, pool=self.pool.name)
        handing = tuple(k for k in self.held if k not in self.ops
                        and stable.get(k) not in (None, self.node))
        for key, owner in taking.items():
            self.slots[key] = Slot.BUSY
            self._step(key, Operation(0, Step.SWITCH_BIND, owner=owner, before=owner.member,
                                      by=event.by), Bind)
        self.last_rebalance = RebalanceAnswer.of(
            {k: o.member for k, o in taking.items()}, {k: stable[k] for k in handing},
            refused, handing_how="handing over break-before-make",
            nothing=f"nothing to move: no address the formula gives to {self.node} is held "
                    f"by another member, and {self.node} holds none the formula gives to "
                    "another")

    def _rebalance_refusal(self) -> str | None:
        """Why this member may not move addresses now, or None."""
        if self.phase is not Phase.ACTIVE:
            return f"this member is not active ({self.reason})"
        if not self.link_up:
            return "this member's link is down"
        if not self.synced:
            return "this member does not follow etcd right now (session lost): try again"
        since = self.now - self.lease_ok_at if self.lease_ok_at is not None else math.inf
        if not self.lease_fresh(margin=self.switch_margin):
            return (f"this member's etcd lease was last renewed {since:.1f}s ago: a "
                    "switchover needs it renewed within "
                    f"{self.timing.fence_after - self.switch_margin:.1f}s; try again")
        if self.startup.is_open(self.now):
            return (f"this member started {self.now - self.started_at:.1f}s ago and waits "
                    "for the members starting with it: try again in "
                    f"{self.startup.ends_at - self.now:.1f}s")
        return None

    @property
    def switch_margin(self) -> float:
        """The longest a switchover's MoveOwnerKey can take (the session's call deadline):
        its bound-but-not-owned copy must be gone before this member would fence."""
        return self.timing.rpc_timeout + 0.5

    def _switchover_refusal(self, owner: Owner) -> str | None:
        """Why an address `owner` holds may not be bound here before its key moves, or None."""
        if owner.member == "?":
            return "its owner key names no member"
        seen = self.members.get(owner.member)
        if seen is None or seen.lease != owner.lease:
            return (f"its holder {owner.member} is not registered in etcd under the key's "
                    "lease (lost or restarting): the address is taken once its key expires")
        return None

    # ------------------------------------------------------------- lease

    def _on_lease_granted(self, event: LeaseGranted) -> None:
        self.lease_id = event.lease
        self.lease_ok_at = event.sent_at
        self.counters.leases += 1
        self._after_renewal(event.endpoint)

    def _on_lease_renewed(self, event: LeaseRenewed) -> None:
        self.counters.keepalives += 1
        if event.lease == self.lease_id:
            self.lease_ok_at = event.sent_at
            self._after_renewal(event.endpoint)

    def _on_lease_expired(self, event: LeaseExpired) -> None:
        # expired on the server: its keys are gone; a new lease is granted next
        self.counters.keepalives += 1
        self.lease_id = None
        self.lease_ok_at = None
        self.owners = {k: o for k, o in self.owners.items() if o.lease != event.lease}
        if self.phase is not Phase.FENCED:
            self._fence("the etcd lease expired")

    def _on_renewal_failed(self, event: RenewalFailed) -> None:
        self.counters.keepalive_failures += 1
        if event.error is not None:
            self.last_error = event.error

    def _after_renewal(self, endpoint: str) -> None:
        if self.phase in (Phase.STARTING, Phase.FENCED):
            was = self.phase
            if self.node in self.weights:
                self._go(Phase.ACTIVE, f"active: etcd lease renewed via {endpoint}")
            else:
                self._go(Phase.STANDBY, "standby: the pool definition in etcd does not list "
                                        f"this node ({self.node})")
            if was is Phase.FENCED:
                self._emit(EventKind.REJOINED, "the etcd lease is renewed again: taking part "
                           "in the pool again", endpoint=endpoint)

    def _on_tick(self, event: Tick) -> None:
        since = self.lease_ok_at if self.lease_ok_at is not None else self.started_at
        late = self.phase is not Phase.FENCED and self.now - since > self.timing.fence_after
        if late and (self.lease_id is not None or any(
                s is not Slot.FREE for s in self.slots.values())):
            self._fence(f"no etcd keepalive for {self.now - since:.2f}s")

    def _fence(self, why: str) -> None:
        """Give every address up before the lease can expire (Patroni's rule)."""
        if self.fencing is not None:
            return
        since = (self.now - self.lease_ok_at) if self.lease_ok_at is not None else None
        self._go(Phase.FENCED, f"fenced: {why}; released everything, taking nothing")
        self.counters.fences += 1
        held = [k for k in self.keys if self.slots[k] is not Slot.FREE]
        self.ops.clear()  # every operation under way is dropped: its results are stale
        for key in self.keys:
            self.slots[key] = Slot.FREE
        self.fencing = self._next_token()
        self._fence_note = (why, held, since)
        self._do(ReleaseEverything(self.fencing, tuple(self.keys)))

    def _on_fence_released(self, event: FenceReleased) -> None:
        if event.token != self.fencing or self._fence_note is None:
            return
        why, held, since = self._fence_note
        self.fencing, self._fence_note = None, None
        released_at = (self.now - self.lease_ok_at if self.lease_ok_at is not None else None)
        self._emit(EventKind.LEASE_LOST,
                   f"{why} (ttl {self.timing.ttl}s, fencing at "
                   f"{self.timing.fence_after:.2f}s): released "
                   f"{', '.join(held) or 'nothing'} before the lease can expire, so a "
                   "survivor can take over without a duplicate",
                   released=len(held), ttl=self.timing.ttl,
                   since_keepalive=round(since, 3) if since is not None else None,
                   released_after=round(released_at, 3) if released_at is not None else None)

    # ------------------------------------------------------------- what etcd holds

    def _on_definition_read(self, event: DefinitionRead) -> None:
        self._apply_definition(event.raw)

    def _on_read(self, event: ReadDone) -> None:
        read_at = event.revision
        self.revision = read_at
        members: dict[str, MemberSeen] = {}
        owners: dict[str, Owner] = {}
        for m in event.members:
            members[m.name] = self._seen(m)
        for o in event.owners:
            self._owner_into(o, owners)
        if event.definition is not None:
            self._apply_definition(event.definition)
        # a key this node created after the read was served is newer than the read
        for key, owner in self.owners.items():
            if owner.create_revision > read_at and key not in owners:
                owners[key] = owner
        self._replace_members(members)
        self.owners = owners
        if self.lease_id is not None and (self.node not in members or
                                          members[self.node].lease != self.lease_id):
            self._do(PutMemberKey())  # deleted by hand, or written by a previous boot
        for key, owner in owners.items():
            self.last_holder.saw(key, owner.member)
        if self.first_read:
            self.startup = StartupWindow.at_first_read(
                self.now, self.timing.startup_window, self.node, owners.values(),
                self.resumed)
        self.first_read = False
        self.synced = True

    def _seen(self, record: MemberRecord) -> MemberSeen:
        old = self.members.get(record.name)
        same = old is not None and old.lease == record.lease
        return MemberSeen(
            record.name, record.lease, record.state, record.digest,
            since=old.since if same and old else self.now,
            initial=(old.initial if same and old else
                     self.first_read or self.startup.present_from_start(self.now)))

    def _owner_into(self, record: OwnerRecord, owners: dict[str, Owner]) -> str | None:
        addr = self._key_of_ip.get(record.ip)
        if addr is not None:
            owners[addr] = Owner(record.member, record.lease, record.create_revision,
                                 record.taken_from, record.taken_by)
        return addr

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

    def _on_watched(self, event: Watched) -> None:
        self.counters.watch_events += 1
        self.revision = max(self.revision, event.revision)
        change = event.change
        if isinstance(change, DefinitionPut):
            self._apply_definition(change.raw)
        elif isinstance(change, MemberPut):
            self._replace_members({**self.members, change.record.name: self._seen(
                change.record)})
        elif isinstance(change, MemberDeleted):
            members = dict(self.members)
            members.pop(change.name, None)
            self._replace_members(members)
        elif isinstance(change, OwnerPut):
            addr = self._owner_into(change.record, self.owners)
            if addr is not None:
                self.last_holder.saw(addr, self.owners[addr].member)
        elif isinstance(change, OwnerDeleted):
            addr = self._key_of_ip.get(change.ip)
            if addr is not None:
                self.owners.pop(addr, None)

    # ------------------------------------------------------------- decisions

    def counted(self, stable_only: bool, now: float | None = None) -> dict[str, int]:
        """The members the formula counts (with weights): registered, listed in the
        definition, not leaving, and (`stable_only`) past their hold-down at `now` (the
        last input's time if not given)."""
        now = self.now if now is None else now
        hold_down = self.pool.fallback.hold_down
        auto = self.pool.fallback.mode is FallbackMode.AUTO
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

    def _reconcile(self) -> None:
        if not self.synced or self.fencing is not None:
            return
        alive = self.counted(stable_only=True)
        desired = assign(self.keys, alive, self.preferred, self.weights, pool=self.pool.name)
        self.assignment = desired
        if self.phase is Phase.STANDBY:
            for key in self.keys:
                if key not in self.ops and self.slots[key] in (Slot.HELD, Slot.ADOPTING):
                    self._drop(key, "this node is not in the pool definition in etcd: "
                               "released", EventKind.YIELDED, delete=self.owners.get(key))
            return
        if self.phase is not Phase.ACTIVE or not self.lease_fresh():
            return
        by, self._rebalance_by = self._rebalance_by, None
        auto = self.pool.fallback.mode is FallbackMode.AUTO or by is not None
        now = self.now
        for key in self.keys:
            if key in self.ops:
                continue
            slot = self.slots[key]
            owner = self.owners.get(key)
            mine = owner is not None and owner.lease == self.lease_id
            ours_before = (owner is not None and owner.member == self.node and not mine)
            want = desired.get(key) == self.node and self.link_up
            if slot is Slot.ADOPTING:
                if owner is None or ours_before or mine:
                    self._adopt(key, owner)
                else:
                    self._drop(key, f"bound here at start-up, but etcd names {owner.member} "
                               "as its owner", EventKind.YIELDED, delete=None)
            elif slot is Slot.HELD:
                if not mine and owner is not None and owner.taken_from == self.node:
                    self._drop(key, f"{owner.member} took it make-before-break (rebalance "
                               f"by {owner.taken_by}): the owner key in etcd names "
                               f"{owner.member}, released here", EventKind.SWITCHOVER,
                               delete=None, **{"from": self.node, "to": owner.member})
                elif not mine:
                    why = ("etcd shows no owner" if owner is None
                           else f"etcd names {owner.member} as its owner")
                    self._drop(key, f"{why}: released (a node holds an address only while "
                               "etcd shows it as the owner)", EventKind.YIELDED, delete=None)
                elif auto and desired.get(key) not in (None, self.node):
                    to = desired[key]
                    self._drop(key, f"handed over to {to}, which the formula gives it to"
                               + (f" (rebalance by {by})" if by else ""), EventKind.RELEASED,
                               delete=owner, to=to)
                elif now >= self._next_announce.get(key, 0.0):
                    self._next_announce[key] = now + ANNOUNCE.refresh
                    self._step(key, Operation(0, Step.ANNOUNCE), AnnounceAddress)
            elif slot is Slot.FREE:
                retry_ok = now >= self._retry_at.get(key, 0)
                if owner is not None and (mine or ours_before):
                    # a key of ours for an address not marked held: a previous boot's or
                    # runtime's, or this lease's after a reload handed the lease over
                    self._step(key, Operation(0, Step.CHECK, owner=owner,
                                              acquire=mine and want and retry_ok),
                               CheckAddress)
                elif want and owner is None and retry_ok and not self.startup.is_open(now):
                    self._acquire(key, have_key=False)

    # ------------------------------------------------------------- operations

    def _step(self, key: str, op: Operation, make: Callable[[int, str], EtcdAction]) -> None:
        """Start the operation's next step: a fresh token, the action that answers it."""
        op.token = self._next_token()
        self.ops[key] = op
        self._do(make(op.token, key))

    def _end(self, key: str) -> None:
        self.ops.pop(key, None)
        if self.slots.get(key) is Slot.BUSY:
            self.slots[key] = Slot.FREE

    def _current(self, token: int, step: Step | tuple[Step, ...]) -> tuple[str, Operation]:
        """The address and operation a result answers; ("", op) for a stale result."""
        steps = step if isinstance(step, tuple) else (step,)
        for key, op in self.ops.items():
            if op.token == token and op.step in steps:
                return key, op
        return "", Operation(token, Step.CHECK)

    def _claim(self, key: str, op: Operation) -> None:
        op.lease = self.lease_id
        lease = op.lease
        self._step(key, op, lambda t, k: ClaimOwnerKey(t, k, lease))

    def _adopt(self, key: str, owner: Owner | None) -> None:
        op = Operation(0, Step.ADOPT, owner=owner, lease=self.lease_id)
        if owner is None:
            self._claim(key, op)
        elif owner.lease == self.lease_id:
            self.ops[key] = op
            self._adopted(key)
        else:
            lease, revision = self.lease_id, owner.create_revision
            self._step(key, op, lambda t, k: ReplaceOwnerKey(t, k, lease, revision))

    def _adopted(self, key: str) -> None:
        self.slots[key] = Slot.HELD
        self.last_holder.saw(key, self.node)
        self.counters.adoptions += 1
        self._next_announce[key] = self.now + ANNOUNCE.refresh
        self._emit(EventKind.ADOPTED, "pool address already bound here at start-up: etcd "
                   "confirms this node as its owner; announced again", address=key)
        op = self.ops[key]
        op.step = Step.ANNOUNCE
        self._step(key, op, AnnounceAddress)

    def _acquire(self, key: str, have_key: bool) -> None:
        op = Operation(0, Step.CLAIM, before=self.last_holder.get(key))
        self.slots[key] = Slot.BUSY
        if have_key:
            self._probe(key, op)
        else:
            self._claim(key, op)

    def _probe(self, key: str, op: Operation) -> None:
        op.step = Step.PROBE
        self._step(key, op, lambda t, k: StartProbe(t, k, PROBE.count, PROBE.interval,
                                                    OnProber.YIELD))

    def _give_back(self, key: str, op: Operation, owner: Owner | None) -> None:
        """Delete the owner key (if there is one to delete), then end the operation."""
        if owner is None:
            self._end(key)
            return
        op.step = Step.GIVE_BACK
        op.owner = owner
        revision = owner.create_revision
        self._step(key, op, lambda t, k: DeleteOwnerKey(t, k, revision))

    def _drop(self, key: str, why: str, kind: EventKind, *, delete: Owner | None,
              **details: Any) -> None:
        """Remove the address from the interface, *then* give the key up (if asked)."""
        self.slots[key] = Slot.BUSY
        self._step(key, Operation(0, Step.REMOVE, owner=delete, kind=kind, why=why,
                                  details=details), RemoveAddress)

    def _on_owner_key_won(self, event: OwnerKeyWon) -> None:
        key, op = self._current(event.token, (Step.CLAIM, Step.ADOPT, Step.MOVE_KEY))
        if not key:
            return
        if op.step is Step.MOVE_KEY:
            self._key_moved(key, op, event)
            return
        if event.error is not None:
            self.last_error = event.error
            self._end(key)  # adopting: still ADOPTING, tried again or released by the fence
            return
        if not event.won:
            self._end(key)  # another member was first: the watch brings its key
            return
        if op.lease is not None:
            if op.owner is None:  # created: the put's revision is the create_revision
                self.owners[key] = Owner(self.node, op.lease, event.revision or 0)
            else:  # a put keeps the create_revision of an existing key
                self.owners[key] = Owner(self.node, op.lease, op.owner.create_revision)
        if op.step is Step.ADOPT:
            self._adopted(key)
        else:
            self._probe(key, op)

    def _on_probe_done(self, event: ProbeDone) -> None:
        key, op = self._current(event.token, Step.PROBE)
        if not key:
            return
        mac = event.answered_by
        if mac is not None:
            self.counters.conflicts += 1
            self._retry_at[key] = self.now + self.timing.ttl
            if key not in self._conflict_open:
                self._conflict_open.add(key)
                self._emit(EventKind.ADDRESS_CONFLICT,
                           f"this node won the owner key, but {mac} answers ARP/NDP for "
                           "the address: not binding, key given back, trying again later",
                           address=key, mac=mac)
            self._give_back(key, op, self.owners.get(key))
            return
        op.step = Step.CONFIRM
        self._step(key, op, ReadOwnerKey)

    def _on_owner_key_read(self, event: OwnerKeyRead) -> None:
        key, op = self._current(event.token, Step.CONFIRM)
        if not key:
            return
        if event.error is not None:
            self.last_error = event.error
            self._end(key)
            return
        if event.owner is None:
            self.owners.pop(key, None)
            self._end(key)
            return
        if self.lease_id is None or event.owner.lease != self.lease_id:
            self._end(key)
            return
        owner = Owner(self.node, self.lease_id, event.owner.create_revision)
        self.owners[key] = owner
        op.owner = owner
        if not self.lease_fresh(margin=0.2) or self.phase is not Phase.ACTIVE:
            self._end(key)  # the world changed while probing: the next pass decides
            return
        op.step = Step.BIND
        self._step(key, op, Bind)

    def _on_bind_done(self, event: BindDone) -> None:
        key, op = self._current(event.token, (Step.BIND, Step.SWITCH_BIND))
        if not key:
            return
        if op.step is Step.SWITCH_BIND:
            self._switch_bound(key, op, event)
            return
        if event.error is not None:
            self.counters.bind_failures += 1
            self._retry_at[key] = self.now + self.timing.ttl
            self._emit(EventKind.TAKEOVER_FAILED, f"could not bind the address: {event.error}",
                       address=key)
            self._give_back(key, op, op.owner)
            return
        self.slots[key] = Slot.HELD
        self._conflict_open.discard(key)
        self.last_holder.saw(key, self.node)
        self._next_announce[key] = self.now + ANNOUNCE.refresh
        before = op.before
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
        op.step = Step.ANNOUNCE
        self._step(key, op, AnnounceAddress)

    def _switch_bound(self, key: str, op: Operation, event: BindDone) -> None:
        """A switchover's copy is bound: announce it and move the owner key."""
        holder = op.before
        assert op.owner is not None and holder is not None
        if event.error is not None:
            self.counters.bind_failures += 1
            self._emit(EventKind.TAKEOVER_FAILED, f"switchover from {holder}: could not bind "
                       f"the address: {event.error}; {holder} keeps it", address=key)
            self._end(key)
            return
        if self.lease_id is None or not self.lease_fresh(margin=self.switch_margin):
            self._drop(key, f"switchover from {holder} given up: the etcd lease is no longer "
                       "fresh enough to move the owner key; released the copy bound here, "
                       f"{holder} keeps it", EventKind.TAKEOVER_FAILED, delete=None)
            return
        # the announcement runs beside the transaction (it takes count x interval): its
        # own token, answered by nobody, so traffic moves here while the holder still has it
        self._do(AnnounceAddress(self._next_token(), key))
        op.step = Step.MOVE_KEY
        lease, revision, by = self.lease_id, op.owner.create_revision, op.by or "cli"
        self._step(key, op, lambda t, k: MoveOwnerKey(t, k, lease, revision, holder, by))

    def _key_moved(self, key: str, op: Operation, event: OwnerKeyWon) -> None:
        """The switchover's transaction answered: own it, or release the copy at once."""
        holder, by = op.before, op.by
        assert op.owner is not None and holder is not None and self.lease_id is not None
        if event.error is not None or not event.won:
            self.last_error = event.error or self.last_error
            why = (f"etcd did not answer ({event.error}; if the move landed after all, the "
                   "key names this node and the address is taken the usual way)"
                   if event.error is not None else
                   f"the owner key changed in etcd before it could be moved ({holder} lost "
                   "it or another member took it)")
            self._drop(key, f"switchover from {holder} failed: {why}; released the copy "
                       "bound here", EventKind.TAKEOVER_FAILED, delete=None)
            return
        self.owners[key] = Owner(self.node, self.lease_id, op.owner.create_revision,
                                 holder, by)
        self.slots[key] = Slot.HELD
        self._conflict_open.discard(key)
        self.last_holder.saw(key, self.node)
        self._next_announce[key] = self.now + ANNOUNCE.refresh
        self.counters.switchovers += 1
        self._emit(EventKind.SWITCHOVER,
                   f"took it from {holder} make-before-break (rebalance by {by}): bound and "
                   f"announced here, then the owner key moved to this node in etcd; {holder} "
                   "releases it when it sees the key", address=key,
                   extra={"from": holder, "to": self.node})
        self._end(key)

    def _on_announced(self, event: Announced) -> None:
        key, _ = self._current(event.token, Step.ANNOUNCE)
        if key:
            self._end(key)

    def _on_address_checked(self, event: AddressChecked) -> None:
        key, op = self._current(event.token, Step.CHECK)
        if not key:
            return
        owner = op.owner
        assert owner is not None
        if event.bound is None:
            self._end(key)
        elif event.bound and self.slots.get(key) is Slot.FREE:
            # the address may still be bound here, e.g. after a reload restarted the pool
            # with a local config that lacks it: adopt it (deleting the key would let
            # another member win it while the address is still here)
            self.slots[key] = Slot.ADOPTING
            self.ops.pop(key)
            self._adopt(key, owner)
        elif op.acquire and owner.lease == self.lease_id:
            self.ops.pop(key)
            self._acquire(key, have_key=True)
        else:
            self._give_back(key, op, owner)

    def _on_address_removed(self, event: AddressRemoved) -> None:
        key, op = self._current(event.token, Step.REMOVE)
        if not key:
            return
        if event.error is not None:
            self.slots[key] = Slot.HELD
            self._end(key)
            return
        self.slots[key] = Slot.FREE
        if op.kind in (EventKind.RELEASED, EventKind.SWITCHOVER):
            self.counters.handovers += 1
        else:
            self.counters.yields += 1
        assert op.kind is not None
        self._emit(op.kind, op.why, address=key, **op.details)
        self._give_back(key, op, op.owner)

    def _on_step_failed(self, event: StepFailed) -> None:
        for key, op in list(self.ops.items()):
            if op.token == event.token:
                self._end(key)

    def _on_owner_key_deleted(self, event: OwnerKeyDeleted) -> None:
        key, op = self._current(event.token, Step.GIVE_BACK)
        if not key:
            return
        if event.error is not None:
            self.last_error = event.error
        elif op.owner is not None and self.owners.get(key) == op.owner:
            del self.owners[key]
        self._end(key)

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

    @property
    def held(self) -> list[str]:
        return [k for k in self.keys if self.slots[k] is Slot.HELD]

    def snapshot(self, now: float, *, endpoint: str, endpoints: list[str]) -> dict[str, Any]:
        members = []
        for m in self.pool.members:
            seen = self.members.get(m.name)
            mine = m.name == self.node
            alive = (seen is not None and seen.state != "leaving") or (
                mine and self.lease_id is not None)
            members.append({
                "name": m.name, "self": mine, "weight": m.weight, "alive": alive,
                "stable": m.name in self.counted(stable_only=True, now=now),
                "state": ("fenced" if mine and self.phase is Phase.FENCED
                          else seen.state if seen else "absent"),
                "holds": sorted(k for k, o in self.owners.items() if o.member == m.name),
                "lease": f"{seen.lease:x}" if seen else None,
                "drift": bool(seen and seen.digest and self.etcd_digest
                              and seen.digest != self.etcd_digest),
            })
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
            "held": self.held,
            "wants": [],
            "counters": dict(vars(self.counters)),
            "seconds_since_change": round(max(0.0, now - self.last_change), 3),
            "etcd": {
                "endpoint": endpoint,
                "endpoints": endpoints,
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


# ====================================================================== the tables

Handler = Callable[[EtcdPoolMachine, Any], None]

# what every phase accepts: etcd, the lease, the interface, the admin
_ALWAYS: dict[type, Handler] = {
    Tick: EtcdPoolMachine._on_tick,
    SessionOpened: EtcdPoolMachine._on_session_opened,
    SessionLost: EtcdPoolMachine._on_session_lost,
    LeaseGranted: EtcdPoolMachine._on_lease_granted,
    LeaseRenewed: EtcdPoolMachine._on_lease_renewed,
    LeaseExpired: EtcdPoolMachine._on_lease_expired,
    RenewalFailed: EtcdPoolMachine._on_renewal_failed,
    DefinitionRead: EtcdPoolMachine._on_definition_read,
    ReadDone: EtcdPoolMachine._on_read,
    Watched: EtcdPoolMachine._on_watched,
    LinkChanged: EtcdPoolMachine._on_link,
    AddressGone: EtcdPoolMachine._on_gone,
    Rebalance: EtcdPoolMachine._on_rebalance,
}
# the results of operation steps and of the fence: none can be under way while STARTING
# (no decision is taken before the lease, and a fence leaves STARTING)
_RESULTS: dict[type, Handler] = {
    OwnerKeyWon: EtcdPoolMachine._on_owner_key_won,
    OwnerKeyRead: EtcdPoolMachine._on_owner_key_read,
    OwnerKeyDeleted: EtcdPoolMachine._on_owner_key_deleted,
    AddressChecked: EtcdPoolMachine._on_address_checked,
    ProbeDone: EtcdPoolMachine._on_probe_done,
    BindDone: EtcdPoolMachine._on_bind_done,
    AddressRemoved: EtcdPoolMachine._on_address_removed,
    Announced: EtcdPoolMachine._on_announced,
    StepFailed: EtcdPoolMachine._on_step_failed,
    FenceReleased: EtcdPoolMachine._on_fence_released,
}

TRANSITIONS: dict[Phase, dict[type, Handler]] = {
    Phase.STARTING: {Started: EtcdPoolMachine._on_started, **_ALWAYS},
    Phase.ACTIVE: {**_ALWAYS, **_RESULTS},
    Phase.FENCED: {**_ALWAYS, **_RESULTS},
    Phase.STANDBY: {**_ALWAYS, **_RESULTS},
}

# The phases each phase may go to (`_go` checks). STARTING is left for good once the lease
# is granted (or the fence fires first: addresses bound at start and no lease in time).
EDGES: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.ACTIVE, Phase.STANDBY, Phase.FENCED}),
    Phase.ACTIVE: frozenset({Phase.FENCED, Phase.STANDBY}),
    Phase.FENCED: frozenset({Phase.ACTIVE, Phase.STANDBY}),
    Phase.STANDBY: frozenset({Phase.ACTIVE, Phase.FENCED}),
}
