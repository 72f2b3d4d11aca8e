"""check_minisft: a Nagios/Icinga plugin that judges a MiniSFT node from its status file.

Built like a nagiosplugin check, without that dependency (it must start fast: a monitoring
server runs it every few seconds for many hosts): probe -> metrics -> evaluation -> summary.

* probe:      `read_status` reads STATE_DIR/status.json and proves the daemon is alive
              (file present and readable, pid running, updated recently); otherwise UNKNOWN.
* metrics:    `monitor_metrics` / `pool_metrics` / `sink_metrics` turn it into named
              values with units.
* evaluation: `evaluate_monitor` / `evaluate_pool` / `evaluate_sink` apply the failover
              rules, and `Range` applies the -w/-c thresholds, each yielding `Result`s
              carrying a `State`.
* summary:    `summarize` picks the worst state and writes the plugin output.

Only the standard library is imported at start-up; yaml only when a config file must be
read to find `state_dir`. The status file (mode 0644) exists because the control socket is
root-only while monitoring runs as an unprivileged user.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from minisft import __version__
from minisft.status import (
    DEFAULT_CONFIG,
    DEFAULT_STATE_DIR,
    MonitorStatus,
    PoolStatus,
    StatusDocument,
    StatusError,
    load,
    status_file,
)

PROG = "check_minisft"
# The daemon rewrites the file about every second; 5 s tolerates a slow disk or a busy
# event loop while still catching a hung daemon within one check interval.
DEFAULT_MAX_AGE = 5.0
DEFAULT_TIMEOUT = 10.0


# ------------------------------------------------------------------------------- states


class State(Enum):
    """A plugin state; the exit code and label live here so nothing else maps them."""

    OK = (0, "OK")
    WARNING = (1, "WARNING")
    CRITICAL = (2, "CRITICAL")
    UNKNOWN = (3, "UNKNOWN")

    @property
    def code(self) -> int:
        return int(self.value[0])

    @property
    def label(self) -> str:
        return str(self.value[1])


def worst(states: list[State]) -> State:
    """The most severe state; UNKNOWN outranks CRITICAL, as in nagiosplugin."""
    return max(states, key=lambda s: s.code, default=State.OK)


class CheckError(Exception):
    """The plugin cannot judge the node: reported as UNKNOWN with this message."""


class UsageError(CheckError):
    """Bad command-line arguments (also UNKNOWN, per the plugin guidelines)."""


# ------------------------------------------------------------------------------- ranges


class Range:
    """A threshold range in the Monitoring Plugins syntax.

    ``10`` alerts outside 0..10, ``10:`` below 10, ``~:10`` above 10, ``10:20`` outside
    10..20, ``@10:20`` inside 10..20 (inclusive). Start defaults to 0, end to infinity.
    """

    __slots__ = ("end", "inside", "start", "text")

    def __init__(self, text: str) -> None:
        spec = text.strip()
        if not spec:
            raise ValueError("empty range")
        self.text = spec
        self.inside = spec.startswith("@")
        if self.inside:
            spec = spec[1:]
        if not spec:
            raise ValueError(f"range {text!r}: nothing after @")
        if ":" in spec:
            lo, hi = spec.split(":", 1)
        else:
            lo, hi = "", spec
        self.start = -math.inf if lo == "~" else _number(lo, 0.0, text)
        self.end = _number(hi, math.inf, text)
        if self.start > self.end:
            raise ValueError(f"range {text!r}: start is greater than end")

    def alerts(self, value: float) -> bool:
        """True when `value` must raise the alert this range stands for."""
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Range({self.text!r})"


def _number(part: str, default: float, whole: str) -> float:
    if part == "":
        return default
    try:
        value = float(part)
    except ValueError:
        raise ValueError(f"range {whole!r}: {part!r} is not a number") from None
    if math.isnan(value) or (math.isinf(value) and part.lstrip("+-").lower() != "inf"):
        raise ValueError(f"range {whole!r}: {part!r} is not a number")
    return value


def parse_range(text: str) -> Range:
    """argparse type: raises ArgumentTypeError so the usage error names the option."""
    try:
        return Range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ------------------------------------------------------------------------------- probe


def status_path(args: argparse.Namespace) -> tuple[Path, str]:
    """Where the status file is, and how we found it (for -vvv)."""
    try:
        return status_file(args.status, args.config)
    except StatusError as exc:
        raise CheckError(str(exc)) from None


def read_status(path: Path, max_age: float, now: float) -> StatusDocument:
    """Read the status file and prove the daemon behind it is alive, or raise CheckError."""
    try:
        status = load(path)
    except StatusError as exc:
        raise CheckError(str(exc)) from None
    if status.stopped_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.stopped_at))
        raise CheckError(f"daemon stopped at {when} (status file {path})")
    if status.pid is not None and not pid_alive(status.pid):
        raise CheckError(f"daemon pid {status.pid} is not running "
                         f"(status file {path} left behind)")
    if status.updated_at is None:
        raise CheckError(f"status file {path}: no updated_at")
    age = now - float(status.updated_at)
    if age > max_age:
        raise CheckError(f"status file {path} is {age:.0f} s old (max {max_age:g} s): "
                         "daemon hung or stopped")
    if age < -max_age:
        raise CheckError(f"status file {path} is dated {-age:.0f} s in the future: "
                         "clock skew?")
    return status


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by root: we run as nagios
    return True


# ------------------------------------------------------------------------------- metrics


class Metric:
    """A named value with a unit, rendered as one perfdata item."""

    __slots__ = ("critical", "label", "maximum", "minimum", "uom", "value", "warning")

    def __init__(self, label: str, value: float | None, uom: str = "", *,
                 warning: Range | None = None, critical: Range | None = None,
                 minimum: float | None = None, maximum: float | None = None) -> None:
        self.label = label
        self.value = value
        self.uom = uom
        self.warning = warning
        self.critical = critical
        self.minimum = minimum
        self.maximum = maximum

    def perfdata(self) -> str | None:
        """'label'=value[UOM];[warn];[crit];[min];[max], or None when the value is unknown.

        An unknown value is left out rather than written as `U`: Icinga 2 rejects `U`
        ("Ignoring invalid perfdata") on every check, and graphers treat a missing point
        as a gap anyway.
        """
        if self.value is None:
            return None
        label = self.label.replace("'", "_").replace("=", "_")
        fields = [
            _num(self.value) + self.uom,
            "" if self.warning is None else str(self.warning),
            "" if self.critical is None else str(self.critical),
            "" if self.minimum is None else _num(self.minimum),
            "" if self.maximum is None else _num(self.maximum),
        ]
        while len(fields) > 1 and fields[-1] == "":
            fields.pop()
        return f"'{label}'=" + ";".join(fields)


def _num(value: float) -> str:
    """Plain decimal, never exponent notation (perfdata parsers do not accept 1e-05)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


