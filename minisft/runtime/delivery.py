"""Per-sink delivery: one asyncio task per sink, fed from memory, backed by the journal.

How "nothing is lost" works:

* Every event is journaled first (`EventJournal.append`), then `publish()` offers it to
  each sink's bounded in-memory queue. `publish()` never blocks and never raises.
* Each sink has a cursor (`journal/cursor-<sink>`): the last seq it handled. It is saved
  right after every successful delivery. At start, and whenever its queue overflowed, a
  sink catches up from the journal on disk after its cursor, strictly in seq order.
* On `DeliveryError` (or any exception) the sink's task retries the SAME event with
  exponential backoff plus jitter; later events wait behind it. Other sinks and the
  publisher are never delayed: each sink has its own task and queue.
* Events a sink's filter rejects still advance its cursor.
* A sink seen for the first time (no cursor file) starts at the journal's current end:
  adding a sink does not replay the whole history to it.

Delivery is at-least-once per endpoint, and exactly once in practice: the one window is
between an endpoint accepting an event and the cursor being saved (a crash, or a stop that
cancels an in-flight delivery, there), after which the event is delivered again on restart.

Overflow policy: when a sink's backlog (journal.last_seq - cursor) exceeds `max_backlog`,
the oldest undelivered events are skipped (the cursor jumps forward), counted in the sink's
`dropped`, and a warning is logged once per episode. The skipped events stay readable in
the journal (`minisft events`). Events that could not be journaled (journal failing) AND
did not fit in a full queue are lost too and also counted in `dropped`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from minisft.core.events import Event
from minisft.runtime.heap import release_free_heap
from minisft.runtime.journal import EventJournal
from minisft.sinks.base import DeliveryError, Sink

log = logging.getLogger("minisft.delivery")

CATCH_UP_BATCH = 512
TEST_TIMEOUT = 30.0

_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@]+@")
_SECRET_PARAMS = re.compile(r"((?:pass(?:word)?|secret|token|key|apikey)=)[^&\s]+",
                            re.IGNORECASE)


def redact(text: str) -> str:
    """Strip credentials from an error text before it is stored or shown."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _SECRET_PARAMS.sub(r"\1***", text)


class _SinkState:
    def __init__(self, sink: Sink, name: str) -> None:
        self.sink = sink
        self.name = name  # unique; also names the cursor file
        self.queue: collections.deque[Event] = collections.deque()
        self.wake = asyncio.Event()
        self.start_lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.cursor = 0
        self.saved_cursor = 0
        self.latest = 0  # newest seq publish() has seen
        self.missed = False  # an event did not fit in the queue: read the journal
        self.started = False
        self.busy = False
        self.delivered = 0
        self.dropped = 0
        self.failures = 0
        self.consecutive = 0
        self.last_error: str | None = None
        self.last_delivery_time: float | None = None
        self.retry_at: float | None = None
        self.overflowing = False
        self.read_failing = False


