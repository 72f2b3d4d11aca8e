"""`minisft rebalance POOL` in an etcd pool, with real daemons and a real etcd, in
namespaces: after a failover in a pool with manual fallback, the member that comes back
takes its addresses back make-before-break (bind and announce, then move the owner key in
etcd; the holder releases on seeing it) while a client pings one of them every 10 ms.

Hosts as in test_pools_etcd_daemon.py: members a, b, c on 192.0.2.1-3 (`minisft run`),
a client on 192.0.2.100, a one-member etcd on 192.0.2.250. Lease TTL 3 s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from minisft.pools.formula import assign
from tests.integration.cluster import Cluster, rebalance_under_pings, wait_until
from tests.integration.etcd_support import EtcdCluster, etcd_available
from tests.integration.test_pools_etcd_daemon import MEMBERS, PREFIX, pool_cfg
from tests.support.package import InstalledPackage

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not etcd_available(), reason="etcd not installed (apt-get install "
                       "etcd-server etcd-client)"),
]

ADDRESSES = [f"192.0.2.{n}/24" for n in range(101, 107)]
MAX_GAP = 0.050  # issue 14: the client must see a gap of at most 50 ms (10 ms pings)
OWNERS = f"{PREFIX}/pools/front/owners/"


def expected(alive: list[str]) -> dict[str, str]:
    return assign(ADDRESSES, dict.fromkeys(alive, 1), {}, dict.fromkeys(MEMBERS, 1),
                  pool="front")


def test_rebalance_takes_a_returning_members_addresses_back_with_a_gap_under_50ms(
        tmp_path: Path) -> None:
    rebalance_scenario(tmp_path, (sys.executable, "-m", "minisft"))


@pytest.mark.package
def test_rebalance_with_the_installed_package(tmp_path: Path,
                                              installed_minisft: InstalledPackage) -> None:
    """The same, as an admin of the Debian package runs it: /usr/bin/minisft, whose
    virtualenv must bring the etcd client itself (pip is not in it)."""
    rebalance_scenario(tmp_path, (str(installed_minisft.minisft),))


def rebalance_scenario(tmp_path: Path, command: tuple[str, ...]) -> None:
    key = tmp_path / "front.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    with Cluster(tmp_path, MEMBERS, ipv6=False, command=command) as c:
        etcd = EtcdCluster(c.lab, 1)
        try:
            etcd.start()
            for n in MEMBERS:
                cfg = pool_cfg(key, etcd.endpoints, ADDRESSES)
                cfg["fallback"] = {"mode": "manual"}
                c.nodes[n].configure([], pools=[cfg])
                checked = c.nodes[n].cli("check-config")
                assert checked.returncode == 0, checked.stdout + checked.stderr
            for n in MEMBERS:  # started together, as a rack does
                c.nodes[n].start(wait=False)
            for n in MEMBERS:
                wait_until(f"{n}'s daemon to listen", c.nodes[n]._ready, timeout=20)

            def layout() -> dict[str, list[str]]:
                return {a: c.live_holders(a) for a in ADDRESSES}

            def owners() -> dict[str, str]:
                return {k[len(OWNERS):]: json.loads(v["value"])["member"]
                        for k, v in etcd.get_prefix(OWNERS).items()}

            home = expected(MEMBERS)
            wait_until("each address held once, per the formula", lambda: layout() == {
                a: [m] for a, m in home.items()}, timeout=30)
            cs = sorted(a for a, m in home.items() if m == "c")
            node_c = c.nodes["c"]

            # the failover: c stops (it releases and revokes its lease), a and b take over
            node_c.stop()
            wait_until("c's addresses on a and b", lambda: all(
                len(layout()[x]) == 1 and layout()[x][0] in ("a", "b") for x in cs),
                timeout=20)
            moved = {x: layout()[x][0] for x in cs}

            node_c.start()
            wait_until("c's pool active", lambda: node_c.status()["pools"][0]["phase"]
                       == "active", timeout=30)
            time.sleep(1.0)  # manual fallback: c gets nothing back by itself
            assert not any(node_c.holds(x) for x in ADDRESSES)

            # a link cut on c: it refuses, binds nothing, and says why in one line
            mark = node_c.last_seq()
            node_c.host.link_down()
            node_c.wait_event("link_down", "front", after=mark, timeout=10)
            refused = node_c.cli("rebalance", "front")
            assert refused.returncode == 1, refused.stdout
            assert "link is down" in refused.stderr or "not active" in refused.stderr, \
                refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
            assert not any(node_c.holds(x) for x in ADDRESSES)
            node_c.host.link_up()
            wait_until("c active, connected, its lease just renewed", lambda: (
                (p := node_c.status()["pools"][0])["phase"] == "active"
                and p["etcd"]["connected"] and p["etcd"]["since_keepalive"] is not None
                and p["etcd"]["since_keepalive"] < 0.8), timeout=30)
            time.sleep(1.0)
            assert not any(node_c.holds(x) for x in ADDRESSES)

            watched = cs[0]
            holder = c.nodes[moved[watched]]
            marks = {n: c.nodes[n].last_seq() for n in MEMBERS}
            gave, gap = rebalance_under_pings(c, node_c, holder, watched,
                                              marks[holder.name])
            assert gap <= MAX_GAP, f"the client saw a gap of {gap * 1000:.0f} ms"

            wait_until("c holds its addresses again, alone", lambda: all(
                layout()[x] == ["c"] for x in cs), timeout=10)
            assert layout() == {a: [m] for a, m in home.items()}
            assert owners() == {a.split("/")[0]: m for a, m in home.items()}
            took = [e for e in node_c.events("switchover", "front") if e.seq > marks["c"]]
            assert sorted(e.address or "" for e in took) == cs
            assert all("took it from" in e.reason and "make-before-break" in e.reason
                       for e in took)
            assert gave.details.get("to") == "c" and "c took it" in gave.reason
            for n in ("a", "b"):
                assert not [e for e in c.nodes[n].events("yielded", "front")
                            if e.seq > marks[n]], "a switchover is not a yield"
            assert not [e for e in node_c.events("takeover_failed", "front")
                        if e.seq > marks["c"]]

            again = node_c.cli("rebalance", "front")  # idempotent
            assert again.returncode == 0, again.stderr
            assert "nothing to move" in again.stdout
            time.sleep(1.5)
            assert layout() == {a: [m] for a, m in home.items()}
        except BaseException:
            sys.stderr.write(etcd.tail())
            for n in MEMBERS:
                sys.stderr.write(f"\n----- {n} -----\n{c.nodes[n].log()[-3000:]}")
            raise
        finally:
            etcd.stop()
