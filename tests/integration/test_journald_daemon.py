"""Under systemd, a real daemon's log reaches a real journald once per event, natively.

The daemon runs as root (as minisft.service runs it), with stdout/stderr connected to
journald's stream socket and JOURNAL_STREAM set, the way systemd starts a service, and
its syslog sink pointed at journald's own syslog socket (what /dev/log is under systemd).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Cluster, monitor_cfg, wait_until

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
VIP = "192.0.2.10/24"


def journal_entries(journal_dir: Path) -> list[dict[str, Any]]:
    files = sorted(journal_dir.glob("journal/*/*.journal"))
    if not files:
        return []
    proc = subprocess.run(["journalctl", "--no-pager", "-o", "json",
                           *(f"--file={f}" for f in files)],
                          capture_output=True, text=True, timeout=30)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_each_event_reaches_the_journal_once_with_priority_and_fields(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journald"
    journal_dir.mkdir()
    with Cluster(tmp_path, ["alpha", "beta"]) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        beta.configure([monitor_cfg("web", VIP, "primary", peer=alpha.host.ip)])
        alpha.configure([monitor_cfg("web", VIP, "backup", peer=beta.host.ip)],
                        logging={"level": "info", "syslog": True,
                                 "syslog_socket": "/run/systemd/journal/dev-log"})
        beta.start()
        wait_until("beta to claim the address", lambda: beta.holds(VIP))
        alpha.start(wrap=["unshare", "--mount", "--propagation", "private", sys.executable,
                          str(ROOT / "tests" / "support" / "under_journald.py"),
                          str(journal_dir), "--"])
        alpha.wait_event("looksalive_up", "web")
        beta.host.link_down()  # beta dies: alpha takes over (warning and critical events)
        alpha.wait_event("takeover", "web")
        events = alpha.events()

        def all_events_in_journal() -> list[dict[str, Any]] | None:
            entries = journal_entries(journal_dir)
            seqs = {e.get("MINISFT_SEQ") for e in entries}
            return entries if all(str(ev.seq) in seqs for ev in events) else None

        entries = wait_until("every event in the journal", all_events_in_journal)

    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "minisft"]
    # one path: everything the daemon logs arrives natively, nothing over stderr or syslog
    assert ours
    assert {e["_TRANSPORT"] for e in ours} == {"journal"}, \
        sorted({(e["_TRANSPORT"], e["MESSAGE"]) for e in ours if e["_TRANSPORT"] != "journal"})
    assert any("syslog sink off" in e["MESSAGE"] for e in ours)
    kinds = {ev.kind.value for ev in events}
    assert {"daemon_started", "looksalive_up", "looksalive_down", "takeover"} <= kinds
    for ev in events:
        found = [e for e in ours if e.get("MINISFT_SEQ") == str(ev.seq)]
        assert len(found) == 1, (ev, found)  # once, not twice
        entry = found[0]
        assert entry["PRIORITY"] == str(int(ev.severity)), (ev, entry["PRIORITY"])
        assert entry["MINISFT_EVENT"] == ev.kind.value
        assert entry.get("MINISFT_MONITOR") == ev.monitor
        assert entry["MESSAGE"] == ev.summary()
        assert entry["SYSLOG_FACILITY"] == "3"  # daemon, the configured default
    priorities = {e["PRIORITY"] for e in ours if "MINISFT_EVENT" in e}
    assert len(priorities) >= 2, priorities  # not everything at one level


def test_outside_systemd_the_log_stays_on_stderr(tmp_path: Path) -> None:
    """A daemon started by hand (JOURNAL_STREAM inherited, stderr redirected) keeps the
    classic stderr format: the stream check is by device:inode, not by the variable."""
    with Cluster(tmp_path, ["alpha"]) as c:
        alpha = c.nodes["alpha"]
        alpha.configure([monitor_cfg("web", VIP, "primary")])
        alpha.start(wrap=["env", "JOURNAL_STREAM=8:12345"])
        alpha.wait_event("claimed", "web")
        assert any(line.startswith("claimed") for line in alpha.logged_events()), alpha.log()
