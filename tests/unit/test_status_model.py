"""minisft.status: the typed status document (round trip, old files, bad files, failover)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from minisft.status import (
    MonitorStatus,
    StatusDocument,
    StatusError,
    dump,
    load,
    status_file,
)


def daemon_monitor(**over: Any) -> dict[str, Any]:
    """A monitor entry with every key the daemon writes today (MonitorMachine.snapshot
    plus last_change_time)."""
    mon: dict[str, Any] = {
        "name": "web", "address": "192.0.2.10", "prefixlen": 24, "role": "primary",
        "state": "holding", "purpose": None, "paused": False, "holder": "self",
        "holder_mac": None, "reason": "claimed", "link_up": True, "conflict_open": False,
        "seconds_since_change": 12.5,
        "looksalive": {"health": "unknown", "misses": 0, "icmp_misses": 0, "rtt_ms": None,
                       "rto_ms": 200.0, "sent": 40, "lost": 1},
        "isalive": {"enabled": True, "check": "http", "ok": True, "dead": False,
                    "latency_ms": 12, "detail": "200 OK"},
        "peer": {"ip": "192.0.2.2", "health": "up", "rtt_ms": 0.3, "up_for": 30.0,
                 "fallback": "auto", "hold_down": 60.0, "auto_fallback_suspended": False},
        "counters": {"takeovers": 3, "claims": 1},
        "last_change_time": 1_700_000_000.5,
    }
    mon.update(over)
    return mon


def daemon_document() -> dict[str, Any]:
    """A document with every top-level key Daemon.status() writes today."""
    return {
        "version": 1, "node": "alpha", "pid": 1234, "software_version": "0.1.0",
        "started_at": 1_699_999_000.0, "updated_at": 1_700_000_012.0,
        "interface": "eth0", "local_ip": "192.0.2.1", "link_up": True,
        "config": "/etc/minisft/minisft.yaml", "last_event_seq": 42,
        "monitors": [daemon_monitor()],
        "sinks": [{"name": "syslog", "delivered": 3, "pending": 0, "dropped": 0,
                   "failures": 0, "last_error": None, "state": "ok"}],
        "pools": [{"name": "vips", "member": "alpha", "phase": "active", "reason": "ok",
                   "isolated": False, "link_up": True, "witness": None, "drift": [],
                   "members": [{"name": "alpha", "self": True, "holds": ["a"]}],
                   "held": ["192.0.2.50"], "wants": [], "counters": {"binds": 1},
                   "port": 9999, "transport": {"boot": 1, "seq": 7}}],
    }


def test_dump_then_load_keeps_the_document_as_the_daemon_wrote_it(tmp_path: Path) -> None:
    source = tmp_path / "daemon.json"
    source.write_text(json.dumps(daemon_document()))
    doc = load(source)
    again = tmp_path / "status.json"
    dump(doc, again)
    assert json.loads(again.read_text()) == daemon_document()
    assert load(again) == doc
    assert again.stat().st_mode & 0o777 == 0o644  # monitoring reads it unprivileged
    assert not again.with_suffix(".json.tmp").exists()


def test_typed_fields_read_from_the_document(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(daemon_document()))
    doc = load(path)
    assert (doc.node, doc.pid, doc.last_event_seq, doc.stopped_at) == ("alpha", 1234, 42, None)
    web = doc.monitor("web")
    assert web is not None
    assert (web.role, web.holder, web.looksalive.rto_ms, web.isalive.latency_ms) == (
        "primary", "self", 200.0, 12)
    assert isinstance(web.isalive.latency_ms, int)  # printed as written: "12", not "12.0"
    assert web.peer.ip == "192.0.2.2"
    assert web.prefixlen == 24
    assert "purpose" in web.extra  # a key the model does not name is kept
    assert doc.pools[0].held == ("192.0.2.50",)
    assert doc.pools[0].extra["port"] == 9999
    assert doc.monitor("nope") is None


def test_stopped_at_is_written_only_when_set() -> None:
    doc = StatusDocument.from_dict(daemon_document())
    assert "stopped_at" not in doc.to_dict()
    stopped = StatusDocument.from_dict({**daemon_document(), "stopped_at": 5.0})
    assert stopped.stopped_at == 5.0 and stopped.to_dict()["stopped_at"] == 5.0


def test_a_file_from_an_older_daemon_still_reads(tmp_path: Path) -> None:
    # before sinks, pools, last_event_seq, last_change_time, rto_ms, peer and isalive
    path = tmp_path / "status.json"
    path.write_text(json.dumps({
        "version": 1, "node": "alpha", "pid": 1234, "updated_at": 1_700_000_012.0,
        "monitors": [{"name": "web", "address": "192.0.2.10", "role": "backup",
                      "state": "holding", "holder": "self",
                      "looksalive": {"health": "down", "rtt_ms": None}}],
    }))
    doc = load(path)
    assert (doc.sinks, doc.pools, doc.last_event_seq, doc.link_up) == ((), (), None, None)
    web = doc.monitors[0]
    assert web.failed_over
    assert web.last_change_time is None and web.looksalive.rto_ms is None
    assert not web.isalive.enabled and web.peer.ip is None and dict(web.counters) == {}


def test_wrongly_typed_values_read_as_unknown() -> None:
    doc = StatusDocument.from_dict({
        "version": 1, "node": 7, "pid": "1234", "updated_at": True,
        "monitors": [daemon_monitor(name=None, looksalive="up", counters=[1]), "junk"],
        "pools": "none"})
    assert (doc.node, doc.pid, doc.updated_at, doc.pools) == (None, None, None, ())
    assert len(doc.monitors) == 1
    assert doc.monitors[0].name is None
    assert doc.monitors[0].looksalive.health is None
    assert dict(doc.monitors[0].counters) == {}


@pytest.mark.parametrize(("content", "message"), [
    (None, "status file {path} not found: is minisft running (or use --config/--status)?"),
    (b"{", "status file {path} is not valid JSON: "),
    (b"[]", "status file {path}: not a JSON object"),
    (b'{"version": 2}', "status file {path}: format version 2 not supported "
                        "(this reader reads version 1)"),
    (b'{"monitors": []}', "status file {path}: format version None not supported"),
    (b'{"version": 1, "monitors": {}}', "status file {path}: monitors is not a list"),
])
def test_a_bad_or_missing_file_raises_one_clear_status_error(
        tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "status.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StatusError) as err:
        load(path)
    assert str(err.value).startswith(message.format(path=path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(daemon_document()))
    path.chmod(0)
    with pytest.raises(StatusError, match="permission denied"):
        load(path)


@pytest.mark.parametrize(("role", "holder", "failed_over"), [
    ("primary", "self", False),   # as configured
    ("primary", "other", True),   # the backup took it over
    ("backup", "other", False),   # as configured
    ("backup", "self", True),     # this backup took it over
    ("primary", "none", False),   # nobody holds it: CRITICAL, but not a failover
    ("backup", "unknown", False),
    (None, "self", False),
])
def test_failed_over(role: str | None, holder: str, failed_over: bool) -> None:
    assert MonitorStatus(role=role, holder=holder).failed_over is failed_over


def test_status_file_is_found_as_the_readers_find_it(tmp_path: Path) -> None:
    assert status_file("/srv/s.json", None) == (Path("/srv/s.json"), "from --status")
    config = tmp_path / "minisft.yaml"
    config.write_text(f"state_dir: {tmp_path}/state\n")
    assert status_file(None, config) == (tmp_path / "state" / "status.json",
                                         f"state_dir from {config}")
    config.write_text("node: {}\n")
    assert status_file(None, config)[0] == Path("/var/lib/minisft/status.json")
    with pytest.raises(StatusError, match="cannot read config"):
        status_file(None, tmp_path / "missing.yaml")
    config.write_text("- a list\n")
    with pytest.raises(StatusError, match="top level is not a mapping"):
        status_file(None, config)


def test_a_config_that_is_not_yaml_is_named_by_position_never_quoted(tmp_path: Path) -> None:
    """check_minisft reads state_dir from the config; its output goes to every monitoring
    database, so a broken line (which may hold a password) is located, not quoted."""
    config = tmp_path / "minisft.yaml"
    config.write_text("state_dir: /srv\nsecret: 's3cr3t-t0ken\n  bad: [\n")
    with pytest.raises(StatusError) as err:
        status_file(None, config)
    assert "not valid YAML (line" in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_a_pool_placement_round_trips_and_reads_typed(tmp_path: Path) -> None:
    document = daemon_document()
    document["pools"][0].update(
        backend="etcd", config_drift=None, assignment={"192.0.2.50": "alpha"},
        etcd={"endpoint": "http://192.0.2.9:2379", "connected": True, "lease": "1f",
              "ttl": 5, "last_error": None, "revision": 9},
        placement=[{"address": "192.0.2.50", "owner": "alpha", "preferred": "beta",
                    "state": "held", "holders": ["alpha"], "moves": 3}])
    source = tmp_path / "daemon.json"
    source.write_text(json.dumps(document))
    dump(load(source), tmp_path / "status.json")
    assert json.loads((tmp_path / "status.json").read_text()) == document
    front = load(source).pools[0]
    assert front.etcd is not None and front.etcd.lease == "1f"
    assert front.etcd.extra["revision"] == 9
    address = front.address("192.0.2.50")
    assert address is not None
    assert (address.owner, address.preferred, address.moves) == ("alpha", "beta", 3)
    assert not address.on_preferred
