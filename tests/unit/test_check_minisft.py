"""check_minisft against real status files: states, exit codes, perfdata, ranges, options.

Most cases call `main(argv)` in-process (the very function the console script runs); a few
run `python -m minisft.nagios.plugin` in a subprocess where the real process matters
(exit status of usage errors, --help, import weight, timeouts).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from minisft.nagios.plugin import Range, State, main
from minisft.status import MonitorStatus, PoolStatus, StatusDocument
from tests.support.status_docs import monitor, ok_status, pool, with_monitor, write

ROOT = Path(__file__).resolve().parents[2]

# Monitoring Plugins guidelines: 'label'=value[UOM];[warn];[crit];[min];[max]
_NUM = r"-?\d+(?:\.\d+)?"
_RANGE = rf"@?(?:~|{_NUM})?(?::(?:{_NUM})?)?"
PERF_ITEM = re.compile(
    rf"^'[^'=]+'=(?:{_NUM}(?:us|ms|s|%|B|KB|MB|TB|c)?)"
    rf"(?:;(?:{_RANGE})?(?:;(?:{_RANGE})?(?:;(?:{_NUM})?(?:;(?:{_NUM})?)?)?)?)?$"
)
STATUS_LINE = re.compile(r"^MINISFT (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+(?: \| (.+))?$")


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minisft.nagios.plugin", *argv],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def perf_items(output: str) -> list[str]:
    first = output.splitlines()[0]
    m = STATUS_LINE.match(first)
    assert m, f"status line not in plugin format: {first!r}"
    # items are space-separated; a quoted label may itself contain spaces
    return re.findall(r"'[^']*'=\S*|\S+", m.group(2) or "")


# ------------------------------------------------------------------------------- states


def test_state_enum_carries_codes_and_labels() -> None:
    assert [(s.code, s.label) for s in State] == [
        (0, "OK"), (1, "WARNING"), (2, "CRITICAL"), (3, "UNKNOWN")]


def test_ok_when_every_monitor_is_as_configured(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, ok_status())
    code, out = check(capsys, "--status", str(path))
    assert code == 0, out
    assert out.startswith("MINISFT OK - alpha: 2 monitors as configured (web holding, "
                          "db watching)")
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize(("mon", "needle"), [
    (monitor("web", "backup", "holding", "self"), "runs on this backup node"),
    (monitor("web", "primary", "watching", "other"), "runs on the backup"),
    (monitor("web", "primary", "holding", "self", paused=True), "paused"),
    (monitor("web", "backup", "watching", "other", looksalive={"health": "degraded"}),
     "LooksAlive degraded"),
    (monitor("web", "backup", "watching", "other",
             isalive={"ok": False, "detail": "HTTP 503"}), "service check failing (HTTP 503)"),
    (monitor("web", "backup", "watching", "other", link_up=False), "link down"),
    (monitor("web", "backup", "starting", "unknown"), "not known yet"),
], ids=["backup-holding", "primary-sees-backup", "paused", "degraded", "isalive-failing",
        "link-down", "starting"])
def test_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                 mon: MonitorStatus, needle: str) -> None:
    status = replace(ok_status(), monitors=(mon,))
    code, out = check(capsys, "--status", str(write(tmp_path, status)))
    assert code == 1, out
    assert out.startswith("MINISFT WARNING - alpha: web: ")
    assert needle in out.splitlines()[0]


def test_warning_when_a_sink_retries(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    status = ok_status()
    status = replace(status, sinks=({**status.sinks[0], "state": "retrying", "pending": 4,
                                     "failures": 7, "last_error": "timeout | no answer"},))
    code, out = check(capsys, "--status", str(write(tmp_path, status)))
    assert code == 1, out
    assert "sink snmp-192.0.2.9-162-v2c-trap: retrying" in out
    # daemon text must not inject a second `|` into the status line
    assert out.count("|") == 1
    # a per-monitor service ignores sinks
    code, out = check(capsys, "--status", str(write(tmp_path, status)), "--no-sinks")
    assert code == 0, out


@pytest.mark.parametrize(("mon", "needle"), [
    (monitor("web", "backup", "watching", "none", looksalive={"health": "down"}),
     "192.0.2.10 is held by nobody"),
    (monitor("web", "primary", "holding", "self", conflict_open=True), "address conflict"),
    (monitor("web", "backup", "watching", "other",
             isalive={"ok": False, "dead": True, "detail": "connection refused"}),
     "service dead behind a live host (connection refused)"),
    (monitor("web", "primary", "holding", "self", link_up=False),
     "holds 192.0.2.10 but its link is down"),
], ids=["nobody", "conflict", "service-dead", "holder-link-down"])
def test_critical(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                  mon: MonitorStatus, needle: str) -> None:
    status = replace(ok_status(), monitors=(mon, monitor("db", "backup", "holding", "self")))
    code, out = check(capsys, "--status", str(write(tmp_path, status)))
    assert code == 2, out
    first = out.splitlines()[0]
    assert first.startswith(f"MINISFT CRITICAL - alpha: web: {needle}")
    # the warning of the other monitor is still reported, after the critical one
    assert first.index(needle) < first.index("db: ")


def test_monitor_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = ok_status()
    status = replace(status, monitors=(status.monitors[0],
                                       monitor("db", "backup", "watching", "none")))
    path = str(write(tmp_path, status))
    assert check(capsys, "--status", path)[0] == 2
    code, out = check(capsys, "--status", path, "--monitor", "web")
    assert code == 0, out
    assert "'db_" not in out
    code, out = check(capsys, "--status", path, "-m", "web", "-m", "db")
    assert code == 2
    code, out = check(capsys, "--status", path, "--monitor", "nope")
    assert code == 3
    assert "no monitor named nope on alpha (known: db, web)" in out
    code, out = check(capsys, "--status", path, "--no-monitors")
    assert code == 0, out
    assert "daemon running, no monitors checked, 1 sink ok" in out


# ------------------------------------------------------------------------------- UNKNOWN


def test_unknown_when_status_file_missing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(capsys, "--status", str(tmp_path / "absent.json"))
    assert code == 3
    assert out.startswith("MINISFT UNKNOWN - status file ") and "not found" in out


def test_unknown_when_status_is_stale(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    status = replace(ok_status(), updated_at=time.time() - 60)
    path = str(write(tmp_path, status))
    code, out = check(capsys, "--status", path)
    assert code == 3
    assert "is 60 s old (max 5 s)" in out
    assert check(capsys, "--status", path, "--max-age", "120")[0] == 0


def test_unknown_when_daemon_pid_is_dead(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: the pid is free
    status = replace(ok_status(), pid=child.pid)
    code, out = check(capsys, "--status", str(write(tmp_path, status)))
    assert code == 3
    assert f"daemon pid {child.pid} is not running" in out


def test_unknown_when_daemon_stopped_cleanly(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    status = ok_status()
    # the daemon's last write on shutdown
    status = replace(status, stopped_at=status.updated_at)
    code, out = check(capsys, "--status", str(write(tmp_path, status)))
    assert code == 3
    assert out.startswith("MINISFT UNKNOWN - daemon stopped at ")


@pytest.mark.parametrize(("content", "needle"), [
    ("{not json", "not valid JSON"),
    ("[]", "not a JSON object"),
    (json.dumps({**ok_status().to_dict(), "version": 2}), "format version 2 not supported"),
    (json.dumps({k: v for k, v in ok_status().to_dict().items() if k != "updated_at"}),
     "no updated_at"),
])
def test_unknown_when_status_is_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        content: str, needle: str) -> None:
    path = tmp_path / "status.json"
    path.write_text(content)
    code, out = check(capsys, "--status", str(path))
    assert code == 3
    assert needle in out


def test_unknown_when_status_unreadable(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(capsys, "--status", str(tmp_path))  # a directory
    assert code == 3
    assert out.startswith("MINISFT UNKNOWN - cannot read status file")


@pytest.mark.parametrize("argv", [
    ["-w", "abc"], ["-c", "10:5"], ["--bogus"], ["--max-age", "-1"], ["-t", "0"],
    ["--monitor", "web", "--no-monitors"],
])
def test_usage_errors_exit_unknown(tmp_path: Path, argv: list[str]) -> None:
    path = write(tmp_path, ok_status())
    proc = run("--status", str(path), *argv)
    assert proc.returncode == 3, proc
    assert proc.stdout.startswith("MINISFT UNKNOWN - usage error: ")


def test_timeout_is_unknown(tmp_path: Path) -> None:
    fifo = tmp_path / "status.json"
    os.mkfifo(fifo)  # opening it blocks forever: no writer
    started = time.monotonic()
    proc = run("--status", str(fifo), "-t", "0.5")
    assert proc.returncode == 3
    assert proc.stdout.strip() == "MINISFT UNKNOWN - timeout after 0.5 s"
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------------------- config


def test_config_state_dir_locates_status(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    write(state_dir, ok_status())
    config = tmp_path / "minisft.yaml"
    config.write_text(f"node: {{name: alpha, local_ip: 192.0.2.1}}\nstate_dir: {state_dir}\n")
    code, out = check(capsys, "--config", str(config), "-vvv")
    assert code == 0, out
    assert f"status file: {state_dir / 'status.json'} (state_dir from {config})" in out


def test_explicit_config_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(capsys, "--config", str(tmp_path / "none.yaml"))
    assert code == 3
    assert "cannot read config" in out


# ------------------------------------------------------------------------------- perfdata


def test_perfdata_follows_the_guidelines(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    status = ok_status()
    status = replace(status, monitors=(*status.monitors,
                                       monitor("web 2", "primary", "probing", "unknown")))
    _code, out = check(capsys, "--status", str(write(tmp_path, status)),
                      "-w", "~:10", "-c", "@50:100", "--isalive-warning", "1000")
    items = perf_items(out)
    assert items, out
    for item in items:
        assert PERF_ITEM.match(item), f"bad perfdata item {item!r}"
    # no measured RTT yet: the metric is left out, never `U` (Icinga 2 rejects `U`)
    assert not any(item.startswith("'web 2_rtt'=") for item in items), items
    assert not any("=U" in item for item in items), items
    perf = out.splitlines()[0].split(" | ", 1)[1]
    # the watching monitor measured an RTT; the holder's RTT is undetermined
    assert "'db_rtt'=0.25ms;~:10;@50:100;0" in perf
    assert "'web_rtt'=" not in perf
    assert "'web_isalive'=12.5ms;1000;;0" in perf
    assert "'web_takeovers'=3c" in perf and "'web_fallbacks'=2c" in perf
    assert "'web_lost'=1c" in perf
    assert re.search(r"'web_since_change'=12\d(\.\d+)?s;;;0", perf)
    assert "'sink_snmp-192.0.2.9-162-v2c-trap_dropped'=0c" in perf
    assert re.search(r"'status_age'=\d+(\.\d+)?s;;;0", perf)


def test_rtt_thresholds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = with_monitor(ok_status(), 1, looksalive={"rtt_ms": 7.5})
    path = str(write(tmp_path, status))
    assert check(capsys, "--status", path, "-w", "5", "-c", "10")[0] == 1
    code, out = check(capsys, "--status", path, "-w", "2", "-c", "5")
    assert code == 2
    assert "db: rtt 7.5 ms (critical 5)" in out
    assert check(capsys, "--status", path, "-w", "10", "-c", "20")[0] == 0


def test_isalive_latency_thresholds(tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, ok_status()))
    code, out = check(capsys, "--status", path, "--isalive-critical", "10")
    assert code == 2
    assert "isalive latency 12.5 ms (critical 10)" in out


def test_verbose_lists_each_monitor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = with_monitor(ok_status(), 0, reason="bound\nhere")
    path = str(write(tmp_path, status))
    code, out = check(capsys, "--status", path, "-v")
    lines = out.splitlines()
    assert code == 0
    assert " | " in lines[0]
    assert lines[1].startswith("[OK] web 192.0.2.10 role=primary state=holding holder=self")
    assert lines[2].startswith("[OK] db ")
    assert lines[3].startswith("[OK] sink snmp-192.0.2.9-162-v2c-trap state=ok")
    code, out = check(capsys, "--status", path, "-vv")
    assert "    reason: bound here" in out.splitlines()
    assert "    isalive: http ok=True dead=False latency_ms=12.5 200 OK" in out.splitlines()


# ------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(("spec", "value", "alerts"), [
    ("10", 5, False), ("10", 10, False), ("10", 11, True), ("10", -1, True), ("10", 0, False),
    ("10:", 10, False), ("10:", 9.99, True), ("10:", 1e9, False),
    ("~:10", -1e9, False), ("~:10", 10.5, True),
    ("10:20", 15, False), ("10:20", 9, True), ("10:20", 21, True),
    ("@10:20", 10, True), ("@10:20", 20, True), ("@10:20", 15, True), ("@10:20", 21, False),
    ("@10", 0, True), ("@10", 11, False), (":5", 3, False), ("-5:-1", -3, False),
    ("0.5:1.5", 1.6, True),
])
def test_range_semantics(spec: str, value: float, alerts: bool) -> None:
    assert Range(spec).alerts(value) is alerts


def test_range_bounds() -> None:
    r = Range("~:10")
    assert (r.start, r.end, r.inside) == (-math.inf, 10, False)
    r = Range("@10:")
    assert (r.start, r.end, r.inside) == (10, math.inf, True)
    assert str(Range(" 10:20 ")) == "10:20"


@pytest.mark.parametrize("spec", ["", "@", "abc", "10:5", "1:x", "nan", "~", "10:~"])
def test_range_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        Range(spec)


# ------------------------------------------------------------------------------- CLI


def test_help_teaches_and_exits_zero() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for needle in ("examples:", "states:", "@10:20", "--monitor", "--max-age", "perfdata",
                   "CRITICAL  an address is held by nobody"):
        assert needle in proc.stdout


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == "check_minisft 0.1.0"


def test_console_entry_exit_codes(tmp_path: Path) -> None:
    status = ok_status()
    path = write(tmp_path, status)
    assert run("--status", str(path)).returncode == 0
    write(tmp_path, with_monitor(status, 0, conflict_open=True))
    proc = run("--status", str(path))
    assert proc.returncode == 2
    assert proc.stdout.startswith("MINISFT CRITICAL - ")


HEAVY = ("pysnmp", "pyroute2", "icmplib", "apprise", "requests", "yaml", "nagiosplugin",
         "prometheus_client", "asyncio")


def test_plugin_imports_stay_light(tmp_path: Path) -> None:
    path = write(tmp_path, ok_status())
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "minisft.nagios.plugin", "--status",
         str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "minisft" in imported  # the importtime report really is there
    assert not imported & set(HEAVY), imported & set(HEAVY)


# ------------------------------------------------------------------------------- pools

FRONT_HOME = {"192.0.2.50": ("alpha", "alpha", "held"), "192.0.2.51": ("beta", "beta", "held")}


def with_pools(*pools: PoolStatus) -> StatusDocument:
    return replace(ok_status(), pools=pools)


def test_a_pool_with_every_address_at_home_is_ok(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, with_pools(pool("front", "alpha", FRONT_HOME))))
    code, out = check(capsys, "--status", path)
    assert code == 0, out
    assert "pool front: 2 addresses on their preferred members" in out
    perf = perf_items(out)
    assert "'pool_front_held'=2;;;0;2" in perf and "'pool_front_off_preferred'=0;;;0;2" in perf


@pytest.mark.parametrize(("placement", "code", "needle"), [
    ({**FRONT_HOME, "192.0.2.51": ("alpha", "beta", "held")}, 1,
     "pool front: 192.0.2.51 is on alpha, not on its preferred member beta (no fallback yet)"),
    ({**FRONT_HOME, "192.0.2.51": (None, "beta", "free")}, 2,
     "pool front: 192.0.2.51 is held by nobody"),
    ({**FRONT_HOME, "192.0.2.51": (None, "beta", "probing")}, 2,
     "pool front: 192.0.2.51 is held by nobody, alpha is probing it"),
], ids=["off-preferred", "nobody", "probing"])
def test_pool_address_states(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             placement: dict[str, tuple[str | None, str, str]], code: int,
                             needle: str) -> None:
    path = str(write(tmp_path, with_pools(pool("front", "alpha", placement))))
    got, out = check(capsys, "--status", path)
    assert got == code, out
    assert needle in out.splitlines()[0]


def test_a_pool_address_held_twice_is_critical(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    front = pool("front", "alpha", FRONT_HOME)
    twice = replace(front.placement[1], holders=("alpha", "beta"), state="duplicate")
    front = replace(front, placement=(front.placement[0], twice))
    code, out = check(capsys, "--status", str(write(tmp_path, with_pools(front))))
    assert code == 2, out
    assert "192.0.2.51 is held by alpha and beta at once" in out


def test_an_isolated_member_says_so_instead_of_judging_what_it_cannot_see(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    front = pool("front", "alpha", {"192.0.2.50": ("alpha", "alpha", "held"),
                                    "192.0.2.51": (None, "beta", "free")},
                 phase="isolated", reason="no quorum")
    code, out = check(capsys, "--status", str(write(tmp_path, with_pools(front))))
    assert code == 1, out
    assert "pool front: member alpha is isolated: no quorum" in out
    assert "held by nobody" not in out


def test_pool_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = pool("back", "alpha", {"198.51.100.9": (None, "alpha", "free")})
    path = str(write(tmp_path, with_pools(pool("front", "alpha", FRONT_HOME), broken)))
    assert check(capsys, "--status", path)[0] == 2
    code, out = check(capsys, "--status", path, "--pool", "front")
    assert code == 0, out
    assert "monitor" not in out.splitlines()[0].split("|")[0]  # only the pool named
    assert "'pool_back_held'" not in out and "'web_rtt'" not in out
    code, out = check(capsys, "--status", path, "-p", "back", "--no-sinks", "-v")
    assert code == 2 and "pool back: 198.51.100.9 is held by nobody" in out
    assert "    198.51.100.9 owner=- preferred=alpha state=free moves=0" in out
    code, out = check(capsys, "--status", path, "--monitor", "web")
    assert code == 0 and "pool" not in out, out  # a monitor's service leaves pools out
    code, out = check(capsys, "--status", path, "--pool", "nope")
    assert code == 3
    assert "no pool named nope on alpha (known: back, front)" in out
    code, out = check(capsys, "--status", path, "--no-monitors")
    assert code == 0, out
