"""One member's decisions for a pool of shared addresses, as a pure state machine.

Same style as `minisft.core.monitor`: no I/O, no clock; `handle(input, now)` returns the
actions to carry out, the legal inputs per phase are the table `TRANSITIONS`, anything
else raises `IllegalInput`.

Phases of the member (addresses have their own slot: free, probing, binding, held):

    STARTING  -- waiting for the runtime's first look at the interface (`Started`)
    JOINING   -- listening to heartbeats for one detection time before taking anything,
                 so a starting member does not grab addresses its peers hold
    ACTIVE    -- part of a quorum: takes, keeps and hands over addresses per the formula
    ISOLATED  -- no quorum (or own link down): takes nothing over, keeps what it holds

Rules, each with the reason its event carries:

* **Liveness.** Heartbeats go out every ``looksalive.interval``. A member is *silent* after
  ``retry * interval + timeout`` (the detection time) without a valid heartbeat.
  ``watch: all``: every member judges every other by its own heartbeats.
  ``watch: neighbour``: in the configured member order (a ring, skipping members silent to
  this node) only the next member after X -- X's watcher -- judges X by its heartbeats;
  the others adopt the watcher's verdict (the ``lost`` list in its heartbeats), or judge
  by themselves after twice the detection time if the watcher says nothing. One verdict
  per member keeps views identical under asymmetric loss, so the formula agrees.
* **Quorum.** Visible = this node plus the members it hears that hear it too (whose
  heartbeats do not list it lost; a member lists one it never heard once it has joined):
  two members whose own heartbeats are lost would otherwise both count the same third
  members as their quorum and take the same address. ACTIVE needs a strict
  majority of the configured members, or exactly half plus a reachable `witness` (the
  tie-breaker for even pools, e.g. two members). A minority never counts the witness:
  a member that is cut off from its peers but still sees the gateway must not take the
  majority's addresses.
* **Split-brain rule: isolated keeps, takes nothing.** Patroni releases on quorum loss
  because two writable databases corrupt data. A service IP is stateless: releasing would
  turn a switch failure that cuts every member off (and the last survivor of a pool) into
  a total outage, while keeping costs at most a duplicate on a segment the peers cannot
  reach. So an isolated member keeps what it holds, takes nothing over, and stops
  re-announcing (the majority's gratuitous ARP/NA for the addresses it takes wins). When
  the partition heals, duplicates are resolved below.
* **Assignment.** `formula.assign` over this node plus the members that are alive, not
  isolated and *stable* (see fallback), with the configured roster as the base layer.
* **Taking an address** (ACTIVE only): if the formula gives it to this node and no live
  member holds it (free, or its holder is lost), probe it (ARP/NDP) and bind if nobody
  answers. If a live member holds it, ask for it (``wants`` in the heartbeat) and wait:
  the holder decides when to let go, so an address is never held twice on purpose.
* **Probing early.** A holder silent for the detection time less one probe round is
  *suspect*: for each address it holds that the formula would give to this node without
  it, the probe starts then, so the round ends about when the holder is declared lost and
  the takeover does not wait for it. The result binds only if the holder sent nothing
  since the probe began and the round ended at most one round ago; an answer then is no
  conflict (the suspect may just be slow): after the loss a fresh round decides. One
  early round per address and suspect episode, whatever its result. Nothing is taken
  while the members not suspect fall short of a quorum: a node cut off from its peers
  judges them lost one by one, and between two verdicts its quorum is already silent.
* **Handing over** (fallback auto): a holder releases an address when the formula gives it
  to another member *and* that member's heartbeat says it wants it.
* **Fallback.** ``auto``: a member that comes back (or first appears after this node
  joined) becomes stable after ``hold_down`` of continuous heartbeats; only then does the
  formula count it, so it gets its addresses back after the hold-down. ``manual``: members
  count as soon as they are alive (they get free and orphaned addresses), but a holder
  never releases to rebalance: addresses stay where they are until an admin feeds
  `Rebalance` or their holder dies.
* **Rebalance** (admin, one pass). On the member that should get addresses back it is a
  switchover, make-before-break: every address the formula over all live members (the
  duplicates rule's keeper formula, below) gives to this node and that one live member
  holds is bound here at once, without a probe (the holder is known and heard), and
  announced; this node then claims it in ``holds`` and ``wants`` until the holder lets
  go. The holder hears a duplicate, the duplicates rule names this node keeper, and it
  releases (a ``switchover`` event on both sides): clients see the announcement before
  the release, so no gap; and once the holder's heartbeat shows it let go, this node
  announces again (the holder may have refreshed its own announcement in between).
  Refused (nothing bound, one reason) unless this node is active with a sure quorum
  and its link up, has been active for one detection time (views settle after joining
  or a healed partition), and the holder is not isolated, not
  suspect, does not count this node lost, and names this node keeper by its own view
  (its ``lost`` list): a holder that could not hear this node, or would keep the address
  by its view, would leave it held twice for good. A holder that still holds it one
  detection time after the bind wins after all: this node releases it again. On a holder
  the pass hands over (break-before-make, as auto does) each address whose member asks
  for it in ``wants``.
* **Two claimants of a free address** (both probing it, e.g. their views differ about a
  member back from silence): each names it in `wants`; the one ranked first by HRW binds,
  the other backs off (YIELDED), with two exceptions where a claim may not be heard or
  weighed: a claimant that lists the other in its `lost` does not hear the other's claim
  and binds whatever the ranks say, so the other backs off; and for one detection time
  after leaving isolation a member backs off before any rival claim (its peers may still
  count it isolated, and two members leaving isolation together would each outrank the
  other). Backing off costs a retry one detection time later, never a duplicate.
* **Duplicates** (two live holders, e.g. after a partition heals): the formula over every
  live, non-isolated member *ignoring* hold-down picks the keeper; if it is none of the
  holders, the holder ranked first by HRW keeps it. Every other holder releases (YIELDED).
* **Config drift.** A peer whose config digest differs raises CONFIG_DRIFT once per
  episode (and a notice when it matches again). It still counts: the alarm is for a human.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from minisft.config.model import AnnounceConfig, FallbackMode, PoolConfig, ProbeConfig
from minisft.core.actions import IllegalInput
from minisft.core.edges import check_edge
from minisft.core.events import EventKind, Notice, Severity
from minisft.pools.actions import (
    AddressGone,
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    Emit,
    HeartbeatSeen,
    LinkChanged,
    OnProber,
    PoolAction,
    PoolInput,
    ProbeDone,
    Rebalance,
    RebalanceAnswer,
    Release,
    SendHeartbeat,
    Started,
    StartProbe,
    Tick,
    WitnessResult,
)
from minisft.pools.counters import AddressCounters
from minisft.pools.formula import assign, home, ranking
from minisft.pools.placement import HolderHistory, placement
from minisft.pools.protocol import config_digest
from minisft.status import PoolAddressStatus


class Phase(StrEnum):
    STARTING = "starting"
    JOINING = "joining"
    ACTIVE = "active"
    ISOLATED = "isolated"


class Slot(StrEnum):
    FREE = "free"
    PROBING = "probing"
    BINDING = "binding"
    HELD = "held"


@dataclass
class MemberView:
    """What this node knows about one other member."""

    name: str
    weight: int
    last_seen: float | None = None
    alive: bool = False  # this node's verdict
    stable: bool = False  # counted by the formula (auto fallback: after hold-down)
    initial: bool = False  # seen while this node was joining: no hold-down
    back_at: float | None = None
    state: str = "alive"
    holds: frozenset[str] = frozenset()
    wants: frozenset[str] = frozenset()
    lost: frozenset[str] = frozenset()
    digest: str | None = None
    drift: bool = False
    heartbeats: int = 0


@dataclass
class Counters(AddressCounters):
    heartbeats_seen: int = 0


# Probe and announce settings are not per pool: the core's LAN-scale defaults.
PROBE = ProbeConfig()
ANNOUNCE = AnnounceConfig()


@dataclass
class PoolMachine:
    pool: PoolConfig
    me: str
    now: float
    phase: Phase = Phase.STARTING
    reason: str = "starting: looking at the interface"
    link_up: bool = True
    witness_ok: bool | None = None
    counters: Counters = field(default_factory=Counters)
    _token: int = 0
    _pending: list[PoolAction] = field(default_factory=list)
    _rebalance_by: str | None = None
    last_rebalance: RebalanceAnswer | None = None  # the answer to the last `Rebalance`

    def __post_init__(self) -> None:
        names = [m.name for m in self.pool.members]
        if self.me not in names:
            raise ValueError(f"{self.me!r} is not a member of pool {self.pool.name!r}")
        self.digest = config_digest(self.pool)
        self.order = names
        self.weights = {m.name: m.weight for m in self.pool.members}
        self.keys = [str(a) for a in self.pool.addresses]
        by_ip = {str(a.ip): str(a) for a in self.pool.addresses}
        self.preferred: dict[str, str] = {}
        for raw, member in self.pool.preferred.items():
            try:
                key = by_ip.get(str(ipaddress.ip_interface(raw).ip))
            except ValueError:
                key = None
            if key is not None:
                self.preferred[key] = member
        self.views = {n: MemberView(n, self.weights[n]) for n in names if n != self.me}
        self.slots = dict.fromkeys(self.keys, Slot.FREE)
        self.last_holder = HolderHistory()
        self.home = home(self.keys, self.weights, self.preferred, pool=self.pool.name)
        self.assignment: dict[str, str] = {}
        self.wants: frozenset[str] = frozenset()
        self._probe_tokens: dict[int, str] = {}
        # early probes (see "Probing early"): address -> (token, suspect, started)
        self._early: dict[str, tuple[int, str, float]] = {}
        # address -> (suspect, started, finished, clean) of a finished early round: one
        # round per suspect episode, so a probe that fails at once cannot spin
        self._early_done: dict[str, tuple[str, float, float, bool]] = {}
        self._bind_tokens: dict[int, str] = {}
        # switchovers of a rebalance: address -> (holder, by, since: bind asked or done)
        self._switching: dict[str, tuple[str, str, float]] = {}
        self._retry_at: dict[str, float] = {}
        self._conflict_open: set[str] = set()
        self._next_announce: dict[str, float] = {}
        self._witness_misses = 0
        self._joined_at = self.now
        self._rejoined_at: float | None = None  # when it last left ISOLATED for ACTIVE
        self.last_change = self.now

    # ------------------------------------------------------------------ public API

    @property
    def detection_time(self) -> float:
        la = self.pool.looksalive
        return la.retry * la.interval + la.timeout

    def handle(self, event: PoolInput, now: float) -> list[PoolAction]:
        handlers = TRANSITIONS[self.phase]
        kind = type(event)
        if kind not in handlers:
            raise IllegalInput(f"pool {self.pool.name}: {kind.__name__} cannot happen in "
                               f"phase {self.phase.value}")
        self.now = now
        self._pending = []
        if self.phase is not Phase.STARTING:
            # Decide on the view as of `now`: time alone can make members lost and this
            # node isolated, and a probe result must not bind on a quorum already gone.
            self._refresh()
            handlers = TRANSITIONS[self.phase]
        handler = handlers.get(kind)
        if handler is not None:
            handler(self, event)
        if self.phase is not Phase.STARTING:
            self._refresh()
        out, self._pending = self._pending, []
        return out

    @property
    def held(self) -> list[str]:
        return [a for a in self.keys if self.slots[a] is Slot.HELD]

    @property
    def switching(self) -> frozenset[str]:
        """Addresses this node is taking make-before-break (a rebalance): bound, or being
        bound, while their holder still holds them."""
        return frozenset(self._switching)

    def heartbeat_fields(self, leaving: bool = False) -> dict[str, Any]:
        """What this node's next heartbeat says (state, holds, wants, lost).

        `leaving`: the farewell a stopping member sends after releasing its addresses, so
        the others take them over at once instead of after the detection time."""
        # A switchover's bind is claimed only once done (announced): the holder releases
        # when it hears the claim, and clients must have the announcement by then.
        claimed = [a for a in self.keys if self.slots[a] is Slot.HELD
                   or (self.slots[a] is Slot.BINDING and a not in self._switching)]
        return {
            "state": "leaving" if leaving else
            "isolated" if self.phase is Phase.ISOLATED else "alive",
            "holds": () if leaving else tuple(claimed),
            "wants": tuple(sorted(self.wants)),
            "lost": self._lost_members(),
            "digest": self.digest,
        }

    def holders(self) -> dict[str, tuple[str, ...]]:
        """Who holds each address as this member sees it: itself for what it has bound,
        then each live member whose heartbeats claim it (a lost member's last claims do
        not count: the address is not reachable there)."""
        out: dict[str, list[str]] = {a: [] for a in self.keys}
        for a in self.held:
            out[a].append(self.me)
        for name in self.order:
            v = self.views.get(name)
            if v is not None and v.alive:
                for a in sorted(v.holds):
                    out[a].append(name)
        return {a: tuple(h) for a, h in out.items()}

    def placement(self) -> tuple[PoolAddressStatus, ...]:
        """Every address with its owner, its preferred owner (home) and state."""
        taking = {a: self.slots[a].value for a in self.keys
                  if self.slots[a] in (Slot.PROBING, Slot.BINDING)}
        return placement(self.keys, self.holders(), self.home, taking,
                         self.last_holder.moves)

    def snapshot(self) -> dict[str, Any]:
        members = [{
            "name": self.me, "self": True, "weight": self.weights[self.me],
            "alive": True, "stable": self.phase is not Phase.ISOLATED,
            "state": "isolated" if self.phase is Phase.ISOLATED else "alive",
            "holds": self.held,
        }]
        for name in self.order:
            if name == self.me:
                continue
            v = self.views[name]
            members.append({
                "name": name, "self": False, "weight": v.weight, "alive": v.alive,
                "stable": v.stable, "state": v.state, "holds": sorted(v.holds),
                "wants": sorted(v.wants), "drift": v.drift, "heartbeats": v.heartbeats,
                "last_seen_ago": round(self.now - v.last_seen, 3)
                if v.last_seen is not None else None,
            })
        return {
            "name": self.pool.name,
            "member": self.me,
            "phase": self.phase.value,
            "reason": self.reason,
            "isolated": self.phase is Phase.ISOLATED,
            "link_up": self.link_up,
            "witness": str(self.pool.witness) if self.pool.witness else None,
            "witness_ok": self.witness_ok,
            "watch": self.pool.watch,
            "fallback": self.pool.fallback.mode.value,
            "config_digest": self.digest,
            "drift": sorted(n for n, v in self.views.items() if v.drift),
            "members": members,
            "assignment": dict(self.assignment),
            "addresses": {a: self.slots[a].value for a in self.keys},
            "placement": [p.to_dict() for p in self.placement()],
            "held": self.held,
            "wants": sorted(self.wants),
            "counters": dict(vars(self.counters)),
            "seconds_since_change": round(max(0.0, self.now - self.last_change), 3),
        }

    # ------------------------------------------------------------------ helpers

    def _do(self, *actions: PoolAction) -> None:
        self._pending.extend(actions)

    def _emit(self, kind: EventKind, reason: str, address: str | None = None, *,
              severity: Severity | None = None, **details: Any) -> None:
        extra = details.pop("details", {})
        self._do(Emit(Notice(kind=kind, reason=reason, monitor=self.pool.name,
                             address=address, state=self.phase.value, severity=severity,
                             details={**details, **extra})))

    def _next_token(self) -> int:
        self._token += 1
        return self._token

    def _go(self, phase: Phase, reason: str) -> None:
        check_edge(EDGES, f"pool {self.pool.name}", self.phase, phase)
        if phase is not self.phase:
            self.last_change = self.now
        self.phase = phase
        self.reason = reason

    def _silent(self, v: MemberView, factor: float = 1.0) -> bool:
        return v.last_seen is None or self.now - v.last_seen > factor * self.detection_time

    @property
    def _suspect_factor(self) -> float:
        """Silent this long (as a share of the detection time) makes a member suspect:
        one probe round before its verdict."""
        return max(0.0, 1.0 - PROBE.duration / self.detection_time)

    def _lost_members(self) -> tuple[str, ...]:
        """The members this node counts lost, for its heartbeats. One never heard counts
        too once this node has listened for its joining window: silence since this node
        started is silence, and its peers read this list to tell whether it hears them."""
        settled = self.phase not in (Phase.STARTING, Phase.JOINING)
        return tuple(sorted(n for n, v in self.views.items()
                            if not v.alive and (v.last_seen is not None or settled)))

    def _not_hearing_me(self, factor: float = 1.0) -> list[str]:
        """Members heard within `factor` x the detection time whose heartbeats list this
        node lost: this node's own heartbeats do not reach them."""
        return [n for n, v in self.views.items()
                if not self._silent(v, factor) and v.state != "leaving" and self.me in v.lost]

    def _visible(self, factor: float = 1.0) -> int:
        """This node plus the members heard within `factor` x the detection time that hear
        it too. One that lists this node lost leaves it out of its own quorum and formula:
        counting it here would let two members that cannot hear each other (their own
        heartbeats lost on the way) each see a quorum in the same third members and take
        the same address."""
        return 1 + sum(1 for v in self.views.values()
                       if not self._silent(v, factor) and v.state != "leaving"
                       and self.me not in v.lost)

    def _counts_as_quorum(self, visible: int) -> bool:
        n = len(self.order)
        return self.link_up and (2 * visible > n or (2 * visible == n and bool(self.witness_ok)))

    def _sure_quorum(self) -> bool:
        """A quorum even without the suspect members. Takes need it: a node cut off from
        its peers judges them lost one by one as their last heartbeats age, and between
        two verdicts it still counts a quorum of members that are already silent."""
        return self._counts_as_quorum(self._visible(self._suspect_factor))

    # ------------------------------------------------------------------ inputs

    def _on_started(self, ev: Started) -> None:
        self._go(Phase.JOINING, "joining: listening to the other members before taking "
                                "anything")
        self._joined_at = self.now
        for a in sorted(ev.held & set(self.keys)):
            self.slots[a] = Slot.HELD
            self.last_holder.saw(a, self.me)
            self._next_announce[a] = self.now + ANNOUNCE.refresh
            self._emit(EventKind.ADOPTED, "pool address already bound here at start-up: "
                       "adopted and announced again", address=a)
            self._do(Announce(a))

    def _on_heartbeat(self, ev: HeartbeatSeen) -> None:
        v = self.views.get(ev.member)
        if v is None:
            return  # the transport filters unknown senders; tolerate it anyway
        self.counters.heartbeats_seen += 1
        v.heartbeats += 1
        if self.phase is Phase.JOINING and v.last_seen is None:
            v.initial = True
        v.last_seen = self.now
        v.state = ev.state if ev.state in ("alive", "isolated", "leaving") else "alive"
        v.holds = ev.holds & set(self.keys)
        v.wants = ev.wants
        v.lost = ev.lost
        for a in v.holds:
            self.last_holder.saw(a, ev.member)
        if ev.digest != self.digest and not v.drift:
            v.drift = True
            self._emit(EventKind.CONFIG_DRIFT,
                       f"member {ev.member} runs a different configuration of pool "
                       f"{self.pool.name} (digest {ev.digest[:12]}, ours {self.digest[:12]}): "
                       "assignments may disagree until the configs match",
                       member=ev.member, theirs=ev.digest, ours=self.digest)
        elif ev.digest == self.digest and v.drift:
            v.drift = False
            self._emit(EventKind.CONFIG_DRIFT, f"member {ev.member} has the same pool "
                       "configuration again", severity=Severity.NOTICE, member=ev.member,
                       resolved=True)
        v.digest = ev.digest

    def _on_witness(self, ev: WitnessResult) -> None:
        if ev.ok:
            self._witness_misses = 0
            self.witness_ok = True
            return
        self._witness_misses += 1
        if self._witness_misses >= self.pool.looksalive.retry:
            self.witness_ok = False

    def _on_link(self, ev: LinkChanged) -> None:
        if ev.up == self.link_up:
            return
        self.link_up = ev.up
        if ev.up:
            self._emit(EventKind.LINK_UP, "this node's link is back")
        else:
            self._emit(EventKind.LINK_DOWN, "this node's link is down: taking nothing over, "
                       "keeping what it holds")

    def _on_gone(self, ev: AddressGone) -> None:
        a = ev.address
        if self.slots.get(a) is not Slot.HELD:
            return
        self.slots[a] = Slot.FREE
        self._switching.pop(a, None)
        self._do(SendHeartbeat())
        self._emit(EventKind.ADDRESS_REMOVED, "the address vanished from the interface; it "
                   "is taken again if the formula still gives it to this node", address=a)

    def _on_rebalance(self, ev: Rebalance) -> None:
        refusal = self._rebalance_refusal()
        if refusal is not None:
            self.last_rebalance = RebalanceAnswer(False, refusal)
            return
        self._rebalance_by = ev.by  # the hand-over pass, in the reconcile of this input
        everyone = assign(self.keys, self._live(stable_only=False), self.preferred,
                          self.weights, pool=self.pool.name)
        taking: dict[str, str] = {}
        refused: list[str] = []
        for a in self.keys:
            if everyone[a] != self.me or self.slots[a] is not Slot.FREE:
                continue
            holders = sorted(n for n, v in self.views.items() if v.alive and a in v.holds)
            if not holders:
                continue  # free: the normal path probes and binds it
            why = self._switchover_refusal(a, holders)
            if why is None:
                taking[a] = holders[0]
            else:
                refused.append(f"{a}: {why}")
        handing = tuple(a for a in self.held if self.assignment.get(a, self.me) != self.me
                        and a in self.views[self.assignment[a]].wants)
        for a, holder in taking.items():
            self._switching[a] = (holder, ev.by, self.now)
            self._start_bind(a)
        self.last_rebalance = RebalanceAnswer.of(
            taking, {a: self.assignment[a] for a in handing}, refused,
            nothing=f"nothing to move: no address the formula gives to {self.me} is held by "
                    f"another member, and no member asks for one {self.me} holds")

    def _rebalance_refusal(self) -> str | None:
        """Why this node may not take addresses from their holders now, or None."""
        if self.phase is not Phase.ACTIVE:
            return f"this member is not active ({self.reason})"
        if not self.link_up:
            return "this member's link is down"
        if not self._sure_quorum():
            return ("this member's quorum is not sure (a peer is about to be judged lost): "
                    "try again once the pool is settled")
        active_for = self.now - self.last_change
        if active_for < self.detection_time:
            return (f"this member has been active for only {active_for:.1f}s: the members' "
                    f"views settle for one detection time ({self.detection_time:g}s) after "
                    f"joining or regaining quorum; try again in "
                    f"{self.detection_time - active_for:.1f}s")
        return None

    def _switchover_refusal(self, a: str, holders: list[str]) -> str | None:
        """Why `a` may not be bound here while its holder still holds it, or None.

        The holder lets go only by the duplicates rule, by its own view: one that cannot
        hear this node, or whose formula keeps the address elsewhere, would keep it too."""
        if len(holders) > 1:
            return (f"held by {' and '.join(holders)} at once: the duplicates rule settles "
                    "that first")
        holder = holders[0]
        v = self.views[holder]
        if v.state == "isolated":
            return f"its holder {holder} is isolated: it takes no decision, so it would keep it"
        if self.me in v.lost:
            return (f"its holder {holder} counts {self.me} lost (this node's heartbeats do not "
                    "reach it): it would keep it")
        if self._silent(v, self._suspect_factor):
            return f"its holder {holder} has gone quiet: it may not hear this node"
        theirs = {n: self.weights[n] for n in self.order if n not in v.lost
                  and (n in (holder, self.me) or self.views[n].state != "isolated")}
        keeper = assign(self.keys, theirs, self.preferred, self.weights,
                        pool=self.pool.name)[a]
        if keeper != self.me:
            return (f"its holder {holder} would keep it: by its view (lost: "
                    f"{', '.join(sorted(v.lost)) or 'none'}) the formula gives it to {keeper}")
        return None

    def _on_probe_done(self, ev: ProbeDone) -> None:
        for early, (token, suspect, started) in list(self._early.items()):
            if token == ev.token:
                del self._early[early]
                # answered: no conflict yet, the round after the loss decides
                self._early_done[early] = (suspect, started, self.now, ev.answered_by is None)
                return
        a = self._probe_tokens.pop(ev.token, None)
        if a is None or self.slots[a] is not Slot.PROBING:
            return  # stale: cancelled or superseded
        if ev.answered_by is not None:
            self.slots[a] = Slot.FREE
            self._retry_at[a] = self.now + self.detection_time
            self.counters.conflicts += 1
            if a not in self._conflict_open:
                self._conflict_open.add(a)
                self._emit(EventKind.ADDRESS_CONFLICT,
                           f"the formula gives this address to {self.me}, but {ev.answered_by} "
                           "answers ARP/NDP for it: not binding, trying again later",
                           address=a, mac=ev.answered_by)
            return
        if self.phase is not Phase.ACTIVE or self.assignment.get(a) != self.me \
                or not self._sure_quorum():
            self.slots[a] = Slot.FREE  # the world changed while probing
            return
        if self._outranked(a):
            return
        self._start_bind(a)

    def _on_bind_done(self, ev: BindDone) -> None:
        a = self._bind_tokens.pop(ev.token, None)
        if a is None or self.slots[a] is not Slot.BINDING:
            return
        switching = self._switching.get(a)
        if ev.error is not None:
            self._switching.pop(a, None)
            self.slots[a] = Slot.FREE
            self._retry_at[a] = self.now + self.detection_time
            self.counters.bind_failures += 1
            self._emit(EventKind.TAKEOVER_FAILED, f"could not bind the address: {ev.error}",
                       address=a)
            return
        self.slots[a] = Slot.HELD
        self._conflict_open.discard(a)
        self._next_announce[a] = self.now + ANNOUNCE.refresh
        before = self.last_holder.get(a)
        self.last_holder.saw(a, self.me)
        self._do(SendHeartbeat())
        if switching is not None:
            holder, by, _ = switching
            self._switching[a] = (holder, by, self.now)  # the holder's time runs from here
            self.counters.switchovers += 1
            self._emit(EventKind.SWITCHOVER,
                       f"took it from {holder} make-before-break (rebalance by {by}): bound "
                       f"and announced here; {holder} releases it when it hears this node "
                       "hold it", address=a, details={"from": holder, "to": self.me})
        elif before is not None and before != self.me:
            self.counters.takeovers += 1
            lost = before in self.views and not self.views[before].alive
            why = "was lost" if lost else "released it"
            self._emit(EventKind.ADDRESS_MOVED, f"{before} {why}: address moved {before} -> "
                       f"{self.me} per the formula; bound and announced", address=a,
                       details={"from": before, "to": self.me})
        else:
            self.counters.claims += 1
            self._emit(EventKind.CLAIMED, "nobody held the address and the formula gives it "
                       "to this node: bound and announced", address=a)

    # ------------------------------------------------------------------ evaluation

    def _refresh(self) -> None:
        self._judge_members()
        if self.phase is Phase.JOINING and self.now - self._joined_at < self.detection_time:
            return
        self._judge_quorum()
        self._reconcile()
        self._refresh_announcements()

    def _watcher_of(self, name: str) -> str:
        """The next member after `name` in configured order that this node hears."""
        i = self.order.index(name)
        for step in range(1, len(self.order)):
            cand = self.order[(i + step) % len(self.order)]
            if cand == self.me or not self._silent(self.views[cand]):
                return cand
        return self.me

    def _judge_members(self) -> None:
        hold_down = self.pool.fallback.hold_down
        auto = self.pool.fallback.mode is FallbackMode.AUTO
        for name in self.order:
            if name == self.me:
                continue
            v = self.views[name]
            if self.pool.watch == "neighbour":
                watcher = self._watcher_of(name)
                if watcher == self.me:
                    lost = self._silent(v)
                else:
                    lost = name in self.views[watcher].lost or self._silent(v, 2.0)
            else:
                lost = self._silent(v)
            lost = lost or v.state == "leaving"
            if v.alive and lost:
                v.alive = v.stable = False
                v.initial = False
                v.back_at = None
                held = sorted(v.holds)
                if v.state == "leaving":
                    self._emit(EventKind.MEMBER_LOST, f"member {name} is stopping and left "
                               "the pool", member=name, held=len(v.holds))
                    continue
                self._emit(EventKind.MEMBER_LOST,
                           f"member {name} is lost: no heartbeat for "
                           f"{self.now - (v.last_seen or self.now):.1f}s (detection "
                           f"{self.detection_time:g}s, watch {self.pool.watch})"
                           + (f"; it held {', '.join(held)}" if held else ""),
                           member=name, held=len(held))
            elif not v.alive and not lost:
                v.alive = True
                v.back_at = self.now
                if not v.initial:
                    plan = (f"it gets its addresses back after {hold_down:g}s of continuous "
                            "heartbeats" if auto else "fallback is manual: addresses stay "
                            "where they are")
                    self._emit(EventKind.MEMBER_BACK, f"member {name} is back: {plan}",
                               member=name)
            if v.alive and not v.stable:
                v.stable = (not auto or v.initial
                            or (v.back_at is not None and self.now - v.back_at >= hold_down))

    def _judge_quorum(self) -> None:
        n = len(self.order)
        visible = self._visible()
        if not self.link_up:
            ok, why = False, "own link is down"
        elif self._counts_as_quorum(visible):
            ok, why = True, f"sees {visible} of {n} members" + (
                f" and the witness {self.pool.witness}" if 2 * visible == n else "")
        else:
            witness = ""
            if self.pool.witness is not None:
                witness = (" (the witness only breaks ties at exactly half)"
                           if 2 * visible < n else f"; witness {self.pool.witness} unreachable")
            deaf = self._not_hearing_me()
            unheard = (f" ({', '.join(sorted(deaf))} count{'s' if len(deaf) == 1 else ''} "
                       f"{self.me} lost: its heartbeats do not reach them)" if deaf else "")
            ok, why = False, f"sees only {visible} of {n} members{unheard}{witness}"
        if ok and self.phase is not Phase.ACTIVE:
            was = self.phase
            self._go(Phase.ACTIVE, f"active: {why}")
            if was is Phase.ISOLATED:
                self._rejoined_at = self.now
                self._emit(EventKind.REJOINED, f"quorum regained: {why}", visible=visible)
        elif not ok and self.phase is not Phase.ISOLATED:
            self._go(Phase.ISOLATED, f"isolated: {why}")
            for a in self.keys:
                if self.slots[a] is Slot.PROBING:
                    self._cancel_probe(a)
            held = self.held
            self._emit(EventKind.ISOLATED, f"no quorum: {why}; taking nothing over, keeping "
                       f"the {len(held)} address(es) held here", visible=visible, members=n)
        elif ok:
            self.reason = f"active: {why}"
        else:  # keep the reason current: who is missing changes while isolated
            self.reason = f"isolated: {why}"

    def _cancel_probe(self, a: str) -> None:
        for token, addr in list(self._probe_tokens.items()):
            if addr == a:
                del self._probe_tokens[token]
                self._do(CancelProbe(token, a))
        self.slots[a] = Slot.FREE

    def _live(self, *, stable_only: bool) -> dict[str, int]:
        out = {self.me: self.weights[self.me]}
        for name, v in self.views.items():
            if v.alive and v.state != "isolated" and (v.stable or not stable_only):
                out[name] = v.weight
        return out

    def _reconcile(self) -> None:
        pool = self.pool.name
        desired = assign(self.keys, self._live(stable_only=True), self.preferred,
                         self.weights, pool=pool)
        everyone = assign(self.keys, self._live(stable_only=False), self.preferred,
                          self.weights, pool=pool)
        self.assignment = desired
        active = self.phase is Phase.ACTIVE and self.link_up
        by, self._rebalance_by = self._rebalance_by, None
        auto = self.pool.fallback.mode is FallbackMode.AUTO or by is not None
        sure = active and self._sure_quorum()
        wants: set[str] = set()
        for a in self.keys:
            slot = self.slots[a]
            others = {n for n, v in self.views.items() if v.alive and a in v.holds}
            if slot is Slot.HELD:
                if a in self._switching:
                    holder, by, since = self._switching[a]
                    if not others:
                        # the holder let go: the switchover is done. Announce once more:
                        # a refresh the holder sent between our announcement and its
                        # release pointed the clients back at it, and our burst's next
                        # frame is an announce interval away, a gap they would see
                        del self._switching[a]
                        self._do(Announce(a))
                    elif self.now - since > self.detection_time:
                        # its view differs after all: one holder, not two for good
                        self._release(a)
                        self._emit(EventKind.YIELDED,
                                   f"switchover (rebalance by {by}): {', '.join(sorted(others))} "
                                   f"still holds it {self.detection_time:g}s after the bind; "
                                   "released it here so it is not held twice", address=a,
                                   keeper=holder)
                    continue
                if others:
                    keeper = everyone[a] if everyone[a] in others | {self.me} else \
                        self._ranked_first(a, others | {self.me})
                    if keeper != self.me and a in self.views[keeper].wants:
                        # the keeper bound it while this node held it: a rebalance there
                        self.counters.switchovers += 1
                        self._release(a)
                        self._emit(EventKind.SWITCHOVER,
                                   f"{keeper} took it make-before-break (rebalance): bound "
                                   f"and announced there, released it here", address=a,
                                   details={"from": self.me, "to": keeper})
                    elif keeper != self.me:
                        self.counters.yields += 1
                        self._release(a)
                        self._emit(EventKind.YIELDED,
                                   f"held here and by {', '.join(sorted(others))}: the formula "
                                   f"keeps it on {keeper}; released it here", address=a,
                                   keeper=keeper)
                elif active and auto and desired[a] != self.me and \
                        a in self.views[desired[a]].wants:
                    self.counters.handovers += 1
                    self._release(a)
                    self._emit(EventKind.RELEASED, f"handed over to {desired[a]}, which the "
                               "formula gives it to and which asked for it"
                               + (f" (rebalance by {by})" if by else ""), address=a,
                               to=desired[a])
                continue
            mine = active and desired.get(a) == self.me
            if slot is Slot.PROBING:
                if not mine or others:
                    self._cancel_probe(a)
                continue
            if slot is Slot.BINDING or not mine:
                continue
            if others:
                wants.add(a)
            elif self.now >= self._retry_at.get(a, 0.0) and sure:
                self._take(a)
        self._probe_suspects(active)
        # Free addresses being probed are claimed in `wants` too: two members whose views
        # differ (a member back from silence counts itself while its peers still hold it
        # down) can probe the same orphan at once, and neither probe sees the other's
        # bind. The claim lets the one ranked second back off before binding.
        wants |= {a for a in self.keys if self.slots[a] is Slot.PROBING}
        wants |= set(self._early) | set(self._early_done)
        # a switchover claims what it bound until the holder lets go: the holder tells a
        # switchover (both sides report it) from a duplicate after a partition
        wants |= {a for a in self._switching if self.slots[a] is Slot.HELD}
        if wants != self.wants:
            self.wants = frozenset(wants)
            self._do(SendHeartbeat())

    def _take(self, a: str) -> None:
        """Start taking a free address the formula gives to this node: bind on a valid
        early round, adopt one still running, or probe now."""
        early = self._early.pop(a, None)
        done = self._early_done.pop(a, None)
        if early is not None and not self._heard_since(early[1], early[2]):
            self._probe_tokens[early[0]] = a
            self.slots[a] = Slot.PROBING
        elif done is not None and self._still_valid(*done):
            if not self._outranked(a):
                self._start_bind(a)
        else:
            if early is not None:  # begun before the suspect's farewell: ask again
                self._do(CancelProbe(early[0], a))
            self._probe_tokens[self._start_probe(a)] = a
            self.slots[a] = Slot.PROBING

    def _outranked(self, a: str) -> bool:
        """Another live member claims the free address `a` too and binds it, not this node
        (which says why): a claimant that counts this node lost; any claimant while this
        node has just left isolation; or else the claimant ranked first by HRW.

        The HRW rank only settles it when each claimant hears the other's claim. One that
        lists this node in its `lost` does not hear our heartbeats (this node's own are
        lost on the way, or it only just came back): it will bind whatever the ranks say,
        so ranking first here would bind the address a second time. Likewise for one
        detection time after this node leaves isolation: its peers may still count it
        isolated (out of their formula) and, if they left isolation at the same moment,
        each sees the other's claim only as a rival to outrank. Backing off costs one
        retry (the address is free, nobody serves it either way); binding twice costs a
        duplicate."""
        rivals = {n for n, v in self.views.items() if v.alive and a in v.wants}
        if not rivals:
            return False
        claimants = rivals | {self.me}
        deaf = {n for n in rivals if self.me in self.views[n].lost}
        since_rejoined = (None if self._rejoined_at is None
                          else self.now - self._rejoined_at)
        if deaf:
            first = self._ranked_first(a, deaf)
            why = (f"{first} claims this free address too but counts {self.me} lost, so it "
                   f"cannot hear this claim and binds it anyway")
        elif since_rejoined is not None and since_rejoined < self.detection_time:
            first = self._ranked_first(a, rivals)
            why = (f"{first} claims this free address too, and {self.me} left isolation "
                   f"{since_rejoined:.2f}s ago: {first} may still count it isolated and "
                   "bind it anyway")
        else:
            first = self._ranked_first(a, claimants)
            if first == self.me:
                return False
            why = (f"{first} claims this free address too and ranks first among "
                   f"{', '.join(sorted(claimants))}")
        self.slots[a] = Slot.FREE
        self._retry_at[a] = self.now + self.detection_time
        self._emit(EventKind.YIELDED, f"{why}: not binding it here, so it is never bound "
                   "twice", address=a, keeper=first)
        return True

    def _ranked_first(self, a: str, members: set[str]) -> str:
        """The member HRW ranks first for `a` among `members`: who keeps an address two
        hold, and who binds a free one two claim."""
        return ranking(self.pool.name, a, {m: self.weights[m] for m in members})[0]

    def _start_probe(self, a: str) -> int:
        token = self._next_token()
        self._do(StartProbe(token, a, PROBE.count, PROBE.interval, OnProber.YIELD))
        return token

    def _start_bind(self, a: str) -> None:
        token = self._next_token()
        self._bind_tokens[token] = a
        self.slots[a] = Slot.BINDING
        self._do(Bind(token, a))

    def _heard_since(self, member: str, t: float) -> bool:
        last = self.views[member].last_seen
        return last is not None and last > t

    def _still_valid(self, suspect: str, started: float, finished: float, clean: bool) -> bool:
        """An early round binds: nobody answered, the suspect sent nothing since it
        began, and it ended at most one round ago."""
        return (clean and not self._heard_since(suspect, started)
                and self.now - finished <= PROBE.duration)

    def _probe_suspects(self, active: bool) -> None:
        """Start (or cancel) early probes of the addresses held by suspect members."""
        wanted: dict[str, str] = {}
        if active:
            live = self._live(stable_only=True)
            for name, v in self.views.items():
                if not (v.alive and v.holds and v.last_seen is not None
                        and self._silent(v, self._suspect_factor)):
                    continue
                if self.pool.watch == "neighbour" and self._watcher_of(name) != self.me:
                    continue  # the verdict comes from its watcher, maybe much later
                without = assign(self.keys, {n: w for n, w in live.items() if n != name},
                                 self.preferred, self.weights, pool=self.pool.name)
                for a in v.holds:
                    if without.get(a) == self.me and self.slots[a] is Slot.FREE:
                        wanted[a] = name
        for a, (token, suspect, _) in list(self._early.items()):
            if wanted.get(a) != suspect:
                del self._early[a]
                self._do(CancelProbe(token, a))
        for a, (suspect, *_) in list(self._early_done.items()):
            if wanted.get(a) != suspect:
                del self._early_done[a]
        for a, suspect in wanted.items():
            if a not in self._early and a not in self._early_done:
                self._early[a] = (self._start_probe(a), suspect, self.now)

    def _release(self, a: str) -> None:
        self.slots[a] = Slot.FREE
        self._switching.pop(a, None)
        self._do(Release(a), SendHeartbeat())

    def _refresh_announcements(self) -> None:
        if self.phase is not Phase.ACTIVE or not self.link_up or ANNOUNCE.refresh <= 0:
            return
        for a in self.held:
            if self.now >= self._next_announce.get(a, 0.0):
                self._next_announce[a] = self.now + ANNOUNCE.refresh
                self._do(Announce(a))


