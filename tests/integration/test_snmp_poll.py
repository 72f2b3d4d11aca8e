"""Polling MINISFT-MIB: the `minisft-snmp-pass` pass_persist helper, first on its own
(the line protocol), then behind a REAL net-snmp snmpd on loopback, read with
snmpwalk/snmpget/snmptable with our MIB loaded.

snmpd runs in the foreground (tests/support/snmpd.py):
    snmpd -f -Lf DIR/snmpd.log -C -c DIR/snmpd.conf -M mibs:mibs/ietf \
          -m SNMPv2-MIB:MINISFT-MIB udp:127.0.0.1:PORT
with snmpd.conf:
    rocommunity public 127.0.0.1
    pass_persist .1.3.6.1.4.1.32473.1 PYTHON -m minisft.snmp.passpersist --status FILE
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from minisft.snmp import oids
from minisft.snmp.passpersist import StatusView, build_entries, format_oid
from minisft.status import MonitorStatus, StatusDocument, dump, load
from tests.support import status_docs
from tests.support.snmpd import SnmpAgent
from tests.support.status_docs import with_monitor

REPO = Path(__file__).resolve().parents[2]
BASE = "." + ".".join(map(str, oids.MINISFT_MIB))
NODE = format_oid(oids.NODE)
ENTRY = format_oid(oids.MONITOR_ENTRY)

needs_snmpd = pytest.mark.skipif(
    shutil.which("snmpwalk") is None
    or (shutil.which("snmpd") is None and not Path("/usr/sbin/snmpd").exists()),
    reason="net-snmp snmpd/snmpwalk not installed")


def monitor(name: str, address: str, **kw: Any) -> MonitorStatus:
    """A backup watching `address` held by the other node, as the daemon writes it."""
    over: dict[str, Any] = {"address": address, "reason": "backup: watching the address",
                            "last_change_time": 1_700_000_090.0,
                            "counters": {"takeovers": 0, "conflicts": 0},
                            "looksalive": {"rtt_ms": 0.25}, "isalive": {"latency_ms": 3.5}}
    for key, value in kw.items():
        over[key] = {**over[key], **value} if isinstance(value, dict) and key in over \
            else value
    return status_docs.monitor(name, over.pop("role", "backup"), over.pop("state", "watching"),
                               over.pop("holder", "other"), **over)


def status_doc(updated_at: float | None = None) -> StatusDocument:
    doc = status_docs.document([
        monitor("web", "192.0.2.10", state="holding", holder="self", role="backup",
                reason="holding: took over after LooksAlive failed",
                looksalive={"health": "down", "rtt_ms": 0.412},
                isalive={"latency_ms": 12.345},
                counters={"takeovers": 2, "conflicts": 1}),
        monitor("db6", "2001:db8::20", prefixlen=64, role="primary", paused=True,
                holder_mac="02:00:00:00:00:0b", state="watching (paused)",
                reason="address in use by 02:00:00:00:00:0b — watching",
                looksalive={"health": "degraded", "rtt_ms": None},
                isalive={"enabled": False, "ok": None, "latency_ms": None},
                peer={"ip": "2001:db8::2", "health": "up"},
                counters={"conflicts": 4}),
        monitor("mail", "198.51.100.7", state="probing", reason="",
                isalive={"ok": False, "dead": True}),
    ], now=updated_at, pid=123, sinks=())
    return replace(doc, link_up=True)


def write_status(path: Path, doc: StatusDocument) -> None:
    dump(doc, path)  # atomically, as the daemon does


@pytest.fixture
def status_file(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "status.json"
    path.parent.mkdir()
    write_status(path, status_doc())
    return path


class PassHelper:
    """The helper as snmpd runs it: a child process speaking the line protocol."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "minisft.snmp.passpersist", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def ask(self, *lines: str, answer_lines: int = 1) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()
        first = self.proc.stdout.readline().rstrip("\n")
        if first in ("NONE", "PONG", "not-writable", "DONE"):
            return [first]
        return [first] + [self.proc.stdout.readline().rstrip("\n")
                          for _ in range(answer_lines - 1)]

    def get(self, oid: str) -> list[str]:
        return self.ask("get", oid, answer_lines=3)

    def getnext(self, oid: str) -> list[str]:
        return self.ask("getnext", oid, answer_lines=3)

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


