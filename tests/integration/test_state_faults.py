"""The state/fault harness (issue 10): every fault in every state of the monitor machine.

A primary (alpha, holds 192.0.2.10) and its backup (beta, automatic fallback) run as real
daemons in one namespace lab shared by all cases. Each case drives the pair from the
baseline (alpha holding, beta watching) into one state, checks from the daemons' status
that the subject node really is in it, injects one fault into the subject, ends the fault
and then asserts, within a bound computed from the monitor config:

1. at most one holder and, since both nodes are healthy again, exactly one: from `ip addr`
   on both hosts;
2. no monitor stuck in a transient state (starting, probing, binding): from
   `minisft status --json`, in agreement with `ip addr` and unpaused;
3. a resting outcome the design promises: alpha holds, or beta holds with automatic
   fallback suspended (the primary did not claim the address within the fallback grace);
4. every event journaled once: no sequence number and no (kind, monitor, time) twice, in
   the journal files and in `minisft events --json` (and what the daemon logged is in the
   journal, see test_faults.check_journal).

Probes are deliberately slow (`probe: {count: 3, interval: 400ms}`) so probing lasts long
enough to be seen from outside; `binding` lasts as long as one netlink call, so that case
injects the fault the moment the address lands on the interface (the announcements are
still going out then). `starting` is the pair booted together, the fault hitting the
primary while it is still in its start-up probe.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from minisft.config.loader import load_config
from minisft.core.monitor import MonitorMachine
from tests.integration.cluster import Cluster, Node, monitor_cfg, wait_until
from tests.integration.test_faults import check_journal

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "192.0.2.10/24"
PROBE = {"count": 3, "interval": "400ms"}
HOLD_DOWN = "3s"
REFRESHES = ("1s", "2s")  # announce.refresh: what a "changed" reload changes
TRANSIENT = {"starting", "probing", "binding"}
START_UP = 6.0  # a daemon process starting on a loaded 2-core machine
SLACK = 4.0  # scheduling slack on a shared 2-core machine
SETTLE = 0.5  # a resting outcome must still hold this long after it was first seen
POLL = 0.02


@dataclass(frozen=True)
class Timings:
    """Everything the harness waits for, derived from the monitor config the daemons run."""

    detection: float  # looksalive interval + retry x timeout
    probe: float  # one ARP probe round
    hold_down: float
    grace: float  # after an automatic fallback, the primary's time to claim

    @classmethod
    def of(cls, config_path: Path) -> Timings:
        mcfg = load_config(config_path).monitors[0]
        grace = MonitorMachine(mcfg, now=0.0).fallback_grace
        return cls(mcfg.detection_time, mcfg.probe.duration, mcfg.fallback.hold_down, grace)

    @property
    def stop_for(self) -> float:
        """SIGSTOP lasts two detection times."""
        return 2 * self.detection

    @property
    def link_down_for(self) -> float:
        """Long enough for the other node to detect, probe and take over."""
        return 2 * self.detection + self.probe

    @property
    def recovery(self) -> float:
        """From the end of a fault to the resting outcome, worst case: a restarted daemon
        starts, the backup takes over (detection + probe), holds for the hold-down, hands
        back, and the primary claims (detection + probe) within the grace; or the grace
        runs out and the backup takes it again (grace + probe)."""
        takeover = self.detection + self.probe
        return START_UP + takeover + self.detection + self.hold_down + \
            max(takeover, self.grace + self.probe) + SLACK

    @property
    def reach(self) -> float:
        """Bound for driving the pair into a state from the baseline."""
        return START_UP + 2 * (self.detection + self.probe) + self.hold_down + SLACK


@dataclass
class Pair:
    """The shared lab: alpha (primary) and beta (backup, automatic fallback)."""

    tmp: Path
    cluster: Cluster | None = None
    kills: dict[str, int] = field(default_factory=dict)
    refresh: dict[str, int] = field(default_factory=dict)  # per node: its REFRESHES index
    generation: int = 0
    timings: Timings = Timings(0.0, 0.0, 0.0, 0.0)  # set from the config by fresh()

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    @property
    def alpha(self) -> Node:
        return self.c.nodes["alpha"]

    @property
    def beta(self) -> Node:
        return self.c.nodes["beta"]

    def other(self, node: Node) -> Node:
        return self.beta if node is self.alpha else self.alpha

    def configure(self, node: Node) -> None:
        role, peer = ("primary", self.beta) if node is self.alpha else ("backup", self.alpha)
        extra: dict[str, Any] = {"probe": dict(PROBE)}
        if node is self.beta:
            extra["fallback"] = {"mode": "auto", "hold_down": HOLD_DOWN}
        cfg = monitor_cfg("web", VIP, role, peer=peer.host.ip, **extra)
        cfg["announce"]["refresh"] = REFRESHES[self.refresh.get(node.name, 0) % 2]
        node.configure([cfg])

    def fresh(self) -> None:
        """A new lab with alpha holding and beta watching (the baseline)."""
        self.close()
        self.generation += 1
        root = self.tmp / f"lab{self.generation}"
        root.mkdir()
        self.cluster = Cluster(root, ["alpha", "beta"], ipv6=False)
        self.kills = {"alpha": 0, "beta": 0}
        for node in (self.alpha, self.beta):
            self.configure(node)
        self.timings = Timings.of(self.beta.config_path)
        self.alpha.start()
        until(self.timings.reach, "alpha to claim the address at start-up",
              lambda: self.alpha.holds(VIP) and state_of(self.alpha) == "holding")
        self.beta.start()
        until(self.timings.reach, "beta to watch alpha's address",
              lambda: self.at_baseline())

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.lab.close()
            self.cluster = None

    def at_baseline(self) -> bool:
        if not (self.alpha.running and self.beta.running):
            return False
        a, b = current(self.alpha), current(self.beta)
        return (a is not None and b is not None and a["state"] == "holding"
                and not a["paused"] and b["state"] == "watching" and not b["paused"]
                and b["looksalive"]["health"] == "up"
                and self.alpha.holds(VIP) and not self.beta.holds(VIP))


def until(bound: float, what: str, predicate: Callable[[], Any],
          describe: Callable[[], str] | None = None) -> Any:
    return wait_until(what, predicate, timeout=bound, step=POLL, describe=describe)


def _soon(bound: float, predicate: Callable[[], bool]) -> bool:
    """`predicate` becomes true within `bound` seconds (False, not an error, if not)."""
    try:
        until(bound, "", predicate)
    except AssertionError:
        return False
    return True


def current(node: Node) -> dict[str, Any] | None:
    """The monitor in status.json, if the running daemon wrote it (not a stale copy left by
    a killed one): cheap enough to poll every few ms, unlike `minisft status`."""
    if node.proc is None or not node.running:
        return None
    try:
        doc = json.loads((node.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if doc.get("pid") != node.proc.pid or doc.get("stopped_at"):
        return None
    for m in doc.get("monitors", []):
        if m["name"] == "web":
            return dict(m)
    return None


def state_of(node: Node) -> str | None:
    m = current(node)
    return m["state"] if m else None


# ---------------------------------------------------------------------- states


@dataclass
class Reached:
    """A state reached: the node in it, and what to undo once the fault is over."""

    subject: Node
    undo: Callable[[], object] = lambda: None
    # faults after which the primary must still be the one that claims the address: at a
    # cold start the backup may take it only if the primary really was unreachable
    primary_keeps_after: frozenset[str] = frozenset()


def reach_watching(p: Pair) -> Reached:
    assert state_of(p.beta) == "watching"
    return Reached(p.beta)


def reach_holding(p: Pair) -> Reached:
    assert state_of(p.alpha) == "holding"
    return Reached(p.alpha)


def reach_paused(p: Pair) -> Reached:
    p.beta.cli("pause", "web", check=True)
    until(p.timings.reach, "beta paused", lambda: (current(p.beta) or {}).get("paused"))
    return Reached(p.beta, undo=lambda: p.beta.cli("resume", "web"))


def _alpha_releases(p: Pair) -> None:
    """alpha hands the address up (release pauses it): beta's pings go unanswered."""
    p.alpha.cli("release", "web", check=True)


