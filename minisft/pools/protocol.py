"""Pool heartbeats on the wire: encode, authenticate, decode, reject replays. Pure.

Datagram layout::

    b"mSFT" | version (1 byte) | body (UTF-8 JSON) | HMAC-SHA256(key, everything before)

Why JSON rather than struct: a heartbeat is ~300 bytes for a few addresses, far below one
frame, so the bytes a binary format would save buy nothing; JSON is self-describing
(readable in tcpdump when debugging a pool), needs no hand-written length-prefix parsing
(a classic source of decoder bugs), and new optional keys do not need a new version.
The body is compact (short keys, no spaces) and the whole datagram is limited to
`MAX_DATAGRAM` bytes; the MAC is checked *before* the JSON is parsed, so unauthenticated
input never reaches the parser.

Body keys: ``p`` pool, ``m`` sender member, ``b`` boot id (random per process start),
``s`` sequence (strictly increasing within a boot), ``t`` sender wall-clock time,
``st`` sender state (``alive``, ``isolated``, or ``leaving`` when it stops), ``h``
addresses it holds, ``w`` addresses it is waiting to be handed, ``l`` members it judges
lost, ``d`` digest of the pool configuration (`config_digest`).

Replay protection (`ReplayState`): a message is accepted only if its time is within
`window` seconds of the receiver's clock (so members need NTP-level agreement on time), and
either it is from the sender's current boot with a higher sequence than any accepted, or
from a new boot with a time later than anything accepted from that sender (a restarted
member). A captured message therefore cannot be replayed: within the window its sequence
is already used, after the window its time is stale. Sender state is forgotten after
`2 * window` of silence, which is safe because anything older than that is stale anyway.

`decode` raises only `BadMessage`, whatever the input (fuzzed in the tests).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from minisft.config.model import PoolConfig

__all__ = [
    "MAX_DATAGRAM", "BadMessage", "Heartbeat", "ReplayState", "config_digest", "decode",
    "encode",
]

MAGIC = b"mSFT"
VERSION = 1
MAC_LEN = 32
HEADER = MAGIC + bytes([VERSION])
MAX_DATAGRAM = 8192  # about 150 IPv6 addresses held + wanted; heartbeats are ~300 bytes
MIN_KEY = 16
MAX_ADDRESSES = 1024
STATES = ("alive", "isolated", "leaving")

_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,64}")  # member and pool names, addresses
_BOOT = re.compile(r"[0-9a-f]{16}")
_DIGEST = re.compile(r"[0-9a-f]{32}")
_KEYS = frozenset({"p", "m", "b", "s", "t", "st", "h", "w", "l", "d"})


class BadMessage(Exception):
    """A datagram that is not an acceptable heartbeat; `reason` is a counter label:
    malformed, forged, wrong_pool, unknown_member, wrong_sender, stale or replayed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Heartbeat:
    pool: str
    member: str
    boot: str  # 16 hex digits, random per process start
    seq: int
    time: float  # sender's wall clock, seconds since the epoch
    state: str  # "alive", "isolated" or "leaving"
    holds: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    digest: str = ""


@dataclass
class _Sender:
    boot: str
    seq: int
    time: float  # latest accepted message time
    seen: float  # receiver clock when it was accepted


@dataclass
class ReplayState:
    """What a receiver remembers per sender to reject replays (mutated by `decode`)."""

    pool: str
    members: Collection[str] | None = None  # None: accept any sender name
    window: float = 30.0
    senders: dict[str, _Sender] = field(default_factory=dict)


def config_digest(pool: PoolConfig) -> str:
    """A digest of the pool configuration every member must share, minus the key.

    Canonical form: sorted-key JSON of the settings, addresses as written by ipaddress,
    preferred keys normalised to bare IPs. 16 bytes of sha256, hex.
    """
    preferred = {}
    for raw, member in pool.preferred.items():
        try:
            preferred[str(ipaddress.ip_interface(raw).ip)] = member
        except ValueError:
            preferred[raw] = member
    canon = {
        "name": pool.name,
        "members": [[m.name, str(m.ip), m.weight] for m in pool.members],
        "addresses": [str(a) for a in pool.addresses],
        "looksalive": [pool.looksalive.interval, pool.looksalive.retry,
                       pool.looksalive.timeout],
        "watch": pool.watch,
        "preferred": sorted(preferred.items()),
        "fallback": [pool.fallback.mode.value, pool.fallback.hold_down],
        "witness": str(pool.witness) if pool.witness is not None else None,
        "port": pool.port,
    }
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < MIN_KEY:
        raise ValueError(f"a pool key must be at least {MIN_KEY} bytes")


