"""status.json on disk, for check_minisft, the SNMP helper and admins.

Written atomically by `minisft.status.dump`. When it cannot be written (disk full, state
directory gone or read-only), the old file is removed rather than left in place: a stale
status.json would keep telling check_minisft (and snmpd) the state of the moment it was
last written -- "OK web watching" while this node holds the address. Removed, it makes
them say UNKNOWN at once (when even the unlink fails, the file goes stale and
check_minisft says so after --max-age). One error and one STATE_DIR_FAILING event per
episode, and a line when it is written again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from minisft.core.events import EventKind, Notice
from minisft.status import StatusDocument, dump

log = logging.getLogger("minisft")


class StatusFile:
    def __init__(self, path: Path, emit: Callable[[Notice], object]) -> None:
        self.path = path
        self._emit = emit
        self.failing = False

    def write(self, doc: StatusDocument) -> None:
        try:
            dump(doc, self.path)
        except OSError as exc:
            self._failed(exc)
        else:
            if self.failing:
                self.failing = False
                log.warning("%s is written again", self.path)

    def _failed(self, exc: OSError) -> None:
        for stale in (self.path.with_suffix(".json.tmp"), self.path):
            with contextlib.suppress(OSError):
                stale.unlink()
        if self.failing:
            return
        self.failing = True
        why = exc.strerror or exc
        log.error("cannot write %s (%s): monitoring that reads it (check_minisft, snmpd) "
                  "sees no current state until this is fixed", self.path, why)
        self._emit(Notice(EventKind.STATE_DIR_FAILING,
                          f"cannot write {self.path} ({why}): check_minisft and snmpd see "
                          "no current state until this is fixed"))
