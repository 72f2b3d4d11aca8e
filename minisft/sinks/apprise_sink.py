"""Events to any apprise destination (mail, chat, webhooks, ...).

Targets come from `AppriseConfig.urls` and/or `AppriseConfig.config_file` (an apprise
TEXT/YAML config, loaded with `apprise.AppriseConfig`). Each URL entry is either

* a plain string: an apprise URL, filtered by the sink-level `kinds`/`min_severity`; or
* a mapping `{url, tag, kinds, min_severity}`: `kinds`/`min_severity`, when given, replace
  the sink-level filter for that URL only (so one URL can get everything and another only
  criticals); `tag` is attached to the apprise service as a plain apprise tag (visible in
  apprise's own logs), it does not filter.

Services from the config file use the sink-level filter, and their apprise tags, if they
have any, narrow it further: a tagged service gets an event when one of its tags is the
event's kind (`takeover`), a severity name meaning "this bad or worse" (`warning` gets
warning, error, critical, ...), or `all`/`always`/`minisft`. Untagged services get all.

Title and body are `str.format` templates over the event fields: {node} {kind} {severity}
{monitor} {address} {state} {reason} {time} {seq} {details}. Missing values print as "-",
unknown placeholders are left as they are.

Each delivery notifies every matching target concurrently (blocking apprise calls run in
threads). If some fail, the DeliveryError names only the target's position and scheme,
never its URL (which can hold passwords and tokens). The targets that succeeded are
remembered for that event, so the retry of the same event goes only to the ones that
failed: one dead mail server does not duplicate messages on the chat target.

apprise paces some services itself (e.g. at most one mail per 5.5 s per mail target): a
burst of events reaches a mail target over a minute or so, still in order, while the other
sinks and the daemon carry on.

apprise is imported in start(), so a daemon without apprise configured never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minisft.config.model import AppriseConfig
from minisft.core.events import Event, EventKind, Severity
from minisft.sinks.base import DeliveryError, EventFilter, Sink

log = logging.getLogger("minisft.sinks.apprise")

DEFAULT_TITLE = AppriseConfig.title
DEFAULT_BODY = AppriseConfig.body

RECOVERY_KINDS = frozenset({
    EventKind.SERVICE_RECOVERED, EventKind.CONFLICT_CLEARED, EventKind.LOOKSALIVE_UP,
    EventKind.PEER_UP, EventKind.LINK_UP, EventKind.MEMBER_BACK, EventKind.REJOINED,
})
_MATCH_EVERYTHING = frozenset({"all", "always", "minisft"})


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
    service: Any  # an apprise NotifyBase
    filter: EventFilter
    tags: frozenset[str] = field(default_factory=frozenset)  # from a config file only

    def accepts(self, event: Event) -> bool:
        return self.filter.accepts(event) and tags_accept(self.tags, event)


class AppriseSink(Sink):
    name = "apprise"

    def __init__(self, config: AppriseConfig, *, name: str = "apprise") -> None:
        self.name = name
        self.config = config
        self.filter = _filter_from(config.kinds or None, config.min_severity, EventFilter())
        self.entries = [parse_url_entry(e, self.filter) for e in config.urls]
        self.title_template = self._checked(config.title, DEFAULT_TITLE, "title")
        self.body_template = self._checked(config.body, DEFAULT_BODY, "body")
        self.stats: dict[str, int] = {"targets": 0, "notified": 0, "failed": 0}
        self._targets: list[_Target] = []
        self._done: tuple[int, set[int]] = (0, set())  # (seq, targets already notified)
        self._apprise: Any = None

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

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        import apprise  # lazily: only daemons with apprise configured pay for it

        self._apprise = apprise
        self._targets = await asyncio.to_thread(self._build_targets, apprise)
        self.stats["targets"] = len(self._targets)

    def _build_targets(self, apprise: Any) -> list[_Target]:
        targets: list[_Target] = []
        for i, entry in enumerate(self.entries, 1):
            label = f"url#{i} ({entry.scheme})"
            ap = apprise.Apprise()
            if not ap.add(entry.url, tag=list(entry.tags) or None):
                raise DeliveryError(f"apprise {label}: not a valid apprise URL")
            for svc in ap.find():
                targets.append(_Target(label, svc, entry.filter or self.filter))
        if self.config.config_file is not None:
            path = self.config.config_file
            conf = apprise.AppriseConfig()
            if not conf.add(str(path)):
                raise DeliveryError(f"apprise config file {path}: cannot be loaded")
            ap = apprise.Apprise()
            ap.add(conf)
            services = list(ap.find())
            if not services:
                raise DeliveryError(f"apprise config file {path}: no valid URL in it")
            for j, svc in enumerate(services, 1):
                kind = getattr(svc, "service_name", None) or type(svc).__name__
                targets.append(_Target(f"{path.name}#{j} ({kind})", svc, self.filter,
                                       frozenset(str(t) for t in (svc.tags or ()))))
        if not targets:
            raise DeliveryError("apprise: no URL configured")
        return targets

    # ------------------------------------------------------------------ deliver

    def notify_type(self, event: Event) -> Any:
        nt = self._apprise.NotifyType
        if event.severity <= Severity.ERROR:
            return nt.FAILURE
        if event.severity == Severity.WARNING:
            return nt.WARNING
        if event.kind in RECOVERY_KINDS:
            return nt.SUCCESS
        return nt.INFO

    async def deliver(self, event: Event) -> None:
        if self._apprise is None:
            await self.start()
        title = render(self.title_template, event)
        body = render(self.body_template, event)
        ntype = self.notify_type(event)
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
        results = await asyncio.gather(
            *(asyncio.to_thread(self._notify_one, t, title, body, ntype) for _, t in todo))
        failed = [t.label for (i, t), ok in zip(todo, results, strict=True) if not ok]
        done |= {i for (i, _), ok in zip(todo, results, strict=True) if ok}
        self.stats["notified"] += len(todo) - len(failed)
        self.stats["failed"] += len(failed)
        if failed:
            if event.seq > 0:
                self._done = (event.seq, done)
            raise DeliveryError(f"apprise: {len(failed)} of {len(todo)} target(s) failed: "
                                f"{', '.join(failed)}")
        self._done = (0, set())

    def _notify_one(self, target: _Target, title: str, body: str, ntype: Any) -> bool:
        try:
            return bool(target.service.notify(body=body, title=title, notify_type=ntype,
                                              body_format=self._apprise.NotifyFormat.TEXT))
        except Exception as exc:  # a plugin bug: report by type only, the text may hold URLs
            log.debug("apprise %s raised %s", target.label, type(exc).__name__)
            return False

    async def close(self) -> None:
        self._targets = []
        self._apprise = None
