"""Reloads (SIGHUP) of real daemons at awkward moments: during a takeover, onto a taken port.

A reload must never strand a monitor, and a reload that cannot be applied keeps the whole
old config running, pools included, and says why (`config_rejected`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cluster import Node, start_pair, wait_until
from tests.integration.test_pools_daemon import ADDRESSES, pool_cluster

pytestmark = pytest.mark.netns

VIP = "192.0.2.10/24"
# A long probe round, so that a reload can land inside it.
SLOW_PROBE = {"count": 3, "interval": "1s"}
PROBE_ROUND = 3 * 1.0
DETECTION = 0.2 + 3 * 0.1  # FAST_LOOKSALIVE: interval + retry x timeout


def status_file(node: Node) -> dict[str, Any]:
    """status.json as the daemon last wrote it (every change, and every second)."""
    try:
        doc: dict[str, Any] = json.loads((node.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


def monitor_state(node: Node, name: str = "web") -> tuple[str | None, str | None]:
    for m in status_file(node).get("monitors", []):
        if m["name"] == name:
            return m["state"], m["purpose"]
    return None, None


def test_sighup_during_the_takeover_probe_round_still_takes_over(tmp_path: Path) -> None:
    with start_pair(tmp_path, beta_extra={"probe": SLOW_PROBE}) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.host.link_down()
        wait_until("beta in its takeover probe round",
                   lambda: monitor_state(beta) == ("probing", "takeover"), timeout=10,
                   step=0.02)
        # the admin changes this monitor (a slower LooksAlive) and reloads right now
        data = yaml.safe_load(beta.config_path.read_text())
        data["monitors"][0]["looksalive"]["interval"] = "300ms"
        beta.write_config(data)
        mark = beta.last_seq()
        beta.send_signal(signal.SIGHUP)
        reloaded = beta.wait_event("config_reloaded", after=mark, timeout=10)
        assert "updated web" in reloaded.reason
        # the probe round under way finishes and the takeover completes: bounded by one
        # round and one detection, plus a margin for the bind on a busy machine
        bound = PROBE_ROUND + DETECTION + 2.0
        wait_until("beta to hold the address after the reload",
                   lambda: monitor_state(beta) == ("holding", None), timeout=bound)
        assert beta.holds(VIP)
        assert len(beta.events("takeover", "web")) == 1
        assert beta.monitor("web")["looksalive"]["health"] == "down"


def test_pool_reload_onto_a_taken_port_keeps_the_old_pool_running(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    with pool_cluster(tmp_path, names) as c:
        def layout() -> dict[str, list[str]]:
            return {a: c.holders(a) for a in ADDRESSES}

        wait_until("six addresses spread two per member", lambda: sorted(
            h[0] for h in layout().values() if len(h) == 1) == sorted(names * 2), timeout=30)
        before = layout()
        node = c.nodes["c"]
        # another program on c already uses the port the new config names
        squatter = node.host.popen(
            [sys.executable, "-c", "import socket, time\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             f"s.bind(('{node.host.ip}', 7405))\nprint('bound', flush=True)\ntime.sleep(600)"],
            stdout=subprocess.PIPE, text=True)
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "bound"
        mark = {n: c.nodes[n].last_seq() for n in names}
        node.config["pools"][0]["port"] = 7405
        node.write_config(node.config)
        node.send_signal(signal.SIGHUP)
        rejected = node.wait_event("config_rejected", after=mark["c"], timeout=10)
        assert "the running config stays" in rejected.reason
        assert "cannot listen on 192.0.2.3:7405" in rejected.reason
        assert "Address already in use" in rejected.reason
        assert not [e for e in node.events("config_reloaded") if e.seq > mark["c"]]
        # c's old pool runs on: its peers lose nothing and see no conflict, for many
        # detection times (a member is lost after retry x interval + timeout = 0.8 s)
        time.sleep(5 * 0.8)
        for n in names:
            new = [e.kind.value for e in c.nodes[n].events() if e.seq > mark[n]]
            assert "member_lost" not in new and "address_conflict" not in new, (n, new)
        assert layout() == before
        pool = node.status()["pools"][0]
        assert pool["port"] == 7404
        assert {m["name"] for m in pool["members"] if m["alive"]} == set(names)
