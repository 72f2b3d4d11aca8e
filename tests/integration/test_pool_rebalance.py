"""`minisft rebalance POOL` with real daemons in namespaces: after a failover in a pool with
manual fallback, the member that comes back takes its addresses back make-before-break
while a client pings one of them every 10 ms."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, rebalance_under_pings, wait_until

pytestmark = pytest.mark.netns

NAMES = ["a", "b", "c"]
ADDRESSES = [f"192.0.2.{n}/24" for n in range(101, 107)]
MAX_GAP = 0.050  # issue 14: the client must see a gap of at most 50 ms (10 ms pings)
DETECTION = 3 * 0.5 + 0.5  # retry * interval + timeout of the config below


def pool_cfg(key_file: Path) -> dict[str, object]:
    """The keys docs/pools.md tells an admin to set, with manual fallback."""
    return {
        "name": "front",
        "members": [{"name": m, "ip": f"192.0.2.{i}"} for i, m in enumerate(NAMES, 1)],
        "addresses": ADDRESSES,
        "key_file": str(key_file),
        "looksalive": {"interval": 0.5, "retry": 3, "timeout": 0.5},
        "fallback": {"mode": "manual"},
    }


def test_rebalance_takes_a_returning_members_addresses_back_with_a_gap_under_50ms(
        tmp_path: Path) -> None:
    key = tmp_path / "front.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    with Cluster(tmp_path, NAMES, ipv6=False) as c:
        for n in NAMES:  # started together, as a rack does
            c.nodes[n].configure([], pools=[pool_cfg(key)])
            c.nodes[n].start(wait=False)
        for node in c.nodes.values():
            wait_until(f"{node.name}'s daemon to listen", node._ready, timeout=30)

        def layout() -> dict[str, list[str]]:
            return {a: c.live_holders(a) for a in ADDRESSES}

        wait_until("each address held once, two per member", lambda: sorted(
            h[0] for h in layout().values() if len(h) == 1) == sorted(NAMES * 2), timeout=30)
        home = {x: h[0] for x, h in layout().items()}
        cs = [x for x, h in home.items() if h == "c"]
        node_c = c.nodes["c"]

        # the failover: c stops (SIGTERM releases its addresses), a and b take them
        node_c.stop()
        wait_until("c's addresses move to a and b", lambda: all(
            len(layout()[x]) == 1 and layout()[x][0] in ("a", "b") for x in cs), timeout=20)
        moved = {x: layout()[x][0] for x in cs}

        node_c.start()
        wait_until("c's pool active", lambda: node_c.status()["pools"][0]["phase"] ==
                   "active", timeout=30)
        # a link cut on c: it refuses, binds nothing, and says why in one line
        mark = node_c.last_seq()
        node_c.host.link_down()
        node_c.wait_event("isolated", "front", after=mark, timeout=10)
        refused = node_c.cli("rebalance", "front")
        assert refused.returncode == 1, refused.stdout
        assert "not active (isolated: own link is down)" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert not any(node_c.holds(x) for x in ADDRESSES)
        node_c.host.link_up()
        wait_until("c's pool active for one detection time", lambda: (
            (p := node_c.status()["pools"][0])["phase"] == "active"
            and p["seconds_since_change"] > DETECTION + 0.5), timeout=30)
        time.sleep(1.0)  # manual fallback: c gets nothing back by itself
        assert not any(node_c.holds(x) for x in ADDRESSES)

        unknown = node_c.cli("rebalance", "back")
        assert unknown.returncode == 1 and "no pool named 'back'" in unknown.stderr
        assert len(unknown.stderr.strip().splitlines()) == 1

        watched = cs[0]
        holder = c.nodes[moved[watched]]
        marks = {n: c.nodes[n].last_seq() for n in NAMES}
        gave, gap = rebalance_under_pings(c, node_c, holder, watched,
                                          marks[holder.name])
        assert gap <= MAX_GAP, f"the client saw a gap of {gap * 1000:.0f} ms"

        wait_until("c holds its addresses again, alone", lambda: all(
            layout()[x] == ["c"] for x in cs), timeout=10)
        assert layout() == {x: [h] for x, h in home.items()}
        took = [e for e in node_c.events("switchover", "front") if e.seq > marks["c"]]
        assert sorted(e.address or "" for e in took) == sorted(x.split("/")[0] for x in cs) \
            or sorted(e.address or "" for e in took) == sorted(cs)
        assert gave.details.get("to") == "c" and "c took it" in gave.reason
        for n in ("a", "b"):
            assert not [e for e in c.nodes[n].events("yielded", "front")
                        if e.seq > marks[n]], "a switchover is not a duplicate"

        again = node_c.cli("rebalance", "front")  # idempotent
        assert again.returncode == 0, again.stderr
        assert "nothing to move" in again.stdout
        time.sleep(1.5)
        assert layout() == {x: [h] for x, h in home.items()}