# ---------------------------------------------------------------------- the helper alone


def test_protocol_ping_get_getnext_set(status_file: Path) -> None:
    helper = PassHelper("--status", str(status_file))
    try:
        assert helper.ask("PING") == ["PONG"]
        assert helper.get(f"{NODE}.1.0") == [f"{NODE}.1.0", "string", "alpha"]
        assert helper.get(f"{NODE}.5.0") == [f"{NODE}.5.0", "gauge", "3"]
        assert helper.get(f"{NODE}.6.0") == [f"{NODE}.6.0", "gauge", "42"]
        assert helper.get(f"{NODE}.1") == ["NONE"]  # not an instance
        assert helper.get(f"{ENTRY}.2.4") == ["NONE"]  # no 4th monitor
        # getnext from the module root reaches the first object; then walks in order
        assert helper.getnext(BASE) == [f"{NODE}.1.0", "string", "alpha"]
        assert helper.getnext(f"{NODE}.8.0") == [f"{ENTRY}.2.1", "string", "web"]
        assert helper.getnext(f"{ENTRY}.2.1") == [f"{ENTRY}.2.2", "string", "db6"]
        assert helper.getnext(f"{ENTRY}.2.3") == [f"{ENTRY}.3.1", "integer", "1"]
        assert helper.get(f"{ENTRY}.4.2") == [f"{ENTRY}.4.2", "string", "2001:db8::20"]
        assert helper.getnext(f"{ENTRY}.20.3") == ["NONE"]  # the end of the MIB
        assert helper.ask("set", f"{NODE}.1.0", "string beta") == ["not-writable"]
        assert helper.ask("PING") == ["PONG"]  # still in step after a set
    finally:
        assert helper.close() == 0


def test_helper_follows_status_file_and_survives_its_absence(tmp_path: Path,
                                                            status_file: Path) -> None:
    helper = PassHelper("--status", str(status_file))
    try:
        assert helper.get(f"{ENTRY}.7.1")[2] == "5"  # holding
        write_status(status_file, with_monitor(status_doc(), 0, state="watching"))
        assert helper.get(f"{ENTRY}.7.1")[2] == "2"
        status_file.unlink()
        assert helper.get(f"{NODE}.1.0") == ["NONE"]
        write_status(status_file, status_doc())
        assert helper.get(f"{NODE}.1.0")[2] == "alpha"
    finally:
        helper.close()


def test_helper_reads_state_dir_from_config(tmp_path: Path, status_file: Path) -> None:
    config = tmp_path / "minisft.yaml"
    config.write_text(f"node: {{name: alpha, local_ip: 192.0.2.1}}\n"
                      f"state_dir: {status_file.parent}\n"
                      "alerting: {snmp: {targets: [{host: 192.0.2.9, community: s3cret}]}}\n")
    helper = PassHelper("--config", str(config))
    try:
        assert helper.get(f"{NODE}.1.0")[2] == "alpha"
    finally:
        helper.close()