def reach_probing(p: Pair) -> Reached:
    _alpha_releases(p)
    until(p.timings.reach, "beta in its takeover probe",
          lambda: (m := current(p.beta)) and m["state"] == "probing"
          and m["purpose"] == "takeover", lambda: str(current(p.beta)))
    return Reached(p.beta, undo=lambda: p.alpha.cli("resume", "web"))


def reach_binding(p: Pair) -> Reached:
    _alpha_releases(p)
    until(p.timings.reach, "the address to land on beta", lambda: p.beta.holds(VIP),
          lambda: str(current(p.beta)))
    return Reached(p.beta, undo=lambda: p.alpha.cli("resume", "web"))


def reach_starting(p: Pair) -> Reached:
    for node in (p.beta, p.alpha):
        node.stop()
    assert not p.alpha.holds(VIP) and not p.beta.holds(VIP), "SIGTERM did not release"
    since = p.alpha.last_seq()
    for node in (p.alpha, p.beta):  # booted together, as after a power cut
        node.start(wait=False)

    def seen() -> str:
        events = [e.summary() for e in p.alpha.events() if e.seq > since]
        return f"alpha's status {current(p.alpha)}; alpha's events since the start {events}"

    until(p.timings.reach, "alpha in its start-up probe",
          lambda: (m := current(p.alpha)) and m["state"] in ("starting", "probing")
          and m["purpose"] in (None, "startup"), seen)
    return Reached(p.alpha, primary_keeps_after=frozenset(
        {"sighup_changed", "sighup_unchanged", "peer_link_flap"}))


