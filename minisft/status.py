"""The daemon's status document (STATE_DIR/status.json) as typed, read-only values.

The daemon rewrites the file about every second; check_minisft, the Prometheus exporter,
the SNMP helper and `minisft status` read it. They used to read it as a dict with string
keys, each with its own idea of a missing key and its own copy of the failover rule; this
module is the one reader, and `MonitorStatus.failed_over` the one rule.

Standard library only: check_minisft imports this module at start-up, as user nagios
under NRPE, where the daemon's third-party dependencies may not be importable.

The on-disk format is unchanged (format version 1). Reading is lenient the way the
readers always were: a key missing or of the wrong type reads as None (or empty), so a
file written by an older daemon still reads. Keys this model does not name are kept in
`extra` and written back by `dump`, so load -> dump keeps the document as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
STATUS_NAME = "status.json"
DEFAULT_CONFIG = "/etc/minisft/minisft.yaml"
DEFAULT_STATE_DIR = "/var/lib/minisft"


class StatusError(Exception):
    """The status file is missing, unreadable or not a status document (one clear message)."""


# ----------------------------------------------------------------- lenient field readers


def _str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


def _number(doc: Mapping[str, Any], key: str) -> float | None:
    # ints stay ints (bool is not a number here): readers print these values, and "3"
    # must not become "3.0" in check_minisft -vv
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _int(doc: Mapping[str, Any], key: str) -> int | None:
    value = doc.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(doc: Mapping[str, Any], key: str) -> bool | None:
    value = doc.get(key)
    return value if isinstance(value, bool) else None


def _mapping(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _extra(doc: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in known}


def _written(known: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {**known, **extra}


# ------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LooksAliveStatus:
    """The ping/ARP liveness check of the address holder."""

    health: str | None = None  # unknown, up, degraded, down
    misses: int | None = None
    icmp_misses: int | None = None
    rtt_ms: float | None = None
    rto_ms: float | None = None
    sent: int | None = None
    lost: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"health", "misses", "icmp_misses", "rtt_ms", "rto_ms", "sent", "lost"})

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LooksAliveStatus:
        return cls(health=_str(doc, "health"), misses=_int(doc, "misses"),
                   icmp_misses=_int(doc, "icmp_misses"), rtt_ms=_number(doc, "rtt_ms"),
                   rto_ms=_number(doc, "rto_ms"), sent=_int(doc, "sent"),
                   lost=_int(doc, "lost"), extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({"health": self.health, "misses": self.misses,
                         "icmp_misses": self.icmp_misses, "rtt_ms": self.rtt_ms,
                         "rto_ms": self.rto_ms, "sent": self.sent, "lost": self.lost},
                        self.extra)


@dataclass(frozen=True)
class IsAliveStatus:
    """The service check behind the address."""

    enabled: bool = False
    check: str | None = None
    ok: bool | None = None
    dead: bool = False
    latency_ms: float | None = None
    detail: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"enabled", "check", "ok", "dead", "latency_ms", "detail"})

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> IsAliveStatus:
        return cls(enabled=bool(doc.get("enabled")), check=_str(doc, "check"),
                   ok=_bool(doc, "ok"), dead=bool(doc.get("dead")),
                   latency_ms=_number(doc, "latency_ms"), detail=_str(doc, "detail"),
                   extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({"enabled": self.enabled, "check": self.check, "ok": self.ok,
                         "dead": self.dead, "latency_ms": self.latency_ms,
                         "detail": self.detail}, self.extra)


@dataclass(frozen=True)
class PeerStatus:
    """The other node of the pair, as this node sees it."""

    ip: str | None = None
    health: str | None = None
    rtt_ms: float | None = None
    up_for: float | None = None
    fallback: str | None = None
    hold_down: float | None = None
    auto_fallback_suspended: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"ip", "health", "rtt_ms", "up_for", "fallback", "hold_down",
                       "auto_fallback_suspended"})

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PeerStatus:
        return cls(ip=_str(doc, "ip"), health=_str(doc, "health"),
                   rtt_ms=_number(doc, "rtt_ms"), up_for=_number(doc, "up_for"),
                   fallback=_str(doc, "fallback"), hold_down=_number(doc, "hold_down"),
                   auto_fallback_suspended=bool(doc.get("auto_fallback_suspended")),
                   extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({"ip": self.ip, "health": self.health, "rtt_ms": self.rtt_ms,
                         "up_for": self.up_for, "fallback": self.fallback,
                         "hold_down": self.hold_down,
                         "auto_fallback_suspended": self.auto_fallback_suspended},
                        self.extra)


@dataclass(frozen=True)
class MonitorStatus:
    """One monitored address (MonitorMachine.snapshot plus the daemon's change times)."""

    name: str | None = None
    address: str | None = None
    prefixlen: int | None = None
    role: str | None = None  # primary, backup
    state: str | None = None  # starting, watching, probing, binding, holding
    holder: str | None = None  # self, other, none, unknown
    holder_mac: str | None = None  # the MAC that answered for the address, if not ours
    paused: bool = False
    link_up: bool | None = None
    conflict_open: bool = False
    reason: str | None = None
    seconds_since_change: float | None = None
    last_change_time: float | None = None
    looksalive: LooksAliveStatus = field(default_factory=LooksAliveStatus)
    isalive: IsAliveStatus = field(default_factory=IsAliveStatus)
    peer: PeerStatus = field(default_factory=PeerStatus)
    counters: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"name", "address", "prefixlen", "role", "state", "holder",
                       "holder_mac", "paused", "link_up",
                       "conflict_open", "reason", "seconds_since_change",
                       "last_change_time", "looksalive", "isalive", "peer", "counters"})

    @property
    def failed_over(self) -> bool:
        """The address runs on its backup, seen from this node: a backup-role monitor holds
        it, or a primary-role monitor sees the other node holding it (no fallback yet).
        The one statement of this rule for check_minisft, Prometheus and SNMP."""
        return ((self.role == "backup" and self.holder == "self")
                or (self.role == "primary" and self.holder == "other"))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> MonitorStatus:
        return cls(
            name=_str(doc, "name"), address=_str(doc, "address"),
            prefixlen=_int(doc, "prefixlen"), role=_str(doc, "role"),
            state=_str(doc, "state"), holder=_str(doc, "holder"),
            holder_mac=_str(doc, "holder_mac"), paused=bool(doc.get("paused")),
            link_up=_bool(doc, "link_up"),
            conflict_open=bool(doc.get("conflict_open")), reason=_str(doc, "reason"),
            seconds_since_change=_number(doc, "seconds_since_change"),
            last_change_time=_number(doc, "last_change_time"),
            looksalive=LooksAliveStatus.from_dict(_mapping(doc, "looksalive")),
            isalive=IsAliveStatus.from_dict(_mapping(doc, "isalive")),
            peer=PeerStatus.from_dict(_mapping(doc, "peer")),
            counters=dict(_mapping(doc, "counters")), extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({
            "name": self.name, "address": self.address, "prefixlen": self.prefixlen,
            "role": self.role, "state": self.state, "holder": self.holder,
            "holder_mac": self.holder_mac, "paused": self.paused,
            "link_up": self.link_up, "conflict_open": self.conflict_open,
            "reason": self.reason, "seconds_since_change": self.seconds_since_change,
            "last_change_time": self.last_change_time,
            "looksalive": self.looksalive.to_dict(), "isalive": self.isalive.to_dict(),
            "peer": self.peer.to_dict(), "counters": dict(self.counters)}, self.extra)


def _strings(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _optional(known: dict[str, Any], **values: Any) -> dict[str, Any]:
    """`known` plus the values that say something: older daemons and the embedded
    backend leave these keys out, and load -> dump must not add them."""
    return {**known, **{k: v for k, v in values.items() if v is not None}}


@dataclass(frozen=True)
class PoolMemberStatus:
    """One configured member of a pool, as this member sees it."""

    name: str | None = None
    is_self: bool = False  # "self" on disk
    weight: int | None = None
    alive: bool | None = None
    state: str | None = None  # alive, isolated, leaving, fenced, absent
    holds: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"name", "self", "weight", "alive", "state", "holds"})

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PoolMemberStatus:
        return cls(name=_str(doc, "name"), is_self=bool(doc.get("self")),
                   weight=_int(doc, "weight"), alive=_bool(doc, "alive"),
                   state=_str(doc, "state"),
                   holds=_strings(doc, "holds") if "holds" in doc else None,
                   extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written(_optional({"name": self.name, "self": self.is_self},
                                  weight=self.weight, alive=self.alive, state=self.state,
                                  holds=None if self.holds is None else list(self.holds)),
                        self.extra)


@dataclass(frozen=True)
class EtcdSessionStatus:
    """The etcd session of an etcd-coordinated pool."""

    endpoint: str | None = None
    connected: bool = False
    lease: str | None = None  # hex lease id
    ttl: float | None = None
    last_error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"endpoint", "connected", "lease", "ttl", "last_error"})

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> EtcdSessionStatus:
        return cls(endpoint=_str(doc, "endpoint"), connected=bool(doc.get("connected")),
                   lease=_str(doc, "lease"), ttl=_number(doc, "ttl"),
                   last_error=_str(doc, "last_error"), extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({"endpoint": self.endpoint, "connected": self.connected,
                         "lease": self.lease, "ttl": self.ttl,
                         "last_error": self.last_error}, self.extra)


@dataclass(frozen=True)
class PoolAddressStatus:
    """One pool address as this member sees it: who holds it (`owner`), who the formula
    places it on when every member is up (`preferred`, its home), and its state:

    held      -- exactly one member holds it
    free      -- nobody holds it (the address is down)
    probing   -- this member is probing it before taking it over (nobody holds it yet)
    binding   -- this member is binding it
    duplicate -- more than one member says it holds it (`holders`; `owner` is the first)

    `moves` counts how often this member saw the address change from one holder to
    another since it started."""

    address: str | None = None
    owner: str | None = None
    preferred: str | None = None
    state: str | None = None
    holders: tuple[str, ...] = ()
    moves: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"address", "owner", "preferred", "state", "holders", "moves"})

    @property
    def on_preferred(self) -> bool:
        """Held by its home member and by nobody else."""
        return (self.owner is not None and self.owner == self.preferred
                and self.state == "held")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PoolAddressStatus:
        return cls(address=_str(doc, "address"), owner=_str(doc, "owner"),
                   preferred=_str(doc, "preferred"), state=_str(doc, "state"),
                   holders=_strings(doc, "holders"), moves=_int(doc, "moves") or 0,
                   extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({"address": self.address, "owner": self.owner,
                         "preferred": self.preferred, "state": self.state,
                         "holders": list(self.holders), "moves": self.moves}, self.extra)


@dataclass(frozen=True)
class PoolStatus:
    """One address pool (the embedded PoolMachine or the etcd backend snapshot)."""

    name: str | None = None
    member: str | None = None
    backend: str | None = None  # "etcd"; absent for the embedded heartbeats
    phase: str | None = None
    reason: str | None = None
    isolated: bool = False
    link_up: bool | None = None
    held: tuple[str, ...] = ()
    members: tuple[PoolMemberStatus, ...] = ()
    drift: tuple[str, ...] = ()  # members whose config digest differs
    config_drift: str | None = None  # etcd: the local config differs from the definition
    assignment: Mapping[str, str] | None = None  # the formula over the live members
    placement: tuple[PoolAddressStatus, ...] = ()  # every address: owner, preferred, state
    etcd: EtcdSessionStatus | None = None
    counters: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"name", "member", "backend", "phase", "reason", "isolated", "link_up",
                       "held", "members", "drift", "config_drift", "assignment",
                       "placement", "etcd", "counters"})

    def address(self, address: str) -> PoolAddressStatus | None:
        return next((a for a in self.placement if a.address == address), None)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PoolStatus:
        etcd = doc.get("etcd")
        assignment = doc.get("assignment")
        return cls(
            name=_str(doc, "name"), member=_str(doc, "member"), backend=_str(doc, "backend"),
            phase=_str(doc, "phase"), reason=_str(doc, "reason"),
            isolated=bool(doc.get("isolated")), link_up=_bool(doc, "link_up"),
            held=_strings(doc, "held"),
            members=tuple(PoolMemberStatus.from_dict(m) for m in _objects(doc, "members")),
            drift=_strings(doc, "drift"), config_drift=_str(doc, "config_drift"),
            assignment={str(k): str(v) for k, v in assignment.items()}
            if isinstance(assignment, dict) else None,
            placement=tuple(PoolAddressStatus.from_dict(a)
                            for a in _objects(doc, "placement")),
            etcd=EtcdSessionStatus.from_dict(etcd) if isinstance(etcd, dict) else None,
            counters=dict(_mapping(doc, "counters")), extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        known = {
            "name": self.name, "member": self.member, "phase": self.phase,
            "reason": self.reason, "isolated": self.isolated, "link_up": self.link_up,
            "held": list(self.held), "members": [m.to_dict() for m in self.members],
            "drift": list(self.drift), "counters": dict(self.counters)}
        if self.backend == "etcd":  # always there for etcd pools, null when none
            known["config_drift"] = self.config_drift
        return _written(_optional(
            known, backend=self.backend, config_drift=self.config_drift,
            assignment=None if self.assignment is None else dict(self.assignment),
            placement=[a.to_dict() for a in self.placement] or None,
            etcd=self.etcd.to_dict() if self.etcd is not None else None), self.extra)


@dataclass(frozen=True)
class StatusDocument:
    """The whole status file. `sinks` stay the delivery queue's own dicts (not modelled
    yet); `stopped_at` is set only in the last file a cleanly stopping daemon writes."""

    version: int | None = FORMAT_VERSION
    node: str | None = None
    pid: int | None = None
    software_version: str | None = None
    started_at: float | None = None
    updated_at: float | None = None
    stopped_at: float | None = None
    interface: str | None = None
    local_ip: str | None = None
    link_up: bool | None = None
    config: str | None = None
    last_event_seq: int | None = None
    monitors: tuple[MonitorStatus, ...] = ()
    sinks: tuple[Mapping[str, Any], ...] = ()
    pools: tuple[PoolStatus, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = frozenset({"version", "node", "pid", "software_version", "started_at",
                       "updated_at", "stopped_at", "interface", "local_ip", "link_up",
                       "config", "last_event_seq", "monitors", "sinks", "pools"})

    def monitor(self, name: str) -> MonitorStatus | None:
        return next((m for m in self.monitors if m.name == name), None)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> StatusDocument:
        """The document from its JSON object, leniently (see the module docstring): entries
        of monitors/sinks/pools that are not objects are skipped, as the readers did."""
        return cls(
            version=_int(doc, "version"), node=_str(doc, "node"), pid=_int(doc, "pid"),
            software_version=_str(doc, "software_version"),
            started_at=_number(doc, "started_at"), updated_at=_number(doc, "updated_at"),
            stopped_at=_number(doc, "stopped_at"), interface=_str(doc, "interface"),
            local_ip=_str(doc, "local_ip"), link_up=_bool(doc, "link_up"),
            config=_str(doc, "config"), last_event_seq=_int(doc, "last_event_seq"),
            monitors=tuple(MonitorStatus.from_dict(m) for m in _objects(doc, "monitors")),
            sinks=tuple(dict(s) for s in _objects(doc, "sinks")),
            pools=tuple(PoolStatus.from_dict(p) for p in _objects(doc, "pools")),
            extra=_extra(doc, cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        known: dict[str, Any] = {
            "version": self.version, "node": self.node, "pid": self.pid,
            "software_version": self.software_version, "started_at": self.started_at,
            "updated_at": self.updated_at, "interface": self.interface,
            "local_ip": self.local_ip, "link_up": self.link_up, "config": self.config,
            "last_event_seq": self.last_event_seq,
            "monitors": [m.to_dict() for m in self.monitors],
            "sinks": [dict(s) for s in self.sinks],
            "pools": [p.to_dict() for p in self.pools]}
        if self.stopped_at is not None:  # absent while the daemon runs, as it always was
            known["stopped_at"] = self.stopped_at
        return _written(known, self.extra)


def _objects(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = doc.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# ---------------------------------------------------------------------- the file itself


def load(path: Path) -> StatusDocument:
    """Read a status file, or raise StatusError saying what is wrong with it. Only the
    format is checked here; whether the daemon behind it still runs is the reader's call."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StatusError(f"status file {path} not found: is minisft running "
                          "(or use --config/--status)?") from None
    except PermissionError:
        raise StatusError(f"status file {path}: permission denied") from None
    except OSError as exc:
        raise StatusError(f"cannot read status file {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise StatusError(f"status file {path} is not valid JSON: {exc}") from None
    return parse(doc, f"status file {path}")


def parse(doc: Any, source: str) -> StatusDocument:
    """The document from already decoded JSON (the file, or the daemon's answer to
    `status` on the control socket), with the same checks as `load`; `source` names it
    in the StatusError."""
    if not isinstance(doc, dict):
        raise StatusError(f"{source}: not a JSON object")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise StatusError(f"{source}: format version {version!r} not supported "
                          f"(this reader reads version {FORMAT_VERSION})")
    if not isinstance(doc.get("monitors", []), list):
        raise StatusError(f"{source}: monitors is not a list")
    return StatusDocument.from_dict(doc)


def dump(status: StatusDocument, path: Path) -> None:
    """Write the document atomically (temp file, rename), world-readable: it holds no
    secrets and monitoring reads it as an unprivileged user."""
    tmp = path.with_suffix(".json.tmp")
    # one write of one string: json.dump makes a write() call per token
    text = json.dumps(status.to_dict(), default=str)
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def status_file(status: str | Path | None = None, config: str | Path | None = None,
                ) -> tuple[Path, str]:
    """Where the status file is, and how it was found: --status as given; else state_dir
    of --config (or of the default config) + status.json. An unreadable default config
    (it may be root-only: it can hold secrets) falls back to the default state dir, and a
    wrong guess shows up as a missing or stale file. Raises StatusError for an explicit
    config that cannot be read or is not a valid config."""
    if status:
        return Path(status), "from --status"
    path = Path(config or DEFAULT_CONFIG)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if config:
            raise StatusError(f"cannot read config {path}: {exc.strerror or exc}") from None
        return Path(DEFAULT_STATE_DIR) / STATUS_NAME, f"default ({path} not readable)"
    return Path(_state_dir_from_yaml(text, path)) / STATUS_NAME, f"state_dir from {path}"


def _state_dir_from_yaml(text: str, config: Path) -> str:
    import yaml  # lazily: only this path needs it, and it costs ~15 ms to import

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # a SafeLoader variant
    except yaml.YAMLError as exc:
        # where, never what: PyYAML's message quotes the offending line, and the line may
        # hold a secret; a nagios check's output lands in every monitoring database
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise StatusError(f"config {config} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise StatusError(f"config {config}: top level is not a mapping")
    value = data.get("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(value, str) or not value:
        raise StatusError(f"config {config}: state_dir must be a path")
    return value