class Thresholds:
    __slots__ = ("lat_critical", "lat_warning", "rtt_critical", "rtt_warning")

    def __init__(self, args: argparse.Namespace) -> None:
        self.rtt_warning: Range | None = args.warning
        self.rtt_critical: Range | None = args.critical
        self.lat_warning: Range | None = args.isalive_warning
        self.lat_critical: Range | None = args.isalive_critical


def monitor_metrics(mon: MonitorStatus, th: Thresholds, now: float) -> list[Metric]:
    name = _name(mon)
    out = [
        Metric(f"{name}_rtt", _watched_rtt(mon), "ms", warning=th.rtt_warning,
               critical=th.rtt_critical, minimum=0),
    ]
    if mon.isalive.enabled:
        out.append(Metric(f"{name}_isalive", _float(mon.isalive.latency_ms), "ms",
                          warning=th.lat_warning, critical=th.lat_critical, minimum=0))
    for key in ("takeovers", "fallbacks", "conflicts", "service_alarms"):
        out.append(Metric(f"{name}_{key}", _float(mon.counters.get(key, 0)), "c"))
    lost = mon.looksalive.lost
    out.append(Metric(f"{name}_lost", _float(0 if lost is None else lost), "c"))
    out.append(Metric(f"{name}_since_change", _since_change(mon, now), "s", minimum=0))
    return out