def encode(msg: Heartbeat, key: bytes) -> bytes:
    """The authenticated datagram for `msg`; ValueError if it would exceed MAX_DATAGRAM."""
    _check_key(key)
    body = {
        "p": msg.pool, "m": msg.member, "b": msg.boot, "s": msg.seq, "t": msg.time,
        "st": msg.state, "h": list(msg.holds), "w": list(msg.wants), "l": list(msg.lost),
        "d": msg.digest,
    }
    payload = HEADER + json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    data = payload + hmac.new(key, payload, hashlib.sha256).digest()
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"heartbeat of {len(data)} bytes exceeds {MAX_DATAGRAM}: "
                         "too many addresses in one pool")
    return data


def decode(data: bytes, key: bytes, replay_state: ReplayState, now: float,
           sender: str | None = None) -> Heartbeat:
    """Check and parse one datagram; update `replay_state` only when it is accepted.

    `now` is the receiver's wall clock (the same clock senders stamp with). `sender`: the
    member whose address the datagram came from, if known; a heartbeat naming another
    member is rejected (`wrong_sender`) before it can touch that member's replay state.
    """
    try:
        return _decode(data, key, replay_state, now, sender)
    except BadMessage:
        raise
    except Exception as exc:  # belt and braces: the contract is "only BadMessage"
        raise BadMessage("malformed", f"{type(exc).__name__}") from None


def _decode(data: bytes, key: bytes, rs: ReplayState, now: float,
            sender: str | None) -> Heartbeat:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadMessage("malformed", "not bytes")
    data = bytes(data)
    if len(data) > MAX_DATAGRAM:
        raise BadMessage("malformed", f"{len(data)} bytes, limit {MAX_DATAGRAM}")
    if len(data) < len(HEADER) + 2 + MAC_LEN:
        raise BadMessage("malformed", "too short")
    if data[:len(MAGIC)] != MAGIC:
        raise BadMessage("malformed", "not a MiniSFT heartbeat")
    if data[len(MAGIC)] != VERSION:
        raise BadMessage("malformed", f"protocol version {data[len(MAGIC)]}, expected "
                                      f"{VERSION}")
    payload, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest(), mac):
        raise BadMessage("forged", "bad HMAC (wrong key or altered)")
    try:
        body = json.loads(payload[len(HEADER):].decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise BadMessage("malformed", f"authenticated but unparsable: {exc}") from None
    msg = _validate(body)
    if msg.pool != rs.pool:
        raise BadMessage("wrong_pool", f"for pool {msg.pool!r}")
    if rs.members is not None and msg.member not in rs.members:
        raise BadMessage("unknown_member", f"sender {msg.member!r} is not a member")
    if sender is not None and msg.member != sender:
        raise BadMessage("wrong_sender", f"names {msg.member!r}, sent from {sender!r}'s "
                                         "address")
    _check_replay(msg, rs, now)
    return msg


def _validate(body: Any) -> Heartbeat:
    if not isinstance(body, dict) or set(body) != _KEYS:
        raise BadMessage("malformed", "wrong set of keys")
    pool, member, boot = body["p"], body["m"], body["b"]
    seq, ts, state, digest = body["s"], body["t"], body["st"], body["d"]
    if not _is_name(pool) or not _is_name(member):
        raise BadMessage("malformed", "bad pool or member name")
    if not isinstance(boot, str) or not _BOOT.fullmatch(boot):
        raise BadMessage("malformed", "bad boot id")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise BadMessage("malformed", "bad sequence")
    if type(ts) not in (int, float) or not math.isfinite(ts) or ts < 0:
        raise BadMessage("malformed", "bad time")
    if state not in STATES:
        raise BadMessage("malformed", "bad state")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise BadMessage("malformed", "bad digest")
    lists = []
    for k in ("h", "w", "l"):
        value = body[k]
        if not isinstance(value, list) or len(value) > MAX_ADDRESSES or \
                not all(_is_name(v) for v in value):
            raise BadMessage("malformed", f"bad list {k!r}")
        lists.append(tuple(value))
    return Heartbeat(pool=pool, member=member, boot=boot, seq=seq, time=float(ts),
                     state=state, holds=lists[0], wants=lists[1], lost=lists[2],
                     digest=digest)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _check_replay(msg: Heartbeat, rs: ReplayState, now: float) -> None:
    if abs(msg.time - now) > rs.window:
        raise BadMessage("stale", f"sender clock {msg.time - now:+.1f}s off (window "
                                  f"{rs.window:g}s): replayed, or clocks not in sync")
    for name in [n for n, s in rs.senders.items() if now - s.seen > 2 * rs.window]:
        del rs.senders[name]  # safe: anything it could still block is stale by now
    prev = rs.senders.get(msg.member)
    if prev is not None:
        if msg.boot == prev.boot:
            if msg.seq <= prev.seq:
                raise BadMessage("replayed", f"sequence {msg.seq} <= {prev.seq}")
        elif msg.time <= prev.time:
            raise BadMessage("replayed", "older boot of the sender")
    rs.senders[msg.member] = _Sender(msg.boot, msg.seq, msg.time, now)