def _beta_took_over(p: Pair) -> None:
    p.alpha.host.link_down()
    until(p.timings.reach, "beta to take over from the dead alpha",
          lambda: state_of(p.beta) == "holding" and p.beta.holds(VIP),
          lambda: str(current(p.beta)))
    p.alpha.host.link_up()


def _in_hold_down(p: Pair) -> bool:
    m = current(p.beta)
    if not m or m["state"] != "holding":
        return False
    up_for = m["peer"]["up_for"]
    return m["peer"]["health"] == "up" and up_for is not None and up_for < p.timings.hold_down


def reach_hold_down(p: Pair) -> Reached:
    _beta_took_over(p)
    until(p.timings.reach, "beta holding with the primary back, in its hold-down",
          lambda: _in_hold_down(p), lambda: str(current(p.beta)))
    return Reached(p.beta)


def reach_fallback_grace(p: Pair) -> Reached:
    _beta_took_over(p)
    until(p.timings.reach, "beta to hand the address back (fallback grace begins)",
          lambda: (m := current(p.beta)) and m["counters"]["fallbacks"] >= 1
          and m["state"] == "watching", lambda: str(current(p.beta)))
    return Reached(p.beta)


STATES: dict[str, Callable[[Pair], Reached]] = {
    "starting": reach_starting,
    "watching": reach_watching,
    "probing": reach_probing,
    "binding": reach_binding,
    "holding": reach_holding,
    "paused": reach_paused,
    "hold_down": reach_hold_down,
    "fallback_grace": reach_fallback_grace,
}


# ---------------------------------------------------------------------- faults


def sighup(p: Pair, node: Node, *, changed: bool) -> None:
    before = node.last_seq()
    if changed:
        p.refresh[node.name] = p.refresh.get(node.name, 0) + 1
        p.configure(node)
    node.send_signal(signal.SIGHUP)
    reloaded = node.wait_event("config_reloaded", timeout=p.timings.reach, after=before)
    assert ("updated web" in reloaded.reason) == changed, reloaded.reason


def kill_restart(p: Pair, node: Node) -> None:
    node.kill()
    p.kills[node.name] += 1
    node.start(wait=False)


def stop_cont(p: Pair, node: Node) -> None:
    node.send_signal(signal.SIGSTOP)
    try:
        time.sleep(p.timings.stop_for)  # the fault itself lasts this long
    finally:
        node.send_signal(signal.SIGCONT)