def _name(mon: MonitorStatus) -> str:
    return "?" if mon.name is None else mon.name


def _watched_rtt(mon: MonitorStatus) -> float | None:
    # The RTT is measured only while another node holds the address: once this node binds,
    # the last value is history, so report it as undetermined instead.
    if mon.state != "watching":
        return None
    return _float(mon.looksalive.rtt_ms)


def _since_change(mon: MonitorStatus, now: float) -> float | None:
    if mon.last_change_time is not None:
        return round(max(0.0, now - float(mon.last_change_time)), 3)
    return _float(mon.seconds_since_change)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def pool_metrics(pool: PoolStatus) -> list[Metric]:
    name = _pool_name(pool)
    held = [a for a in pool.placement if a.owner is not None]
    return [
        Metric(f"pool_{name}_held", len(held), "", minimum=0, maximum=len(pool.placement)),
        Metric(f"pool_{name}_off_preferred", sum(not a.on_preferred for a in held), "",
               minimum=0, maximum=len(pool.placement)),
        Metric(f"pool_{name}_moves", sum(a.moves for a in pool.placement), "c"),
    ]


def _pool_name(pool: PoolStatus) -> str:
    return "?" if pool.name is None else pool.name


def sink_metrics(sink: Mapping[str, Any]) -> list[Metric]:
    name = str(sink.get("name", "?"))
    return [
        Metric(f"sink_{name}_pending", _float(sink.get("pending")), "", minimum=0),
        Metric(f"sink_{name}_dropped", _float(sink.get("dropped")), "c"),
        Metric(f"sink_{name}_failures", _float(sink.get("failures")), "c"),
    ]


# ------------------------------------------------------------------------------- evaluation


class Result:
    """One finding about one subject (a monitor, a sink): a state and why."""

    __slots__ = ("state", "subject", "text")

    def __init__(self, state: State, subject: str, text: str) -> None:
        self.state = state
        self.subject = subject
        self.text = text

    def __str__(self) -> str:
        return f"{self.subject}: {self.text}"


def evaluate_monitor(mon: MonitorStatus, th: Thresholds) -> list[Result]:
    """The failover rules: what is wrong with one monitor, worst first; [] when OK."""
    name = _name(mon)
    addr = "?" if mon.address is None else mon.address
    holder = mon.holder
    isalive = mon.isalive
    found: list[Result] = []

    def add(st: State, text: str) -> None:
        found.append(Result(st, name, _clean(text)))

    if mon.conflict_open:
        add(State.CRITICAL, f"address conflict on {addr}: another host answers for it")
    if holder == "none":
        add(State.CRITICAL, f"{addr} is held by nobody")
    if isalive.dead:
        detail = isalive.detail or "no detail"
        add(State.CRITICAL, f"service dead behind a live host ({detail})")
    if mon.link_up is False:
        if holder == "self":
            add(State.CRITICAL, f"holds {addr} but its link is down")
        else:
            add(State.WARNING, "link down: cannot take over")
    if mon.failed_over:
        where = "this backup node" if mon.role == "backup" else "the backup"
        add(State.WARNING, f"{addr} runs on {where} (failover, no fallback yet)")
    elif holder not in ("self", "other", "none"):
        add(State.WARNING, f"holder of {addr} not known yet (state {mon.state})")
    if mon.paused:
        add(State.WARNING, "paused: no takeover until resumed")
    if mon.looksalive.health == "degraded":
        add(State.WARNING, "LooksAlive degraded: ping unanswered, ARP/NDP answers")
    if isalive.ok is False and not isalive.dead:
        add(State.WARNING, f"service check failing ({isalive.detail or 'no detail'})")
    rtt = _watched_rtt(mon)
    if rtt is not None:
        _threshold(found, name, "rtt", rtt, th.rtt_warning, th.rtt_critical)
    latency = _float(isalive.latency_ms)
    if latency is not None and isalive.enabled:
        _threshold(found, name, "isalive latency", latency, th.lat_warning, th.lat_critical)
    found.sort(key=lambda r: -r.state.code)
    return found


