"""Events to any apprise destination (mail, chat, webhooks, ...).

Targets come from `AppriseConfig.urls` and/or `AppriseConfig.config_file` (an apprise
TEXT/YAML config, loaded with `apprise.AppriseConfig`). Each URL entry is either

* a plain string: an apprise URL, filtered by the sink-level `kinds`/`min_severity`; or
* a mapping `{url, tag, kinds, min_severity}`: `kinds`/`min_severity`, when given, replace
  the sink-level filter for that URL only (so one URL can get everything and another only
  criticals); `tag` is attached to the apprise service as a plain apprise tag, it does
  not filter.

Services from the config file use the sink-level filter, and their apprise tags, if they
have any, narrow it further: a tagged service gets an event when one of its tags is the
event's kind (`takeover`), a severity name meaning "this bad or worse" (`warning` gets
warning, error, critical, ...), or `all`/`always`/`minisft`. Untagged services get all.

Title and body are `str.format` templates over the event fields: {node} {kind} {severity}
{monitor} {address} {state} {reason} {time} {seq} {details}. Missing values print as "-",
unknown placeholders are left as they are.

Each delivery notifies every matching target concurrently (the blocking apprise calls run
in threads of the worker process, below). If some fail, the DeliveryError names only the
target's position and scheme, never its URL (which can hold passwords and tokens). The
targets that succeeded are remembered for that event, so the retry of the same event goes
only to the ones that failed: one dead mail server does not duplicate messages on the chat
target.

apprise paces some services itself (e.g. at most one mail per 5.5 s per mail target): a
burst of events reaches a mail target over a minute or so, still in order, while the other
sinks and the daemon carry on.

apprise never runs in the daemon process. It imports all of its ~190 plugins (+39 MiB
resident) the first time a URL is parsed, and it is a large third-party library doing
network I/O: both stay in a child process, `minisft.sinks.apprise_worker`, started on
demand (at the first delivery) and spoken to in JSON lines over its stdin/stdout. The
URLs go to it through that pipe only (never argv or the environment), its stderr goes to
/dev/null and it logs nothing. The daemon keeps the target labels and filters; the child
keeps the apprise objects. After IDLE_EXIT seconds (30) without a delivery the daemon
closes the child's stdin and it exits: at rest the sink costs the daemon next to nothing,
and the next event starts a fresh child (start-up and plugin loading add about 0.3 s to
that first notification; events closer together reuse the running child). A child that
dies, answers garbage or does not answer a notification within NOTIFY_TIMEOUT (120 s: mail
servers can be slow) is killed and the delivery fails with DeliveryError; the runtime
retries the event later from the journal and that retry starts a new child. Nothing is
lost, and a slow or dead child never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import string
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minisft.config.model import AppriseConfig
from minisft.core.events import Event, EventKind, Severity
from minisft.runtime.childenv import NETWORK, child_env
from minisft.sinks.base import DeliveryError, EventFilter, Sink

log = logging.getLogger("minisft.sinks.apprise")

DEFAULT_TITLE = AppriseConfig.title
DEFAULT_BODY = AppriseConfig.body

RECOVERY_KINDS = frozenset({
    EventKind.SERVICE_RECOVERED, EventKind.CONFLICT_CLEARED, EventKind.LOOKSALIVE_UP,
    EventKind.PEER_UP, EventKind.LINK_UP, EventKind.MEMBER_BACK, EventKind.REJOINED,
})
_MATCH_EVERYTHING = frozenset({"all", "always", "minisft"})

IDLE_EXIT = 30.0  # s without a delivery before the apprise worker is told to exit
INIT_TIMEOUT = 60.0  # s for a new worker to import apprise and parse the URLs
NOTIFY_TIMEOUT = 120.0  # s for one notification round (slow mail servers, apprise pacing)
CLOSE_GRACE = 2.0  # s for a worker to exit after its stdin is closed, then it is killed
WORKER_MODULE = "minisft.sinks.apprise_worker"
_REPLY_LIMIT = 1 << 20  # bytes per reply line


@dataclass(frozen=True)
class UrlEntry:
    url: str
    tags: tuple[str, ...] = ()
    filter: EventFilter | None = None  # None: the sink-level filter

    @property
    def scheme(self) -> str:
        head, sep, _ = self.url.partition("://")
        return head.lower() if sep and head.isascii() and len(head) < 20 else "?"


def _filter_from(kinds: Any, min_severity: Any, default: EventFilter) -> EventFilter:
    ks = default.kinds if kinds is None else frozenset(
        [kinds] if isinstance(kinds, str) else [str(k) for k in kinds])
    sev = default.min_severity if min_severity is None else Severity.parse(str(min_severity))
    for k in ks:
        EventKind(k)  # raises ValueError naming an unknown kind
    return EventFilter(kinds=ks, min_severity=sev)


def parse_url_entry(entry: Any, default: EventFilter) -> UrlEntry:
    """A plain URL string or a {url, tag, kinds, min_severity} mapping."""
    if isinstance(entry, str):
        return UrlEntry(entry.strip())
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"url", "tag", "tags", "kinds", "min_severity"}
        if unknown:
            raise ValueError(f"apprise url entry: unknown key(s) {', '.join(sorted(unknown))}")
        url = entry.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ValueError("apprise url entry: 'url' (a string) is required")
        raw_tags = entry.get("tag", entry.get("tags")) or ()
        tags = (raw_tags,) if isinstance(raw_tags, str) else tuple(str(t) for t in raw_tags)
        custom = entry.get("kinds") is not None or entry.get("min_severity") is not None
        filt = (_filter_from(entry.get("kinds"), entry.get("min_severity"), default)
                if custom else None)
        return UrlEntry(url.strip(), tags, filt)
    raise ValueError(f"apprise url entry must be a string or a mapping, not "
                     f"{type(entry).__name__}")


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def event_fields(event: Event) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(event.time)).strip()
    details = " ".join(f"{k}={v}" for k, v in sorted(event.details.items()))
    return {
        "node": event.node,
        "kind": event.kind.value,
        "severity": event.severity.label,
        "monitor": event.monitor or "-",
        "address": event.address or "-",
        "state": event.state or "-",
        "reason": event.reason,
        "time": stamp,
        "seq": event.seq,
        "details": details or "-",
    }


def render(template: str, event: Event) -> str:
    return string.Formatter().vformat(template, (), _Fields(event_fields(event)))


def tags_accept(tags: set[str] | frozenset[str], event: Event) -> bool:
    """Apprise tags of a config-file service, read as a filter (see the module doc)."""
    if not tags:
        return True
    for tag in tags:
        t = tag.strip().lower()
        if t in _MATCH_EVERYTHING or t == event.kind.value:
            return True
        try:
            if event.severity <= Severity.parse(t):
                return True
        except ValueError:
            continue
    return False


@dataclass
class _Target:
    label: str  # "url#2 (mailto)": safe to show, never the URL itself
    filter: EventFilter
    tags: frozenset[str] = field(default_factory=frozenset)  # from a config file only

    def accepts(self, event: Event) -> bool:
        return self.filter.accepts(event) and tags_accept(self.tags, event)


def worker_env() -> dict[str, str]:
    """A clean environment (never the daemon's: it may hold secrets), with the directory
    holding the `minisft` package first on PYTHONPATH so the worker finds it when the
    daemon runs from a source tree. An installed package (site-packages) is found anyway:
    that directory is not put before the stdlib."""
    env = child_env(keep=(*NETWORK, "PYTHONPATH"))
    root = Path(__file__).resolve().parents[2]
    if root.name not in ("site-packages", "dist-packages"):
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(root) + (os.pathsep + old if old else "")
    return env


def worker_argv() -> list[str]:
    # -P: do not put the daemon's working directory on the worker's sys.path
    return [sys.executable, "-P", "-m", WORKER_MODULE]


class _Worker:
    """One running apprise worker process and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.killed = False

    @classmethod
    async def spawn(cls) -> _Worker:
        try:
            proc = await asyncio.create_subprocess_exec(
                *worker_argv(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=worker_env(), limit=_REPLY_LIMIT)
        except OSError as exc:
            raise DeliveryError(f"apprise: cannot start the notification worker: "
                                f"{type(exc).__name__}") from None
        return cls(proc)

    @property
    def alive(self) -> bool:
        return not self.killed and self.proc.returncode is None

    async def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and read its reply. Any failure (including a cancellation
        half-way) leaves the worker killed: its pipe is out of step."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        ok = False
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            reply = await asyncio.wait_for(self._exchange(), timeout)
            ok = True
            return reply
        except TimeoutError:
            raise DeliveryError(f"apprise: the notification worker did not answer within "
                                f"{timeout:.0f} s; killed it") from None
        except (ConnectionError, BrokenPipeError, asyncio.IncompleteReadError):
            raise DeliveryError(self._died()) from None
        except (ValueError, asyncio.LimitOverrunError):
            # never echo the reply: a confused worker could be repeating a URL
            raise DeliveryError("apprise: the notification worker sent a malformed "
                                "reply; killed it") from None
        finally:
            if not ok:
                self.kill()

    async def _exchange(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)
        reply = json.loads(line)
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise ValueError("not a reply")
        return reply

    def _died(self) -> str:
        code = self.proc.returncode
        how = "exited" if code is None else f"exited with code {code}"
        return f"apprise: the notification worker {how} before answering"

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.killed = True

    async def stop(self, grace: float = CLOSE_GRACE) -> None:
        """Close stdin (the worker exits at EOF), wait up to `grace`, then kill. Bounded."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)


class AppriseSink(Sink):
    name = "apprise"

    def __init__(self, config: AppriseConfig, *, name: str = "apprise",
                 idle_exit: float = IDLE_EXIT, notify_timeout: float = NOTIFY_TIMEOUT) -> None:
        self.name = name
        self.config = config
        self.filter = _filter_from(config.kinds or None, config.min_severity, EventFilter())
        self.entries = [parse_url_entry(e, self.filter) for e in config.urls]
        self.title_template = self._checked(config.title, DEFAULT_TITLE, "title")
        self.body_template = self._checked(config.body, DEFAULT_BODY, "body")
        self.idle_exit = idle_exit
        self.notify_timeout = notify_timeout
        self.stats: dict[str, int] = {"targets": 0, "notified": 0, "failed": 0,
                                      "worker_starts": 0}
        self._targets: list[_Target] = []
        self._done: tuple[int, set[int]] = (0, set())  # (seq, targets already notified)
        self._worker: _Worker | None = None
        self._lock = asyncio.Lock()  # one request at a time on the worker's pipe
        self._idle: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @staticmethod
    def _checked(template: str, default: str, what: str) -> str:
        from minisft.core.events import Notice

        sample = Event.stamp(Notice(EventKind.TEST_ALERT, "x"), seq=1, time=0.0, node="n")
        try:
            render(template, sample)
        except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
            log.error("apprise %s template is invalid (%s); using the default", what, exc)
            return default
        return template

    def accepts(self, event: Event) -> bool:
        if self.filter.accepts(event):
            return True
        return any(e.filter is not None and e.filter.accepts(event) for e in self.entries)

    @property
    def worker_pid(self) -> int | None:
        """The running apprise worker's pid, or None when there is none."""
        w = self._worker
        return w.proc.pid if w is not None and w.alive else None

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        async with self._lock:
            await self._ensure_worker()
        self._arm_idle()

    async def _ensure_worker(self) -> _Worker:
        """The running worker, or a new one told the targets. Call with the lock held."""
        if self._worker is not None and self._worker.alive:
            return self._worker
        self._worker = None
        worker = await _Worker.spawn()
        self.stats["worker_starts"] += 1
        try:
            reply = await worker.request({
                "op": "init",
                "urls": [{"url": e.url, "tags": list(e.tags)} for e in self.entries],
                "config_file": None if self.config.config_file is None
                else str(self.config.config_file),
            }, INIT_TIMEOUT)
            if not reply["ok"]:
                raise DeliveryError(str(reply.get("error") or "apprise: worker init failed"))
            targets = [self._target(t) for t in reply.get("targets") or ()]
            if not targets:
                raise DeliveryError("apprise: no URL configured")
        except BaseException as exc:
            worker.kill()
            await self._drop(worker, exc)
            raise
        if [t.label for t in targets] != [t.label for t in self._targets]:
            self._done = (0, set())  # the config file changed: numbers mean other targets
        self._targets = targets
        self.stats["targets"] = len(targets)
        self._worker = worker
        return worker

    def _target(self, spec: Any) -> _Target:
        try:
            label = str(spec["label"])
            if spec["source"] == "url":
                filt = self.entries[int(spec["entry"])].filter or self.filter
                return _Target(label, filt)
            return _Target(label, self.filter, frozenset(str(t) for t in spec["tags"]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise DeliveryError("apprise: the notification worker sent a malformed "
                                "target list") from None

    # ------------------------------------------------------------------ idle exit

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.idle_exit, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if self._lock.locked():  # a delivery is running: it re-arms the timer when done
            return
        if self._worker is not None:
            log.debug("apprise: idle for %.0f s; stopping the notification worker",
                      self.idle_exit)
            self._forget(self._worker)

    async def _drop(self, worker: _Worker, exc: BaseException) -> None:
        """Reap a killed or dead worker: now (a few ms, bounded by CLOSE_GRACE) after an
        error, in the background when the delivery is being cancelled."""
        if self._worker is worker:
            self._worker = None
        if isinstance(exc, Exception):
            await worker.stop()
        else:
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        """Drop `worker` (idle, or killed after a failure): close its pipes and reap it in
        the background, bounded by CLOSE_GRACE; close() waits for that."""
        if self._worker is worker:
            self._worker = None
        task = asyncio.get_running_loop().create_task(worker.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # ------------------------------------------------------------------ deliver

    def notify_type(self, event: Event) -> str:
        if event.severity <= Severity.ERROR:
            return "failure"
        if event.severity == Severity.WARNING:
            return "warning"
        if event.kind in RECOVERY_KINDS:
            return "success"
        return "info"

    async def deliver(self, event: Event) -> None:
        try:
            async with self._lock:
                await self._deliver(event)
        finally:
            self._arm_idle()

    async def _deliver(self, event: Event) -> None:
        worker = await self._ensure_worker()
        title = render(self.title_template, event)
        body = render(self.body_template, event)
        # Retrying the same event: skip the targets that already have it.
        done = self._done[1] if event.seq > 0 and self._done[0] == event.seq else set()
        # A test alert (`minisft test-alert`) checks the path to EVERY target, whatever its
        # kinds/min_severity/tags filter: the runtime's test_all() bypasses the sink-level
        # filter as it does for every sink (an SNMP target filtered to `takeover` gets the
        # test notification). Filtering it here made test-alert report "delivered" for a
        # target that was sent nothing, e.g. a mail URL with `kinds: [takeover]`.
        test = event.kind is EventKind.TEST_ALERT
        todo = [(i, t) for i, t in enumerate(self._targets)
                if i not in done and (test or t.accepts(event))]
        if not todo:
            return
        try:
            reply = await worker.request({"op": "notify", "targets": [i for i, _ in todo],
                                          "title": title, "body": body,
                                          "type": self.notify_type(event)},
                                         self.notify_timeout)
            if not reply["ok"]:
                raise DeliveryError(str(reply.get("error") or "apprise: notify failed"))
            results = reply.get("results")
            if not isinstance(results, list) or len(results) != len(todo):
                worker.kill()
                raise DeliveryError("apprise: the notification worker sent a malformed "
                                    "reply; killed it")
        except BaseException as exc:
            if isinstance(exc, DeliveryError):
                self.stats["failed"] += len(todo)
            if not worker.alive:
                await self._drop(worker, exc)
            raise
        failed = [t.label for (i, t), ok in zip(todo, results, strict=True) if ok is not True]
        done |= {i for (i, _), ok in zip(todo, results, strict=True) if ok is True}
        self.stats["notified"] += len(todo) - len(failed)
        self.stats["failed"] += len(failed)
        if failed:
            if event.seq > 0:
                self._done = (event.seq, done)
            raise DeliveryError(f"apprise: {len(failed)} of {len(todo)} target(s) failed: "
                                f"{', '.join(failed)}")
        self._done = (0, set())

    async def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self._targets = []