Handler = Callable[[PoolMachine, Any], None] | None

_RUNNING: dict[type, Handler] = {
    HeartbeatSeen: PoolMachine._on_heartbeat,
    Tick: None,
    WitnessResult: PoolMachine._on_witness,
    LinkChanged: PoolMachine._on_link,
    AddressGone: PoolMachine._on_gone,
    ProbeDone: PoolMachine._on_probe_done,
    BindDone: PoolMachine._on_bind_done,
    Rebalance: PoolMachine._on_rebalance,
}

TRANSITIONS: dict[Phase, dict[type, Handler]] = {
    Phase.STARTING: {
        Started: PoolMachine._on_started,
        Tick: None,
        WitnessResult: PoolMachine._on_witness,
        LinkChanged: PoolMachine._on_link,
    },
    Phase.JOINING: dict(_RUNNING),
    Phase.ACTIVE: dict(_RUNNING),
    Phase.ISOLATED: dict(_RUNNING),
}

# The phases each phase may go to (`_go` checks; docs/design.md draws it). A member never
# goes back to JOINING: a restart is a new machine.
EDGES: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.JOINING}),
    Phase.JOINING: frozenset({Phase.ACTIVE, Phase.ISOLATED}),  # after one detection time
    Phase.ACTIVE: frozenset({Phase.ISOLATED}),
    Phase.ISOLATED: frozenset({Phase.ACTIVE}),
}