def _threshold(found: list[Result], name: str, what: str, value: float,
               warning: Range | None, critical: Range | None) -> None:
    if critical is not None and critical.alerts(value):
        found.append(Result(State.CRITICAL, name, f"{what} {_num(value)} ms (critical {critical})"))
    elif warning is not None and warning.alerts(value):
        found.append(Result(State.WARNING, name, f"{what} {_num(value)} ms (warning {warning})"))


def evaluate_pool(pool: PoolStatus) -> list[Result]:
    """The pool rules, per address as this member sees it, worst first; [] when OK.

    Only an active member's view is judged: a member that is starting, joining, isolated
    or fenced does not hear the others (their addresses would all look held by nobody),
    so that is one WARNING, and the members that do hear each other judge the addresses."""
    subject = f"pool {_pool_name(pool)}"
    found: list[Result] = []

    def add(st: State, text: str) -> None:
        found.append(Result(st, subject, _clean(text)))

    if pool.phase != "active":
        add(State.WARNING, f"member {pool.member} is {pool.phase}: {pool.reason or ''}"
                           " (its view of the holders is not judged)")
        return found
    for a in pool.placement:
        if a.state == "duplicate":
            add(State.CRITICAL, f"{a.address} is held by {' and '.join(a.holders)} at once")
        elif a.owner is None:
            underway = f", {pool.member} is {a.state} it" if a.state in ("probing",
                                                                        "binding") else ""
            add(State.CRITICAL, f"{a.address} is held by nobody{underway}")
        elif not a.on_preferred:
            add(State.WARNING, f"{a.address} is on {a.owner}, not on its preferred member "
                               f"{a.preferred} (no fallback yet)")
    found.sort(key=lambda r: -r.state.code)
    return found


def describe_pool(pool: PoolStatus) -> str:
    """The all-is-well phrase: `pool front: 3 addresses on their preferred members`."""
    n = len(pool.placement)
    return (f"pool {_pool_name(pool)}: {n} address{'es' if n != 1 else ''} on "
            f"{'their' if n != 1 else 'its'} preferred member{'s' if n != 1 else ''}")


def describe_monitor(mon: MonitorStatus) -> str:
    """The short all-is-well phrase: `web holding`, `db watching`."""
    state = "?" if mon.state is None else mon.state
    return f"{_name(mon)} {state}" + (" (paused)" if mon.paused else "")


def evaluate_sink(sink: Mapping[str, Any]) -> list[Result]:
    state = str(sink.get("state", "ok"))
    if state == "ok":
        return []
    error = sink.get("last_error")
    why = f": {error}" if error else ""
    return [Result(State.WARNING, f"sink {sink.get('name', '?')}",
                   _clean(f"{state}, {sink.get('dropped', 0)} dropped{why}"))]


def _clean(text: str) -> str:
    # `|` starts perfdata and a newline starts long output: neither may leak from daemon text
    return " ".join(text.replace("|", "/").split())


# ------------------------------------------------------------------------------- summary


class Check:
    """Everything one run found, ready to be summarized."""

    __slots__ = ("details", "metrics", "monitors", "node", "pools", "results", "sinks")

    def __init__(self, node: str) -> None:
        self.node = node
        self.monitors: list[MonitorStatus] = []
        self.pools: list[PoolStatus] = []
        self.sinks: list[Mapping[str, Any]] = []
        self.results: list[Result] = []
        self.metrics: list[Metric] = []
        self.details: list[str] = []

    @property
    def state(self) -> State:
        return worst([r.state for r in self.results])