def test_helper_bad_config_names_no_content(tmp_path: Path) -> None:
    config = tmp_path / "minisft.yaml"
    config.write_text("community: s3cret-value\n  : [unbalanced\n")
    done = subprocess.run([sys.executable, "-m", "minisft.snmp.passpersist", "--config",
                           str(config)], input="", capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 2
    assert "s3cret" not in done.stderr and "cannot parse" in done.stderr


def test_helper_starts_fast_without_pysnmp() -> None:
    code = ("import sys, minisft.snmp.passpersist\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pysnmp', 'pyasn1', 'yaml')]\n"
            "assert not bad, bad\n")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert time.monotonic() - t0 < 5.0  # generous: a loaded 2-core machine


def test_entries_values(status_file: Path) -> None:
    doc = load(status_file)
    assert doc.updated_at is not None
    now = doc.updated_at + 7.4
    entries = {format_oid(oid): (kind, value) for oid, kind, value in build_entries(doc, now)}
    assert entries[f"{NODE}.4.0"] == ("timeticks", "360000")  # 3600 s
    assert entries[f"{NODE}.7.0"] == ("gauge", "7")  # status age
    assert entries[f"{NODE}.8.0"] == ("integer", "1")
    assert entries[f"{ENTRY}.12.1"] == ("gauge", "412")  # microseconds
    assert entries[f"{ENTRY}.14.1"] == ("gauge", "12345")
    assert entries[f"{ENTRY}.13.1"] == ("integer", "2")  # ok
    assert entries[f"{ENTRY}.13.2"] == ("integer", "4")  # disabled
    assert entries[f"{ENTRY}.13.3"] == ("integer", "3")  # failed
    assert entries[f"{ENTRY}.15.3"] == ("integer", "1")  # service dead
    assert entries[f"{ENTRY}.7.2"] == ("integer", "2")  # "watching (paused)"
    assert entries[f"{ENTRY}.8.2"] == ("integer", "1")  # paused
    assert entries[f"{ENTRY}.10.2"] == ("octet", "02 00 00 00 00 0B")
    assert entries[f"{ENTRY}.17.1"] == ("counter", "2")
    assert entries[f"{ENTRY}.18.2"] == ("counter", "4")
    assert entries[f"{ENTRY}.19.1"] == ("octet", "07 E7 0B 0E 16 0E 32 00 2B 00 00")  # 22:14:50
    # every column of every row, and no not-accessible index column
    assert sum(1 for k in entries if k.startswith(ENTRY + ".")) == 3 * 19
    assert not any(k.startswith(f"{ENTRY}.1.") for k in entries)


def test_status_view_tolerates_garbage(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text("{not json")
    view = StatusView(path)
    assert view.getnext(()) is None
    path.write_text(json.dumps({"version": 1, "node": "x", "monitors": [
        {"name": "m", "address": "nonsense", "state": 17, "counters": None}]}))
    entries = view.entries()
    assert entries and view.get((*oids.NODE, 1, 0)) == ((*oids.NODE, 1, 0), "string", "x")


# ---------------------------------------------------------------------- behind snmpd


@needs_snmpd
def test_snmpwalk_and_snmptable_show_every_monitor(tmp_path: Path, status_file: Path) -> None:
    with SnmpAgent(tmp_path / "agent", status_file) as agent:
        walk = agent.walk()
        table = agent.table("MINISFT-MIB::minisftMonitorTable", "-Cf", "|")
        get = agent.get("MINISFT-MIB::minisftNodeName.0", "MINISFT-MIB::minisftMonitorName.3")

    assert 'MINISFT-MIB::minisftNodeName.0 = STRING: alpha' in walk
    assert "MINISFT-MIB::minisftNodeMonitorCount.0 = Gauge32: 3" in walk
    assert "MINISFT-MIB::minisftNodeLastEventSeq.0 = Gauge32: 42" in walk
    assert "MINISFT-MIB::minisftNodeLinkUp.0 = INTEGER: true(1)" in walk
    for i, (name, state, addr) in enumerate([
            ("web", "holding(5)", "192.0.2.10"),
            ("db6", "watching(2)", "2001:db8::20"),
            ("mail", "probing(3)", "198.51.100.7")], start=1):
        assert f"MINISFT-MIB::minisftMonitorName.{i} = STRING: {name}" in walk
        assert f"MINISFT-MIB::minisftMonitorState.{i} = INTEGER: {state}" in walk
        # the address as an admin reads it, not a Hex-STRING
        assert f"MINISFT-MIB::minisftMonitorAddress.{i} = STRING: {addr}" in walk
    assert "MINISFT-MIB::minisftMonitorAddressType.2 = INTEGER: ipv6(2)" in walk
    assert "MINISFT-MIB::minisftMonitorLooksAliveRtt.1 = Gauge32: 412 microseconds" in walk
    assert "MINISFT-MIB::minisftMonitorTakeovers.1 = Counter32: 2" in walk
    assert "MINISFT-MIB::minisftMonitorReason.2 = STRING: address in use by " \
           "02:00:00:00:00:0b — watching" in walk
    assert 'MINISFT-MIB::minisftMonitorReason.3 = STRING: ' in walk  # empty string
    assert "MINISFT-MIB::minisftMonitorHolderMac.2 = STRING: 2:0:0:0:0:b" in walk

    rows = [line.split("|") for line in table.splitlines() if line.count("|") > 5]
    header, body = rows[0], rows[1:]
    assert header[0] == "minisftMonitorName"
    col = {name: header.index(name) for name in header}
    assert [r[col["minisftMonitorName"]] for r in body] == ["web", "db6", "mail"]
    assert [r[col["minisftMonitorState"]] for r in body] == ["holding", "watching", "probing"]
    assert [r[col["minisftMonitorAddressType"]] for r in body] == ["ipv4", "ipv6", "ipv4"]
    assert [r[col["minisftMonitorAddress"]] for r in body] == \
        ["192.0.2.10", "2001:db8::20", "198.51.100.7"]
    assert [r[col["minisftMonitorRole"]] for r in body] == ["backup", "primary", "backup"]

    assert "minisftNodeName.0 = STRING: alpha" in get
    assert "minisftMonitorName.3 = STRING: mail" in get


@needs_snmpd
def test_snmpd_sees_status_updates(tmp_path: Path, status_file: Path) -> None:
    with SnmpAgent(tmp_path / "agent", status_file) as agent:
        assert "INTEGER: holding(5)" in agent.get("MINISFT-MIB::minisftMonitorState.1")
        doc = with_monitor(status_doc(), 0, state="watching", holder="other")
        write_status(status_file, replace(doc, monitors=doc.monitors[:2]))
        walk = agent.walk("MINISFT-MIB::minisftMonitorState")
    assert "minisftMonitorState.1 = INTEGER: watching(2)" in walk
    assert "minisftMonitorState.3" not in walk


def pool_status_doc() -> StatusDocument:
    front = status_docs.pool("front", "alpha", {
        "192.0.2.50/24": ("alpha", "alpha", "held"),
        "2001:db8::51/64": ("alpha", "beta", "held"),
        "192.0.2.52/24": (None, "beta", "probing"),
        "192.0.2.53/24": ("alpha", "alpha", "held")})
    twice = replace(front.placement[3], holders=("alpha", "beta"), state="duplicate",
                    moves=3)
    front = replace(front, placement=(*front.placement[:3], twice))
    return replace(status_doc(), pools=(front,))


@needs_snmpd
def test_snmpwalk_and_snmptable_show_every_pool_address(tmp_path: Path,
                                                         status_file: Path) -> None:
    write_status(status_file, pool_status_doc())
    with SnmpAgent(tmp_path / "agent", status_file) as agent:
        table = agent.table("MINISFT-MIB::minisftPoolAddressTable", "-Cf", "|")
        walk = agent.walk("MINISFT-MIB::minisftPoolAddressTable")
    rows = [line.split("|") for line in table.splitlines() if line.count("|") > 5]
    header, body = rows[0], rows[1:]
    assert header[0] == "minisftPoolAddressPool"
    col = {name: header.index(name) for name in header}
    assert [r[col["minisftPoolAddress"]] for r in body] == \
        ["192.0.2.50", "2001:db8::51", "192.0.2.52", "192.0.2.53"]
    assert [r[col["minisftPoolAddressType"]] for r in body] == \
        ["ipv4", "ipv6", "ipv4", "ipv4"]
    assert [r[col["minisftPoolAddressPrefixLength"]] for r in body] == ["24", "64", "24", "24"]
    assert [r[col["minisftPoolAddressOwner"]] for r in body] == \
        ["alpha", "alpha", "", "alpha,beta"]
    assert [r[col["minisftPoolAddressPreferredOwner"]] for r in body] == \
        ["alpha", "beta", "beta", "alpha"]
    assert [r[col["minisftPoolAddressState"]] for r in body] == \
        ["held", "held", "probing", "duplicate"]
    assert [r[col["minisftPoolAddressOnPreferred"]] for r in body] == \
        ["true", "false", "false", "false"]
    assert "MINISFT-MIB::minisftPoolAddressPool.1 = STRING: front" in walk
    assert "MINISFT-MIB::minisftPoolAddressMoves.4 = Counter32: 3" in walk
    assert "MINISFT-MIB::minisftPoolAddressOwner.3 = STRING: " in walk  # nobody
