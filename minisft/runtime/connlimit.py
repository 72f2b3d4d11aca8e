"""At most N connections at once on one listener: the daemon's file descriptors are not
the client's to spend.

Without a cap, 1100 idle connections to /metrics took every descriptor of the default
limit (1024): each failed accept() logged a traceback (2,755 in 20 s), and the control
socket and the raw sockets of the failover path could not open theirs. Beyond the cap a
connection is closed at once (its descriptor freed); one warning per interval says how
many were refused, so a flood does not flood the log too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("minisft")

REFUSAL_LOG_INTERVAL = 60.0


class ConnectionLimit:
    def __init__(self, what: str, limit: int, *, interval: float = REFUSAL_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.limit = limit
        self.active = 0
        self.refused = 0  # since start, for status and tests
        self._interval = interval
        self._clock = clock
        self._unlogged = 0
        self._next_log = 0.0

    def enter(self) -> bool:
        """True: serve this connection (call leave() when done). False: refuse it."""
        if self.active < self.limit:
            self.active += 1
            return True
        self.refused += 1
        self._unlogged += 1
        now = self._clock()
        if now >= self._next_log:
            log.warning("%s: %d connection(s) refused: %d already open (the limit)",
                        self.what, self._unlogged, self.limit)
            self._unlogged = 0
            self._next_log = now + self._interval
        return False

    def leave(self) -> None:
        self.active -= 1
