"""`minisft-snmp-pass`: a net-snmp pass_persist helper serving MINISFT-MIB's node scalars,
monitor table and pool address table from the daemon's status file
(STATE_DIR/status.json).

snmpd.conf:
    pass_persist .1.3.6.1.4.1.32473.1 /usr/bin/minisft-snmp-pass --config /etc/minisft/minisft.yaml

Protocol (snmpd.conf(5)): snmpd writes "PING" and expects "PONG"; then "get" or "getnext"
followed by an OID line, answered by three lines (OID, type, value) or "NONE"; "set" is
followed by an OID line and a "type value" line and answered "not-writable".

No pysnmp and no daemon connection: plain OID arithmetic over a JSON file the daemon
rewrites atomically every second, so the helper starts fast, never blocks the daemon and
keeps answering (with minisftNodeStatusAge growing) when the daemon is gone.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ipaddress
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from minisft.snmp import oids
from minisft.status import (
    MonitorStatus,
    PoolAddressStatus,
    PoolStatus,
    StatusDocument,
    StatusError,
    load,
)

DEFAULT_CONFIG = Path("/etc/minisft/minisft.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/minisft")
STATUS_NAME = "status.json"
MAX_U32 = 2**32 - 1
REBUILD_AFTER = 1.0  # seconds: the age and uptime values move with the clock

OID = tuple[int, ...]
Entry = tuple[OID, str, str]  # (oid, pass type, value text)


# ------------------------------------------------------------------ value encoding


def parse_oid(text: str) -> OID | None:
    text = text.strip().lstrip(".")
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return None


def format_oid(oid: OID) -> str:
    return "." + ".".join(str(n) for n in oid)


def _text(value: Any) -> str:
    """One line of SnmpAdminString (UTF-8, at most 255 octets, no line breaks)."""
    text = "" if value is None else str(value)
    text = " ".join(text.splitlines())
    data = text.encode("utf-8")[:255]
    return data.decode("utf-8", "ignore")


def _octets(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data)


def _u32(value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(number) or number < 0:
        return 0
    return min(int(number), MAX_U32)


def _micro(ms: Any) -> int:
    try:
        return _u32(round(float(ms) * 1000.0))
    except (TypeError, ValueError):
        return 0


def date_and_time(epoch: Any) -> bytes:
    """SNMPv2-TC DateAndTime in UTC (11 octets); empty if unknown."""
    try:
        t = float(epoch)
    except (TypeError, ValueError):
        return b""
    if not math.isfinite(t) or t < 0:
        return b""
    tm = time.gmtime(t)
    deci = int((t - math.floor(t)) * 10) % 10
    return (tm.tm_year.to_bytes(2, "big")
            + bytes([tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, min(tm.tm_sec, 60), deci])
            + b"+\x00\x00")


def _mac(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    digits = value.replace(":", "").replace("-", "").replace(".", "").strip()
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        return b""
    return data if 6 <= len(data) <= 20 else b""


def _truth(value: Any) -> int:
    return oids.TRUTH[bool(value)]


# ------------------------------------------------------------------ status -> entries


def node_entries(status: StatusDocument, now: float) -> Iterator[Entry]:
    n = oids.NODE_SCALARS

    def scalar(name: str, kind: str, value: str) -> Entry:
        return (*oids.NODE, n[name], 0), kind, value

    started = status.started_at
    updated = status.updated_at
    yield scalar("minisftNodeName", "string", _text(status.node))
    yield scalar("minisftNodeSoftwareVersion", "string", _text(status.software_version))
    yield scalar("minisftNodeStartTime", "octet", _octets(date_and_time(started)))
    uptime = _u32((updated - started) * 100) \
        if updated is not None and started is not None else 0
    yield scalar("minisftNodeUptime", "timeticks", str(uptime))
    yield scalar("minisftNodeMonitorCount", "gauge", str(len(status.monitors)))
    yield scalar("minisftNodeLastEventSeq", "gauge", str(_u32(status.last_event_seq)))
    age = _u32(now - updated) if updated is not None else MAX_U32
    yield scalar("minisftNodeStatusAge", "gauge", str(age))
    if status.link_up is not None:
        yield scalar("minisftNodeLinkUp", "integer", str(_truth(status.link_up)))


def monitor_row(mon: MonitorStatus, updated: float | None) -> dict[str, tuple[str, str]]:
    """Column name -> (pass type, value) for one monitor."""
    try:
        addr = ipaddress.ip_address((mon.address or "").split("%", 1)[0])
        addr_type, addr_text = (1 if addr.version == 4 else 2), str(addr)
    except ValueError:
        addr_type, addr_text = oids.INET_ADDRESS_TYPE["unknown"], ""
    looks, isalive = mon.looksalive, mon.isalive
    if not isalive.enabled:
        check = "disabled"
    elif isalive.ok is True:
        check = "ok"
    elif isalive.ok is False:
        check = "failed"
    else:
        check = "unknown"
    changed = mon.last_change_time
    if changed is None and updated is not None:
        changed = updated - (mon.seconds_since_change or 0.0)
    state = (mon.state or "").split(" ", 1)[0]
    return {
        "minisftMonitorName": ("string", _text(mon.name)),
        "minisftMonitorAddressType": ("integer", str(addr_type)),
        "minisftMonitorAddress": ("string", addr_text),  # MinisftAddressText
        "minisftMonitorPrefixLength": ("gauge", str(_u32(mon.prefixlen))),
        "minisftMonitorRole": ("integer", str(oids.ROLE.get(str(mon.role), 1))),
        "minisftMonitorState": ("integer", str(oids.MONITOR_STATE.get(state, 0))),
        "minisftMonitorPaused": ("integer", str(_truth(mon.paused))),
        "minisftMonitorHolder": ("integer", str(oids.HOLDER.get(str(mon.holder), 1))),
        "minisftMonitorHolderMac": ("octet", _octets(_mac(mon.holder_mac))),
        "minisftMonitorLooksAlive": ("integer", str(oids.HEALTH.get(str(looks.health), 1))),
        "minisftMonitorLooksAliveRtt": ("gauge", str(_micro(looks.rtt_ms))),
        "minisftMonitorIsAlive": ("integer", str(oids.CHECK_RESULT[check])),
        "minisftMonitorIsAliveLatency": ("gauge", str(_micro(isalive.latency_ms))),
        "minisftMonitorServiceDead": ("integer", str(_truth(isalive.dead))),
        "minisftMonitorPeerHealth": ("integer", str(oids.HEALTH.get(str(mon.peer.health),
                                                                    1))),
        "minisftMonitorTakeovers": ("counter",
                                    str(_u32(mon.counters.get("takeovers")) % 2**32)),
        "minisftMonitorConflicts": ("counter",
                                    str(_u32(mon.counters.get("conflicts")) % 2**32)),
        "minisftMonitorLastChange": ("octet", _octets(date_and_time(changed))),
        "minisftMonitorReason": ("string", _text(mon.reason)),
    }


def pool_address_row(pool: PoolStatus, address: PoolAddressStatus
                     ) -> dict[str, tuple[str, str]]:
    """Column name -> (pass type, value) for one address of a pool."""
    addr_type, addr_text, prefixlen = _address(address.address or "")
    return {
        "minisftPoolAddressPool": ("string", _text(pool.name)),
        "minisftPoolAddressType": ("integer", str(addr_type)),
        "minisftPoolAddress": ("string", addr_text),  # MinisftAddressText
        "minisftPoolAddressPrefixLength": ("gauge", str(prefixlen)),
        "minisftPoolAddressOwner": ("string", _text(",".join(address.holders))),
        "minisftPoolAddressPreferredOwner": ("string", _text(address.preferred)),
        "minisftPoolAddressState": ("integer", str(oids.PLACEMENT_STATE.get(
            str(address.state), oids.PLACEMENT_STATE["unknown"]))),
        "minisftPoolAddressOnPreferred": ("integer", str(_truth(address.on_preferred))),
        "minisftPoolAddressMoves": ("counter", str(_u32(address.moves) % 2**32)),
    }


def _address(text: str) -> tuple[int, str, int]:
    """(InetAddressType, address text, prefix length) of "192.0.2.50/24" or a bare IP."""
    try:
        interface = ipaddress.ip_interface(text.split("%", 1)[0])
    except ValueError:
        return oids.INET_ADDRESS_TYPE["unknown"], "", 0
    return (1 if interface.version == 4 else 2), str(interface.ip), \
        interface.network.prefixlen


def _table(entry: OID, columns: dict[str, int], rows: list[dict[str, tuple[str, str]]]
           ) -> Iterator[Entry]:
    for column, number in columns.items():
        if number == 1:  # the not-accessible index
            continue
        for index, row in enumerate(rows[:65535], start=1):
            kind, value = row[column]
            yield (*entry, number, index), kind, value


def build_entries(status: StatusDocument, now: float) -> list[Entry]:
    entries = list(node_entries(status, now))
    monitors = [monitor_row(m, status.updated_at) for m in status.monitors]
    entries.extend(_table(oids.MONITOR_ENTRY, oids.MONITOR_COLUMNS, monitors))
    addresses = [pool_address_row(p, a) for p in status.pools for a in p.placement]
    entries.extend(_table(oids.POOL_ADDRESS_ENTRY, oids.POOL_ADDRESS_COLUMNS, addresses))
    entries.sort(key=lambda e: e[0])
    return entries


# ------------------------------------------------------------------ the MIB view


class StatusView:
    """The status file as a sorted list of OID entries, reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._status: StatusDocument | None = None
        self._entries: list[Entry] = []
        self._oids: list[OID] = []
        self._built_at = -math.inf

    def entries(self) -> list[Entry]:
        now = time.time()
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._status = self._load() if stamp else None
            self._built_at = -math.inf
        if self._status is None:
            self._entries = []
        elif now - self._built_at >= REBUILD_AFTER:
            self._entries = build_entries(self._status, now)
            self._built_at = now
        self._oids = [e[0] for e in self._entries]
        return self._entries

    def _load(self) -> StatusDocument | None:
        try:
            return load(self.path)
        except StatusError:
            self._stamp = None  # try again next request (e.g. a half-written copy)
            return self._status  # keep serving the last good status

    def get(self, oid: OID) -> Entry | None:
        entries = self.entries()
        i = bisect.bisect_left(self._oids, oid)
        return entries[i] if i < len(entries) and entries[i][0] == oid else None

    def getnext(self, oid: OID) -> Entry | None:
        entries = self.entries()
        i = bisect.bisect_right(self._oids, oid)
        return entries[i] if i < len(entries) else None


