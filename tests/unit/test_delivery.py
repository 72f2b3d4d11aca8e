"""Per-sink delivery over a real journal in a tmp dir, with real asyncio: nothing is lost,
nothing is delivered twice, order holds, and one bad sink never delays the others."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from minisft.config.model import LoggingConfig
from minisft.core.events import Event, EventKind, Notice
from minisft.runtime.delivery import DeliveryManager
from minisft.runtime.journal import EventJournal
from minisft.sinks.base import DeliveryError, EventFilter, Sink
from minisft.sinks.syslog import SyslogSink

TIMEOUT = 60.0  # generous: a 2-core machine shared with other jobs


class RecordingSink(Sink):
    """A real Sink that records what it got and can be switched to fail or to stall."""

    def __init__(self, name: str, *, fail: bool = False, delay: float = 0.0,
                 filter: EventFilter | None = None) -> None:
        self.name = name
        self.fail = fail
        self.delay = delay
        if filter is not None:
            self.filter = filter
        self.got: list[Event] = []
        self.attempts = 0
        self.started = 0
        self.closed = 0
        self.error_text = "endpoint down"

    async def start(self) -> None:
        self.started += 1

    async def deliver(self, event: Event) -> None:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise DeliveryError(self.error_text)
        self.got.append(event)

    async def close(self) -> None:
        self.closed += 1

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.got]



def _caught_up(status: dict[str, object]) -> bool:
    """Healthy and nothing left to deliver."""
    return status["state"] == "ok" and status["pending"] == 0

def _journal(tmp_path: Path, **kw: int) -> EventJournal:
    j = EventJournal(tmp_path / "journal", **kw)
    j.open()
    return j


def _emit(journal: EventJournal, mgr: DeliveryManager, i: int,
          kind: EventKind = EventKind.TAKEOVER) -> Event:
    """What the daemon's emit() does: journal first, then publish."""
    event = journal.append(Notice(kind, f"event {i}", monitor="web", address="192.0.2.10"),
                           node="alpha", time=time.time())
    mgr.publish(event)
    return event


async def _until(what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


def _run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), TIMEOUT * 2))


def _status(mgr: DeliveryManager, name: str) -> dict[str, object]:
    return next(s for s in mgr.status() if s["name"] == name)


def test_events_published_while_a_sink_fails_arrive_once_and_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        sink = RecordingSink("s", fail=True)
        mgr = DeliveryManager(j, [sink], queue_size=1000, backoff_initial=0.01,
                              backoff_max=0.05)
        await mgr.start()
        sent = [_emit(j, mgr, i).seq for i in range(200)]
        await _until("a few failed attempts", lambda: sink.attempts >= 3)
        st = _status(mgr, "s")
        assert st["state"] == "retrying" and st["pending"] == 200
        assert st["last_error"] == "endpoint down"
        sink.fail = False
        await _until("all delivered", lambda: len(sink.got) >= 200)
        await asyncio.sleep(0.1)
        assert sink.seqs == sent
        st = _status(mgr, "s")
        assert st["delivered"] == 200 and st["pending"] == 0 and st["state"] == "ok"
        assert st["cursor"] == 200 and st["dropped"] == 0
        assert isinstance(st["failures"], int) and st["failures"] >= 3
        await mgr.stop()
        assert j.cursor("s") == 200
        assert sink.started == 1 and sink.closed == 1

    _run(main)


