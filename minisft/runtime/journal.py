"""The persistent event journal: the one durable spool behind every sink.

Layout of `state_dir/journal/`:

* `events-NNNNNN.jsonl`: segments, one `Event.to_json()` per line. NNNNNN is the seq of the
  first event in the segment (zero-padded to at least 6 digits), so a reader can jump to the
  right segment without scanning the older ones. A segment is rotated once it reaches
  `segment_bytes`.
* `cursor-<sink>`: the last seq that sink has handled (delivered, or skipped by its filter),
  one integer, written atomically (tmp file + rename).

Guarantees and their limits:

* seq is strictly increasing across restarts: `open()` recovers the last seq from the newest
  segment, the cursor files and a floor the daemon reads from status.json (so wiping
  segments, or the whole directory, never makes seqs go backwards). A segment deleted
  while open is noticed at the next append, which starts a new one.
* A crash can leave a torn last line; `open()` truncates it away (it was never complete,
  so it was never delivered from disk) and readers ignore an incomplete last line.
* Lines are written with one `write(2)` each and not fsynced per event: a daemon crash loses
  nothing (the page cache survives), a power cut can lose the last few events. `sync()`
  fsyncs, the daemon calls it at shutdown.
* A journal failure (state_dir not writable, disk full) never stops the daemon: `append()`
  still stamps and returns the event (seq kept in memory) so it reaches the sinks from
  memory; `stats["journal_errors"]` counts the failures and one error is logged per episode
  (until a write succeeds again). Events not written are, of course, not replayed after a
  restart.
* `prune()` deletes a segment only when it is not the newest one, it was last written more
  than `retention` seconds ago (`journal.max_age`), and every live cursor is past its last
  event; and, whatever the cursors, the oldest segments beyond `max_bytes`
  (`journal.max_bytes`). A cursor file
  not updated within `retention` belongs to a sink that was removed from the configuration
  (or has failed for that long) and no longer holds segments back; the manager counts the
  events such a sink can no longer read as dropped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from minisft.core.events import Event, Notice, Severity

log = logging.getLogger("minisft.journal")

SEGMENT_RE = re.compile(r"^events-(\d+)\.jsonl$")
CURSOR_PREFIX = "cursor-"
_SINK_NAME_RE = re.compile(r"[^A-Za-z0-9_.@-]")


def segment_name(first_seq: int) -> str:
    return f"events-{first_seq:06d}.jsonl"


def _cursor_file_name(sink: str) -> str:
    # Sink names come from the config; keep them to one safe path component.
    return CURSOR_PREFIX + _SINK_NAME_RE.sub("_", sink)


def _parse_line(raw: bytes) -> Event | None:
    try:
        data = json.loads(raw)
        return Event.from_dict(data)
    except (ValueError, KeyError, TypeError):
        return None


def _quick_seq(raw: bytes) -> int:
    """The top-level seq of a journal line without parsing it. Keys are sorted, and the
    only keys after "seq" (severity, state, time) hold scalars, so the last `"seq":` is
    the top-level one even if details has a "seq" key. -1 when it cannot tell."""
    idx = raw.rfind(b'"seq":')
    if idx < 0:
        return -1
    m = _DIGITS.match(raw, idx + 6)
    return int(m.group()) if m else -1


_DIGITS = re.compile(rb"\d+")


class EventJournal:
    """Append-only JSONL segments plus per-sink cursors. See the module docstring."""

    def __init__(self, directory: Path, *, segment_bytes: int = 8 << 20,
                 retention: float = 7 * 86400, max_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        # at least 8 segments under the cap: pruning one costs at most 1/8 of the history
        self.segment_bytes = segment_bytes if max_bytes is None else max(
            64 << 10, min(segment_bytes, max_bytes // 8))
        self.retention = retention
        self.max_bytes = max_bytes
        self.stats: dict[str, int] = {
            "appended": 0,          # events written to disk
            "journal_errors": 0,    # failed writes (event kept in memory only)
            "torn_lines": 0,        # incomplete lines removed at open
            "segments_pruned": 0,
            "cursor_errors": 0,
            "journal_recreated": 0,  # the open segment was deleted under us
            "segments_pruned_for_size": 0,  # over max_bytes: maybe not yet delivered
        }
        self._last_seq = 0
        self._fd: int | None = None
        self._segment: Path | None = None
        self._size = 0
        self._failing = False  # inside an error episode: log once
        self._cursor_failing = False
        self._opened = False  # recovered the last seq from disk

    # ------------------------------------------------------------------ writer

    def open(self, *, floor: int = 0) -> None:
        """Create the directory and recover the last seq. Raises OSError when the directory
        cannot be used; the journal then still works in memory (append keeps stamping).

        `floor`: a seq already used, known from elsewhere (status.json): seqs continue
        after it even if the whole journal directory was deleted."""
        self._last_seq = max(self._last_seq, floor)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            segments = self._segments()
            last = 0
            if segments:
                self._repair_tail(segments[-1][1])
                for first, path in reversed(segments):
                    found = self._last_seq_in(path)
                    if found is not None:
                        last = found
                        break
                    last = max(last, first - 1)
            for name in self._cursor_names():
                last = max(last, self.cursor(name))
            self._last_seq = max(self._last_seq, last)
        except OSError as exc:
            self._error("open", exc)
            raise
        self._failing = False
        self._opened = True
        self.prune()

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def healthy(self) -> bool:
        """False while writes fail: events published now are not on disk."""
        return not self._failing

    def append(self, notice: Notice, *, node: str, time: float) -> Event:
        """Stamp the next seq and write the event. Never raises: on OSError the event is
        still returned (and should still be published), and the error is counted."""
        if not self._opened:
            # open() failed before: retry it first, so that once the directory is usable
            # the seq continues after what is on disk instead of colliding with it.
            with contextlib.suppress(OSError):  # open() counted and logged it
                self.open()
            if not self._opened:
                self._last_seq += 1
                return Event.stamp(notice, seq=self._last_seq, time=time, node=node)
        self._last_seq += 1
        event = Event.stamp(notice, seq=self._last_seq, time=time, node=node)
        line = (event.to_json() + "\n").encode()
        try:
            self._drop_deleted_segment()
            self._write(event.seq, line)
        except OSError as exc:
            self._close_fd()
            self._error("write", exc)
        else:
            self.stats["appended"] += 1
            if self._failing:
                self._failing = False
                log.warning("event journal %s is writable again", self.directory)
        return event

    def _drop_deleted_segment(self) -> None:
        """An open segment that was deleted (`rm -rf journal/` under a running daemon)
        would swallow every later event: start a new one (and the directory) instead."""
        if self._fd is None or os.fstat(self._fd).st_nlink > 0:
            return
        self._close_fd()
        self._segment = None
        self.stats["journal_recreated"] += 1
        log.error("event journal %s: the segment being written was deleted; writing to a "
                  "new one (events from before are gone; sinks catch up from here)",
                  self.directory)

    def sync(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._error("fsync", exc)

    def close(self) -> None:
        self.sync()
        self._close_fd()

    def _write(self, seq: int, line: bytes) -> None:
        rotate = (self._fd is not None and self._size > 0
                  and self._size + len(line) > self.segment_bytes)
        if rotate:
            self._close_fd()
        if self._fd is None:
            self._open_segment(seq, fresh=rotate)
        assert self._fd is not None
        start = self._size
        view = memoryview(line)
        try:
            while view:  # a short write (e.g. ENOSPC mid-line) raises on the next call
                n = os.write(self._fd, view)
                self._size += n
                view = view[n:]
        except OSError:
            # Disk full mid-line: take the partial line back at once, so the segment stays
            # line-aligned. Left there, every append while the disk is full tore a line
            # that the next append had to repair, each time logging a warning about "a
            # crash": one warning per event instead of one error per episode. If even
            # the truncate fails, the repair at the next open still handles it.
            if self._size != start:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                    self._size = start
            raise
        if rotate:
            self.prune()

    def _open_segment(self, seq: int, *, fresh: bool) -> None:
        """Open the segment to append to: the current (or, after a restart, the newest)
        one if it has room, else a new one named after `seq`."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        path: Path | None = None
        if not fresh:
            if self._segment is not None and self._segment.exists():
                path = self._segment  # reopen after a write error
            else:
                segments = self._segments()
                if segments and segments[-1][0] <= seq:
                    path = segments[-1][1]
            if path is not None:
                self._repair_tail(path)  # a failed write may have left half a line
                if path.stat().st_size >= self.segment_bytes:
                    path = None
        if path is None:
            path = self.directory / segment_name(seq)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._fd = fd
        self._segment = path
        self._size = os.fstat(fd).st_size

    def _repair_tail(self, path: Path) -> None:
        """Truncate an incomplete last line (a crash mid-write) so appends stay line-aligned."""
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            pos = size
            keep = 0
            while pos > 0:
                step = min(65536, pos)
                pos -= step
                fh.seek(pos)
                chunk = fh.read(step)
                idx = chunk.rfind(b"\n")
                if idx >= 0:
                    keep = pos + idx + 1
                    break
            fh.truncate(keep)
            self.stats["torn_lines"] += 1
            log.warning("event journal %s: removed an incomplete last line (%d bytes) left "
                        "by a crash", path.name, size - keep)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _error(self, what: str, exc: OSError) -> None:
        self.stats["journal_errors"] += 1
        if not self._failing:
            self._failing = True
            log.error("event journal %s: %s failed (%s); events still reach the sinks from "
                      "memory but are not kept across restarts until this is fixed",
                      self.directory, what, exc.strerror or exc)

    # ------------------------------------------------------------------ reading

    def _segments(self) -> list[tuple[int, Path]]:
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in names:
            m = SEGMENT_RE.match(name)
            if m:
                out.append((int(m.group(1)), self.directory / name))
        out.sort()
        return out

    @staticmethod
    def _last_seq_in(path: Path) -> int | None:
        data = path.read_bytes()
        for raw in reversed(data.split(b"\n")):
            if raw.strip():
                event = _parse_line(raw)
                if event is not None:
                    return event.seq
        return None

    @staticmethod
    def _scan(path: Path, offset: int, after_seq: int = 0) -> tuple[list[Event], int]:
        """Complete lines from `offset` with seq > after_seq; returns the events and the
        offset after the last complete line (an incomplete tail is left for the next
        scan)."""
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        events = []
        for raw in data[:end].split(b"\n"):
            if raw.strip():
                if after_seq and 0 <= _quick_seq(raw) <= after_seq:
                    continue  # skip without a JSON parse: catch-up reads stay cheap
                event = _parse_line(raw)
                if event is not None:  # a corrupt line is skipped, not fatal
                    events.append(event)
        return events, offset + end

    def read(self, after_seq: int = 0, limit: int | None = None) -> Iterator[Event]:
        """Events with seq > after_seq, in order, from disk. Works without open() and while
        another process writes. A missing directory reads as empty."""
        segments = self._segments()
        start = 0
        for i, (first, _path) in enumerate(segments):
            if first <= after_seq + 1:
                start = i
        count = 0
        last = after_seq
        for _first, path in segments[start:]:
            events, _end = self._scan(path, 0, after_seq)
            for event in events:
                if event.seq <= last:
                    continue
                last = event.seq
                yield event
                count += 1
                if limit is not None and count >= limit:
                    return

    def read_backwards(self) -> Iterator[Event]:
        """Events newest first, one segment at a time: `events -n N` reads the newest
        segment or two, not the whole journal."""
        for _first, path in reversed(self._segments()):
            events, _end = self._scan(path, 0)
            yield from reversed(events)

    def follow(self, after_seq: int, poll: float = 0.2) -> Iterator[Event]:
        """Yield events after `after_seq` as they are written, forever (for
        `minisft events --follow`). Handles rotation and pruning; needs no daemon."""
        last = after_seq
        current: tuple[int, Path] | None = None
        offset = 0
        while True:
            # List before scanning: a successor seen here means `current` was complete
            # when we scanned it, so switching cannot skip a line written meanwhile.
            segments = self._segments()
            if current is None or current not in segments:
                current, offset = self._locate(segments, last), 0
                if current is None:
                    time.sleep(poll)
                    continue
            events, offset = self._scan(current[1], offset)
            for event in events:
                if event.seq > last:
                    last = event.seq
                    yield event
            if events:
                continue
            newer = [seg for seg in segments if seg[0] > current[0]]
            if newer:
                current, offset = newer[0], 0
            else:
                time.sleep(poll)

    @staticmethod
    def _locate(segments: list[tuple[int, Path]], last: int) -> tuple[int, Path] | None:
        """The segment that holds `last + 1` (or the oldest one, if it was pruned)."""
        found = segments[0] if segments else None
        for seg in segments:
            if seg[0] <= last + 1:
                found = seg
        return found

    # ------------------------------------------------------------------ cursors

    def _cursor_names(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [n[len(CURSOR_PREFIX):] for n in names
                if n.startswith(CURSOR_PREFIX) and not n.endswith(".tmp")]

    def has_cursor(self, sink: str) -> bool:
        return (self.directory / _cursor_file_name(sink)).exists()

    def cursor(self, sink: str) -> int:
        """The last seq `sink` handled; 0 when it has none (or it cannot be read)."""
        try:
            text = (self.directory / _cursor_file_name(sink)).read_text()
            return max(0, int(text.strip()))
        except (OSError, ValueError):
            return 0

    def set_cursor(self, sink: str, seq: int) -> None:
        """Persist a cursor atomically. Errors are counted and logged once, never raised."""
        path = self.directory / _cursor_file_name(sink)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "w") as fh:
                fh.write(f"{seq}\n")
            os.replace(tmp, path)
        except OSError as exc:
            self.stats["cursor_errors"] += 1
            if not self._cursor_failing:
                self._cursor_failing = True
                log.error("event journal %s: cannot save the delivery cursor of %s (%s); "
                          "a restart may deliver some events again", self.directory, sink,
                          exc.strerror or exc)
        else:
            self._cursor_failing = False

    def live_cursors(self, now: float | None = None) -> dict[str, int]:
        """Cursors updated within `retention` (the ones that hold segments back)."""
        now = time.time() if now is None else now
        out = {}
        for name in self._cursor_names():
            path = self.directory / (CURSOR_PREFIX + name)
            try:
                if now - path.stat().st_mtime > self.retention:
                    continue
            except OSError:
                continue
            out[name] = self.cursor(name)
        return out

    # ------------------------------------------------------------------ retention

    def prune(self) -> None:
        """Delete old segments every live cursor has passed. Keeps the newest segment."""
        try:
            segments = self._segments()
            if len(segments) < 2:
                return
            now = time.time()
            cursors = self.live_cursors(now)
            floor = min(cursors.values()) if cursors else self._last_seq
            for (_first, path), (next_first, _next) in itertools.pairwise(segments):
                if path == self._segment:
                    break
                if next_first - 1 > floor:
                    break  # some sink still needs this one (and all later ones)
                if now - path.stat().st_mtime <= self.retention:
                    break  # keep in order: never leave a hole in the history
                path.unlink()
                self.stats["segments_pruned"] += 1
                log.info("event journal: deleted %s (older than the retention, delivered "
                         "to every sink)", path.name)
            self._prune_for_size()
        except OSError as exc:
            log.warning("event journal %s: pruning failed: %s", self.directory,
                        exc.strerror or exc)

    def _prune_for_size(self) -> None:
        """Over `max_bytes`: delete the oldest segments, delivered or not (a sink that far
        behind counts the events it can no longer read as dropped). Keeps the newest."""
        if self.max_bytes is None:
            return
        sized = [(path, path.stat().st_size) for _first, path in self._segments()]
        total = sum(size for _path, size in sized)
        for path, size in sized[:-1]:
            if total <= self.max_bytes or path == self._segment:
                break
            path.unlink()
            total -= size
            self.stats["segments_pruned_for_size"] += 1
            log.warning("event journal: deleted %s: the journal is over journal.max_bytes "
                        "(%d bytes)", path.name, self.max_bytes)