# ------------------------------------------------------------------ the protocol


def serve(view: StatusView, stdin: IO[str], stdout: IO[str]) -> None:
    def reply(*lines: str) -> None:
        stdout.write("".join(line + "\n" for line in lines))
        stdout.flush()

    def answer(entry: Entry | None) -> None:
        if entry is None:
            reply("NONE")
        else:
            reply(format_oid(entry[0]), entry[1], entry[2])

    while True:
        line = stdin.readline()
        if not line:
            return  # snmpd closed the pipe
        command = line.strip().lower()
        if not command:
            continue
        if command == "ping":
            reply("PONG")
        elif command in ("get", "getnext"):
            oid = parse_oid(stdin.readline())
            if oid is None:
                reply("NONE")
            elif command == "get":
                answer(view.get(oid))
            else:
                answer(view.getnext(oid))
        elif command == "set":
            stdin.readline()  # OID
            stdin.readline()  # type and value
            reply("not-writable")
        else:
            reply("NONE")


def status_path_from_config(config: Path) -> Path:
    import yaml  # only for --config; the document's other keys are not validated here

    with open(config, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    state_dir = doc.get("state_dir") if isinstance(doc, dict) else None
    return Path(state_dir or DEFAULT_STATE_DIR) / STATUS_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minisft-snmp-pass",
        description="net-snmp pass_persist helper serving MINISFT-MIB from the daemon's "
                    "status file. In snmpd.conf: pass_persist .1.3.6.1.4.1.32473.1 "
                    "/usr/bin/minisft-snmp-pass --config /etc/minisft/minisft.yaml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path,
                       help=f"MiniSFT config whose state_dir holds {STATUS_NAME} "
                            f"(default {DEFAULT_CONFIG})")
    group.add_argument("--status", type=Path, help=f"the {STATUS_NAME} file itself")
    args = parser.parse_args(argv)
    if args.status is not None:
        path = args.status
    else:
        config = args.config or DEFAULT_CONFIG
        try:
            path = status_path_from_config(config)
        except OSError as exc:
            print(f"minisft-snmp-pass: cannot read {config}: {exc.strerror}", file=sys.stderr)
            return 2
        except Exception as exc:  # YAML errors quote the file, which may hold secrets
            print(f"minisft-snmp-pass: cannot parse {config}: {type(exc).__name__}",
                  file=sys.stderr)
            return 2
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # snmpd went away
        serve(StatusView(path), sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
