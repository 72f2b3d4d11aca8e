"""The events MiniSFT reports: one typed vocabulary shared by the core, the journal and every sink.

The core emits :class:`Notice` (what happened and why); the runtime stamps it into an
:class:`Event` (sequence number, wall-clock time, node name) before it reaches the bus.
Every kind has a fixed default severity so that filters, syslog priorities, SNMP
notifications and Nagios states all agree on how bad a thing is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class Severity(IntEnum):
    """Syslog severities (RFC 5424), so the value is the syslog priority level."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of: {names})") from None


class EventKind(StrEnum):
    """Every kind of event. The value is the stable wire name (journal, traps, filters)."""

    # daemon lifecycle and admin
    DAEMON_STARTED = "daemon_started"
    DAEMON_STOPPING = "daemon_stopping"
    CONFIG_RELOADED = "config_reloaded"
    CONFIG_REJECTED = "config_rejected"
    TEST_ALERT = "test_alert"
    # LooksAlive (ICMP, backed by ARP/NDP)
    LOOKSALIVE_UP = "looksalive_up"
    LOOKSALIVE_DOWN = "looksalive_down"
    LOOKSALIVE_DEGRADED = "looksalive_degraded"
    # IsAlive (service check)
    SERVICE_DEAD = "service_dead"
    SERVICE_RECOVERED = "service_recovered"
    # address ownership
    TAKEOVER = "takeover"
    TAKEOVER_FAILED = "takeover_failed"
    CLAIMED = "claimed"
    ADOPTED = "adopted"
    RELEASED = "released"
    FALLBACK = "fallback"
    YIELDED = "yielded"
    SWITCHOVER = "switchover"  # moved by `minisft switchover`, make-before-break
    ADDRESS_IN_USE = "address_in_use"
    ADDRESS_CONFLICT = "address_conflict"
    CONFLICT_CLEARED = "conflict_cleared"
    ADDRESS_REMOVED = "address_removed"
    # the peer (physical host of the primary), watched for fallback
    PEER_UP = "peer_up"
    PEER_DOWN = "peer_down"
    # admin actions without an address change
    PAUSED = "paused"
    RESUMED = "resumed"
    # the node's own link
    LINK_DOWN = "link_down"
    LINK_UP = "link_up"
    # pools (embedded and etcd mode)
    MEMBER_LOST = "member_lost"
    MEMBER_BACK = "member_back"
    ADDRESS_MOVED = "address_moved"
    CONFIG_DRIFT = "config_drift"
    ISOLATED = "isolated"
    REJOINED = "rejoined"
    LEASE_LOST = "lease_lost"
    # the daemon's own storage
    STATE_DIR_FAILING = "state_dir_failing"
    # address hooks (monitors[].hooks): a command run around bind/release failed
    HOOK_FAILED = "hook_failed"

    @property
    def default_severity(self) -> Severity:
        return _SEVERITY[self]


_SEVERITY: dict[EventKind, Severity] = {
    EventKind.DAEMON_STARTED: Severity.NOTICE,
    EventKind.DAEMON_STOPPING: Severity.NOTICE,
    EventKind.CONFIG_RELOADED: Severity.NOTICE,
    EventKind.CONFIG_REJECTED: Severity.ERROR,
    EventKind.TEST_ALERT: Severity.INFO,
    EventKind.LOOKSALIVE_UP: Severity.INFO,
    EventKind.LOOKSALIVE_DOWN: Severity.WARNING,
    EventKind.LOOKSALIVE_DEGRADED: Severity.WARNING,
    EventKind.SERVICE_DEAD: Severity.CRITICAL,
    EventKind.SERVICE_RECOVERED: Severity.NOTICE,
    EventKind.TAKEOVER: Severity.WARNING,
    EventKind.TAKEOVER_FAILED: Severity.CRITICAL,
    EventKind.CLAIMED: Severity.NOTICE,
    EventKind.ADOPTED: Severity.NOTICE,
    EventKind.RELEASED: Severity.NOTICE,
    EventKind.FALLBACK: Severity.NOTICE,
    EventKind.YIELDED: Severity.WARNING,
    EventKind.SWITCHOVER: Severity.NOTICE,
    EventKind.ADDRESS_IN_USE: Severity.WARNING,
    EventKind.ADDRESS_CONFLICT: Severity.CRITICAL,
    EventKind.CONFLICT_CLEARED: Severity.NOTICE,
    EventKind.ADDRESS_REMOVED: Severity.WARNING,
    EventKind.PEER_UP: Severity.INFO,
    EventKind.PEER_DOWN: Severity.WARNING,
    EventKind.PAUSED: Severity.NOTICE,
    EventKind.RESUMED: Severity.NOTICE,
    EventKind.LINK_DOWN: Severity.ERROR,
    EventKind.LINK_UP: Severity.NOTICE,
    EventKind.MEMBER_LOST: Severity.WARNING,
    EventKind.MEMBER_BACK: Severity.NOTICE,
    EventKind.ADDRESS_MOVED: Severity.WARNING,
    EventKind.CONFIG_DRIFT: Severity.CRITICAL,
    EventKind.ISOLATED: Severity.CRITICAL,
    EventKind.REJOINED: Severity.NOTICE,
    EventKind.LEASE_LOST: Severity.CRITICAL,
    EventKind.STATE_DIR_FAILING: Severity.WARNING,
    EventKind.HOOK_FAILED: Severity.WARNING,
}
assert set(_SEVERITY) == set(EventKind), "every event kind needs a default severity"


DetailValue = str | int | float | bool | None


@dataclass(frozen=True)
class Notice:
    """What the pure core says happened: no clock, no node name, no sequence number."""

    kind: EventKind
    reason: str
    monitor: str | None = None
    address: str | None = None
    state: str | None = None
    severity: Severity | None = None
    details: dict[str, DetailValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A stamped event as it is journaled and delivered to sinks."""

    seq: int
    time: float  # seconds since the epoch (wall clock)
    node: str
    kind: EventKind
    severity: Severity
    reason: str
    monitor: str | None = None
    address: str | None = None
    state: str | None = None
    details: dict[str, DetailValue] = field(default_factory=dict)

    @classmethod
    def stamp(cls, notice: Notice, *, seq: int, time: float, node: str) -> Event:
        return cls(
            seq=seq,
            time=time,
            node=node,
            kind=notice.kind,
            severity=notice.severity if notice.severity is not None
            else notice.kind.default_severity,
            reason=notice.reason,
            monitor=notice.monitor,
            address=notice.address,
            state=notice.state,
            details=dict(notice.details),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "node": self.node,
            "kind": self.kind.value,
            "severity": self.severity.label,
            "reason": self.reason,
            "monitor": self.monitor,
            "address": self.address,
            "state": self.state,
            "details": self.details,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            seq=int(data["seq"]),
            time=float(data["time"]),
            node=str(data["node"]),
            kind=EventKind(data["kind"]),
            severity=Severity.parse(str(data["severity"])),
            reason=str(data["reason"]),
            monitor=data.get("monitor"),
            address=data.get("address"),
            state=data.get("state"),
            details=dict(data.get("details") or {}),
        )

    def summary(self) -> str:
        """One human line, as syslog and `minisft events` print it."""
        where = f"{self.monitor} " if self.monitor else ""
        addr = f"[{self.address}] " if self.address else ""
        return f"{self.kind.value} {where}{addr}{self.reason}"
