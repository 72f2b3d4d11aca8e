"""The failover decision for one service address, as a pure state machine.

No I/O and no clock of its own: `handle(input, now)` takes one input and the monotonic time,
changes state and returns the actions to carry out. The runtime, the tests and the
benchmarks drive the very same object.

States (what this node does about the address):

    STARTING  -- waiting for the runtime's first look at the interface
    WATCHING  -- the address is (or should be) held elsewhere; LooksAlive pings it
    PROBING   -- about to bind: an ARP/NDP probe checks nobody answers for it
    BINDING   -- the runtime binds and announces it
    HOLDING   -- the address is bound here

Which input is legal in which state is the table `TRANSITIONS`; anything else raises
`IllegalInput`. Which state may follow which is the table `EDGES`; a handler that tries
another change raises `IllegalTransition` (docs/design.md draws the diagram).
Admin commands that do not apply raise `CommandRefused` with a reason the
CLI shows; a command whose end state already holds raises `AlreadyDone` (success, nothing
changed), so every admin command is idempotent. The rules that decide, each with the
reason string its event carries:

* LooksAlive: an ICMP miss starts an ARP/NDP probe at once. Any answer from the holder
  (ICMP or ARP) proves it alive and resets the count, so one lost ping can never cause a
  takeover; `retry` consecutive misses with no ARP answer declare the address down.
* Takeover binds only after a complete probe round found nobody answering (on a lossy
  path, several rounds in a row: `probe_rounds_needed`). If someone answers, the node does
  not bind and raises `address_conflict`.
* Two nodes probing a free address at once each hear the other's probe (RFC 5227
  "simultaneous probe"); the core tells the runtime per probe what such a prober counts
  as (`OnProber`), so the outcome is decided, not left to timing: a `primary` ignores
  probers (only a host that has the address stops it), so in a primary/backup pair the
  primary always goes ahead. A `backup` yields to a prober: it backs off without an alarm
  and stays silent for a probe round plus a detection time (the contender binds meanwhile
  and answers); if the address is still down after that, its next probes use the MAC
  tie-break, so of two backups of a dead holder exactly one goes ahead.
* Start-up grace: a backup that starts does not take over an address it has never seen
  answer for `backup_grace` (config: derived from the timing, or `startup_grace`), nor
  probe it (its probes would contend with the primary's start-up probe): a primary and
  backup booted together end with the primary holding. Any answer ends the grace early.
* No takeover while this node's own link is down, while paused, or during a grace (the
  start-up grace, the back-off after a contended probe, and the grace after an automatic
  fallback, when the primary is claiming the address).
* Two holders: a holder whose link went down since it bound re-probes when the link
  returns and yields to a holder that answers. Two holders that both stayed connected:
  the `primary` keeps the address and re-announces, the `backup` yields and reports the
  split brain (`yielded`, detail `split_brain`), whichever of them heard the other first.
* Switchover (`minisft switchover`, on the primary): make-before-break. The primary
  binds and announces at once, without waiting for the holder to let go; the holder (its
  backup) hears the announcement and yields by the rule above. The primary refuses unless
  its link is up, its own IsAlive check (run against its local_ip) passes, and the node
  that answers for the address is its `peer_ip` (same MAC): it never takes an address
  from a third node. The backup tells a switchover from a healed split brain by what the
  peer did before announcing: a switchover comes from a peer that resolved the address
  by ARP/NDP (`PeerAsked`: it was watching it), a split brain from a peer that held it.
  Over IPv6 the peer mostly asks from its link-local address: that counts when the MAC
  is the one frames from or for peer_ip showed (`PeerLinkAddress`).
  The evidence is dropped at the first unanswered ping to a peer that was not down, so
  a partition in between turns it back into a split brain. Both sides report `switchover`.
* Automatic fallback (backup role only): release once `peer_ip` passed LooksAlive (and
  IsAlive, when configured) continuously for `hold_down`; any miss restarts the hold-down.
  If the primary does not claim the address after a fallback, the backup takes it again
  and suspends automatic fallback until the peer has been down and back, so a broken
  primary cannot make the address ping-pong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from minisft.config.model import FallbackMode, MonitorConfig, Role
from minisft.core.actions import (
    Action,
    Announce,
    Bind,
    BindDone,
    CancelProbe,
    Emit,
    IllegalInput,
    OnProber,
    ProbeDone,
    Release,
    StartProbe,
)
from minisft.core.edges import check_edge
from minisft.core.events import EventKind, Notice
from minisft.core.io import (
    AddressVanished,
    Command,
    ConflictSeen,
    Input,
    LateReply,
    LinkChanged,
    PeerAsked,
    PeerLinkAddress,
    PeerPingResult,
    PeerServiceResult,
    PingResult,
    Reconfigured,
    ServiceResult,
    Started,
    Tick,
    Verb,
)
from minisft.core.rto import RtoEstimator


class State(StrEnum):
    STARTING = "starting"
    WATCHING = "watching"
    PROBING = "probing"
    BINDING = "binding"
    HOLDING = "holding"


class Purpose(StrEnum):
    """Why the machine is probing/binding: decides the event and what a refusal means."""

    TAKEOVER = "takeover"
    CLAIM = "claim"
    SWITCHOVER = "switchover"
    STARTUP = "startup"
    REPROBE = "reprobe"


class Grace(StrEnum):
    """Why the node keeps quiet about a down address for a while (no probe, no takeover)."""

    STARTUP = "startup"  # this backup just started: its primary may be starting too
    CONTENDED = "contended"  # another node probed for the address at the same time
    FALLBACK = "fallback"  # handed the address back: the primary is claiming it


class Health(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"  # ICMP unanswered but the holder answers ARP/NDP
    DOWN = "down"


class CommandRefused(Exception):
    """An admin command that does not apply now; the message says why, for the CLI."""


class AlreadyDone(Exception):
    """An admin command whose end state already holds: nothing to do, and not an error
    (as `systemctl start` of a running unit). The message says what holds, for the CLI.

    At human speed the world moves between reading the status and typing: by the time the
    admin types `claim` on the primary, it may already have taken the released address
    over by itself. Refusing that would turn the documented procedure into a failure."""


# Conflicts while holding are re-announced at most this often (RFC 5227 DEFEND_INTERVAL
# is 10 s; we re-announce faster but report one conflict per quiet period).
DEFEND_SPACING = 1.0
CONFLICT_QUIET = 10.0

# On a lossy path a whole probe round can go unanswered by a live holder (each probe is lost
# with about the ping loss rate): at 20% loss each way, 3 probes all fail 4.7% of the
# time. A takeover then needs as many unanswered rounds in a row as make that this rare,
# judged on the ping loss measured while the holder answered.
FALSE_TAKEOVER_ODDS = 1e-5  # chance that the required rounds all miss a live holder
MAX_PROBE_ROUNDS = 6
LOSS_GAIN = 1 / 16  # EWMA gain of the ping loss rate


@dataclass
class LooksAliveStatus:
    health: Health = Health.UNKNOWN
    misses: int = 0  # consecutive misses not covered by an ARP/NDP answer
    icmp_misses: int = 0  # consecutive ICMP misses, whatever ARP said
    last_rtt: float | None = None
    last_ok_at: float | None = None
    sent: int = 0
    lost: int = 0
    rto: RtoEstimator = field(default_factory=RtoEstimator)  # how long the next ping waits
    # ping loss rate (EWMA) while the holder answered: a run of misses counts only once a
    # reply ends it, so a dead holder does not raise it
    loss: float = 0.0

    def count_answered(self) -> None:
        """A reply after `icmp_misses` misses: fold them and the reply into `loss`."""
        for _ in range(min(self.icmp_misses, 64)):
            self.loss += LOSS_GAIN * (1.0 - self.loss)
        self.loss -= LOSS_GAIN * self.loss


@dataclass
class ServiceStatus:
    failures: int = 0
    dead: bool = False
    last_ok: bool | None = None
    last_latency: float | None = None
    detail: str = ""


@dataclass
class PeerStatus:
    health: Health = Health.UNKNOWN
    misses: int = 0
    last_rtt: float | None = None
    service_ok: bool | None = None
    up_since: float | None = None  # start of the current continuous healthy stretch
    # the MAC the peer used to resolve the address since it last answered ping: it was
    # watching the address, so its announcement of it is a switchover (module docstring)
    watching_mac: str | None = None
    # the peer's link-layer address, as frames from or for peer_ip show it: identifies its
    # IPv6 solicitations from a link-local address (PeerAsked.link_local)
    link_mac: str | None = None


@dataclass
class Counters:
    takeovers: int = 0
    claims: int = 0
    releases: int = 0
    fallbacks: int = 0
    yields: int = 0
    conflicts: int = 0
    service_alarms: int = 0


@dataclass
class MonitorMachine:
    config: MonitorConfig
    now: float
    state: State = State.STARTING
    reason: str = "starting: looking at the interface"
    purpose: Purpose | None = None
    paused: bool = False
    link_up: bool = True
    cut_off: bool = False  # link went down while holding: re-probe before trusting it
    conflict_open: bool = False
    holder_mac: str | None = None
    looks: LooksAliveStatus = field(default_factory=LooksAliveStatus)
    service: ServiceStatus = field(default_factory=ServiceStatus)
    peer: PeerStatus = field(default_factory=PeerStatus)
    counters: Counters = field(default_factory=Counters)
    last_change: float = 0.0
    _token: int = 0
    _probe_token: int | None = None
    _bind_token: int | None = None
    _clear_rounds: int = 0  # complete probe rounds without answer since suspicion began
    _takeover_not_before: float = 0.0
    _grace: Grace | None = None  # why _takeover_not_before is in the future
    _contended: bool = False  # a prober answered since the address last answered
    _fallback_at: float | None = None
    _fallback_suspended: bool = False
    _last_conflict_at: float = 0.0
    _last_defend_at: float = -1e9
    _next_refresh_at: float = 0.0
    _pending: list[Action] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last_change = self.now

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def address(self) -> str:
        """The service address as the actions name it ("192.0.2.10/24")."""
        return str(self.config.address)

    def handle(self, event: Input, now: float) -> list[Action]:
        """Feed one input; return the actions to carry out, in order."""
        handlers = TRANSITIONS[self.state]
        kind = type(event)
        if kind not in handlers:
            raise IllegalInput(f"{self.name}: {kind.__name__} cannot happen in state "
                               f"{self.state.value}")
        self.now = now
        self._pending = []
        handler = handlers[kind]
        if handler is not None:
            handler(self, event)
        out, self._pending = self._pending, []
        return out

    @property
    def wants_looksalive(self) -> bool:
        """Should the runtime ping the service address now?"""
        if self.paused or not self.link_up:
            return False
        return self.state is State.WATCHING or (
            self.state is State.PROBING and self.purpose is Purpose.TAKEOVER
        )

    @property
    def ping_timeout(self) -> float:
        """How long the next LooksAlive ping waits for its reply: the RTO estimated from
        the measured round trips, at most the configured timeout (`minisft.core.rto`)."""
        return self.looks.rto.timeout(self.config.looksalive.timeout)

    @property
    def probe_rounds_needed(self) -> int:
        """Unanswered ARP/NDP probe rounds in a row a takeover needs: one on a clean path,
        more when the measured loss could make a live holder miss a whole round."""
        one_round = self.looks.loss ** self.config.probe.count
        if one_round <= FALSE_TAKEOVER_ODDS:
            return 1
        if one_round >= 1.0:
            return MAX_PROBE_ROUNDS
        return min(MAX_PROBE_ROUNDS,
                   math.ceil(math.log(FALSE_TAKEOVER_ODDS) / math.log(one_round)))

    def next_ping_delay(self, elapsed: float) -> float:
        """Seconds from now to the next ping, given how long the last one took.

        After a miss the next ping goes out at once: retries are back to back, so detection
        takes about `interval + retry * RTO`, not `retry * interval`.
        """
        if self.looks.icmp_misses > 0 and self.looks.misses > 0:
            return 0.0
        return max(0.0, self.config.looksalive.interval - elapsed)

    @property
    def wants_isalive(self) -> bool:
        if self.paused or not self.config.isalive.enabled or not self.link_up:
            return False
        if self.state is State.WATCHING:
            return self.looks.health is Health.UP
        return self.state is State.HOLDING and self.config.isalive.on_holder

    @property
    def wants_peer_watch(self) -> bool:
        """Ping `peer_ip` (the primary's host) while this backup holds its address."""
        return (
            not self.paused
            and self.link_up
            and self.config.peer_ip is not None
            and self.config.role is Role.BACKUP
            and self.state is State.HOLDING
        )

    @property
    def wants_peer_isalive(self) -> bool:
        return (
            self.wants_peer_watch
            and self.config.isalive.enabled
            and self.config.fallback.mode is FallbackMode.AUTO
            and self.peer.health is Health.UP
        )

    @property
    def holds(self) -> bool:
        return self.state is State.HOLDING or (
            self.state is State.PROBING and self.purpose is Purpose.REPROBE
        )

    @property
    def holder(self) -> str:
        """Who holds the address, as far as this node knows: self, other, none, unknown."""
        if self.holds:
            return "self"
        if self.looks.health in (Health.UP, Health.DEGRADED) or self.conflict_open:
            return "other"
        if self.looks.health is Health.DOWN:
            return "none"
        return "unknown"

    @property
    def _in_grace(self) -> bool:
        """Just handed the address back: stay silent, even ARP probes would contend with
        the primary's claim."""
        return self.now < self._takeover_not_before

    @property
    def fallback_grace(self) -> float:
        """After an automatic fallback, how long the primary gets to claim the address."""
        return 2 * self.config.detection_time + self.config.probe.duration + 1.0

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The monitor's state for `minisft status --json`, check_minisft and SNMP; the
        durations in it as of `now` (default: the last input's time)."""
        c = self.config
        now = self.now if now is None else now
        return {
            "name": c.name,
            "address": str(c.ip),
            "prefixlen": c.address.network.prefixlen,
            "role": c.role.value,
            "state": self.state.value,
            "purpose": self.purpose.value if self.purpose else None,
            "paused": self.paused,
            "holder": self.holder,
            "holder_mac": self.holder_mac,
            "reason": self.reason,
            "link_up": self.link_up,
            "conflict_open": self.conflict_open,
            "seconds_since_change": round(max(0.0, now - self.last_change), 3),
            "looksalive": {
                "health": self.looks.health.value,
                "misses": self.looks.misses,
                "icmp_misses": self.looks.icmp_misses,
                "rtt_ms": _ms(self.looks.last_rtt),
                "rto_ms": _ms(self.ping_timeout),
                "sent": self.looks.sent,
                "lost": self.looks.lost,
            },
            "isalive": {
                "enabled": c.isalive.enabled,
                "check": c.isalive.check.type,
                "ok": self.service.last_ok,
                "dead": self.service.dead,
                "latency_ms": _ms(self.service.last_latency),
                "detail": self.service.detail,
            },
            "peer": {
                "ip": str(c.peer_ip) if c.peer_ip else None,
                "health": self.peer.health.value,
                "rtt_ms": _ms(self.peer.last_rtt),
                "up_for": round(now - self.peer.up_since, 3)
                if self.peer.up_since is not None else None,
                "fallback": c.fallback.mode.value,
                "hold_down": c.fallback.hold_down,
                "auto_fallback_suspended": self._fallback_suspended,
                # set while holding: the peer resolved the address, so its announcement
                # will count as a switchover, not a split brain
                "watching_mac": self.peer.watching_mac,
            },
            "counters": dict(vars(self.counters)),
        }

    # ------------------------------------------------------------------ helpers

    def _go(self, state: State, reason: str, purpose: Purpose | None = None) -> None:
        check_edge(EDGES, self.name, self.state, state)
        if state is not self.state:
            self.last_change = self.now
        self.state = state
        self.purpose = purpose
        self.reason = reason

    def _do(self, *actions: Action) -> None:
        self._pending.extend(actions)

    def _emit(self, kind: EventKind, reason: str, **details: Any) -> None:
        state = self.state.value + (" (paused)" if self.paused else "")
        self._do(Emit(Notice(kind=kind, reason=reason, monitor=self.name,
                             address=str(self.config.ip), state=state, details=details)))

    def _next_token(self) -> int:
        self._token += 1
        return self._token

    def _start_probe(self) -> None:
        token = self._next_token()
        self._probe_token = token
        p = self.config.probe
        self._do(StartProbe(token, self.address, p.count, p.interval, self._on_prober()))

    def _on_prober(self) -> OnProber:
        """What another node probing at the same moment counts as (module docstring)."""
        if self.config.role is Role.PRIMARY:
            return OnProber.IGNORE
        return OnProber.TIEBREAK if self._contended else OnProber.YIELD

    def _hold_off(self, grace: Grace, seconds: float) -> None:
        self._grace = grace
        self._takeover_not_before = self.now + seconds

    def _end_grace(self, *graces: Grace) -> None:
        if self._grace in graces:
            self._grace = None
            self._takeover_not_before = 0.0

    def _address_answered(self) -> None:
        """Someone has the address: a start-up or contention grace has done its job."""
        self._contended = False
        self._end_grace(Grace.STARTUP, Grace.CONTENDED)

    def _contention(self, mac: str) -> None:
        """Another node probes for the address now: let it bind (module docstring)."""
        self._contended = True
        self._clear_rounds = 0
        self._hold_off(Grace.CONTENDED, self.config.probe.duration
                       + self.config.detection_time)
        self.holder_mac = mac

    def _cancel_probe(self) -> None:
        if self._probe_token is not None:
            self._do(CancelProbe(self._probe_token, self.address))
            self._probe_token = None
        self._clear_rounds = 0

    def _bind(self, purpose: Purpose, reason: str) -> None:
        self._cancel_probe()
        token = self._next_token()
        self._bind_token = token
        self._go(State.BINDING, reason, purpose)
        self._do(Bind(token, self.address))

    def _reset_looks(self) -> None:
        self.looks.misses = 0
        self.looks.icmp_misses = 0
        self.looks.health = Health.UNKNOWN

    def _to_watching(self, reason: str) -> None:
        self._cancel_probe()
        self._reset_looks()
        self.peer = PeerStatus()
        self._go(State.WATCHING, reason)

    # ------------------------------------------------------------------ start-up

    def _on_started(self, ev: Started) -> None:
        if ev.address_bound:
            self._go(State.HOLDING, "address was already on the interface: adopted it")
            self.cut_off = not self.link_up  # link went down before start-up: re-probe
            self._next_refresh_at = self.now + self.config.announce.refresh
            self._emit(EventKind.ADOPTED, "address already bound here at start-up: adopted "
                       "without an outage and announced again")
            self._do(Announce(self.address))
        elif self.config.role is Role.PRIMARY and self.link_up:
            self._go(State.PROBING, "primary starting: probing before binding", Purpose.STARTUP)
            self._start_probe()
        elif self.config.role is Role.PRIMARY:
            # a probe over a dead link hears nobody: it must not count as "address free"
            self._go(State.WATCHING, "primary starting with its link down: not binding, "
                     "watching the address once the link is back")
        else:
            grace = self.config.backup_grace
            if grace > 0:
                self._hold_off(Grace.STARTUP, grace)
            self._go(State.WATCHING, f"backup: watching the address (start-up grace "
                     f"{grace:g}s: the primary may be starting too)")

    # ------------------------------------------------------------------ LooksAlive

    def _on_ping(self, ev: PingResult) -> None:
        if not self.wants_looksalive:
            return  # a result that was in flight when we paused or bound
        looks = self.looks
        looks.sent += 1
        if ev.ok:
            self._answered(ev.rtt)
            return
        looks.lost += 1
        looks.rto.missed()
        looks.misses += 1
        looks.icmp_misses += 1
        if self._probe_token is None and not self._in_grace:
            self._start_probe()  # ask ARP/NDP whether the holder is still there
        if self.state is State.WATCHING:
            self._consider_takeover()

    def _on_late_reply(self, ev: LateReply) -> None:
        """The reply to the last ping counted missed came after all: that ping was not lost
        (it was slower than the RTO), and the holder answers, as with any reply."""
        if not self.wants_looksalive:
            return
        looks = self.looks
        looks.lost = max(0, looks.lost - 1)
        looks.icmp_misses = max(0, looks.icmp_misses - 1)
        self._answered(ev.rtt)

    def _answered(self, rtt: float | None) -> None:
        """The watched address answered an echo: alive, whatever the misses before."""
        looks = self.looks
        if rtt is not None:
            looks.rto.sample(rtt)
        looks.count_answered()
        was = looks.health
        looks.misses = looks.icmp_misses = 0
        looks.last_rtt, looks.last_ok_at = rtt, self.now
        looks.health = Health.UP
        self._fallback_at = None  # the address answers: the primary did claim it
        self._address_answered()
        self._cancel_probe()
        if self.state is State.PROBING:
            self._go(State.WATCHING, "address answers ping again: no takeover")
        if was is not Health.UP:
            self.reason = "address answers ping: held elsewhere, watching it"
            what = "again" if was in (Health.DOWN, Health.DEGRADED) else "(held elsewhere)"
            self._emit(EventKind.LOOKSALIVE_UP, f"answers ping {what}, rtt "
                       f"{_ms(rtt)} ms", rtt_ms=_ms(rtt))
        if self.conflict_open:
            self.conflict_open = False
            self._emit(EventKind.CONFLICT_CLEARED, "address answers ping again")

    def _consider_takeover(self) -> None:
        """WATCHING with misses: decide whether LooksAlive has failed and we may bind."""
        la = self.config.looksalive
        if self.looks.misses < la.retry:
            return
        if self._grace is Grace.STARTUP and self._in_grace:
            # not "down" yet: at a cold start the primary is still binding it; an alarm at
            # every boot would teach admins to ignore looksalive_down
            left = f"{self._takeover_not_before - self.now:.1f}s"
            self.reason = (f"address not answering yet, but this backup just started: "
                           f"giving the primary {left} more to claim it (start-up grace)")
            return
        if self.looks.health is not Health.DOWN:
            self.looks.health = Health.DOWN
            self.reason = f"no answer to {self.looks.misses} pings nor to ARP/NDP"
            self._emit(EventKind.LOOKSALIVE_DOWN,
                       f"no answer to {self.looks.misses} consecutive pings "
                       f"(interval {la.interval:g}s, timeout at most {la.timeout:g}s) nor to "
                       "ARP/NDP",
                       misses=self.looks.misses)
        if not self.link_up or self.paused:
            return
        if self._in_grace:
            left = f"{self._takeover_not_before - self.now:.1f}s"
            if self._grace is Grace.CONTENDED:
                self.reason = (f"address down, but another node probed for it at the same "
                               f"time: giving it {left} to bind it")
            else:
                self.reason = "address down, but the primary was just handed it: waiting"
            return
        if self._clear_rounds >= self.probe_rounds_needed:
            self._bind(Purpose.TAKEOVER, "taking over: nobody answered pings or probes")
        else:
            self._go(State.PROBING, "taking over: last probe round before binding",
                     Purpose.TAKEOVER)
            if self._probe_token is None:  # none ran during the fallback grace
                self._start_probe()

    def _on_probe_done(self, ev: ProbeDone) -> None:
        if ev.token != self._probe_token:
            return  # stale: cancelled or superseded
        self._probe_token = None
        if ev.answered_by is None and self.conflict_open:
            # nobody answers for the address any more: the conflict is over (and must be
            # reported over before this node may bind it)
            self.conflict_open = False
            self._emit(EventKind.CONFLICT_CLEARED, "nobody answers ARP/NDP probes for the "
                       "address any more")
        if self.state is State.WATCHING:
            self._probe_while_watching(ev)
        elif self.state is State.PROBING:
            self._probe_finished(ev)

    def _probe_while_watching(self, ev: ProbeDone) -> None:
        looks = self.looks
        if ev.answered_by is not None and ev.prober:
            self._contention(ev.answered_by)
            return
        if ev.answered_by is not None:
            self._address_answered()
            # The holder answers ARP/NDP: it is alive, whatever ICMP says.
            self.holder_mac = ev.answered_by
            looks.misses = 0
            self._clear_rounds = 0
            if looks.icmp_misses >= 2 * self.config.looksalive.retry and \
                    looks.health is not Health.DEGRADED:
                looks.health = Health.DEGRADED
                self._emit(EventKind.LOOKSALIVE_DEGRADED,
                           f"{looks.icmp_misses} pings unanswered, but {ev.answered_by} "
                           "answers ARP/NDP for the address: holder alive, not taking over",
                           mac=ev.answered_by)
            return
        self._clear_rounds += 1
        if looks.misses >= self.config.looksalive.retry:
            self._consider_takeover()
        elif looks.misses > 0 and not self._in_grace:
            self._start_probe()  # keep probing while pings go unanswered

    def _probe_finished(self, ev: ProbeDone) -> None:
        purpose = self.purpose
        mac = ev.answered_by
        if mac is None:
            self._clear_rounds += 1
            needed = self.probe_rounds_needed
            if purpose is Purpose.TAKEOVER and self._clear_rounds < needed:
                self.reason = (f"taking over: probe round {self._clear_rounds} of {needed} "
                               f"unanswered (pings lose {self.looks.loss:.0%} here)")
                self._start_probe()
                return
            reasons = {
                Purpose.TAKEOVER: "taking over: nobody answered pings or probes",
                Purpose.CLAIM: "claimed by admin: nobody answered the probe",
                Purpose.STARTUP: "primary: address free at start-up",
                Purpose.REPROBE: "link back and nobody took the address: asserting it again",
            }
            assert purpose is not None
            self._bind(purpose, reasons[purpose])
            return
        self.holder_mac = mac
        if purpose is Purpose.TAKEOVER and ev.prober:
            self._to_watching(f"takeover deferred: {mac} probes for the address at the same "
                              "time; backing off while it binds")
            self._contention(mac)
        elif purpose is Purpose.TAKEOVER:
            self.counters.conflicts += 1
            self._to_watching(f"takeover refused: {mac} answers for the address")
            self.conflict_open = True
            self._emit(EventKind.ADDRESS_CONFLICT,
                       f"LooksAlive failed, but {mac} answers ARP/NDP probes for the address: "
                       "not binding it", mac=mac, phase="takeover")
        elif purpose is Purpose.REPROBE:
            self.counters.yields += 1
            self._do(Release(self.address))
            self._to_watching(f"yielded to {mac}, which took the address while our link was down")
            self._emit(EventKind.YIELDED, f"while our link was down {mac} took the address "
                       "over: released it and watching", mac=mac)
        else:  # STARTUP or CLAIM: somebody else holds it
            self._to_watching(f"address in use by {mac}: not binding it, watching it")
            auto = self.config.fallback.mode is FallbackMode.AUTO
            if self.config.role is Role.PRIMARY and self.config.peer_ip is not None:
                hint = (f"to fall back now with no outage: `minisft switchover {self.name}` "
                        f"here (if the holder is the peer {self.config.peer_ip}); or "
                        f"`minisft release {self.name}` on the holder, then `minisft claim "
                        f"{self.name}` here" +
                        ("; a backup in automatic fallback mode also hands it back by "
                         "itself after its hold-down" if auto else ""))
            elif auto or purpose is Purpose.STARTUP:
                hint = (f"to fall back by hand: `minisft release {self.name}` on the holder, "
                        f"then `minisft claim {self.name}` here; a backup in automatic "
                        "fallback mode hands it back by itself after its hold-down")
            else:
                hint = ("fallback is manual: run `minisft release "
                        f"{self.name}` on the holder, then `minisft claim {self.name}` here")
            what = "claim refused" if purpose is Purpose.CLAIM else "returning primary"
            self._emit(EventKind.ADDRESS_IN_USE,
                       f"{what}: {mac} already answers for the address, not binding it; "
                       f"watching it instead ({hint})", mac=mac, phase=purpose.value
                       if purpose else "")

    # ------------------------------------------------------------------ binding

    def _on_bind_done(self, ev: BindDone) -> None:
        if ev.token != self._bind_token:
            return
        self._bind_token = None
        purpose = self.purpose
        if ev.error is not None:
            if purpose is Purpose.REPROBE:
                # it was still on the interface: do not leave it there
                self._do(Release(self.address))
            self._to_watching(f"bind failed: {ev.error}")
            self._emit(EventKind.TAKEOVER_FAILED, f"could not bind the address: {ev.error}",
                       phase=purpose.value if purpose else "")
            return
        self._go(State.HOLDING, self.reason)
        self.cut_off = not self.link_up
        self.conflict_open = False
        self._address_answered()
        if self.service.dead:  # close the alarm monitoring has open: it was the other host's
            self._emit(EventKind.SERVICE_RECOVERED, "alarm closed: the address moved to this "
                       "node; the dead service was on the previous holder")
        self.service = ServiceStatus()
        self.peer = PeerStatus()
        self._next_refresh_at = self.now + self.config.announce.refresh
        if purpose is Purpose.TAKEOVER:
            self.counters.takeovers += 1
            note = ""
            if self._fallback_at is not None and \
                    self.now - self._fallback_at < 2 * self.fallback_grace:
                self._fallback_suspended = True
                note = ("; the primary did not claim it after the automatic fallback, so "
                        "automatic fallback is suspended until the peer goes down and returns")
            self._fallback_at = None
            self.reason = "holding: took over after LooksAlive failed"
            self._emit(EventKind.TAKEOVER,
                       f"took over: {self.looks.misses} pings and the probe went unanswered; "
                       f"{self._placed()}{note}")
        elif purpose is Purpose.SWITCHOVER:
            self.counters.claims += 1
            peer = self.config.peer_ip
            self.reason = f"holding: switched over from the peer {peer}"
            self._emit(EventKind.SWITCHOVER,
                       f"switchover: took the address from the peer {peer} ({self.holder_mac}) "
                       f"without waiting for it to let go; {self._placed(prefix=False)}; the "
                       "peer yields when it hears the announcement",
                       mac=self.holder_mac, peer=str(peer), side="took over")
        else:
            self.counters.claims += 1
            self.reason = {
                Purpose.CLAIM: "holding: claimed by admin",
                Purpose.STARTUP: "holding: primary, address was free at start-up",
                Purpose.REPROBE: "holding: re-asserted after the link came back",
            }.get(purpose or Purpose.CLAIM, "holding")
            self._emit(EventKind.CLAIMED, self.reason.removeprefix("holding: ") +
                       f"; nobody answered the probe; {self._placed(prefix=False)}",
                       phase=purpose.value if purpose else "")

    def _placed(self, *, prefix: bool = True) -> str:
        """How the address got here, for the takeover and claim reasons."""
        if not self.config.hooks.binds_locally:
            return "moved here by the up hook (hooks.mode instead: not bound locally)"
        if prefix:
            return f"bound with /{self.config.address.network.prefixlen} and announced"
        return "bound and announced"

    # ------------------------------------------------------------------ holding

    def _on_conflict(self, ev: ConflictSeen) -> None:
        if self.cut_off or self.config.role is Role.BACKUP:
            switchover = not self.cut_off and ev.mac == self.peer.watching_mac
            self.counters.yields += 1
            self._do(Release(self.address))
            self._to_watching(f"yielded to {ev.mac}"
                              + (" (switchover by the primary)" if switchover else ""))
            self.holder_mac = ev.mac
            if switchover:
                self._emit(EventKind.SWITCHOVER, f"switchover: the primary {self.config.peer_ip} "
                           f"({ev.mac}), which was watching the address, announced it: released "
                           "it and watching", mac=ev.mac, peer=str(self.config.peer_ip),
                           side="yielded")
                return
            if self.cut_off:
                self._emit(EventKind.YIELDED, f"{ev.mac} also holds the address; our link was "
                           "down since we bound it: released it and watching", mac=ev.mac)
                return
            # Both held it with their links up: clients could reach either, a split brain
            # (a partition between the nodes, say, that has now healed). The backup reports
            # it, always: the primary hears the backup's claim only if the backup's refresh
            # comes before the primary's, which no timer decides (docs/design.md, rule 4).
            self._emit(EventKind.YIELDED, f"split brain: this node and {ev.mac} both held the "
                       "address; this node is the backup for it: released it and watching",
                       mac=ev.mac, split_brain=True)
            return
        self._last_conflict_at = self.now
        if not self.conflict_open:
            self.conflict_open = True
            self.counters.conflicts += 1
            self._emit(EventKind.ADDRESS_CONFLICT,
                       f"{ev.mac} also claims the address; this node is its primary and keeps "
                       "it, re-announcing", mac=ev.mac, phase="holding")
        if self.now - self._last_defend_at >= DEFEND_SPACING:
            self._last_defend_at = self.now
            self._do(Announce(self.address))

    def _on_peer_asked(self, ev: PeerAsked) -> None:
        """The peer resolved the address: it watches it (module docstring, switchover)."""
        if ev.link_local and ev.mac != self.peer.link_mac:
            return  # a link-local sender is the peer only by the peer's own MAC
        if self.state is State.HOLDING and self.config.role is Role.BACKUP and self.link_up:
            self.peer.watching_mac = ev.mac

    def _on_peer_link_address(self, ev: PeerLinkAddress) -> None:
        self.peer.link_mac = ev.mac

    def _on_vanished(self, ev: AddressVanished) -> None:
        if not self.link_up or self.state is not State.HOLDING:
            return  # IPv6 addresses go with the link; the link-up re-probe handles it
        self._to_watching("address was removed from the interface by someone else")
        self._emit(EventKind.ADDRESS_REMOVED,
                   "the address was removed from the interface outside MiniSFT; watching it "
                   f"again (use `minisft release {self.name}` to remove it for good)")

    def _on_peer_ping(self, ev: PeerPingResult) -> None:
        if not self.wants_peer_watch:
            return
        peer = self.peer
        ip = self.config.peer_ip
        if ev.ok:
            peer.misses = 0
            peer.last_rtt = ev.rtt
            was = peer.health
            peer.health = Health.UP
            if was is Health.DOWN:
                self._fallback_suspended = False  # the peer went away and came back
            if peer.up_since is None and self._peer_service_ok():
                peer.up_since = self.now
            if was is not Health.UP:
                if self.config.fallback.mode is FallbackMode.AUTO and not self._fallback_suspended:
                    plan = (f"automatic fallback after it stays up for "
                            f"{self.config.fallback.hold_down:g}s")
                elif self._fallback_suspended:
                    plan = "automatic fallback is suspended: fall back by hand"
                else:
                    plan = (f"fallback is manual: `minisft switchover {self.name}` on the "
                            f"peer moves it back with no outage (or `minisft release "
                            f"{self.name}` here, then `minisft claim {self.name}` there)")
                self._emit(EventKind.PEER_UP, f"peer {ip} answers ping; {plan}",
                           peer=str(ip))
            return
        if peer.health is not Health.DOWN:
            # a partition may have begun: whatever the peer does next, it may do as a
            # holder. (The misses of a peer already down are from before it asked: the
            # last ping of its outage can time out after its first ARP request.)
            peer.watching_mac = None
        peer.misses += 1
        peer.up_since = None  # hold-down restarts on any miss
        if peer.misses >= self.config.looksalive.retry and peer.health is not Health.DOWN:
            was_up = peer.health is Health.UP
            peer.health = Health.DOWN
            if was_up:
                self._emit(EventKind.PEER_DOWN, f"peer {ip} stopped answering ping; "
                           "hold-down reset", peer=str(ip))

    def _peer_service_ok(self) -> bool:
        if not self.config.isalive.enabled or self.config.fallback.mode is not FallbackMode.AUTO:
            return True
        return self.peer.service_ok is True

    def _on_peer_service(self, ev: PeerServiceResult) -> None:
        if not self.wants_peer_watch:
            return
        self.peer.service_ok = ev.ok
        if not ev.ok:
            self.peer.up_since = None
        elif self.peer.up_since is None and self.peer.health is Health.UP:
            self.peer.up_since = self.now

    def _on_service(self, ev: ServiceResult) -> None:
        if not self.wants_isalive:
            return
        s = self.service
        s.last_ok, s.last_latency, s.detail = ev.ok, ev.latency, ev.detail
        check = self.config.isalive.check.type
        if ev.ok:
            s.failures = 0
            if s.dead:
                s.dead = False
                self._emit(EventKind.SERVICE_RECOVERED, f"{check} check passes again",
                           latency_ms=_ms(ev.latency))
            return
        s.failures += 1
        if s.failures >= self.config.isalive.retry and not s.dead:
            s.dead = True
            self.counters.service_alarms += 1
            if self.state is State.HOLDING:
                where = "on this node, which holds the address"
            else:
                where = "while the address answers ping: no takeover, the other host holds it"
            self._emit(EventKind.SERVICE_DEAD,
                       f"{check} check failed {s.failures} times ({ev.detail}) {where}",
                       detail=ev.detail)

    # ------------------------------------------------------------------ link and time

    def _on_link(self, ev: LinkChanged) -> None:
        if ev.up == self.link_up:
            return
        self.link_up = ev.up
        holding = self.holds
        if not ev.up:
            if self.state is State.PROBING and self.purpose is Purpose.REPROBE:
                self._cancel_probe()
                self._go(State.HOLDING, "link down again before the re-probe finished")
            elif self.state in (State.WATCHING, State.PROBING) and not holding:
                self._to_watching("own link is down: not taking anything over")
            if self.state in (State.HOLDING, State.BINDING):
                self.cut_off = True
            self._emit(EventKind.LINK_DOWN, "this node's link is down"
                       + (": the address is unreachable here; it will be re-probed when the "
                          "link returns" if holding else ": no takeover while it is down"))
            return
        if self.state is State.HOLDING and self.cut_off:
            self._emit(EventKind.LINK_UP, "link is back: re-probing the address before "
                       "asserting it, someone may have taken it over meanwhile")
            self._go(State.PROBING, "link back: re-probing", Purpose.REPROBE)
            self._start_probe()
            return
        if self.state is State.WATCHING:
            self._reset_looks()
        self._emit(EventKind.LINK_UP, "this node's link is back")

    def _on_tick(self, ev: Tick) -> None:
        if self.state is State.WATCHING:
            if self.looks.misses >= self.config.looksalive.retry:
                self._consider_takeover()
            return
        if self.state is not State.HOLDING:
            return
        if self.conflict_open and self.now - self._last_conflict_at >= CONFLICT_QUIET:
            self.conflict_open = False
            self._emit(EventKind.CONFLICT_CLEARED, f"no other claim for {CONFLICT_QUIET:g}s")
        refresh = self.config.announce.refresh
        if refresh > 0 and self.link_up and not self.cut_off and self.now >= self._next_refresh_at:
            self._next_refresh_at = self.now + refresh
            self._do(Announce(self.address))
        self._consider_fallback()

    def _consider_fallback(self) -> None:
        c = self.config
        if (c.role is not Role.BACKUP or c.fallback.mode is not FallbackMode.AUTO
                or self.paused or not self.link_up or self._fallback_suspended
                or self.peer.up_since is None):
            return
        up_for = self.now - self.peer.up_since
        if up_for < c.fallback.hold_down:
            return
        self.counters.fallbacks += 1
        self._do(Release(self.address))
        self._to_watching("handed the address back to the primary")
        self._fallback_at = self.now
        self._hold_off(Grace.FALLBACK, self.fallback_grace)
        checks = "LooksAlive and IsAlive" if c.isalive.enabled else "LooksAlive"
        self._emit(EventKind.FALLBACK,
                   f"peer {c.peer_ip} passed {checks} for {up_for:.0f}s (hold-down "
                   f"{c.fallback.hold_down:g}s): released the address for the primary to claim",
                   peer=str(c.peer_ip))

    # ------------------------------------------------------------------ reload

    def _on_reconfigured(self, ev: Reconfigured) -> None:
        """New settings from a reload, in any state. Nothing in flight is dropped: a probe
        round or a bind under way finishes with the settings it started with and reports
        here as usual; timers already running (the fallback grace) keep their deadline."""
        old, new = self.config, ev.config
        if (new.name, new.address) != (old.name, old.address):
            raise IllegalInput(f"{self.name}: a reload cannot change a running monitor's "
                               f"name or address ({old.address} -> {new.address}): the "
                               "daemon replaces such a monitor")
        self.config = new
        if new.isalive != old.isalive:
            # results of the old check say nothing about the new one; an open alarm would
            # otherwise stay open for good if the new config has no check at all
            if self.service.dead:
                self._emit(EventKind.SERVICE_RECOVERED, "alarm closed: a reload changed the "
                           "IsAlive check; the new check decides from now on")
            self.service = ServiceStatus()
        if new.peer_ip != old.peer_ip:
            self.peer = PeerStatus()  # the hold-down was measured on another host
        if self.state is State.HOLDING:
            self._next_refresh_at = min(self._next_refresh_at,
                                        self.now + new.announce.refresh)

    # ------------------------------------------------------------------ admin

    def _on_command(self, ev: Command) -> None:
        verb = ev.verb
        if verb is Verb.RELEASE:
            if not self.holds and self.paused and self.state is State.WATCHING:
                raise AlreadyDone(f"{self.name}: already released: this node does not hold "
                                  f"{self.config.ip} and watching is paused")
            if not self.holds:
                raise CommandRefused(f"{self.name}: this node does not hold "
                                     f"{self.config.ip} (state {self.state.value})")
            self.counters.releases += 1
            self._do(Release(self.address))
            self._to_watching("released by admin; watching paused")
            self.paused = True
            self._emit(EventKind.RELEASED, f"released by {ev.by}; watching is paused so the "
                       f"address is not taken back: `minisft resume {self.name}` once the other "
                       "node holds it", by=ev.by)
        elif verb is Verb.CLAIM:
            if self.holds:
                raise AlreadyDone(f"{self.name}: this node already holds {self.config.ip}")
            if self.state not in (State.WATCHING, State.PROBING) or (
                    self.state is State.PROBING and self.purpose is not Purpose.TAKEOVER):
                raise CommandRefused(f"{self.name}: busy ({self.state.value}"
                                     f"{' ' + self.purpose.value if self.purpose else ''}); "
                                     "try again in a moment")
            if not self.link_up:
                raise CommandRefused(f"{self.name}: this node's link is down, a probe cannot "
                                     f"tell whether {self.config.ip} is free; claim it once "
                                     "the link is back")
            self.paused = False
            self._cancel_probe()
            self._go(State.PROBING, f"claim by {ev.by}: probing before binding", Purpose.CLAIM)
            self._start_probe()
        elif verb is Verb.SWITCHOVER:
            self._switchover(ev)
        elif verb is Verb.PAUSE:
            if self.paused:
                raise AlreadyDone(f"{self.name}: already paused")
            if self.state in (State.STARTING, State.BINDING) or (
                    self.state is State.PROBING and self.purpose is not Purpose.TAKEOVER):
                raise CommandRefused(f"{self.name}: busy ({self.state.value}); try again")
            self.paused = True
            if self.state is State.PROBING:
                self._to_watching("paused by admin")
            self._cancel_probe()
            self._emit(EventKind.PAUSED, f"watching paused by {ev.by}"
                       + ("; the address stays bound here" if self.holds else ""), by=ev.by)
        elif verb is Verb.RESUME:
            if not self.paused and self.state is State.STARTING:
                raise CommandRefused(f"{self.name}: busy (starting); try again")
            if not self.paused:
                raise AlreadyDone(f"{self.name}: not paused: already watching")
            self.paused = False
            if self.state is State.WATCHING:
                self._reset_looks()
                self.reason = f"watching resumed by {ev.by}"
            self._emit(EventKind.RESUMED, f"watching resumed by {ev.by}", by=ev.by)


    def _switchover(self, ev: Command) -> None:
        """Bind and announce now, the peer holding the address yields (module docstring)."""
        c, name = self.config, self.name
        if not self.link_up:  # before "already holds": held on a dead link is not done
            raise CommandRefused(f"{name}: this node's link is down: clients could not reach "
                                 f"{c.ip} here; switch over once the link is back")
        if self.holds:
            raise AlreadyDone(f"{name}: this node already holds {c.ip}")
        if c.role is not Role.PRIMARY:
            raise CommandRefused(
                f"{name}: this node is the backup for {c.ip}; a switchover moves an address to "
                "its primary, which keeps it (to move it here: `minisft release "
                f"{name}` on the primary, then `minisft claim {name}` here)")
        if self.state is not State.WATCHING:
            raise CommandRefused(f"{name}: busy ({self.state.value}"
                                 f"{' ' + self.purpose.value if self.purpose else ''}); "
                                 "try again in a moment")
        if c.peer_ip is None:
            raise CommandRefused(f"{name}: no peer_ip configured: a switchover takes the "
                                 "address only from the peer; set peer_ip to the other "
                                 "node's own address (its node.local_ip)")
        facts = ev.facts
        if facts is None:
            raise IllegalInput(f"{name}: a switchover needs the runtime's SwitchoverFacts")
        if facts.own_check_ok is False:
            raise CommandRefused(f"{name}: this node fails its own IsAlive check "
                                 f"({c.isalive.check.type} against its local_ip: "
                                 f"{facts.own_check_detail or 'failed'}): it would take "
                                 "the address for a service that does not answer here")
        if facts.holder_mac is None:
            raise CommandRefused(f"{name}: nobody answers ARP/NDP for {c.ip}: there is no "
                                 f"holder to switch over from (`minisft claim {name}` binds a "
                                 "free address)")
        if facts.peer_mac is None:
            raise CommandRefused(f"{name}: the peer {c.peer_ip} does not answer ARP/NDP: "
                                 f"cannot tell whether it is the node holding {c.ip}")
        if facts.holder_mac != facts.peer_mac:
            raise CommandRefused(f"{name}: {c.ip} is held by {facts.holder_mac}, which is not "
                                 f"the peer {c.peer_ip} ({facts.peer_mac}): a switchover "
                                 "only takes the address from the peer; find out who else "
                                 "holds it")
        self.paused = False
        self.holder_mac = facts.holder_mac
        self._bind(Purpose.SWITCHOVER, f"switchover by {ev.by}: binding and announcing "
                   f"without waiting for the peer {c.peer_ip} to let go")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


Handler = Callable[[MonitorMachine, Any], None] | None
_IGNORE = None

# Inputs that can arrive in any state after start-up; results of work started in an
# earlier state are checked against tokens or `wants_*` inside the handler.
_COMMON: dict[type, Handler] = {
    Command: MonitorMachine._on_command,
    Tick: MonitorMachine._on_tick,
    LinkChanged: MonitorMachine._on_link,
    PingResult: MonitorMachine._on_ping,
    LateReply: MonitorMachine._on_late_reply,
    ServiceResult: MonitorMachine._on_service,
    PeerPingResult: MonitorMachine._on_peer_ping,
    PeerServiceResult: MonitorMachine._on_peer_service,
    ProbeDone: MonitorMachine._on_probe_done,
    ConflictSeen: _IGNORE,
    PeerAsked: MonitorMachine._on_peer_asked,
    PeerLinkAddress: MonitorMachine._on_peer_link_address,
    AddressVanished: _IGNORE,
    Reconfigured: MonitorMachine._on_reconfigured,
}

TRANSITIONS: dict[State, dict[type, Handler]] = {
    State.STARTING: {
        Started: MonitorMachine._on_started,
        Command: MonitorMachine._on_command,
        LinkChanged: MonitorMachine._on_link,
        Tick: _IGNORE,
        PeerAsked: _IGNORE,  # the network callbacks are live before the first look
        PeerLinkAddress: MonitorMachine._on_peer_link_address,
        Reconfigured: MonitorMachine._on_reconfigured,
    },
    State.WATCHING: dict(_COMMON),
    State.PROBING: dict(_COMMON),
    State.BINDING: {**_COMMON, BindDone: MonitorMachine._on_bind_done},
    State.HOLDING: {
        **_COMMON,
        ConflictSeen: MonitorMachine._on_conflict,
        AddressVanished: MonitorMachine._on_vanished,
    },
}

# The states each state may go to (`_go` checks; docs/design.md draws it). WATCHING and
# PROBING go to themselves: losing the link while watching resets the watch, a claim
# during a takeover probe restarts it as the admin's probe.
EDGES: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.WATCHING, State.PROBING, State.HOLDING}),  # adopted
    # BINDING without PROBING: a probe round while watching already found nobody
    State.WATCHING: frozenset({State.WATCHING, State.PROBING, State.BINDING}),
    # HOLDING: the link went down again during the re-probe; the address is still bound
    State.PROBING: frozenset({State.WATCHING, State.PROBING, State.BINDING, State.HOLDING}),
    State.BINDING: frozenset({State.WATCHING, State.HOLDING}),  # WATCHING: the bind failed
    State.HOLDING: frozenset({State.WATCHING, State.PROBING}),  # PROBING: link back
}