def test_restart_resumes_from_the_cursor_exactly_once(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        first = RecordingSink("mail")
        mgr = DeliveryManager(j, [first], backoff_initial=0.01, backoff_max=0.05)
        await mgr.start()
        for i in range(20):
            _emit(j, mgr, i)
        await _until("first 20", lambda: len(first.got) == 20)
        first.fail = True
        for i in range(20, 50):
            _emit(j, mgr, i)
        await _until("failing", lambda: first.attempts > 21)
        await mgr.stop(timeout=0.5)
        j.close()
        assert first.seqs == list(range(1, 21))

        # The daemon restarts: a new journal object and manager on the same directory.
        j2 = _journal(tmp_path)
        again = RecordingSink("mail")
        mgr2 = DeliveryManager(j2, [again], backoff_initial=0.01, backoff_max=0.05)
        await mgr2.start()
        await _until("pending 30", lambda: len(again.got) >= 30)
        for i in range(50, 55):
            _emit(j2, mgr2, i)
        await _until("all 35", lambda: len(again.got) >= 35)
        await asyncio.sleep(0.1)
        assert again.seqs == list(range(21, 56)), "exactly the undelivered ones, in order"
        await mgr2.stop()

        # And once more: nothing is pending, nothing is repeated.
        third = RecordingSink("mail")
        mgr3 = DeliveryManager(j2, [third])
        await mgr3.start()
        await asyncio.sleep(0.2)
        assert third.got == []
        await mgr3.stop()

    _run(main)


def test_a_dead_or_slow_sink_delays_neither_the_others_nor_the_publisher(tmp_path: Path
                                                                         ) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        dead = RecordingSink("dead", fail=True)
        slow = RecordingSink("slow", delay=30.0)
        healthy = RecordingSink("healthy")
        mgr = DeliveryManager(j, [dead, slow, healthy], queue_size=50,
                              backoff_initial=0.5, backoff_max=5.0)
        await mgr.start()
        t0 = time.monotonic()
        for i in range(300):
            _emit(j, mgr, i)
        assert time.monotonic() - t0 < 5.0, "publish must not wait for sinks"
        await _until("healthy got all", lambda: len(healthy.got) == 300)
        assert healthy.seqs == list(range(1, 301))
        assert dead.got == [] and _status(mgr, "dead")["state"] == "retrying"
        assert slow.got == []
        assert _status(mgr, "slow")["pending"] == 300
        t1 = time.monotonic()
        await mgr.stop(timeout=1.0)
        assert time.monotonic() - t1 < 10.0, "stop does not wait for a stuck sink"
        assert j.cursor("dead") == 0 and j.cursor("slow") == 0 and j.cursor("healthy") == 300

    _run(main)


def test_queue_overflow_catches_up_from_the_journal(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path, segment_bytes=4096)
        sink = RecordingSink("tiny", delay=0.001)
        mgr = DeliveryManager(j, [sink], queue_size=3, backoff_initial=0.01)
        await mgr.start()
        for burst in range(5):
            for i in range(60):
                _emit(j, mgr, burst * 60 + i)
            await asyncio.sleep(0.02)
        await _until("all 300", lambda: len(sink.got) >= 300)
        await asyncio.sleep(0.1)
        assert sink.seqs == list(range(1, 301))
        assert _status(mgr, "tiny")["dropped"] == 0
        await mgr.stop()

    _run(main)


def test_backlog_overflow_skips_the_oldest_and_counts_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="minisft.delivery")

    async def main() -> None:
        j = _journal(tmp_path)
        sink = RecordingSink("s", fail=True)
        mgr = DeliveryManager(j, [sink], queue_size=10, max_backlog=50,
                              backoff_initial=0.01, backoff_max=0.02)
        await mgr.start()
        for i in range(200):
            _emit(j, mgr, i)
        await _until("drops counted", lambda: _status(mgr, "s")["dropped"] == 150)
        sink.fail = False
        await _until("delivered", lambda: _caught_up(_status(mgr, "s")))
        assert sink.seqs == list(range(151, 201)), "the newest max_backlog events survive"
        assert _status(mgr, "s")["dropped"] == 150
        await mgr.stop()

    _run(main)
    skips = [r for r in caplog.records if "skipping the oldest" in r.getMessage()]
    assert len(skips) == 1, "logged once per episode"


def test_unwritable_journal_still_reaches_the_sinks(tmp_path: Path) -> None:
    async def main() -> None:
        blocker = tmp_path / "state"
        blocker.write_text("a file, so the journal directory cannot be created")
        j = EventJournal(blocker / "journal")
        with pytest.raises(OSError):
            j.open()
        sink = RecordingSink("syslog")
        mgr = DeliveryManager(j, [sink], backoff_initial=0.01)
        await mgr.start()
        for i in range(25):
            _emit(j, mgr, i)
        await _until("delivered from memory", lambda: len(sink.got) == 25)
        assert sink.seqs == list(range(1, 26))
        assert j.stats["journal_errors"] >= 25
        assert _caught_up(_status(mgr, "syslog"))
        await mgr.stop()

    _run(main)