# ---------------------------------------------------------------------- CLI helpers

def read_events(state_dir: Path, *, last: int | None = None, kinds: set[str] | None = None,
                monitor: str | None = None) -> Iterator[Event]:
    """Events from `state_dir/journal`, filtered, optionally only the last N matches."""
    journal = EventJournal(Path(state_dir) / "journal")

    def matches(e: Event) -> bool:
        if kinds and e.kind.value not in kinds:
            return False
        return not (monitor and e.monitor != monitor)

    if last is None:
        yield from (e for e in journal.read(0) if matches(e))
        return
    newest: deque[Event] = deque()
    if last > 0:
        for event in journal.read_backwards():
            if matches(event):
                newest.appendleft(event)
                if len(newest) >= last:
                    break
    yield from newest


_COLORS = {
    Severity.EMERGENCY: "\033[1;31m",
    Severity.ALERT: "\033[1;31m",
    Severity.CRITICAL: "\033[1;31m",
    Severity.ERROR: "\033[31m",
    Severity.WARNING: "\033[33m",
    Severity.NOTICE: "\033[36m",
    Severity.INFO: "",
    Severity.DEBUG: "\033[2m",
}
_RESET = "\033[0m"


def format_event(event: Event, color: bool = False) -> str:
    """One line: local time, severity, kind, monitor, address, reason."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
    stamp += f".{int(event.time % 1 * 1000):03d}"
    sev = f"{event.severity.label:<9}"
    kind = f"{event.kind.value:<18}"
    if color and _COLORS[event.severity]:
        sev = f"{_COLORS[event.severity]}{sev}{_RESET}"
        kind = f"{_COLORS[event.severity]}{kind}{_RESET}"
    return (f"{stamp} {sev} {kind} {event.monitor or '-':<12} {event.address or '-':<15} "
            f"{event.reason}")
