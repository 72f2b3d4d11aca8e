"""Status documents for tests, built as the typed model (minisft.status) in one place.

check_minisft, the Prometheus exposition, the check-result sinks, the SNMP helper and
`minisft status` all read the same document; their tests used to carry their own copies of
a status.json dict. Here a monitor is a MonitorMachine.snapshot() as the daemon writes it,
turned into a MonitorStatus; a test changes what it needs with `monitor(..., **over)` or
`dataclasses.replace`, and writes the file with `write`, which goes through status.dump
like the daemon.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from minisft.status import (
    MonitorStatus,
    PoolAddressStatus,
    PoolStatus,
    StatusDocument,
    dump,
)

SNMP_SINK: Mapping[str, Any] = {"name": "snmp-192.0.2.9-162-v2c-trap", "delivered": 10,
                                "pending": 0, "dropped": 0, "failures": 0,
                                "last_error": None, "state": "ok"}


def monitor(name: str, role: str, state: str, holder: str, *,
            changed_at: float | None = None, **over: Any) -> MonitorStatus:
    """A monitor as the daemon writes it (MonitorMachine.snapshot plus last_change_time,
    120 s ago by default). `over` replaces keys; a dict value updates a nested section."""
    snap: dict[str, Any] = {
        "name": name, "address": "192.0.2.10", "prefixlen": 24, "role": role,
        "state": state, "purpose": None, "paused": False, "holder": holder,
        "holder_mac": None, "reason": "test", "link_up": True, "conflict_open": False,
        "seconds_since_change": 120.0,
        "looksalive": {"health": "up" if holder == "other" else "unknown", "misses": 0,
                       "icmp_misses": 0, "rtt_ms": 0.25, "rto_ms": 5.0, "sent": 40,
                       "lost": 1},
        "isalive": {"enabled": True, "check": "http", "ok": True, "dead": False,
                    "latency_ms": 12.5, "detail": "200 OK"},
        "peer": {"ip": None, "health": "unknown", "rtt_ms": None, "up_for": None,
                 "fallback": "manual", "hold_down": 60.0, "auto_fallback_suspended": False},
        "counters": {"takeovers": 3, "claims": 1, "releases": 0, "fallbacks": 2, "yields": 0,
                     "conflicts": 0, "service_alarms": 0},
        "last_change_time": (time.time() if changed_at is None else changed_at) - 120.0,
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(snap.get(key), dict):
            snap[key] = {**snap[key], **value}
        else:
            snap[key] = value
    return MonitorStatus.from_dict(snap)


def document(monitors: Sequence[MonitorStatus] = (), *, now: float | None = None,
             pid: int | None = None, sinks: Sequence[Mapping[str, Any]] = (SNMP_SINK,),
             pools: Sequence[PoolStatus] = ()) -> StatusDocument:
    """A running daemon's document, written `now` (default: this moment) by `pid`
    (default: this test process, which is alive, as check_minisft requires)."""
    now = time.time() if now is None else now
    return StatusDocument(
        node="alpha", pid=os.getpid() if pid is None else pid, started_at=now - 3600,
        updated_at=now, software_version="0.1.0", last_event_seq=42,
        monitors=tuple(monitors), sinks=tuple(dict(s) for s in sinks), pools=tuple(pools))


def ok_status(*, now: float | None = None, pid: int | None = None) -> StatusDocument:
    """Everything as configured: the primary holds web, the backup watches db."""
    return document([monitor("web", "primary", "holding", "self", changed_at=now),
                     monitor("db", "backup", "watching", "other", changed_at=now)],
                    now=now, pid=pid)


def with_monitor(doc: StatusDocument, index: int, **over: Any) -> StatusDocument:
    """`doc` with monitor `index` rebuilt with `over` (nested dicts update a section)."""
    old = doc.monitors[index].to_dict()
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            old[key] = {**old[key], **value}
        else:
            old[key] = value
    monitors = list(doc.monitors)
    monitors[index] = MonitorStatus.from_dict(old)
    return replace(doc, monitors=tuple(monitors))


def pool(name: str, member: str, placement: Mapping[str, tuple[str | None, str, str]],
         **over: Any) -> PoolStatus:
    """A pool as `member` sees it; `placement` maps each address to (owner, preferred,
    state), as PoolMachine.placement() reports it."""
    return replace(
        PoolStatus(name=name, member=member, phase="active", reason="test"),
        placement=tuple(PoolAddressStatus(address=a, owner=o, preferred=p, state=s,
                                          holders=(o,) if o else ())
                        for a, (o, p, s) in placement.items()),
        **over)


def write(directory: Path, doc: StatusDocument) -> Path:
    """`doc` as DIRECTORY/status.json, written the way the daemon writes it."""
    path = directory / "status.json"
    dump(doc, path)
    return path