def test_filter_rejected_events_advance_the_cursor(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        picky = RecordingSink("picky", filter=EventFilter(kinds=frozenset({"takeover"})))
        mgr = DeliveryManager(j, [picky])
        await mgr.start()
        kinds = [EventKind.TAKEOVER, EventKind.PEER_UP, EventKind.PEER_UP, EventKind.TAKEOVER,
                 EventKind.LOOKSALIVE_UP]
        for i, kind in enumerate(kinds):
            _emit(j, mgr, i, kind)
        await _until("caught up", lambda: _caught_up(_status(mgr, "picky")))
        assert picky.seqs == [1, 4]
        assert _status(mgr, "picky")["cursor"] == 5
        await mgr.stop()
        assert j.cursor("picky") == 5

        # Rejected events read back from disk (catch-up) also just advance the cursor.
        for i, kind in enumerate(kinds):
            j.append(Notice(kind, f"offline {i}"), node="alpha", time=0.0)
        picky2 = RecordingSink("picky", filter=EventFilter(kinds=frozenset({"takeover"})))
        mgr2 = DeliveryManager(j, [picky2])
        await mgr2.start()
        await _until("caught up", lambda: _status(mgr2, "picky")["cursor"] == 10)
        assert picky2.seqs == [6, 9]
        await mgr2.stop()

    _run(main)


def test_a_new_sink_starts_at_the_end_of_the_journal(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        for i in range(10):
            j.append(Notice(EventKind.PEER_UP, f"old {i}"), node="alpha", time=0.0)
        fresh = RecordingSink("new-sink")
        mgr = DeliveryManager(j, [fresh])
        await mgr.start()
        assert j.cursor("new-sink") == 10
        _emit(j, mgr, 11)
        await _until("the new event", lambda: len(fresh.got) == 1)
        assert fresh.seqs == [11]
        await mgr.stop()

    _run(main)


def test_publish_before_start_and_after_stop_is_caught_up_later(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        sink = RecordingSink("s")
        mgr = DeliveryManager(j, [sink])
        await mgr.start()
        _emit(j, mgr, 1)
        await _until("first", lambda: len(sink.got) == 1)
        await mgr.stop()
        _emit(j, mgr, 2)  # e.g. emitted during a reload, between stop and the new start
        mgr2 = DeliveryManager(j, [sink])
        await mgr2.start()
        await _until("second", lambda: len(sink.got) == 2)
        assert sink.seqs == [1, 2]
        await mgr2.stop()

    _run(main)


class ExplodingSink(Sink):
    name = "buggy"

    async def deliver(self, event: Event) -> None:
        raise RuntimeError("cannot reach https://admin:hunter2@hooks.example.org/x?token=abc")


def test_test_all_and_status_never_show_secrets(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        ok = RecordingSink("ok")
        down = RecordingSink("down", fail=True)
        buggy = ExplodingSink()
        mgr = DeliveryManager(j, [ok, down, buggy], backoff_initial=0.01, backoff_max=0.02)
        await mgr.start()
        test = Event.stamp(Notice(EventKind.TEST_ALERT, "test"), seq=0, time=0.0, node="a")
        results = await mgr.test_all(test)
        assert results["ok"] is None
        assert results["down"] == "endpoint down"
        assert results["buggy"] is not None and "hunter2" not in results["buggy"]
        assert "token=abc" not in results["buggy"] and "RuntimeError" in results["buggy"]
        assert ok.seqs == [0] and j.cursor("ok") == 0, "a test event moves no cursor"
        _emit(j, mgr, 1)
        await _until("buggy retried", lambda: _status(mgr, "buggy")["failures"] == 2)
        err = _status(mgr, "buggy")["last_error"]
        assert isinstance(err, str) and "hunter2" not in err and "abc" not in err
        for st in mgr.status():
            assert set(st) >= {"name", "delivered", "pending", "dropped", "failures",
                               "last_error", "last_delivery_time", "cursor", "state"}
        await _until("ok delivered", lambda: ok.seqs == [0, 1])
        assert isinstance(_status(mgr, "ok")["last_delivery_time"], float)
        await mgr.stop()

    _run(main)


def test_stop_lets_healthy_sinks_flush(tmp_path: Path) -> None:
    async def main() -> None:
        j = _journal(tmp_path)
        sink = RecordingSink("s", delay=0.01)
        mgr = DeliveryManager(j, [sink])
        await mgr.start()
        for i in range(20):
            _emit(j, mgr, i)
        await mgr.stop(timeout=10.0)
        assert sink.seqs == list(range(1, 21))
        assert j.cursor("s") == 20

    _run(main)


def _age_all(paths: list[Path], seconds: float) -> None:
    past = time.time() - seconds
    for p in paths:
        os.utime(p, (past, past))


def test_rotation_and_prune_keep_what_a_failing_sink_has_not_read(tmp_path: Path) -> None:
    async def main() -> None:
        d = tmp_path / "journal"
        j = EventJournal(d, segment_bytes=2000, retention=5)
        j.open()
        fast = RecordingSink("fast")
        dead = RecordingSink("dead", fail=True)
        mgr = DeliveryManager(j, [fast, dead], queue_size=20, backoff_initial=0.01,
                              backoff_max=0.05)
        await mgr.start()
        for i in range(100):
            _emit(j, mgr, i)
        await _until("fast got 100", lambda: len(fast.got) == 100)
        _age_all(sorted(d.glob("events-*.jsonl")), 60)  # old enough to be pruned...
        for i in range(100, 130):                      # ...at the next rotations
            _emit(j, mgr, i)
        await _until("fast got 130", lambda: len(fast.got) == 130)
        assert next(iter(j.read())).seq == 1, "dead's unread events must stay"
        dead.fail = False
        await _until("dead caught up", lambda: len(dead.got) == 130)
        assert dead.seqs == list(range(1, 131)) and fast.seqs == dead.seqs
        await mgr.stop()
        _age_all(sorted(d.glob("events-*.jsonl")), 60)
        j.prune()
        assert len(list(d.glob("events-*.jsonl"))) == 1, "read by all and old: pruned"

    _run(main)


def test_events_pruned_under_a_long_dead_sink_are_counted_as_dropped(tmp_path: Path
                                                                      ) -> None:
    async def main() -> None:
        d = tmp_path / "journal"
        j = EventJournal(d, segment_bytes=1000, retention=5)
        j.open()
        j.set_cursor("late", 0)  # failing for longer than the retention
        for i in range(50):
            j.append(Notice(EventKind.PEER_DOWN, f"e{i}"), node="alpha", time=0.0)
        _age_all([*d.glob("events-*.jsonl"), d / "cursor-late"], 60)
        j.prune()
        first = next(iter(j.read())).seq
        assert first > 1
        late = RecordingSink("late")
        mgr = DeliveryManager(j, [late])
        await mgr.start()
        await _until("caught up", lambda: _status(mgr, "late")["cursor"] == 50)
        assert late.seqs == list(range(first, 51))
        assert _status(mgr, "late")["dropped"] == first - 1
        await mgr.stop()

    _run(main)


# ---------------------------------------------------------------------- the syslog sink

@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="msft", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _bound(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(10.0)
    return s


def test_syslog_sends_rfc3164_with_priority_and_ident(tmp_path: Path, short_dir: Path) -> None:
    log_sock = short_dir / "log"
    receiver = _bound(log_sock)

    async def main() -> None:
        j = _journal(tmp_path)
        sink = SyslogSink(LoggingConfig(syslog_socket=log_sock, syslog_facility="local3"))
        mgr = DeliveryManager(j, [sink])
        await mgr.start()
        event = j.append(Notice(EventKind.SERVICE_DEAD, "http check failed: 503",
                                monitor="web", address="192.0.2.10", state="holding"),
                         node="alpha", time=time.time())
        mgr.publish(event)
        await _until("sent", lambda: sink.stats["sent"] == 1)
        await mgr.stop()

    _run(main)
    data = receiver.recv(65536).decode()
    receiver.close()
    # local3 = 19, critical = 2: 19 * 8 + 2
    m = re.fullmatch(r"<154>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) minisft\[(\d+)\]: (.*)",
                     data)
    assert m, data
    assert int(m.group(2)) == os.getpid()
    assert m.group(3) == ("service_dead web [192.0.2.10] http check failed: 503 "
                          "(seq=1 node=alpha severity=critical state=holding)")


def test_syslog_without_a_syslog_daemon_delivers_nowhere_and_counts(
        tmp_path: Path, short_dir: Path) -> None:
    log_sock = short_dir / "log"

    async def main() -> None:
        j = _journal(tmp_path)
        sink = SyslogSink(LoggingConfig(syslog_socket=log_sock))
        mgr = DeliveryManager(j, [sink], backoff_initial=0.01)
        await mgr.start()
        for i in range(3):
            _emit(j, mgr, i)
        await _until("handled", lambda: _status(mgr, "syslog")["cursor"] == 3)
        st = _status(mgr, "syslog")
        assert st["failures"] == 0, "a missing /dev/log is not retried forever"
        assert st["details"] == {"sent": 0, "undeliverable": 3}
        receiver = _bound(log_sock)  # a syslog daemon appears
        try:
            event = _emit(j, mgr, 3, EventKind.PEER_UP)
            await _until("sent", lambda: sink.stats["sent"] == 1)
            data = receiver.recv(65536).decode()
        finally:
            receiver.close()
        assert data.startswith("<30>")  # daemon = 3, info = 6
        assert f"seq={event.seq}" in data
        await mgr.stop()

    _run(main)


def test_syslog_rejects_an_unknown_facility() -> None:
    with pytest.raises(ValueError, match="unknown syslog facility"):
        SyslogSink(LoggingConfig(syslog_facility="local9"))