def run_check(status: StatusDocument, args: argparse.Namespace, now: float) -> Check:
    node = _clean(status.node or "?")
    check = Check(node)
    th = Thresholds(args)
    # --monitor and --pool select what they name and leave out the rest: a service per
    # monitor and a service per pool do not report each other's problems
    monitors = _selected("monitor", list(status.monitors), args.monitor,
                         args.pool is not None, node)
    pools = _selected("pool", list(status.pools), args.pool, args.monitor is not None, node)
    if args.no_monitors:
        monitors, pools = [], []
    check.monitors = monitors
    check.pools = pools
    for mon in monitors:
        check.results.extend(evaluate_monitor(mon, th))
        check.metrics.extend(monitor_metrics(mon, th, now))
    for pool in pools:
        check.results.extend(evaluate_pool(pool))
        check.metrics.extend(pool_metrics(pool))
    if not args.no_sinks:
        check.sinks = list(status.sinks)
        for sink in check.sinks:
            check.results.extend(evaluate_sink(sink))
            check.metrics.extend(sink_metrics(sink))
    # read_status refused a document without updated_at; check_output's live one has it
    age = now - float(status.updated_at or 0.0)
    check.metrics.append(Metric("status_age", round(max(0.0, age), 3), "s", minimum=0))
    check.details = _details(status, check, args.verbose)
    return check


def _selected(kind: str, subjects: list[Any], names: list[str] | None, other_named: bool,
              node: str) -> list[Any]:
    """The monitors (or pools) to check: those `names` lists; all when neither --monitor
    nor --pool was given; none when only the other option was."""
    if names is None:
        return [] if other_named else subjects
    known = {str(s.name) for s in subjects}
    missing = [n for n in names if n not in known]
    if missing:
        raise CheckError(f"no {kind} named {', '.join(missing)} on {node} "
                         f"(known: {', '.join(sorted(known)) or 'none'})")
    return [s for s in subjects if s.name in names]


def _details(status: StatusDocument, check: Check, verbose: int) -> list[str]:
    if verbose < 1:
        return []
    lines: list[str] = []
    for mon in check.monitors:
        looks, isalive = mon.looksalive, mon.isalive
        problems = [r for r in check.results if r.subject == _name(mon)]
        st = worst([r.state for r in problems]).label
        lines.append(_clean(
            f"[{st}] {mon.name} {mon.address} role={mon.role} "
            f"state={mon.state} holder={mon.holder}"
            + (" paused" if mon.paused else "")
            + (f": {'; '.join(r.text for r in problems)}" if problems else "")))
        if verbose >= 2:
            lines.append("    " + _clean(f"reason: {mon.reason}"))
            lines.append("    " + _clean(
                f"looksalive: health={looks.health} rtt_ms={looks.rtt_ms} "
                f"misses={looks.misses} sent={looks.sent} lost={looks.lost}"))
            if isalive.enabled:
                lines.append("    " + _clean(
                    f"isalive: {isalive.check} ok={isalive.ok} "
                    f"dead={isalive.dead} latency_ms={isalive.latency_ms} "
                    f"{isalive.detail or ''}"))
            lines.append("    counters: " + " ".join(
                f"{k}={v}" for k, v in mon.counters.items()))
    for pool in check.pools:
        problems = [r for r in check.results if r.subject == f"pool {_pool_name(pool)}"]
        lines.append(_clean(
            f"[{worst([r.state for r in problems]).label}] pool {pool.name} as "
            f"{pool.member}: {pool.phase}"
            + (f": {'; '.join(r.text for r in problems)}" if problems else "")))
        for a in pool.placement:
            lines.append("    " + _clean(
                f"{a.address} owner={a.owner or '-'} preferred={a.preferred or '-'} "
                f"state={a.state} moves={a.moves}"))
    for sink in check.sinks:
        bad = evaluate_sink(sink)
        lines.append(_clean(
            f"[{'WARNING' if bad else 'OK'}] sink {sink.get('name')} state={sink.get('state')} "
            f"delivered={sink.get('delivered')} "
            f"sent_unconfirmed={sink.get('sent_unconfirmed', 0)} pending={sink.get('pending')} "
            f"dropped={sink.get('dropped')} failures={sink.get('failures')}"
            + (f" last_error={sink.get('last_error')}" if sink.get("last_error") else "")))
    if verbose >= 3:
        lines.append(_clean(
            f"daemon: node={status.node} pid={status.pid} "
            f"version={status.software_version} started_at={status.started_at} "
            f"updated_at={status.updated_at} last_event_seq={status.last_event_seq}"))
    return lines


