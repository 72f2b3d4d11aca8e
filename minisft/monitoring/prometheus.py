"""The daemon's live state in the Prometheus text exposition format (version 0.0.4).

Written by hand rather than with prometheus_client: the input is already one status dict
(the same one written to status.json), so a registry of live metric objects would only be
a second copy of the state to keep in sync; and the daemon need not depend on the extra.

Conventions: base units (seconds, not ms), `_total` counters, one-hot gauges with a label
for enumerations (state, holder, health) that always list every value so a PromQL
selector on a value that is currently 0 still finds a series. Node identity is the
`minisft_info` metric; join on it rather than repeating the node label everywhere.

`serve_metrics` is the optional `/metrics` endpoint: a minimal HTTP/1.1 responder on
asyncio streams (no threads), one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from minisft.status import MonitorStatus, PoolStatus, StatusDocument

log = logging.getLogger("minisft.prometheus")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MONITOR_STATES = ("starting", "watching", "probing", "binding", "holding")
HOLDERS = ("self", "other", "none", "unknown")
HEALTHS = ("unknown", "up", "degraded", "down")
POOL_ADDRESS_STATES = ("held", "free", "probing", "binding", "duplicate")

# Counter keys of MonitorMachine.counters, with their help text; unknown keys still render.
COUNTER_HELP = {
    "takeovers": "Times this node took the address over after the holder stopped answering.",
    "claims": "Times this node claimed the address (primary start-up or admin claim).",
    "releases": "Times this node released the address.",
    "fallbacks": "Automatic or manual fallbacks to the primary.",
    "yields": "Times this node yielded the address to another holder.",
    "conflicts": "Address conflicts detected (another host answered for the address).",
    "service_alarms": "IsAlive service_dead alarms raised.",
}


class _Family:
    """One metric family: HELP, TYPE and its samples, rendered together as the format wants."""

    __slots__ = ("help", "kind", "name", "samples")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float | bool | None, **labels: str) -> None:
        if value is None:
            return  # unknown: absent is the Prometheus way, not NaN
        self.samples.append((labels, float(value)))

    def render(self) -> str:
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines = [f"# HELP {self.name} {help_text}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            lines.append(f"{self.name}{_labels(labels)} {_value(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _seconds(ms: Any) -> float | None:
    value = _num(ms)
    return None if value is None else value / 1000.0


def _metric_suffix(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key.lower())


def _with(known: tuple[str, ...], current: Any) -> tuple[str, ...]:
    """The known values, plus the current one if a newer daemon reports a value we lack."""
    if isinstance(current, str) and current not in known:
        return (*known, current)
    return known


def render_metrics(status: StatusDocument) -> bytes:
    """The status document as a Prometheus text exposition."""
    fam: dict[str, _Family] = {}

    def family(name: str, kind: str, help_text: str) -> _Family:
        if name not in fam:
            fam[name] = _Family(name, kind, help_text)
        return fam[name]

    family("minisft_info", "gauge", "MiniSFT daemon identity; always 1.").add(
        1, node=status.node or "", version=status.software_version or "",
        interface=status.interface or "")
    family("minisft_link_up", "gauge", "1 when the node's interface link is up.").add(
        _num(status.link_up))
    family("minisft_start_time_seconds", "gauge",
           "Daemon start time, seconds since the epoch.").add(_num(status.started_at))
    family("minisft_status_updated_timestamp_seconds", "gauge",
           "When the daemon last refreshed this state, seconds since the epoch.").add(
        _num(status.updated_at))
    family("minisft_events_total", "counter",
           "Events emitted (the last event sequence number).").add(
        _num(status.last_event_seq))

    _render_monitors(status.monitors, family)
    _render_sinks(status.sinks, family)
    family("minisft_pools", "gauge", "Address pools configured on this node.").add(
        len(status.pools))
    _render_pools(status.pools, family)

    return "".join(f.render() for f in fam.values()).encode("utf-8")


def _render_monitors(monitors: Iterable[MonitorStatus],
                     family: Callable[[str, str, str], _Family]) -> None:
    info = family("minisft_monitor_info", "gauge",
                  "Monitor configuration: address and role; always 1.")
    state = family("minisft_monitor_state", "gauge",
                   "Failover state of the monitor (one-hot over the state label).")
    holder = family("minisft_monitor_holder", "gauge",
                    "Who holds the address as this node sees it (one-hot over holder).")
    failed = family("minisft_monitor_failed_over", "gauge",
                    "1 when the address runs on its backup (failover, no fallback yet).")
    paused = family("minisft_monitor_paused", "gauge", "1 when the monitor is paused.")
    link = family("minisft_monitor_link_up", "gauge", "1 when this node's link is up.")
    conflict = family("minisft_monitor_conflict_open", "gauge",
                      "1 while an address conflict is open.")
    health = family("minisft_monitor_looksalive_health", "gauge",
                    "LooksAlive health of the address (one-hot over health).")
    up = family("minisft_monitor_looksalive_up", "gauge",
                "1 when the address answers ICMP or ARP/NDP (health up or degraded).")
    rtt = family("minisft_monitor_looksalive_rtt_seconds", "gauge",
                 "Last LooksAlive ICMP round-trip time.")
    rto = family("minisft_monitor_looksalive_rto_seconds", "gauge",
                 "How long the next LooksAlive ping waits for its reply: the RTO estimated "
                 "from the round-trip times, at most the configured timeout.")
    sent = family("minisft_monitor_looksalive_pings_total", "counter",
                  "LooksAlive pings sent.")
    lost = family("minisft_monitor_looksalive_lost_total", "counter",
                  "LooksAlive pings lost.")
    ia_enabled = family("minisft_monitor_isalive_enabled", "gauge",
                        "1 when an IsAlive service check is configured.")
    ia_ok = family("minisft_monitor_isalive_ok", "gauge",
                   "Result of the last IsAlive check (absent before the first).")
    ia_dead = family("minisft_monitor_isalive_dead", "gauge",
                     "1 when the service is declared dead behind a live host.")
    ia_latency = family("minisft_monitor_isalive_latency_seconds", "gauge",
                        "Duration of the last IsAlive check.")
    peer = family("minisft_monitor_peer_health", "gauge",
                  "Health of peer_ip, watched for fallback (one-hot over health).")
    suspended = family("minisft_monitor_auto_fallback_suspended", "gauge",
                       "1 when automatic fallback is suspended after a failed fallback.")
    changed = family("minisft_monitor_last_change_timestamp_seconds", "gauge",
                     "When the monitor last changed state, seconds since the epoch.")
    since = family("minisft_monitor_seconds_since_change", "gauge",
                   "Seconds since the monitor last changed state.")

    rows = list(monitors)
    counter_keys: list[str] = list(COUNTER_HELP)
    for mon in rows:
        for key in mon.counters:
            if key not in counter_keys:
                counter_keys.append(str(key))
    counters = {
        key: family(f"minisft_monitor_{_metric_suffix(key)}_total", "counter",
                    COUNTER_HELP.get(key, f"Monitor counter {key}."))
        for key in counter_keys
    }

    for mon in rows:
        m = mon.name or ""
        info.add(1, monitor=m, address=mon.address or "", role=mon.role or "")
        for value in _with(MONITOR_STATES, mon.state):
            state.add(mon.state == value, monitor=m, state=value)
        for value in _with(HOLDERS, mon.holder):
            holder.add(mon.holder == value, monitor=m, holder=value)
        failed.add(mon.failed_over, monitor=m)
        paused.add(mon.paused, monitor=m)
        link.add(mon.link_up is not False, monitor=m)
        conflict.add(mon.conflict_open, monitor=m)
        looks = mon.looksalive
        for value in _with(HEALTHS, looks.health):
            health.add(looks.health == value, monitor=m, health=value)
        up.add(looks.health in ("up", "degraded"), monitor=m)
        rtt.add(_seconds(looks.rtt_ms), monitor=m)
        rto.add(_seconds(looks.rto_ms), monitor=m)
        sent.add(_num(looks.sent), monitor=m)
        lost.add(_num(looks.lost), monitor=m)
        isalive = mon.isalive
        ia_enabled.add(isalive.enabled, monitor=m)
        if isalive.enabled:
            ia_ok.add(_num(isalive.ok), monitor=m)
            ia_dead.add(isalive.dead, monitor=m)
            ia_latency.add(_seconds(isalive.latency_ms), monitor=m)
        if mon.peer.ip:
            for value in HEALTHS:
                peer.add(mon.peer.health == value, monitor=m, health=value)
            suspended.add(mon.peer.auto_fallback_suspended, monitor=m)
        changed.add(_num(mon.last_change_time), monitor=m)
        since.add(_num(mon.seconds_since_change), monitor=m)
        for key, fam in counters.items():
            fam.add(_num(mon.counters.get(key, 0)), monitor=m)


def _render_pools(pools: Iterable[PoolStatus],
                  family: Callable[[str, str, str], _Family]) -> None:
    active = family("minisft_pool_member_active", "gauge",
                    "1 when this node is an active member of the pool: it hears a quorum, "
                    "so its view of who holds each address is complete.")
    owner = family("minisft_pool_address_owner", "gauge",
                   "The member holding the pool address, as the owner label; always 1. "
                   "No series while nobody holds it, one per holder while two do.")
    preferred = family("minisft_pool_address_preferred_owner", "gauge",
                       "The member the pool's formula places the address on while every "
                       "member is up (its home), as the preferred label; always 1.")
    placement = family("minisft_pool_address_placement", "gauge",
                       "1 when the pool address is held by its preferred member alone.")
    state = family("minisft_pool_address_state", "gauge",
                   "State of the pool address (one-hot): held, free (held by nobody), "
                   "probing or binding (this node is taking it), duplicate (two holders).")
    moves = family("minisft_pool_address_moves_total", "counter",
                   "Times this node saw the pool address move from one member to another.")
    for pool in pools:
        p = pool.name or ""
        active.add(pool.phase == "active", pool=p)
        for a in pool.placement:
            address = a.address or ""
            for holder in a.holders:
                owner.add(1, pool=p, address=address, owner=holder)
            if a.preferred is not None:
                preferred.add(1, pool=p, address=address, preferred=a.preferred)
            placement.add(a.on_preferred, pool=p, address=address)
            for value in _with(POOL_ADDRESS_STATES, a.state):
                state.add(a.state == value, pool=p, address=address, state=value)
            moves.add(a.moves, pool=p, address=address)


def _render_sinks(sinks: Iterable[Mapping[str, Any]],
                  family: Callable[[str, str, str], _Family]) -> None:
    delivered = family("minisft_sink_delivered_total", "counter",
                       "Events the alert sink's endpoint confirmed (informs, HTTP, syslog).")
    unconfirmed = family("minisft_sink_sent_unconfirmed_total", "counter",
                         "Events sent by a fire-and-forget alert sink (SNMP traps): they left "
                         "this node, no endpoint confirms them.")
    pending = family("minisft_sink_pending_events", "gauge",
                     "Events waiting for delivery by the alert sink.")
    dropped = family("minisft_sink_dropped_total", "counter",
                     "Events the alert sink gave up on (queue overflow or backlog limit).")
    failures = family("minisft_sink_failures_total", "counter",
                      "Failed delivery attempts by the alert sink.")
    ok = family("minisft_sink_ok", "gauge", "1 when the alert sink is in state ok.")
    state = family("minisft_sink_state", "gauge",
                   "Current state of the alert sink, as the state label; always 1.")
    for sink in sinks:
        s = str(sink.get("name", ""))
        delivered.add(_num(sink.get("delivered")), sink=s)
        unconfirmed.add(_num(sink.get("sent_unconfirmed")), sink=s)
        pending.add(_num(sink.get("pending")), sink=s)
        dropped.add(_num(sink.get("dropped")), sink=s)
        failures.add(_num(sink.get("failures")), sink=s)
        ok.add(sink.get("state") == "ok", sink=s)
        state.add(1, sink=s, state=str(sink.get("state", "unknown")))


# ------------------------------------------------------------------------------- HTTP

MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 5.0  # a client that does not send its request in time is dropped


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (loopback) into (host, port)."""
    text = listen.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"listen address {listen!r}: expected [v6-address]:port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"listen address {listen!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"listen address {listen!r}: put IPv6 addresses in brackets")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r}: bad port {port!r}")
    return host or "127.0.0.1", int(port)


