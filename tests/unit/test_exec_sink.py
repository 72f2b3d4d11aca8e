"""Event commands (`alerting.exec`) run by the real delivery runtime over a real journal:
real shell scripts as receivers, real processes, no mocks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from minisft.config.model import ExecHookConfig
from minisft.core.events import Event, EventKind, Notice
from minisft.runtime.delivery import DeliveryManager
from minisft.runtime.journal import EventJournal
from minisft.sinks.exec_sink import ExecSink
from tests.unit.test_delivery import _run as run
from tests.unit.test_delivery import _until as until

# The receiver: records its start time, its environment and stdin; fails while a flag
# file exists (a receiver outage), printing a reason on stderr.
HOOK = """\
#!/bin/sh
start=$(date +%s.%N)
if [ -e "{flag}" ]; then echo "first line" >&2; echo "ops API unreachable" >&2; exit 3; fi
payload=$(cat)
env | sort | tr '\\n' ' ' > "{out}.env.$MINISFT_SEQ"
printf '%s %s %s %s\\n' "$start" "$MINISFT_SEQ" "$MINISFT_EVENT" "$payload" >> "{out}"
"""


def hook_script(tmp: Path, body: str = HOOK) -> tuple[Path, Path, Path]:
    out, flag = tmp / "runs.log", tmp / "fail"
    script = tmp / "hook.sh"
    script.write_text(body.format(out=out, flag=flag))
    script.chmod(0o755)
    return script, out, flag


def runs(out: Path) -> list[tuple[float, int, str, dict[str, object]]]:
    if not out.exists():
        return []
    rows = []
    for line in out.read_text().splitlines():
        start, seq, kind, payload = line.split(" ", 3)
        rows.append((float(start), int(seq), kind, json.loads(payload)))
    return rows


def journal(tmp: Path) -> EventJournal:
    j = EventJournal(tmp / "journal")
    j.open()
    return j


def emit(j: EventJournal, mgr: DeliveryManager, i: int,
         kind: EventKind = EventKind.TAKEOVER) -> Event:
    event = j.append(Notice(kind, f"event {i}", monitor="web", address="192.0.2.10",
                            state="holding"), node="beta", time=time.time())
    mgr.publish(event)
    return event


def status(mgr: DeliveryManager) -> dict[str, object]:
    (st,) = mgr.status()
    return st


def test_each_event_runs_once_in_order_with_json_and_a_clean_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINISFT_SNMP_AUTH_KEY", "daemon-S3cret")  # a daemon's secret
    script, out, _ = hook_script(tmp_path)
    hook = ExecHookConfig(name="ops", command=(str(script),), kinds=("takeover", "released"))

    async def main() -> None:
        j = journal(tmp_path)
        mgr = DeliveryManager(j, [ExecSink(hook)], backoff_initial=0.01, backoff_max=0.05)
        await mgr.start()
        sent = []
        for i in range(10):
            kind = EventKind.RELEASED if i % 3 == 2 else EventKind.TAKEOVER
            sent.append(emit(j, mgr, i, kind))
            emit(j, mgr, 100 + i, EventKind.PEER_UP)  # filtered out by `events`
        await until("ten runs", lambda: len(runs(out)) >= 10)
        await asyncio.sleep(0.3)
        got = runs(out)
        assert [r[1] for r in got] == [e.seq for e in sent], "once each, in journal order"
        assert [r[2] for r in got] == [e.kind.value for e in sent]
        assert [Event.from_dict(r[3]) for r in got] == sent  # stdin: the event as JSON
        env = (tmp_path / f"runs.log.env.{sent[0].seq}").read_text()
        assert "daemon-S3cret" not in env and "MINISFT_SNMP_AUTH_KEY" not in env
        for var in (f"MINISFT_SEQ={sent[0].seq}", "MINISFT_EVENT=takeover",
                    "MINISFT_MONITOR=web", "MINISFT_ADDRESS=192.0.2.10",
                    "MINISFT_NODE=beta", "MINISFT_SEVERITY=warning", "MINISFT_HOOK=ops",
                    "MINISFT_STATE=holding"):
            assert var in env.split(), var
        await mgr.stop()
        assert j.cursor("exec-ops") == j.last_seq  # the filtered ones advanced it too

    run(main)


def test_a_failing_command_holds_its_event_and_the_later_ones_until_it_succeeds(
        tmp_path: Path) -> None:
    script, out, flag = hook_script(tmp_path)
    flag.touch()
    hook = ExecHookConfig(name="ops", command=(str(script),))

    async def main() -> None:
        j = journal(tmp_path)
        mgr = DeliveryManager(j, [ExecSink(hook)], backoff_initial=0.05, backoff_max=0.2)
        await mgr.start()
        sent = [emit(j, mgr, i).seq for i in range(5)]
        await until("retrying", lambda: status(mgr)["failures"] >= 3)  # type: ignore[operator]
        st = status(mgr)
        assert st["state"] == "retrying" and st["pending"] == 5
        assert st["last_error"] == "exec ops: exited with code 3: ops API unreachable"
        assert runs(out) == []
        flag.unlink()  # the receiver is back
        await until("all five", lambda: len(runs(out)) >= 5)
        await asyncio.sleep(0.3)
        assert [r[1] for r in runs(out)] == sent
        assert status(mgr)["state"] == "ok"
        await mgr.stop()

    run(main)


def test_a_command_past_its_timeout_is_killed_with_its_children_and_retried(
        tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\nsleep 600 &\necho $! >> {pids}\necho $$ >> {pids}\n"
                      "wait\n")
    script.chmod(0o755)
    hook = ExecHookConfig(name="slow", command=(str(script),), timeout=0.5)

    async def main() -> None:
        j = journal(tmp_path)
        sink = ExecSink(hook)
        mgr = DeliveryManager(j, [sink], backoff_initial=0.05, backoff_max=0.1)
        await mgr.start()
        emit(j, mgr, 0)
        await until("two attempts", lambda: sink.stats["runs"] >= 2)
        st = status(mgr)
        assert st["last_error"] == "exec slow: still running after 0.5 s; killed it"
        await mgr.stop(timeout=0.2)
        await asyncio.sleep(0.2)
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) >= 4
        alive = [p for p in started if _alive(p)]
        assert alive == [], "no hook process (or its child) is left running"
        assert j.cursor("exec-slow") == 0  # not delivered: it runs again after a restart

    run(main)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of another parent counts as gone
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_runs_of_one_command_never_overlap(tmp_path: Path) -> None:
    """test-alert racing a delivery: the lock serialises them."""
    log = tmp_path / "spans"
    script = tmp_path / "span.sh"
    script.write_text(f"#!/bin/sh\necho begin $MINISFT_SEQ >> {log}\nsleep 0.2\n"
                      f"echo end $MINISFT_SEQ >> {log}\n")
    script.chmod(0o755)
    hook = ExecHookConfig(name="span", command=(str(script),))

    async def main() -> None:
        j = journal(tmp_path)
        mgr = DeliveryManager(j, [ExecSink(hook)], backoff_initial=0.05)
        await mgr.start()
        emit(j, mgr, 0)
        test_event = Event.stamp(Notice(EventKind.TEST_ALERT, "test"), seq=0,
                                 time=time.time(), node="beta")
        result = await mgr.test_all(test_event)
        assert result == {"exec-span": None}
        await until("both ran", lambda: log.exists() and log.read_text().count("end") >= 2)
        lines = log.read_text().split("\n")[:4]
        assert [ln.split()[0] for ln in lines] == ["begin", "end", "begin", "end"]
        await mgr.stop()

    run(main)


def test_a_restart_runs_exactly_the_commands_not_yet_done(tmp_path: Path) -> None:
    script, out, flag = hook_script(tmp_path)
    hook = ExecHookConfig(name="ops", command=(str(script),))

    async def main() -> None:
        j = journal(tmp_path)
        mgr = DeliveryManager(j, [ExecSink(hook)], backoff_initial=0.05, backoff_max=0.1)
        await mgr.start()
        first = [emit(j, mgr, i).seq for i in range(3)]
        await until("first three", lambda: len(runs(out)) >= 3)
        flag.touch()
        later = [emit(j, mgr, i).seq for i in range(3, 6)]
        await until("failing", lambda: status(mgr)["failures"] >= 2)  # type: ignore[operator]
        await mgr.stop(timeout=0.2)
        j.close()
        flag.unlink()

        j2 = journal(tmp_path)
        mgr2 = DeliveryManager(j2, [ExecSink(hook)], backoff_initial=0.05)
        await mgr2.start()
        await until("the rest", lambda: len(runs(out)) >= 6)
        await asyncio.sleep(0.3)
        assert [r[1] for r in runs(out)] == first + later
        await mgr2.stop()

    run(main)


def test_a_command_killed_by_a_signal_is_reported_so(tmp_path: Path) -> None:
    script = tmp_path / "die.sh"
    script.write_text("#!/bin/sh\nkill -TERM $$\n")
    script.chmod(0o755)
    sink = ExecSink(ExecHookConfig(name="die", command=(str(script),)))
    event = Event.stamp(Notice(EventKind.TAKEOVER, "x"), seq=1, time=0.0, node="n")
    with pytest.raises(Exception, match=f"exec die: killed by signal {int(signal.SIGTERM)}"):
        asyncio.run(sink.deliver(event))