def summarize(check: Check) -> str:
    """The plugin output: status line with perfdata, then long output when verbose."""
    state = check.state
    if state is State.OK:
        n = len(check.monitors)
        parts = []
        if n:
            shown = ", ".join(describe_monitor(m) for m in check.monitors)
            parts.append(f"{n} monitor{'s' if n != 1 else ''} as configured ({shown})")
        parts.extend(describe_pool(p) for p in check.pools)
        if parts:
            text = f"{check.node}: " + ", ".join(parts)
        else:
            text = f"{check.node}: daemon running, no monitors checked"
        if check.sinks:
            text += f", {len(check.sinks)} sink{'s' if len(check.sinks) != 1 else ''} ok"
    else:
        bad = sorted((r for r in check.results if r.state is not State.OK),
                     key=lambda r: -r.state.code)
        text = f"{check.node}: " + "; ".join(str(r) for r in bad)
    perf = " ".join(item for item in (m.perfdata() for m in check.metrics) if item is not None)
    lines = [f"MINISFT {state.label} - {text}" + (f" | {perf}" if perf else "")]
    lines.extend(check.details)
    return "\n".join(lines)


def check_output(status: StatusDocument, argv: list[str], now: float) -> tuple[State, str]:
    """What `check_minisft ARGV` prints and means for this status document, without a
    process: the daemon's passive-check sinks (alerting.nagios, alerting.icinga2) push
    exactly this. Raises CheckError (e.g. an unknown --monitor) like the CLI would."""
    check = run_check(status, build_parser().parse_args(argv), now)
    return check.state, summarize(check)


# ------------------------------------------------------------------------------- CLI


