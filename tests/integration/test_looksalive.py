"""LooksAlive counts what the network does: on a loss-free lab no ping is counted as lost.

Issue 10, defect 3: in active/active at the README's timing (interval 1 s, timeout 300 ms)
a quarter to a third of the pings were counted as lost (`looksalive.lost`, and
`minisft_monitor_looksalive_lost_total` with it) while the system `ping` lost none: the
shared ICMP reader dropped replies it had already read (minisft/probes/looksalive.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, monitor_cfg, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

README_LOOKSALIVE = {"interval": "1s", "retry": 3, "timeout": "300ms"}
PINGS_PER_MONITOR = 60


def test_active_active_at_readme_timing_counts_no_lost_pings_on_a_clean_network(
        tmp_path: Path) -> None:
    c = Cluster(tmp_path, ["alpha", "beta"], ipv6=False)
    with c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        web, db = "192.0.2.10/24", "192.0.2.20/24"
        # contrib/examples/active-active: each node primary for one address, backup (with
        # peer_ip) for the other's
        alpha.configure([
            monitor_cfg("web", web, "primary", looksalive=README_LOOKSALIVE),
            monitor_cfg("db", db, "backup", peer=beta.host.ip, looksalive=README_LOOKSALIVE)])
        beta.configure([
            monitor_cfg("web", web, "backup", peer=alpha.host.ip, looksalive=README_LOOKSALIVE),
            monitor_cfg("db", db, "primary", looksalive=README_LOOKSALIVE)])
        for node in (alpha, beta):  # together, as a rack boots
            node.start(wait=False)
        wait_until("both daemons to listen", lambda: all(
            n.socket.exists() and (n.state_dir / "status.json").exists()
            for n in (alpha, beta)))
        wait_until("each node to hold its own address", lambda: c.holders(web) == ["alpha"]
                   and c.holders(db) == ["beta"], timeout=30)
        watchers = {(alpha, "db"), (beta, "web")}

        def counters() -> dict[str, tuple[int, int]]:
            out = {}
            for node, name in watchers:
                looks = node.monitor(name)["looksalive"]
                out[f"{node.name}/{name}"] = (int(looks["sent"]), int(looks["lost"]))
            return out

        wait_until("both watchers to see the other's address answer", lambda: all(
            node.monitor(name)["looksalive"]["health"] == "up" for node, name in watchers))
        before = counters()
        time.sleep(PINGS_PER_MONITOR + 2.0)
        after = counters()
        sent = {k: after[k][0] - before[k][0] for k in after}
        lost = {k: after[k][1] - before[k][1] for k in after}
        sys.stdout.write(f"[looksalive] sent {sent} lost {lost}\n")
        assert all(n >= PINGS_PER_MONITOR for n in sent.values()), f"too few pings: {sent}"
        ratio = sum(lost.values()) / sum(sent.values())
        assert ratio < 0.01, f"{ratio:.1%} of pings counted lost on a loss-free lab: " \
                             f"lost {lost} of sent {sent}"
        assert not [e for n in (alpha, beta) for e in n.events()
                    if e.kind.value in ("takeover", "looksalive_down", "yielded")]
