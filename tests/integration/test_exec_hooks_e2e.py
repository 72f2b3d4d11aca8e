"""Event commands (`alerting.exec`) on REAL daemons in the namespace lab: a real takeover
runs the admin's script with the event, once and in journal order, also across a receiver
outage (the script exits non-zero) and a daemon restart (SIGTERM, release, start, takeover).

alpha (192.0.2.1) is primary for web (192.0.2.10/24), beta its backup with the hook.
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from minisft.core.events import Event
from tests.integration.cluster import wait_until
from tests.integration.test_monitoring_e2e import lab, start_pair, stop_daemons, take_over

pytestmark = [pytest.mark.netns]

DAEMON_SECRET = "daemon-env-S3cret"

# What an admin would write: log the event somewhere; fail while the "receiver" is down.
HOOK = """\
#!/bin/sh
start=$(date +%s.%N)
if [ -e "{flag}" ]; then echo "ops endpoint unreachable" >&2; exit 1; fi
payload=$(cat)
env > "{out}.env"
printf '%s %s\\n' "$start" "$payload" >> "{out}"
"""


def hook(tmp: Path) -> tuple[dict[str, Any], Path, Path]:
    out, flag = tmp / "hook-runs.log", tmp / "receiver-down"
    script = tmp / "notify-ops"
    script.write_text(HOOK.format(out=out, flag=flag))
    script.chmod(0o755)
    config = {"exec": [{"name": "ops", "command": [str(script)], "timeout": "5s"}]}
    return config, out, flag


def runs(out: Path) -> list[tuple[float, Event]]:
    if not out.exists():
        return []
    rows = []
    for line in out.read_text().splitlines():
        start, payload = line.split(" ", 1)
        rows.append((float(start), Event.from_dict(json.loads(payload))))
    return rows


def test_a_takeover_runs_the_hook_once_in_order_across_an_outage_and_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the daemons inherit the test's environment: a secret there must not reach the hook
    monkeypatch.setenv("MINISFT_SNMP_AUTH_KEY", DAEMON_SECRET)
    alerting, out, flag = hook(tmp_path)
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(lab(tmp_path, alerting=alerting))
        beta = c.nodes["beta"]
        start_pair(c)

        def seqs() -> list[int]:
            return [e.seq for _, e in runs(out)]

        def settled() -> int | None:
            last = beta.last_seq()
            return last if seqs() and seqs()[-1] == last else None

        before: int = wait_until("beta's events through the hook", settled, timeout=30)
        # every event so far ran once, in order, starting from the daemon's first
        assert seqs() == [e.seq for e in beta.events()]

        # 1. A live takeover: the hook gets it with its fields, and nothing secret.
        first = take_over(c)
        wait_until("the takeover through the hook", lambda: first.seq in seqs())
        env = dict(line.split("=", 1) for line in (Path(f"{out}.env")).read_text()
                   .splitlines() if "=" in line)
        latest = next(e for _, e in runs(out) if e.seq == first.seq)
        assert latest == first  # stdin: exactly the journaled event
        assert DAEMON_SECRET not in Path(f"{out}.env").read_text()
        assert {k: env.get(k) for k in ("MINISFT_EVENT", "MINISFT_MONITOR", "MINISFT_ADDRESS",
                                        "MINISFT_NODE", "MINISFT_SEQ")} == {
            "MINISFT_EVENT": "takeover", "MINISFT_MONITOR": "web",
            "MINISFT_ADDRESS": "192.0.2.10", "MINISFT_NODE": "beta",
            "MINISFT_SEQ": str(first.seq)}

        # 2. The receiver goes down; meanwhile a restart (release) and a new takeover.
        wait_until("quiet", lambda: settled())
        before = beta.last_seq()
        flag.touch()
        c.nodes["alpha"].host.link_up()
        c.nodes["alpha"].stop()  # alpha gone for good: beta takes over after its restart
        assert beta.stop(signal.SIGTERM) == 0
        released = beta.wait_event("released", "web", after=before, timeout=5)
        beta.start()
        second = beta.wait_event("takeover", "web", after=released.seq, timeout=30)
        wait_until("the hook to fail on the new events",
                   lambda: _sink(beta)["state"] == "retrying")
        assert _sink(beta)["last_error"] == "exec ops: exited with code 1: ops endpoint " \
                                            "unreachable"
        assert seqs()[-1] <= before

        # 3. The receiver is back: every event since, once, in order.
        flag.unlink()
        expected = [e.seq for e in beta.events() if e.seq > before]
        assert second.seq in expected and released.seq in expected
        wait_until("every event through the hook", lambda: set(expected) <= set(seqs()), 60)
        time.sleep(1.0)  # a duplicate would show up now
        window = [s for s in seqs() if s > before and s <= expected[-1]]
        assert window == expected, "hook runs: lost, duplicated or out of order"
        assert len(seqs()) == len(set(seqs()))
        stop_daemons(c)

    # journal -> command start, for the events delivered live (not the outage's backlog)
    live = [start - e.time for start, e in runs(out) if e.seq <= first.seq]
    print(f"\nexec hook latency, journal -> command start, {len(live)} live events: "
          f"median {statistics.median(live) * 1000:.1f} ms, max {max(live) * 1000:.1f} ms")


def _sink(node: Any) -> dict[str, Any]:
    sinks = node.status()["sinks"]
    return next(s for s in sinks if s["name"] == "exec-ops")


def test_a_hook_that_hangs_delays_no_takeover(tmp_path: Path) -> None:
    """The hook runs in its sink's task, off the failover path: while it is stuck on the
    daemon's first event, beta still takes the address over."""
    pids = tmp_path / "pids"
    script = tmp_path / "stuck"
    script.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 120\n")
    script.chmod(0o755)
    alerting = {"exec": [{"name": "stuck", "command": [str(script)], "timeout": "100s"}]}
    with lab(tmp_path, alerting=alerting) as c:
        beta = c.nodes["beta"]
        start_pair(c)
        wait_until("the hook to hang", pids.exists)
        (pid,) = [int(p) for p in pids.read_text().split()]
        take_over(c)
        assert Path(f"/proc/{pid}").exists(), "the first run is still hanging"
        assert pids.read_text().split() == [str(pid)], "never two runs at once"
        sink = next(s for s in beta.status()["sinks"] if s["name"] == "exec-stuck")
        assert sink["delivered"] == 0 and sink["pending"] >= 2
        stop_daemons(c)
    assert not Path(f"/proc/{pid}").exists(), "a stop leaves no hook running"
