"""The Prometheus exposition: values, format (checked with prometheus_client's own parser)
and the asyncio /metrics server over real loopback TCP."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from minisft.monitoring.prometheus import (
    CONTENT_TYPE,
    MONITOR_STATES,
    parse_listen,
    render_metrics,
    serve_metrics,
)
from minisft.status import MonitorStatus, StatusDocument
from tests.support import status_docs
from tests.support.status_docs import with_monitor

NOW = 1_700_003_600.25  # the scrapes compare whole bodies: one fixed clock


def ok_status() -> StatusDocument:
    return status_docs.ok_status(now=NOW, pid=4242)


def monitor(name: str, role: str, state: str, holder: str, **over: Any) -> MonitorStatus:
    return status_docs.monitor(name, role, state, holder, changed_at=NOW, **over)


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(body: bytes, name: str, **labels: str) -> float:
    return samples(body)[(name, frozenset(labels.items()))]


def test_node_and_daemon_metrics() -> None:
    status = ok_status()
    body = render_metrics(status)
    assert value(body, "minisft_info", node="alpha", version="0.1.0", interface="") == 1
    status = replace(status, interface="eth0", link_up=False)
    body = render_metrics(status)
    assert value(body, "minisft_info", node="alpha", version="0.1.0", interface="eth0") == 1
    assert value(body, "minisft_link_up") == 0
    assert value(body, "minisft_events_total") == 42
    assert value(body, "minisft_start_time_seconds") == pytest.approx(status.started_at)
    assert value(body, "minisft_status_updated_timestamp_seconds") == pytest.approx(
        status.updated_at)


def test_monitor_state_is_one_hot() -> None:
    body = render_metrics(ok_status())
    for st in MONITOR_STATES:
        assert value(body, "minisft_monitor_state", monitor="web", state=st) == (
            st == "holding")
        assert value(body, "minisft_monitor_state", monitor="db", state=st) == (
            st == "watching")
    assert value(body, "minisft_monitor_holder", monitor="web", holder="self") == 1
    assert value(body, "minisft_monitor_holder", monitor="web", holder="none") == 0
    assert value(body, "minisft_monitor_info", monitor="db", address="192.0.2.10",
                 role="backup") == 1


def test_monitor_values_in_base_units() -> None:
    body = render_metrics(ok_status())
    assert value(body, "minisft_monitor_looksalive_rtt_seconds", monitor="db") == 0.00025
    assert value(body, "minisft_monitor_looksalive_rto_seconds", monitor="db") == 0.005
    assert value(body, "minisft_monitor_isalive_latency_seconds", monitor="db") == 0.0125
    assert value(body, "minisft_monitor_looksalive_up", monitor="db") == 1
    assert value(body, "minisft_monitor_looksalive_pings_total", monitor="db") == 40
    assert value(body, "minisft_monitor_looksalive_lost_total", monitor="db") == 1
    assert value(body, "minisft_monitor_isalive_ok", monitor="web") == 1
    assert value(body, "minisft_monitor_isalive_dead", monitor="web") == 0
    assert value(body, "minisft_monitor_takeovers_total", monitor="web") == 3
    assert value(body, "minisft_monitor_fallbacks_total", monitor="web") == 2
    assert value(body, "minisft_monitor_conflicts_total", monitor="web") == 0
    assert value(body, "minisft_monitor_seconds_since_change", monitor="web") == 120
    assert value(body, "minisft_monitor_failed_over", monitor="web") == 0


def test_failover_and_alarms() -> None:
    status = replace(ok_status(), monitors=(
        monitor("a", "backup", "holding", "self", peer={"ip": "192.0.2.2", "health": "down"}),
        monitor("b", "primary", "watching", "other"),
        monitor("c", "backup", "watching", "none", conflict_open=True,
                isalive={"ok": False, "dead": True}),
    ))
    body = render_metrics(status)
    assert value(body, "minisft_monitor_failed_over", monitor="a") == 1
    assert value(body, "minisft_monitor_failed_over", monitor="b") == 1
    assert value(body, "minisft_monitor_failed_over", monitor="c") == 0
    assert value(body, "minisft_monitor_peer_health", monitor="a", health="down") == 1
    assert value(body, "minisft_monitor_holder", monitor="c", holder="none") == 1
    assert value(body, "minisft_monitor_conflict_open", monitor="c") == 1
    assert value(body, "minisft_monitor_isalive_dead", monitor="c") == 1
    assert value(body, "minisft_monitor_isalive_ok", monitor="c") == 0
    # no peer configured: no peer series at all rather than a fake "unknown"
    assert ("minisft_monitor_peer_health", frozenset({("monitor", "b"), ("health", "unknown")})
            ) not in samples(body)


def test_unknown_values_are_absent_not_zero() -> None:
    status = with_monitor(ok_status(), 0, looksalive={"rtt_ms": None}, isalive={"ok": None})
    body = samples(render_metrics(status))
    assert ("minisft_monitor_looksalive_rtt_seconds", frozenset({("monitor", "web")})
            ) not in body
    assert ("minisft_monitor_isalive_ok", frozenset({("monitor", "web")})) not in body


def test_sink_metrics() -> None:
    status = ok_status()
    status = replace(status, sinks=(*status.sinks, {
        "name": "apprise", "delivered": 3, "pending": 2, "dropped": 5, "failures": 9,
        "last_error": "boom", "state": "retrying"}))
    body = render_metrics(status)
    sink = "snmp-192.0.2.9-162-v2c-trap"
    assert value(body, "minisft_sink_delivered_total", sink=sink) == 10
    assert value(body, "minisft_sink_ok", sink=sink) == 1
    assert value(body, "minisft_sink_ok", sink="apprise") == 0
    assert value(body, "minisft_sink_dropped_total", sink="apprise") == 5
    assert value(body, "minisft_sink_pending_events", sink="apprise") == 2
    assert value(body, "minisft_sink_failures_total", sink="apprise") == 9
    assert value(body, "minisft_sink_state", sink="apprise", state="retrying") == 1


def test_label_values_are_escaped() -> None:
    status = with_monitor(ok_status(), 0, name='we"b\\1\nx')
    body = render_metrics(status)
    assert b'monitor="we\\"b\\\\1\\nx"' in body
    assert value(body, "minisft_monitor_paused", monitor='we"b\\1\nx') == 0


def test_new_state_values_still_render() -> None:
    status = with_monitor(ok_status(), 0, state="draining")  # from a newer daemon
    body = render_metrics(status)
    assert value(body, "minisft_monitor_state", monitor="web", state="draining") == 1
    assert value(body, "minisft_monitor_state", monitor="web", state="holding") == 0


def test_empty_status_is_valid() -> None:
    body = render_metrics(StatusDocument())
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "minisft_info" in families
    assert body.endswith(b"\n")


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:9523", ("127.0.0.1", 9523)),
    ("[::1]:9523", ("::1", 9523)),
    (":9523", ("127.0.0.1", 9523)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9523", "::1:9523", "host:port", "1.2.3.4:70000", "[::1]"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)


async def _http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)  # server closes after one response
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def test_serve_metrics_over_loopback() -> None:
    state: dict[str, Any] = {"status": ok_status(), "fail": False}

    def get_status() -> StatusDocument:
        if state["fail"]:
            raise RuntimeError("no state")
        doc: StatusDocument = state["status"]
        return doc

    async def scenario() -> None:
        server = await serve_metrics("127.0.0.1:0", get_status)
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        try:
            line, headers, body = await _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert line == "HTTP/1.1 200 OK"
            assert headers["Content-Type"] == CONTENT_TYPE
            assert int(headers["Content-Length"]) == len(body)
            assert body == render_metrics(state["status"])

            # every scrape renders the live state afresh
            state["status"] = with_monitor(state["status"], 0, counters={"takeovers": 99})
            _, _, body = await _http(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
            assert value(body, "minisft_monitor_takeovers_total", monitor="web") == 99

            line, headers, body = await _http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert line == "HTTP/1.1 200 OK" and body == b""
            assert int(headers["Content-Length"]) > 0

            line, _, _ = await _http(port, b"GET /nope HTTP/1.1\r\n\r\n")
            assert line == "HTTP/1.1 404 Not Found"
            line, headers, _ = await _http(port, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert line == "HTTP/1.1 405 Method Not Allowed"
            assert headers["Allow"] == "GET, HEAD"
            line, _, _ = await _http(port, b"garbage\r\n\r\n")
            assert line == "HTTP/1.1 400 Bad Request"

            state["fail"] = True
            line, _, _ = await _http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert line == "HTTP/1.1 500 Internal Server Error"
            state["fail"] = False
            # the server survived the failure
            line, _, _ = await _http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert line == "HTTP/1.1 200 OK"
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_metrics_connections_beyond_the_limit_are_closed_and_scrapes_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    # an unauthenticated client opening connections without end must not take the
    # daemon's file descriptors (1100 of them made 2,755 tracebacks in 20 s)
    async def scenario() -> None:
        server = await serve_metrics("127.0.0.1:0", ok_status, max_connections=4)
        port = server.sockets[0].getsockname()[1]
        try:
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            await asyncio.sleep(0.1)
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
                writer.close()
            for _, writer in idle:
                writer.close()
            await asyncio.sleep(0.1)
            line, _, body = await _http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert line == "HTTP/1.1 200 OK" and body == render_metrics(ok_status())
        finally:
            server.close()
            await server.wait_closed()

    caplog.set_level(logging.WARNING)
    asyncio.run(scenario())
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, refusals
    assert "Traceback" not in caplog.text


def test_pool_addresses_with_owner_preferred_owner_placement_and_moves() -> None:
    front = status_docs.pool("front", "alpha", {
        "192.0.2.50/24": ("alpha", "alpha", "held"),
        "192.0.2.51/24": ("alpha", "beta", "held"),
        "192.0.2.52/24": (None, "beta", "free")})
    front = replace(front, placement=(
        front.placement[0], replace(front.placement[1], moves=2), front.placement[2]))
    body = render_metrics(replace(ok_status(), pools=(front,)))
    at_home = {"pool": "front", "address": "192.0.2.50/24"}
    away = {"pool": "front", "address": "192.0.2.51/24"}
    nobody = {"pool": "front", "address": "192.0.2.52/24"}
    assert value(body, "minisft_pool_member_active", pool="front") == 1
    assert value(body, "minisft_pool_address_owner", **at_home, owner="alpha") == 1
    assert value(body, "minisft_pool_address_owner", **away, owner="alpha") == 1
    assert value(body, "minisft_pool_address_preferred_owner", **away, preferred="beta") == 1
    assert value(body, "minisft_pool_address_placement", **at_home) == 1
    assert value(body, "minisft_pool_address_placement", **away) == 0
    assert value(body, "minisft_pool_address_placement", **nobody) == 0
    assert value(body, "minisft_pool_address_moves_total", **away) == 2
    assert value(body, "minisft_pool_address_state", **nobody, state="free") == 1
    assert value(body, "minisft_pool_address_state", **nobody, state="held") == 0
    # nobody holds it: no owner series at all rather than an empty owner label
    assert not [k for k in samples(body) if k[0] == "minisft_pool_address_owner"
                and ("address", "192.0.2.52/24") in k[1]]