DEFAULT_MAX_CONNECTIONS = 16  # alerting.prometheus.max_connections: scrapers are few


async def serve_metrics(listen: str, get_status: Callable[[], StatusDocument], *,
                        max_connections: int = DEFAULT_MAX_CONNECTIONS,
                        ) -> asyncio.AbstractServer:
    """Serve `GET /metrics` on `listen`; each scrape renders `get_status()` afresh. At most
    `max_connections` at once: beyond, a connection is closed unanswered."""
    from minisft.runtime.connlimit import ConnectionLimit

    host, port = parse_listen(listen)
    limit = ConnectionLimit(f"prometheus listener {listen}", max_connections)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not limit.enter():
            writer.close()
            return
        try:
            await _respond(reader, writer, get_status)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            pass  # the client went away or dawdled: nothing to answer
        finally:
            limit.leave()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=MAX_HEADER_BYTES)


async def _respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   get_status: Callable[[], StatusDocument]) -> None:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        await _send(writer, 400, "Bad Request", b"bad request\n")
        return
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        await _send(writer, 405, "Method Not Allowed", b"only GET and HEAD\n",
                    extra="Allow: GET, HEAD\r\n")
        return
    if target == "/":
        body = b'<html><body><a href="/metrics">MiniSFT metrics</a></body></html>\n'
        await _send(writer, 200, "OK", body, content_type="text/html; charset=utf-8",
                    head_only=method == "HEAD")
        return
    if target != "/metrics":
        await _send(writer, 404, "Not Found", b"not found: try /metrics\n")
        return
    try:
        body = render_metrics(get_status())
    except Exception:  # a broken scrape must not kill the daemon's server
        log.exception("rendering /metrics failed")
        await _send(writer, 500, "Internal Server Error", b"cannot render metrics\n")
        return
    await _send(writer, 200, "OK", body, content_type=CONTENT_TYPE, head_only=method == "HEAD")


async def _send(writer: asyncio.StreamWriter, code: int, reason: str, body: bytes, *,
                content_type: str = "text/plain; charset=utf-8", extra: str = "",
                head_only: bool = False) -> None:
    header = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n")
    writer.write(header.encode("latin-1") + (b"" if head_only else body))
    await writer.drain()