def link_flap(p: Pair, node: Node) -> None:
    node.host.link_down()
    try:
        time.sleep(p.timings.link_down_for)  # the fault itself lasts this long
    finally:
        node.host.link_up()


FAULTS: dict[str, Callable[[Pair, Node], None]] = {
    "sighup_changed": lambda p, n: sighup(p, n, changed=True),
    "sighup_unchanged": lambda p, n: sighup(p, n, changed=False),
    "sigkill_restart": kill_restart,
    "sigstop_sigcont": stop_cont,
    "own_link_flap": link_flap,
    "peer_link_flap": lambda p, n: link_flap(p, p.other(n)),
}


# ---------------------------------------------------------------------- invariants


def cli_monitor(node: Node) -> dict[str, Any] | None:
    proc = node.cli("status", "--json")
    if proc.returncode != 0:
        return None
    for m in json.loads(proc.stdout)["monitors"]:
        if m["name"] == "web":
            return dict(m)
    return None


def resting(p: Pair) -> str | None:
    """None when the pair is at rest, else what is not; from ip addr and status."""
    for node in (p.alpha, p.beta):
        if not node.running:
            return f"{node.name}'s daemon exited with {node.proc and node.proc.returncode}"
    holders = p.c.holders(VIP)
    if len(holders) != 1:
        return f"holders on the interfaces: {holders}"
    seen = {n.name: current(n) for n in (p.alpha, p.beta)}
    if any(m is None for m in seen.values()):
        return f"status not yet written: {seen}"
    return _judge(p, holders[0], seen)  # type: ignore[arg-type]


def _judge(p: Pair, holder: str, seen: dict[str, dict[str, Any]]) -> str | None:
    states = {n: (m["state"], m["purpose"], m["paused"]) for n, m in seen.items()}
    for name, m in seen.items():
        want = "holding" if name == holder else "watching"
        if m["state"] != want or m["paused"] or not m["link_up"]:
            return f"holder {holder} (ip addr), monitors {states}"
    if holder == "beta" and not seen["beta"]["peer"]["auto_fallback_suspended"]:
        return f"beta holds and will hand back (hold-down): monitors {states}"
    return None


def some_holder(p: Pair) -> str | None:
    """None when one node holds the address and no monitor is in a transient state (an
    admin may have paused the other), else what is not so."""
    for node in (p.alpha, p.beta):
        if not node.running:
            return f"{node.name}'s daemon exited with {node.proc and node.proc.returncode}"
    holders = p.c.holders(VIP)
    seen = {n.name: current(n) for n in (p.alpha, p.beta)}
    states = {n: m and (m["state"], m["purpose"], m["paused"]) for n, m in seen.items()}
    if len(holders) != 1 or any(m is None or m["state"] in TRANSIENT or not m["link_up"]
                                for m in seen.values()):
        return f"holders on the interfaces {holders}, monitors {states}"
    held = seen[holders[0]]
    if held is None or held["state"] != "holding":
        return f"holders on the interfaces {holders}, monitors {states}"
    return None


def assert_some_holder(p: Pair) -> None:
    """Right after the fault, before the admin undoes anything: a healthy node holds."""
    last: list[str | None] = [None]

    def ok() -> bool:
        last[0] = some_holder(p)
        return last[0] is None

    until(p.timings.recovery, "one holder, no monitor in a transient state (after the "
          "fault, before the admin's undo)", ok, lambda: str(last[0]))


def assert_at_rest(p: Pair) -> None:
    """Invariants 1-3, from status.json while waiting, then from `minisft status`."""
    t = p.timings
    last: list[str | None] = [None]

    def settled() -> bool:
        last[0] = resting(p)
        return last[0] is None

    until(t.recovery, "exactly one holder, both monitors at rest (watching/holding, "
          "unpaused), alpha holding or beta holding with fallback suspended",
          settled, lambda: str(last[0]))
    time.sleep(SETTLE)
    holders = p.c.holders(VIP)
    assert len(holders) == 1, f"holders moved again after settling: {holders}"
    seen = {n.name: cli_monitor(n) for n in (p.alpha, p.beta)}
    assert all(seen.values()), f"`minisft status --json` failed: {seen}"
    stuck = {n: m["state"] for n, m in seen.items() if m and m["state"] in TRANSIENT}
    assert not stuck, f"monitor stuck in a transient state: {stuck}"
    verdict = _judge(p, holders[0], seen)  # type: ignore[arg-type]
    assert verdict is None, f"`minisft status --json` disagrees with ip addr: {verdict}"