HELP_EPILOG = """\
states:
  OK        every selected monitor is as configured: a primary-role monitor holds its
            address here, a backup-role monitor watches it held by the other node;
            every alert sink delivers.
  WARNING   an address runs on its backup (failover happened, no fallback yet: a
            backup-role monitor holds it, or a primary-role monitor sees the other node
            holding it); a check is degraded (LooksAlive degraded, IsAlive failing but not
            yet dead, RTT or latency beyond -w/--isalive-warning); a monitor is paused;
            the node's link is down; an alert sink is retrying or dropping events; the
            holder is not known yet (just started); a pool address is held by a member
            other than its preferred one (the formula's home for it: no fallback yet);
            this pool member is not active (starting, joining, isolated, fenced).
  CRITICAL  an address is held by nobody; an address conflict is open; a service is dead
            behind a live host (IsAlive dead); this node holds an address with its link
            down; RTT or latency beyond -c/--isalive-critical; a pool address is held by
            nobody, or by two members at once.
  UNKNOWN   bad arguments; the daemon cannot be reached: status file missing, unreadable,
            not valid, older than --max-age, written by a daemon that stopped, or its
            pid is not running; timeout.

thresholds (Monitoring Plugins range syntax, alert when the value is ...):
  10        outside 0..10         10:      below 10         ~:10     above 10
  10:20     outside 10..20        @10:20   inside 10..20 (inclusive)
  -w/-c apply to the LooksAlive round-trip time in ms, measured only while the monitor
  watches the address held by the other node; --isalive-warning/--isalive-critical apply
  to the IsAlive check latency in ms.

perfdata (a metric without a value, e.g. the RTT of an address held here, is left out)
  per monitor NAME: NAME_rtt (ms), NAME_isalive (ms, when IsAlive is configured),
  NAME_takeovers, NAME_fallbacks, NAME_conflicts, NAME_service_alarms, NAME_lost (counters),
  NAME_since_change (s); per pool P: pool_P_held (addresses held by a member),
  pool_P_off_preferred (of those, held away from their preferred member), pool_P_moves
  (counter: holder changes seen); per sink: sink_S_pending, sink_S_dropped,
  sink_S_failures; status_age (s).

examples:
  check_minisft                                 all monitors and sinks (default config)
  check_minisft --monitor web --no-sinks -w 5 -c 20
                                                one address, RTT warn > 5 ms, crit > 20 ms
  check_minisft --pool front --no-sinks         one address pool: every address held,
                                                each on its preferred member
  check_minisft --no-monitors                   only the daemon and its alert sinks
  check_minisft --status /srv/minisft/status.json --max-age 10 -vv
  check_minisft --config /etc/minisft/lab.yaml --isalive-critical 2000
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2 (CRITICAL to Nagios); the guidelines want UNKNOWN for usage errors
        self.print_usage(sys.stderr)
        print(f"MINISFT UNKNOWN - usage error: {_clean(message)}")
        sys.exit(State.UNKNOWN.code)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Check a MiniSFT IP-failover node from its status file "
                    "(STATE_DIR/status.json, rewritten by the daemon every second).",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--config", metavar="FILE",
                   help=f"daemon config, read for state_dir (default {DEFAULT_CONFIG}; "
                        f"if the default is unreadable, {DEFAULT_STATE_DIR} is assumed)")
    p.add_argument("--status", metavar="FILE", help="status file to read (overrides --config)")
    p.add_argument("-m", "--monitor", metavar="NAME", action="append",
                   help="check only this monitor (repeatable; default: all)")
    p.add_argument("-p", "--pool", metavar="NAME", action="append",
                   help="check only this address pool (repeatable; default: all monitors "
                        "and pools; with --monitor, the monitors named too)")
    p.add_argument("--no-monitors", action="store_true",
                   help="check only the daemon and its sinks (no monitors, no pools)")
    p.add_argument("--no-sinks", action="store_true",
                   help="ignore alert sink health (for per-monitor services)")
    p.add_argument("-w", "--warning", metavar="RANGE", type=parse_range,
                   help="LooksAlive RTT in ms that raises WARNING")
    p.add_argument("-c", "--critical", metavar="RANGE", type=parse_range,
                   help="LooksAlive RTT in ms that raises CRITICAL")
    p.add_argument("--isalive-warning", metavar="RANGE", type=parse_range,
                   help="IsAlive check latency in ms that raises WARNING")
    p.add_argument("--isalive-critical", metavar="RANGE", type=parse_range,
                   help="IsAlive check latency in ms that raises CRITICAL")
    p.add_argument("--max-age", metavar="SECONDS", type=_positive, default=DEFAULT_MAX_AGE,
                   help=f"status older than this is UNKNOWN (default {DEFAULT_MAX_AGE:g})")
    p.add_argument("-t", "--timeout", metavar="SECONDS", type=_positive,
                   default=DEFAULT_TIMEOUT,
                   help=f"give up with UNKNOWN after this long (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v one line per monitor and sink, -vv with details, -vvv daemon info")
    return p


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


class _Timeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_monitors and (args.monitor or args.pool):
        print("MINISFT UNKNOWN - usage error: --monitor/--pool and --no-monitors exclude "
              "each other")
        return State.UNKNOWN.code
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        now = time.time()
        path, how = status_path(args)
        status = read_status(path, args.max_age, now)
        check = run_check(status, args, now)
        if args.verbose >= 3:
            check.details.append(f"status file: {path} ({how})")
        output, code = summarize(check), check.state.code
    except _Timeout:
        output = f"MINISFT UNKNOWN - timeout after {args.timeout:g} s"
        code = State.UNKNOWN.code
    except CheckError as exc:
        output, code = f"MINISFT UNKNOWN - {_clean(str(exc))}", State.UNKNOWN.code
    except Exception as exc:  # a plugin must answer, never die with a traceback (exit 1)
        output = f"MINISFT UNKNOWN - internal error: {type(exc).__name__}: {_clean(str(exc))}"
        code = State.UNKNOWN.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(output)
    return code


if __name__ == "__main__":
    sys.exit(main())
