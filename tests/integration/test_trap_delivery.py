"""Fire-and-forget SNMP traps against a REAL snmptrapd in the namespace lab (issue 13).

A trap has no acknowledgement: sent into this node's dead link it goes nowhere. So the
daemon holds trap delivery while its link is down and sends after it returns, and it
never counts a trap as "delivered" (it counts it as sent, unconfirmed). And `test-alert`
with an unreachable inform target reports that sink failed within the target's own
timeout x (retries + 1), not after a fixed wait the CLI gives up on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Node, wait_until
from tests.integration.test_monitoring_e2e import (
    TARGET_KINDS,
    lab,
    parse_test_alert,
    preset_engine_id,
    sink_name,
    snmp_target,
    start_pair,
    stop_daemons,
    trap_receiver,
)

pytestmark = [pytest.mark.netns, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

needs_snmp = pytest.mark.skipif(
    not (Path("/usr/sbin/snmptrapd").exists()), reason="net-snmp snmptrapd not installed")

TRAPS = [("2c", "trap"), ("3", "trap")]


def _sinks(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in status["sinks"]}


def _counted(sink: dict[str, Any]) -> int:
    """Every trap the daemon counts as sent, whichever counter it is in."""
    return int(sink["delivered"]) + int(sink.get("sent_unconfirmed", 0))


@needs_snmp
def test_traps_are_held_while_the_link_is_down_and_arrive_once_in_order(
        tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    alerting = {"snmp": {"targets": [snmp_target(v, t, secrets) for v, t in TRAPS]}}
    names = {sink_name(v, t): TARGET_KINDS[(v, t)][1] for v, t in TRAPS}
    with lab(tmp_path, alerting=alerting) as c, \
            trap_receiver(c, tmp_path / "snmptrapd") as rx:
        beta = c.nodes["beta"]
        preset_engine_id(beta)
        start_pair(c)

        def received(security: str) -> list[int]:
            return [int(n["minisftEventSeq"]) for n in rx.notifications()
                    if n.security == security]

        settled = beta.last_seq()
        wait_until("beta's first events as traps", lambda: all(
            settled in received(sec) for sec in names.values()), timeout=30)

        before = _sinks(beta.status())
        beta.host.link_down()
        down = beta.wait_event("link_down", timeout=20)
        # more events while the link is down: an admin pauses and resumes the monitor
        beta.cli("pause", "web", check=True)
        beta.cli("resume", "web", check=True)
        resumed = beta.wait_event("resumed", "web", after=down.seq)
        held = _sinks(beta.status())
        for name in names:
            # nothing sent (or counted) into the dead link: held, waiting in the journal
            assert _counted(held[name]) == _counted(before[name]), \
                f"{name}: counted traps sent while the link was down: {held[name]}"
            assert held[name]["state"] == "held", held[name]
            assert held[name]["pending"] >= resumed.seq - down.seq + 1, held[name]
            assert "down" in held[name]["held_reason"], held[name]

        beta.host.link_up()
        up = beta.wait_event("link_up", timeout=20, after=resumed.seq)
        wait_until("every held trap after the link returned", lambda: all(
            up.seq in received(sec) for sec in names.values()), timeout=30)
        journal = [ev.seq for ev in beta.events() if ev.seq <= up.seq]
        for name, security in names.items():
            got = [seq for seq in received(security) if seq <= up.seq]
            assert got == journal, f"{name}: every trap once and in order"
        after = _sinks(beta.status())
        for name in names:
            assert after[name]["state"] == "ok" and after[name]["delivered"] == 0, after[name]
            assert after[name]["sent_unconfirmed"] >= len(journal), after[name]
        stop_daemons(c)


def _test_alert(node: Node) -> subprocess.Popen[str]:
    return node.host.popen([sys.executable, "-m", "minisft", "test-alert", "--config",
                            str(node.config_path)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)


@needs_snmp
def test_test_alert_reports_an_unreachable_inform_target_failed_within_its_timeout(
        tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    reachable = snmp_target("2c", "trap", secrets)
    dead = snmp_target("3", "inform", secrets)
    # 192.0.2.77 is on the lab's LAN but no host answers there (no ARP reply)
    dead.update(host="192.0.2.77", timeout="1s", retries=2)
    bound = 1.0 * 3  # timeout x (retries + 1)
    alerting = {"snmp": {"targets": [reachable, dead]}}
    dead_name = f"snmp-192.0.2.77-{dead['port']}-v3-inform"
    with lab(tmp_path, alerting=alerting) as c, \
            trap_receiver(c, tmp_path / "snmptrapd"):
        beta = c.nodes["beta"]
        preset_engine_id(beta)
        start_pair(c)
        wait_until("the dead inform target failing", lambda: _sinks(beta.status())[
            dead_name]["failures"] >= 1, timeout=30)

        def check(stdout: str, stderr: str, returncode: int, took: float) -> None:
            results = parse_test_alert(stdout)
            assert returncode == 1, stdout + stderr
            assert results.pop(dead_name).startswith("FAILED"), stdout
            assert results == {sink_name("2c", "trap"): "delivered"}, stdout
            # the bound, plus the sink's margin and the CLI's start-up
            assert took < bound + 3.0, f"test-alert took {took:.1f} s"

        t0 = time.monotonic()
        one = beta.cli("test-alert")
        check(one.stdout, one.stderr, one.returncode, time.monotonic() - t0)

        # Two admins at once (or one beside the daemon's own retry of that target): the
        # first send to fail must not strand the other, which waits meanwhile.
        first = _test_alert(beta)
        t0 = time.monotonic()
        time.sleep(bound / 2)
        second = _test_alert(beta)
        t1 = time.monotonic()
        for proc, started in ((first, t0), (second, t1)):
            out, err = proc.communicate(timeout=60)
            check(out, err, proc.returncode, time.monotonic() - started)
        stop_daemons(c)
