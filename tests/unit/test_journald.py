"""minisft.runtime.journald: detection, the native protocol, the `<N>` fallback."""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
from pathlib import Path

from minisft.core.events import Event, EventKind, Notice, Severity
from minisft.runtime.journald import (
    EVENT_ATTR,
    JOURNAL_SYSLOG_SOCKET,
    JournalHandler,
    encode,
    is_journal_syslog_socket,
    under_journald,
)


def decode(data: bytes) -> dict[str, str]:
    """journald's reading of a native datagram (both the = and the binary form)."""
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            out[line.decode()] = data[nl + 9:nl + 9 + n].decode()
            i = nl + 9 + n + 1
    return out


def takeover() -> Event:
    return Event.stamp(Notice(EventKind.TAKEOVER, "peer silent", monitor="web",
                              address="192.0.2.10", severity=Severity.CRITICAL),
                       seq=42, time=1.0, node="alpha")


def record(event: Event | None = None, level: int = logging.INFO,
           msg: str = "hello") -> logging.LogRecord:
    rec = logging.LogRecord("minisft.events", level, __file__, 1, msg, None, None)
    if event is not None:
        setattr(rec, EVENT_ATTR, event)
    return rec


def test_journal_stream_must_be_our_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as fh:
        st = os.fstat(fh.fileno())
        ours = f"{st.st_dev}:{st.st_ino}"
        assert under_journald({"JOURNAL_STREAM": ours}, fh.fileno())
        # inherited by a child whose stderr went elsewhere: not the journal
        assert not under_journald({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"},
                                  fh.fileno())
        assert not under_journald({}, fh.fileno())
        assert not under_journald({"JOURNAL_STREAM": "garbage"}, fh.fileno())


def test_dev_log_symlink_to_journald_is_recognised(tmp_path: Path) -> None:
    link = tmp_path / "log"
    link.symlink_to(JOURNAL_SYSLOG_SOCKET)
    assert is_journal_syslog_socket(link)
    assert not is_journal_syslog_socket(tmp_path / "rsyslog.sock")


def test_encode_multiline_value_in_binary_form() -> None:
    fields = {"MESSAGE": "two\nlines", "PRIORITY": "3", "MINISFT_MONITOR": "wéb"}
    assert decode(encode(fields)) == fields


def test_event_sent_natively_with_its_severity_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "socket"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    handler = JournalHandler(facility=16, socket_path=path, fallback=io.StringIO())
    try:
        handler.emit(record(takeover(), level=logging.ERROR, msg="takeover web"))
        fields = decode(server.recv(65536))
    finally:
        handler.close()
        server.close()
    assert fields["MESSAGE"] == "takeover web"
    assert fields["PRIORITY"] == "2"  # the event's CRITICAL, not logging.ERROR's 3
    assert fields["SYSLOG_FACILITY"] == "16" and fields["SYSLOG_IDENTIFIER"] == "minisft"
    assert fields["MINISFT_EVENT"] == "takeover" and fields["MINISFT_SEQ"] == "42"
    assert fields["MINISFT_MONITOR"] == "web" and fields["MINISFT_ADDRESS"] == "192.0.2.10"


def test_without_native_socket_stderr_lines_carry_the_priority(tmp_path: Path) -> None:
    err = io.StringIO()
    handler = JournalHandler(facility=3, socket_path=tmp_path / "missing", fallback=err)
    try:
        handler.emit(record(level=logging.WARNING, msg="link\ndown"))
        handler.emit(record(takeover()))
    finally:
        handler.close()
    assert err.getvalue().splitlines() == ["<4>link down", "<2>hello"]
