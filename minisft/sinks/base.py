"""The one interface every monitoring destination implements.

A sink only knows how to deliver one event. Queuing, the durable spool (the event journal
plus a per-sink cursor), retries with backoff and ordering are the runtime's job
(`minisft.runtime.delivery`), so a slow or dead sink never blocks the failover path and
a new sink gets all of that for free.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from minisft.core.events import Event, Severity


class DeliveryError(Exception):
    """The event could not be delivered now; the runtime keeps it and retries later."""


@dataclass(frozen=True)
class EventFilter:
    """Which events a sink (or one of its targets) wants: by kind and minimum severity."""

    kinds: frozenset[str] = field(default_factory=frozenset)  # empty: all kinds
    min_severity: Severity = Severity.DEBUG  # DEBUG lets everything through

    def accepts(self, event: Event) -> bool:
        if self.kinds and event.kind.value not in self.kinds:
            return False
        return event.severity <= self.min_severity  # lower value = more severe


class Sink(abc.ABC):
    """A monitoring destination. Subclasses set `name` (unique per daemon, used for the
    spool cursor file) and implement `deliver`."""

    name: str = "sink"
    filter: EventFilter = EventFilter()

    def accepts(self, event: Event) -> bool:
        return self.filter.accepts(event)

    async def start(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Open transports. Called once before the first delivery."""

    @abc.abstractmethod
    async def deliver(self, event: Event) -> None:
        """Deliver one event, or raise DeliveryError to have it retried later.

        Must not block the event loop: use asyncio I/O or `asyncio.to_thread`.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release transports. Called once at shutdown."""


class NullSink(Sink):
    """The sink for 'nothing configured': accepts nothing, delivers nothing."""

    name = "null"

    def accepts(self, event: Event) -> bool:
        return False

    async def deliver(self, event: Event) -> None:
        return None
