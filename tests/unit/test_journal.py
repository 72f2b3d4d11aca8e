"""The event journal on real files: seq across restarts, torn lines, rotation, pruning,
cursors, an unwritable state_dir, and the CLI helpers."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from minisft.core.events import Event, EventKind, Notice, Severity
from minisft.runtime.journal import EventJournal, format_event, read_events


def _notice(i: int, kind: EventKind = EventKind.TAKEOVER, monitor: str = "web") -> Notice:
    return Notice(kind, f"event number {i}", monitor=monitor, address="192.0.2.10",
                  state="holding", details={"i": i})


def _fill(journal: EventJournal, n: int, start: int = 0) -> list[Event]:
    return [journal.append(_notice(start + i), node="alpha", time=1_700_000_000.0 + i)
            for i in range(n)]


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("events-*.jsonl"))


def test_append_read_and_seq_continues_after_restart(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    assert (d.stat().st_mode & 0o777) == 0o755
    events = _fill(j, 5)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert list(j.read()) == events
    assert [e.seq for e in j.read(after_seq=3)] == [4, 5]
    assert [e.seq for e in j.read(after_seq=1, limit=2)] == [2, 3]
    j.close()

    again = EventJournal(d)
    again.open()
    assert again.last_seq == 5
    assert again.append(_notice(99), node="alpha", time=0.0).seq == 6
    assert [e.seq for e in EventJournal(d).read()] == [1, 2, 3, 4, 5, 6]
    line = _segments(d)[0].read_text().splitlines()[0]
    assert Event.from_dict(json.loads(line)) == events[0], "one Event.to_json() per line"


def test_read_needs_no_open_and_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert list(EventJournal(tmp_path / "nothing").read()) == []
    assert list(read_events(tmp_path / "nothing")) == []


def test_torn_last_line_is_skipped_and_repaired(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                ) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    _fill(j, 3)
    j.close()
    seg = _segments(d)[-1]
    with open(seg, "ab") as fh:  # what a crash in the middle of write(2) leaves
        fh.write(b'{"address":"192.0.2.10","details":{},"kind":"takeo')
    # A reader ignores the incomplete tail...
    assert [e.seq for e in EventJournal(d).read()] == [1, 2, 3]
    # ...and the writer removes it, so the next line is not glued to it.
    caplog.set_level(logging.WARNING)
    j2 = EventJournal(d)
    j2.open()
    assert j2.last_seq == 3
    assert j2.stats["torn_lines"] == 1
    assert "incomplete last line" in caplog.text
    assert j2.append(_notice(4), node="alpha", time=0.0).seq == 4
    assert [e.seq for e in EventJournal(d).read()] == [1, 2, 3, 4]
    assert seg.read_bytes().endswith(b"\n")


def test_a_corrupt_line_in_the_middle_is_skipped(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    _fill(j, 2)
    with open(_segments(d)[0], "ab") as fh:
        fh.write(b"this is not json\n")
    _fill(j, 2)
    assert [e.seq for e in EventJournal(d).read()] == [1, 2, 3, 4]


def test_seq_never_goes_back_even_if_segments_are_wiped(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    _fill(j, 7)
    j.set_cursor("syslog", 7)
    j.close()
    for seg in _segments(d):
        seg.unlink()
    j2 = EventJournal(d)
    j2.open()
    assert j2.last_seq == 7
    assert j2.append(_notice(8), node="alpha", time=0.0).seq == 8


def test_rotation_keeps_order_and_names_segments_by_first_seq(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d, segment_bytes=1000)
    j.open()
    _fill(j, 40)
    segs = _segments(d)
    assert len(segs) > 5
    firsts = [int(p.name[len("events-"):-len(".jsonl")]) for p in segs]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    for first, path in zip(firsts, segs, strict=True):
        assert Event.from_dict(json.loads(path.read_text().splitlines()[0])).seq == first
        assert path.stat().st_size <= 1000 or len(path.read_text().splitlines()) == 1
    assert [e.seq for e in EventJournal(d).read()] == list(range(1, 41))
    assert [e.seq for e in EventJournal(d).read(after_seq=17, limit=5)] == [18, 19, 20, 21, 22]
    # A restart continues in the newest segment while it has room.
    j.close()
    j2 = EventJournal(d, segment_bytes=1000)
    j2.open()
    _fill(j2, 10, start=40)
    assert [e.seq for e in EventJournal(d).read()] == list(range(1, 51))


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_prune_deletes_only_old_segments_every_cursor_has_passed(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d, segment_bytes=1000, retention=3600)
    j.open()
    _fill(j, 40)
    segs = _segments(d)
    for seg in segs:
        _age(seg, 7200)
    j.set_cursor("fast", 40)
    j.set_cursor("slow", 20)  # still needs the segment holding 21
    j.set_cursor("gone", 2)   # a sink removed from the config long ago
    _age(d / "cursor-gone", 7200)
    j.prune()
    left = list(EventJournal(d).read())
    assert left, "the newest segment is always kept"
    assert left[0].seq <= 21, "an unread event was deleted"
    assert [e.seq for e in left] == list(range(left[0].seq, 41))
    assert j.stats["segments_pruned"] >= 1
    assert len(_segments(d)) < len(segs)

    # Too young: nothing goes even if every cursor has passed it.
    j.set_cursor("slow", 40)
    for seg in _segments(d):
        os.utime(seg, None)
    before = _segments(d)
    j.prune()
    assert _segments(d) == before

    # Old and read by everyone: all but the newest segment go.
    for seg in _segments(d):
        _age(seg, 7200)
    j.prune()
    assert len(_segments(d)) == 1
    assert [e.seq for e in EventJournal(d).read()][-1] == 40


def test_cursors_are_atomic_files_and_names_are_sanitized(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    assert j.cursor("snmp-192.0.2.1:162") == 0
    assert not j.has_cursor("snmp-192.0.2.1:162")
    j.set_cursor("snmp-192.0.2.1:162", 12)
    j.set_cursor("../evil/name", 3)
    assert j.cursor("snmp-192.0.2.1:162") == 12
    assert j.cursor("../evil/name") == 3
    names = sorted(p.name for p in d.iterdir())
    assert all("/" not in n for n in names)
    assert not [n for n in names if n.endswith(".tmp")]
    assert (d / "cursor-snmp-192.0.2.1_162").read_text() == "12\n"


def test_unwritable_state_dir_still_stamps_events(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a regular file where the state_dir should be")
    j = EventJournal(blocker / "journal")
    caplog.set_level(logging.ERROR, logger="minisft.journal")
    with pytest.raises(OSError):
        j.open()
    events = _fill(j, 5)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5], "seq continues in memory"
    assert j.stats["journal_errors"] == 6  # open + 5 writes
    assert not j.healthy
    assert len(caplog.records) == 1, "one error per episode, not one per event"
    j.set_cursor("syslog", 5)  # counted, never raised
    assert j.stats["cursor_errors"] == 1
    assert list(j.read()) == []
    j.sync()


def test_journal_recovers_when_the_directory_becomes_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("x")
    j = EventJournal(blocker / "journal")
    with pytest.raises(OSError):
        j.open()
    _fill(j, 2)
    blocker.unlink()  # the admin fixes it
    blocker.mkdir()
    e3 = j.append(_notice(3), node="alpha", time=0.0)
    assert e3.seq == 3 and j.healthy
    assert [e.seq for e in j.read()] == [3]


def test_quick_seq_skip_is_not_fooled_by_a_details_key(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    for i in range(5):
        j.append(Notice(EventKind.TAKEOVER, 'reason with "seq":1 in it',
                        details={"seq": 999 - i}), node="n", time=0.0)
    assert [e.seq for e in j.read(after_seq=2)] == [3, 4, 5]


def test_follow_sees_new_events_across_rotation(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d, segment_bytes=800)
    j.open()
    _fill(j, 3)
    got: list[int] = []
    done = threading.Event()

    def consume() -> None:
        for event in EventJournal(d).follow(after_seq=2, poll=0.02):
            got.append(event.seq)
            if event.seq == 30:
                done.set()
                return

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    for i in range(27):
        _fill(j, 1, start=i)
        time.sleep(0.005)
    assert done.wait(30), f"follow stalled at {got[-1:]}"
    assert got == list(range(3, 31))
    assert len(_segments(d)) > 2


def test_read_events_filters_and_format_event(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    j.append(_notice(1, EventKind.TAKEOVER, "web"), node="alpha", time=1_700_000_000.25)
    j.append(_notice(2, EventKind.RELEASED, "web"), node="alpha", time=1_700_000_001.0)
    j.append(_notice(3, EventKind.TAKEOVER, "db"), node="alpha", time=1_700_000_002.0)
    j.append(_notice(4, EventKind.TAKEOVER, "web"), node="alpha", time=1_700_000_003.0)
    assert [e.seq for e in read_events(tmp_path, last=None, kinds=None, monitor=None)] == [
        1, 2, 3, 4]
    assert [e.seq for e in read_events(tmp_path, last=2, kinds=None, monitor=None)] == [3, 4]
    assert [e.seq for e in read_events(tmp_path, last=None, kinds={"takeover"},
                                       monitor="web")] == [1, 4]
    assert [e.seq for e in read_events(tmp_path, last=1, kinds={"takeover"},
                                       monitor="web")] == [4]
    first = next(iter(j.read()))
    line = format_event(first, color=False)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first.time)) + ".250"
    assert line.startswith(stamp)
    for part in ("warning", "takeover", "web", "192.0.2.10", "event number 1"):
        assert part in line
    assert "\033[" not in line and "\n" not in line
    colored = format_event(first, color=True)
    assert "\033[33m" in colored and "event number 1" in colored
    assert first.severity is Severity.WARNING


def test_seq_does_not_collide_with_disk_when_open_failed_at_first(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = EventJournal(d)
    j.open()
    _fill(j, 10)
    j.close()
    os.rename(d, tmp_path / "away")  # the directory is unusable when the daemon starts
    (tmp_path / "journal").write_text("in the way")
    j2 = EventJournal(d)
    with pytest.raises(OSError):
        j2.open()
    assert j2.append(_notice(0), node="alpha", time=0.0).seq == 1  # memory only
    (tmp_path / "journal").unlink()
    os.rename(tmp_path / "away", d)  # fixed
    e = j2.append(_notice(1), node="alpha", time=0.0)
    assert e.seq == 11, "continues after what is on disk"
    assert [x.seq for x in EventJournal(d).read()] == list(range(1, 12))


def test_rm_rf_of_the_journal_under_a_running_daemon_loses_nothing_after(
        tmp_path: Path) -> None:
    import shutil

    journal = EventJournal(tmp_path / "journal")
    journal.open()
    _fill(journal, 3)
    shutil.rmtree(tmp_path / "journal")  # an admin "cleaning up" under the daemon
    later = _fill(journal, 2, start=3)
    on_disk = list(EventJournal(tmp_path / "journal").read(0))
    assert [e.seq for e in on_disk] == [4, 5] == [e.seq for e in later]
    assert journal.stats["journal_recreated"] == 1


def test_seq_continues_after_the_status_floor_when_the_journal_was_deleted(
        tmp_path: Path) -> None:
    import shutil

    from minisft.runtime.daemon import _last_seq_in_status

    journal = EventJournal(tmp_path / "journal")
    journal.open()
    _fill(journal, 5)
    (tmp_path / "status.json").write_text(json.dumps({"last_event_seq": journal.last_seq}))
    shutil.rmtree(tmp_path / "journal")
    restarted = EventJournal(tmp_path / "journal")
    restarted.open(floor=_last_seq_in_status(tmp_path / "status.json"))
    assert _fill(restarted, 1)[0].seq == 6


def test_journal_max_bytes_caps_the_history_on_disk(tmp_path: Path) -> None:
    from minisft.config.loader import parse_config

    cfg = parse_config("node: {name: a, local_ip: 192.0.2.1}\n"
                       "journal: {max_bytes: 1MiB, max_age: 2d}\n")
    assert cfg.journal.max_bytes == 1 << 20 and cfg.journal.max_age == 2 * 86400
    journal = EventJournal(tmp_path / "j", retention=cfg.journal.max_age,
                           max_bytes=cfg.journal.max_bytes)
    journal.open()
    journal.set_cursor("snmp", 1)  # a sink stuck far behind does not hold it back
    _fill(journal, 15_000)  # ~3 MiB of events
    total = sum(p.stat().st_size for p in _segments(tmp_path / "j"))
    assert total <= (1 << 20) + journal.segment_bytes
    assert journal.stats["segments_pruned_for_size"] > 0
    assert next(e.seq for e in EventJournal(tmp_path / "j").read_backwards()) == 15_000


def test_events_last_n_reads_from_the_end(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    journal = EventJournal(tmp_path / "journal", segment_bytes=4096)
    journal.open()
    _fill(journal, 400)
    _fill(journal, 1, start=400)
    assert len(_segments(tmp_path / "journal")) > 10
    scanned: list[Path] = []
    real_scan = EventJournal._scan

    def counting_scan(path: Path, offset: int, after_seq: int = 0) -> tuple[list[Event], int]:
        scanned.append(path)
        return real_scan(path, offset, after_seq)

    monkeypatch.setattr(EventJournal, "_scan", staticmethod(counting_scan))
    last3 = list(read_events(tmp_path, last=3))
    assert [e.seq for e in last3] == [399, 400, 401]
    assert len(scanned) <= 2, "only the newest segments are read"
    web = list(read_events(tmp_path, last=2, monitor="web"))
    assert [e.seq for e in web] == [400, 401]
