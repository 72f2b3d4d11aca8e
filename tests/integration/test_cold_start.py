"""Cold start and the manual fallback at human speed, with real daemons (issue 10, 1 and 4).

A rack comes back after a power cut: the primary and its backup start at the same moment.
Before the fix, in 4 of 18 such starts at 100/50 ms the backup took the address and the
primary logged `address_in_use` and watched, until an admin acted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from minisft.config.loader import load_config
from minisft.config.model import MonitorConfig
from tests.integration.cluster import Cluster, Node, monitor_cfg, start_pair, wait_until

pytestmark = pytest.mark.netns

VIP = "192.0.2.10/24"
# the fast settings (it failed at 100 ms and at 50 ms); 20 starts split over both
FAST = [{"interval": "100ms", "retry": 3, "timeout": "50ms"},
        {"interval": "50ms", "retry": 3, "timeout": "20ms"}]
STARTS = 20
# The backup gets the lower MAC: under the old MAC tie-break its probes won against the
# primary's start-up probe, the case that failed in the issue.
PRIMARY_MAC, BACKUP_MAC = "02:00:5e:10:00:02", "02:00:5e:10:00:01"


def cold_pair(tmp_path: Path) -> Cluster:
    c = Cluster(tmp_path, ["alpha", "beta"], ipv6=False)
    try:
        for node, mac in ((c.nodes["alpha"], PRIMARY_MAC), (c.nodes["beta"], BACKUP_MAC)):
            node.host.run("ip", "link", "set", "eth0", "address", mac)
        configure(c, FAST[0])
    except BaseException:
        c.lab.close()
        raise
    return c


def configure(c: Cluster, looksalive: dict[str, object]) -> MonitorConfig:
    """Write both configs; returns the backup's monitor as the daemon will load it (its
    derived start-up grace, detection time and probe round)."""
    alpha, beta = c.nodes["alpha"], c.nodes["beta"]
    alpha.configure([monitor_cfg("web", VIP, "primary", peer=beta.host.ip,
                                 looksalive=dict(looksalive))])
    beta.configure([monitor_cfg("web", VIP, "backup", peer=alpha.host.ip,
                                looksalive=dict(looksalive))])
    return load_config(beta.config_path).monitor("web")


def start_together(first: Node, second: Node) -> None:
    """Both daemons launched back to back, as a rack powered up together does."""
    first.start(wait=False)
    second.start(wait=False)
    for node in (first, second):
        wait_until(f"{node.name}'s daemon to listen", node._ready, timeout=30)


def settled(c: Cluster) -> list[str]:
    """The holders, once one node holds the address and the other sees it answer (which
    also ends a backup's start-up grace: from then on only a real detection moves it)."""
    holders = c.holders(VIP)
    if len(holders) != 1:
        return []
    other = next(n for n in c.nodes.values() if n.name not in holders)
    return holders if other.monitor("web")["looksalive"]["health"] == "up" else []


def test_a_pair_started_together_ends_with_the_primary_holding_every_time(
        tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    with cold_pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        assert alpha.host.mac == PRIMARY_MAC and beta.host.mac == BACKUP_MAC
        failures = []
        bind_delays = []  # the primary's daemon_started -> claimed, beyond its probe round
        for run in range(STARTS):
            backup_cfg = configure(c, FAST[run * len(FAST) // STARTS])
            since = {n.name: n.last_seq() for n in (alpha, beta)}
            first, second = (alpha, beta) if run % 2 else (beta, alpha)  # both orders
            start_together(first, second)
            wait_until("one node holds, the other sees it answer", lambda: settled(c),
                       timeout=backup_cfg.backup_grace + 15)
            time.sleep(0.3)  # a late move would show by now
            holders = c.holders(VIP)
            new = {n.name: [e.kind.value for e in n.events(monitor="web")
                            if e.seq > since[n.name]] for n in (alpha, beta)}
            if holders != ["alpha"] or "address_in_use" in new["alpha"] or \
                    {"takeover", "address_conflict", "yielded", "looksalive_down"} & \
                    set(new["beta"]):
                failures.append((run, backup_cfg.looksalive, first.name, holders, new))
            else:
                fresh = [e for e in alpha.events() if e.seq > since["alpha"]]
                started = next(e.time for e in fresh if e.kind.value == "daemon_started")
                claimed = next(e.time for e in fresh if e.kind.value == "claimed")
                bind_delays.append(round(claimed - started - backup_cfg.probe.duration, 3))
            for node in (alpha, beta):
                node.stop()  # SIGTERM: the holder releases the address for the next round
            wait_until("the address is free again", lambda: not c.holders(VIP), timeout=10)
        record_property("primary_wins", f"{STARTS - len(failures)}/{STARTS}")
        record_property("primary_bind_delays_s", bind_delays)
        assert not failures, f"the primary held cleanly in {STARTS - len(failures)} of " \
                             f"{STARTS} simultaneous starts; failed: {failures}"
        # a cold-started primary whose address is free binds after its probe round, at
        # once: nothing waits for the backup's grace (1 s of slack for a loaded host)
        assert max(bind_delays) <= 1.0, bind_delays


def test_a_primary_that_is_really_down_is_taken_over_within_grace_and_detection(
        tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    with cold_pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        cfg = load_config(beta.config_path).monitor("web")
        grace, detection, probe_round = cfg.backup_grace, cfg.detection_time, \
            cfg.probe.duration
        alpha.host.link_down()  # the primary's host is dead: nothing it does reaches the LAN
        start_together(alpha, beta)
        takeover = beta.wait_event("takeover", "web", timeout=grace + 15)
        started = beta.events("daemon_started")[-1]
        took = takeover.time - started.time
        # the grace, then one probe round; detection ran during the grace. 0.5 s of slack
        # for a loaded host (a bound, not a speed goal: bench/ has those)
        bound = max(grace, detection) + probe_round + 0.5
        record_property("takeover_after_start_s", round(took, 3))
        record_property("bound_s", round(bound, 3))
        assert grace - 0.3 <= took <= bound, f"took over {took:.2f}s after start, bound " \
                                              f"{bound:.2f}s"
        assert c.live_holders(VIP) == ["beta"]


def test_manual_fallback_at_human_speed_every_command_is_idempotent(tmp_path: Path) -> None:
    """The documented procedure, typed slowly: by the time the admin types `claim` on the
    primary, it has taken the released address over by itself. Each command whose end
    state already holds says so and exits 0; a real refusal still exits 1."""
    with start_pair(tmp_path, VIP) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.stop()  # release_on_stop: beta takes over
        beta.wait_event("takeover", "web", timeout=10)
        alpha.start()
        alpha.wait_event("address_in_use", "web", timeout=10)

        out = beta.cli("release", "web")
        assert out.returncode == 0, out.stderr
        wait_until("alpha takes the released address over by itself",
                   lambda: alpha.holds(VIP) and not beta.holds(VIP), timeout=10)
        for node, verb, said in ((alpha, "claim", "already holds"),
                                 (beta, "release", "already released"),
                                 (beta, "pause", "already paused")):
            out = node.cli(verb, "web")
            assert out.returncode == 0, (verb, out.stdout, out.stderr)
            assert said in out.stdout and "nothing to do" in out.stdout, out.stdout
        out = beta.cli("resume", "web")
        assert out.returncode == 0 and "nothing to do" not in out.stdout, out
        out = beta.cli("resume", "web")
        assert out.returncode == 0 and "already watching" in out.stdout, out
        assert c.holders(VIP) == ["alpha"]
        # idempotent is not lax: releasing an address this node does not hold is refused
        out = beta.cli("release", "web")
        assert out.returncode == 1 and "does not hold" in out.stderr, out