def assert_journaled_once(p: Pair) -> None:
    """Invariant 4, in the journal files and as `minisft events` shows them."""
    for node in (p.alpha, p.beta):
        check_journal(node, kills=p.kills[node.name])
        out = node.cli("events", "--json", "--last", "0", check=True).stdout
        shown = [json.loads(line) for line in out.splitlines() if line.strip()]
        seqs = [e["seq"] for e in shown]
        assert seqs == sorted(set(seqs)), f"{node.name}: `minisft events` seqs: {seqs}"
        keys = [(e["kind"], e["monitor"], e["time"]) for e in shown]
        assert len(keys) == len(set(keys)), f"{node.name}: an event shown twice"
        assert "Traceback" not in node.log(), f"{node.name} logged a traceback"


# ---------------------------------------------------------------------- the cases


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(tmp_path_factory.mktemp("state-faults"))
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def baseline(pair: Pair) -> Pair:
    """The shared lab at its baseline; a new one if the last case left it elsewhere."""
    if pair.cluster is None or not _soon(pair.timings.detection + SLACK, pair.at_baseline):
        pair.fresh()
    return pair


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("state", list(STATES))
def test_fault_in_every_state(baseline: Pair, state: str, fault: str) -> None:
    p = baseline
    marks = {n.name: len(n.log()) for n in (p.alpha, p.beta)}
    beta_seq = p.beta.last_seq()
    try:
        reached = STATES[state](p)
        FAULTS[fault](p, reached.subject)
        assert_some_holder(p)
        reached.undo()
        assert_at_rest(p)
        assert_journaled_once(p)
        if fault in reached.primary_keeps_after:
            taken = [e.summary() for e in p.beta.events("takeover") if e.seq > beta_seq]
            assert not taken, f"the backup took the address from a healthy primary: {taken}"
    except BaseException:
        for node in (p.alpha, p.beta):  # the daemons' own words, for this case only
            sys.stderr.write(f"\n----- {node.name} daemon log (this case) -----\n"
                             f"{node.log()[marks[node.name]:][-6000:]}\n")
        p.close()  # the next case starts from a new lab, whatever this one left behind
        raise


def test_sighup_as_the_daemon_comes_up_neither_kills_it_nor_is_lost(tmp_path: Path) -> None:
    """`systemctl reload` (ExecReload: kill -HUP) as soon as the daemon answers on its
    control socket: the daemon must survive it and apply the config it was asked to."""
    with Cluster(tmp_path, ["alpha"], ipv6=False) as c:
        alpha = c.nodes["alpha"]
        cfg = monitor_cfg("web", VIP, "primary", probe=dict(PROBE))
        alpha.configure([cfg])
        t = Timings.of(alpha.config_path)  # no peer: no hold-down to wait for
        alpha.start(wait=False)
        deadline = time.monotonic() + START_UP
        while not alpha.socket.exists():  # the moment an admin can first reach it
            assert time.monotonic() < deadline, "the control socket never appeared"
            time.sleep(0.001)
        cfg["announce"]["refresh"] = REFRESHES[1]
        alpha.configure([cfg])
        alpha.send_signal(signal.SIGHUP)
        bound = START_UP + t.probe + SLACK

        def holding() -> bool:
            assert alpha.running, "SIGHUP killed the daemon (exit " \
                f"{alpha.proc and alpha.proc.returncode}), it logged: {alpha.log()[-300:]!r}"
            return state_of(alpha) == "holding" and alpha.holds(VIP)

        until(bound, "alpha to hold its address", holding)
        reloaded = alpha.wait_event("config_reloaded", timeout=bound)
        assert "updated web" in reloaded.reason, reloaded.reason
        assert alpha.running