class DeliveryManager:
    def __init__(self, journal: EventJournal, sinks: Sequence[Sink], *, queue_size: int = 1000,
                 max_backlog: int = 100_000, backoff_initial: float = 1.0,
                 backoff_max: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.queue_size = max(1, queue_size)
        self.max_backlog = max(1, max_backlog)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = clock
        self._states: list[_SinkState] = []
        self._running = False
        self._publish_failing = False
        seen: set[str] = set()
        for sink in sinks:
            name = sink.name
            n = 1
            while name in seen:  # two sinks sharing a cursor file would lose events
                n += 1
                name = f"{sink.name}-{n}"
            if name != sink.name:
                log.warning("two sinks are named %r; the second one is tracked as %r",
                            sink.name, name)
            seen.add(name)
            self._states.append(_SinkState(sink, name))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        last = self.journal.last_seq
        for st in self._states:
            if self.journal.has_cursor(st.name):
                st.cursor = min(self.journal.cursor(st.name), last)
            else:
                st.cursor = last
                self.journal.set_cursor(st.name, last)
            st.saved_cursor = st.cursor
            st.latest = max(st.latest, st.cursor)
            st.missed = True  # catch up from the journal first
            st.task = asyncio.create_task(self._run(st), name=f"sink:{st.name}")
        self._running = True

    def publish(self, event: Event) -> None:
        """Offer an event to every sink. Non-blocking, never raises."""
        if not self._running:
            return  # not started or stopped: the next manager catches up from the cursors
        for st in self._states:
            try:
                st.latest = max(st.latest, event.seq)
                if not st.sink.accepts(event):
                    st.wake.set()  # lets an idle sink advance its cursor
                    continue
                if len(st.queue) < self.queue_size:
                    st.queue.append(event)
                elif self.journal.healthy and event.seq > 0:
                    st.missed = True  # it is on disk: the sink reads it from there
                else:
                    st.dropped += 1
                    if not st.overflowing:
                        st.overflowing = True
                        log.error("sink %s: queue full and the journal is failing: "
                                  "dropping events", st.name)
                st.wake.set()
            except Exception:  # a buggy filter must not break publishing
                if not self._publish_failing:
                    self._publish_failing = True
                    log.exception("sink %s: publish failed", st.name)

    async def stop(self, timeout: float = 5.0) -> None:
        """Give healthy sinks up to `timeout` to drain, then cancel; cursors are saved."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._running = False
        while loop.time() < deadline and any(self._draining(st) for st in self._states):
            await asyncio.sleep(0.05)
        tasks = [st.task for st in self._states if st.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for st in self._states:
            st.task = None
            self._save_cursor(st)
            if st.started:
                st.started = False
                remaining = max(0.5, deadline - loop.time())
                try:
                    await asyncio.wait_for(st.sink.close(), remaining)
                except Exception as exc:  # closing must not stop the shutdown
                    log.warning("sink %s: close failed: %s", st.name, redact(str(exc)))

    def _draining(self, st: _SinkState) -> bool:
        if st.task is None or st.task.done() or st.consecutive > 0:
            return False  # a failing sink gets no grace: its events wait in the journal
        return bool(st.queue) or st.missed or st.busy

    # ------------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        out = []
        last = self.journal.last_seq
        for st in self._states:
            pending = max(0, max(last, st.latest) - st.cursor)
            # "ok" whether idle or delivering: monitoring treats anything else as a problem
            state = "retrying" if st.consecutive > 0 else "ok"
            entry: dict[str, Any] = {
                "name": st.name,
                "delivered": st.delivered,
                "pending": pending,
                "queued": len(st.queue),
                "dropped": st.dropped,
                "failures": st.failures,
                "last_error": st.last_error,
                "last_delivery_time": st.last_delivery_time,
                "cursor": st.cursor,
                "state": state,
            }
            if st.retry_at is not None and st.consecutive > 0:
                entry["retry_in"] = round(max(0.0, st.retry_at - self.clock()), 3)
            stats = getattr(st.sink, "stats", None)
            if isinstance(stats, dict):
                entry["details"] = dict(stats)
            out.append(entry)
        return out

    async def test_all(self, event: Event) -> dict[str, str | None]:
        """Deliver one event straight to every sink (no journal, no cursor, no retry)."""

        async def one(st: _SinkState) -> str | None:
            try:
                await asyncio.wait_for(self._try_one(st, event), TEST_TIMEOUT)
            except TimeoutError:
                return f"no answer within {TEST_TIMEOUT:.0f} s"
            except DeliveryError as exc:
                return str(exc) or type(exc).__name__
            except Exception as exc:
                return redact(f"{type(exc).__name__}: {exc}")
            return None

        results = await asyncio.gather(*(one(st) for st in self._states))
        return {st.name: res for st, res in zip(self._states, results, strict=True)}

    # ------------------------------------------------------------------ the sink task

    async def _run(self, st: _SinkState) -> None:
        while True:
            try:
                await self._step(st)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silently stop this sink for good
                log.exception("sink %s: delivery loop error; continuing", st.name)
                await asyncio.sleep(self.backoff_initial)

    async def _step(self, st: _SinkState) -> None:
        while st.queue and 0 < st.queue[0].seq <= st.cursor:
            st.queue.popleft()  # already delivered from the journal
        head = st.queue[0] if st.queue else None
        if st.missed and (head is None or head.seq > st.cursor + 1):
            # Fill the gap from disk, but only up to what is still queued in memory:
            # a queued event may be one the journal failed to write.
            if head is None:
                st.missed = False  # cleared first: a new overflow re-sets it
            await self._catch_up(st, until=None if head is None else head.seq - 1)
            return
        if head is None:
            if st.latest > st.cursor:  # everything since was rejected by the filter
                st.cursor = st.latest
                self._save_cursor(st)
            st.overflowing = False
            st.wake.clear()
            await st.wake.wait()
            return
        st.queue.popleft()
        await self._deliver(st, head)

    async def _catch_up(self, st: _SinkState, until: int | None) -> None:
        while True:
            self._enforce_backlog(st)
            after = st.cursor
            if until is not None and after >= until:
                return
            try:
                batch = await asyncio.to_thread(self._read_batch, after, until)
            except OSError as exc:  # e.g. permissions; do not spin on it
                if not st.read_failing:
                    st.read_failing = True
                    log.error("sink %s: cannot read the journal: %s", st.name, exc)
                batch = []
            else:
                st.read_failing = False
            if not batch:
                if until is not None and st.cursor < until:
                    self._lost(st, until)
                    self._save_cursor(st)
                return
            for event in batch:
                if event.seq <= st.cursor:
                    continue  # skipped by the backlog limit meanwhile
                if event.seq > st.cursor + 1:
                    self._lost(st, event.seq - 1)
                if st.sink.accepts(event):
                    await self._deliver(st, event)
                else:
                    st.cursor = event.seq
            self._save_cursor(st)

    def _lost(self, st: _SinkState, upto: int) -> None:
        """Events up to `upto` are neither on disk (a failed journal write, or pruned
        while this sink was failing for longer than the retention) nor in memory."""
        st.dropped += upto - st.cursor
        log.warning("sink %s: events %d..%d are not in the journal any more; skipped",
                    st.name, st.cursor + 1, upto)
        st.cursor = upto

    def _read_batch(self, after: int, until: int | None) -> list[Event]:
        out = []
        for event in self.journal.read(after, limit=CATCH_UP_BATCH):
            if until is not None and event.seq > until:
                break
            out.append(event)
        return out

    async def _try_one(self, st: _SinkState, event: Event) -> None:
        async with st.start_lock:
            if not st.started:
                await st.sink.start()
                st.started = True
                # a start loads the sink's library: its import garbage leaves the heap
                release_free_heap()
        await st.sink.deliver(event)

    async def _deliver(self, st: _SinkState, event: Event) -> None:
        """Deliver one event, retrying it until it is delivered or the backlog limit
        skips it."""
        delay = self.backoff_initial
        while True:
            if self._enforce_backlog(st) and 0 < event.seq <= st.cursor:
                return
            st.busy = True
            try:
                await self._try_one(st, event)
            except asyncio.CancelledError:
                raise
            except DeliveryError as exc:
                error = str(exc) or type(exc).__name__
            except Exception as exc:
                error = redact(f"{type(exc).__name__}: {exc}")
                if st.consecutive == 0:
                    log.exception("sink %s: unexpected error (a bug in the sink?)", st.name)
            else:
                if event.seq > 0:
                    st.cursor = max(st.cursor, event.seq)
                    self._save_cursor(st)
                st.delivered += 1
                st.last_delivery_time = time.time()
                if st.consecutive:
                    log.warning("sink %s: delivering again after %d failed attempt(s)",
                                st.name, st.consecutive)
                st.consecutive = 0
                st.retry_at = None
                return
            finally:
                st.busy = False
            st.failures += 1
            st.consecutive += 1
            st.last_error = error
            if st.consecutive == 1:
                log.warning("sink %s: delivery failed (%s); retrying with backoff, the "
                            "events wait in the journal", st.name, error)
            pause = delay * random.uniform(0.8, 1.2)  # jitter: sinks do not retry in step
            st.retry_at = self.clock() + pause
            await asyncio.sleep(pause)
            delay = min(delay * 2, self.backoff_max)

    def _enforce_backlog(self, st: _SinkState) -> bool:
        floor = max(self.journal.last_seq, st.latest) - self.max_backlog
        if st.cursor >= floor:
            return False
        st.dropped += floor - st.cursor
        st.cursor = floor
        self._save_cursor(st)
        if not st.overflowing:
            st.overflowing = True
            log.warning("sink %s: more than %d events undelivered; skipping the oldest "
                        "(see `minisft events` for them)", st.name, self.max_backlog)
        return True

    def _save_cursor(self, st: _SinkState) -> None:
        if st.cursor != st.saved_cursor:
            self.journal.set_cursor(st.name, st.cursor)
            st.saved_cursor = st.cursor
