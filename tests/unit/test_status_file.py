"""status.json that cannot be written must not keep telling monitoring an old state."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from minisft.config.loader import parse_config
from minisft.core.events import Event, EventKind, Notice, Severity
from minisft.runtime.daemon import Daemon


class _Recorder:
    """Stands for the delivery runtime: what the sinks would get."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def status(self) -> list[dict[str, object]]:
        return []


CONFIG = """
node: {name: a, local_ip: 192.0.2.1}
state_dir: %s
control_socket: %s/ctl.sock
monitors: []
"""


def test_a_failed_status_write_is_an_error_and_check_minisft_stops_saying_ok(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    daemon = Daemon(parse_config(CONFIG % (tmp_path, tmp_path)))
    status = tmp_path / "status.json"
    daemon.write_status()
    assert json.loads(status.read_text())["node"] == "a"
    plugin = [sys.executable, "-m", "minisft.nagios.plugin", "--status", str(status)]
    assert subprocess.run(plugin, capture_output=True, text=True,
                          check=False).returncode == 0

    sent = _Recorder()
    daemon.delivery = sent
    (tmp_path / "status.json.tmp").mkdir()  # every write now fails (as on a full disk)
    caplog.set_level(logging.DEBUG, logger="minisft")
    daemon.write_status()
    daemon.write_status()
    failing = [e for e in sent.events if e.kind is EventKind.STATE_DIR_FAILING]
    assert len(failing) == 1 and failing[0].severity <= Severity.WARNING
    assert "status.json" in failing[0].reason
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot write" in errors[0].getMessage()
    out = subprocess.run(plugin, capture_output=True, text=True, check=False)
    assert out.returncode == 3 and out.stdout.startswith("MINISFT UNKNOWN"), out.stdout


def test_an_unwritable_or_deleted_journal_is_an_event_through_the_sinks(
        tmp_path: Path) -> None:
    import shutil

    from minisft.runtime.journal import EventJournal

    daemon = Daemon(parse_config(CONFIG % (tmp_path, tmp_path)))
    sent = _Recorder()
    daemon.delivery = sent
    daemon.journal = EventJournal(tmp_path / "journal")
    daemon.journal.open()
    daemon.emit(Notice(EventKind.PAUSED, "one"))
    shutil.rmtree(tmp_path / "journal")  # rm -rf under the running daemon
    daemon.emit(Notice(EventKind.PAUSED, "two"))
    shutil.rmtree(tmp_path / "journal")
    (tmp_path / "journal").write_text("not a directory")  # now it cannot be written
    daemon.journal._close_fd()
    daemon.emit(Notice(EventKind.PAUSED, "three"))
    daemon.emit(Notice(EventKind.PAUSED, "four"))
    kinds = [(e.kind, e.reason.split(":")[0]) for e in sent.events]
    failing = [r for k, r in kinds if k is EventKind.STATE_DIR_FAILING]
    assert len(failing) == 2, kinds
    assert any("deleted" in e.reason for e in sent.events)
    assert any("cannot be written" in e.reason for e in sent.events)
    seqs = [e.seq for e in sent.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
