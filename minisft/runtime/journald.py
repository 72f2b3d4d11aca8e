"""The daemon's log under systemd: one path into the journal, the right priority, and
the event's identity as journal fields.

Under systemd, stderr is a stream into journald and /dev/log is journald's syslog socket,
so a daemon that logs to stderr AND delivers events to syslog puts every event into the
journal twice, and stderr lines without a `<N>` prefix all land with the stream's default
priority (info). So, when journald is there (systemd sets JOURNAL_STREAM to the
device:inode of the stream it gave us as stderr):

* every log record is sent to the journal's native socket with PRIORITY (an event's own
  syslog severity, not the coarser logging level), SYSLOG_IDENTIFIER, SYSLOG_FACILITY
  and, for events, MINISFT_EVENT, MINISFT_SEQ, MINISFT_MONITOR, MINISFT_ADDRESS,
  MINISFT_SEVERITY, MINISFT_NODE (`journalctl MINISFT_EVENT=takeover`);
* if the native socket cannot take a record, it goes to stderr as `<N>message`, which
  journald reads with that priority (SyslogLevelPrefix=yes, the default);
* the syslog sink is not started when its socket is journald's own (the daemon says so
  once): journald already has the event, and forwards it to rsyslog (Debian's
  ForwardToSyslog=yes) with the configured facility.

The native protocol is a datagram of `FIELD=value` lines (a value with a newline is sent
as `FIELD\\n<64-bit LE length><value>\\n`), as in systemd's sd_journal_sendv; it is
written here rather than taken from systemd-python, which needs a C build against
libsystemd, for about twenty lines.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from minisft.core.events import Event

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
JOURNAL_SYSLOG_SOCKET = Path("/run/systemd/journal/dev-log")
IDENTIFIER = "minisft"
# journald's default maximum datagram is larger, but a record longer than this is a bug
# in a message; cut it rather than lose it.
MAX_MESSAGE = 48 * 1024
EVENT_ATTR = "minisft_event"  # LogRecord attribute carrying the Event (logging `extra`)


def under_journald(environ: Mapping[str, str] | None = None, stream_fd: int = 2) -> bool:
    """True when `stream_fd` is the journal stream systemd connected us to.

    JOURNAL_STREAM alone is not enough: it is inherited by children whose stderr a
    wrapper redirected to a file, so its device:inode must match the fd's."""
    env = os.environ if environ is None else environ
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream_fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def is_journal_syslog_socket(path: Path) -> bool:
    """Whether a syslog socket path is journald's own (/dev/log is a symlink to it)."""
    try:
        return Path(os.path.realpath(path)) == JOURNAL_SYSLOG_SOCKET
    except OSError:
        return False


def syslog_priority(record: logging.LogRecord) -> int:
    """An event's own severity (it is a syslog level), else the record's level."""
    event = getattr(record, EVENT_ATTR, None)
    if isinstance(event, Event):
        return int(event.severity)
    if record.levelno >= logging.CRITICAL:
        return 2
    if record.levelno >= logging.ERROR:
        return 3
    if record.levelno >= logging.WARNING:
        return 4
    if record.levelno >= logging.INFO:
        return 6
    return 7


def event_fields(event: Event) -> dict[str, str]:
    fields = {"MINISFT_EVENT": event.kind.value, "MINISFT_SEQ": str(event.seq),
              "MINISFT_SEVERITY": event.severity.label, "MINISFT_NODE": event.node}
    if event.monitor is not None:
        fields["MINISFT_MONITOR"] = event.monitor
    if event.address is not None:
        fields["MINISFT_ADDRESS"] = event.address
    return fields


def encode(fields: Mapping[str, str]) -> bytes:
    """One native-protocol datagram."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Log records as native journal entries; `<N>`-prefixed stderr lines as fallback."""

    def __init__(self, *, facility: int, socket_path: Path = JOURNAL_SOCKET,
                 fallback: TextIO | None = None) -> None:
        super().__init__()
        self.facility = facility
        self.socket_path = socket_path
        self.fallback = fallback if fallback is not None else sys.stderr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # journald busy: wait a little, as a write to the stderr stream would, never hang
        self._sock.settimeout(1.0)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        message = self.format(record)[:MAX_MESSAGE]
        fields = {"MESSAGE": message, "PRIORITY": str(syslog_priority(record)),
                  "SYSLOG_IDENTIFIER": IDENTIFIER, "SYSLOG_FACILITY": str(self.facility),
                  "SYSLOG_PID": str(os.getpid()), "MINISFT_LOGGER": record.name}
        event = getattr(record, EVENT_ATTR, None)
        if isinstance(event, Event):
            fields.update(event_fields(event))
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = self.fields(record)
            try:
                self._sock.sendto(encode(fields), str(self.socket_path))
            except OSError:
                # no native socket (or it is full): the stderr stream still reaches the
                # journal, and the prefix keeps the priority; one line per record
                text = " ".join(fields["MESSAGE"].split())
                self.fallback.write(f"<{fields['PRIORITY']}>{text}\n")
                self.fallback.flush()
        except Exception:  # logging must never take the daemon down
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def configure_logging(level: int, *, facility: int) -> bool:
    """The daemon's root logger: to the journal when journald runs us, else the classic
    stderr format. Returns whether the journal path is in use."""
    if under_journald():
        handler: logging.Handler = JournalHandler(facility=facility)
        handler.setFormatter(logging.Formatter("%(message)s"))  # journald stamps the rest
        logging.basicConfig(level=level, handlers=[handler])
        return True
    logging.basicConfig(level=level,
                        format="%(asctime)s minisft[%(process)d] %(levelname)s %(message)s",
                        stream=sys.stderr)
    return False
