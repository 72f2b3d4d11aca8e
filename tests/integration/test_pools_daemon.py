"""Pools through the real daemon (`minisft run`), as an admin would deploy them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, wait_until

pytestmark = pytest.mark.netns

ADDRESSES = [f"192.0.2.{n}/24" for n in range(101, 107)]


def pool_cfg(key_file: Path, members: list[str]) -> dict[str, object]:
    return {
        "name": "front",
        "members": [{"name": m, "ip": f"192.0.2.{i}"} for i, m in enumerate(members, 1)],
        "addresses": ADDRESSES,
        "key_file": str(key_file),
        "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"},
        "fallback": {"mode": "auto", "hold_down": "1s"},
    }


def pool_cluster(tmp_path: Path, names: list[str]) -> Cluster:
    """One real daemon per member of pool `front`, started one after the other."""
    key = tmp_path / "front.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    c = Cluster(tmp_path, names, ipv6=False)
    try:
        for n in names:
            c.nodes[n].configure([], pools=[pool_cfg(key, names)])
            c.nodes[n].start()
    except BaseException:
        c.__exit__(*sys.exc_info())
        raise
    return c


def test_pool_spreads_addresses_and_moves_a_dead_members_share(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    with pool_cluster(tmp_path, names) as c:
        def layout() -> dict[str, list[str]]:
            return {a: c.holders(a) for a in ADDRESSES}

        def spread() -> dict[str, int]:
            return {n: sum(h == [n] for h in layout().values()) for n in names}

        # Members start one after the other: the first covers everything until the others
        # have passed the hold-down, then the formula's even spread (equal weights) holds.
        wait_until("six addresses spread two per member, each held once",
                   lambda: spread() == {"a": 2, "b": 2, "c": 2}, timeout=30)
        before = layout()
        pool = c.nodes["a"].status()["pools"][0]
        assert pool["name"] == "front" and not pool["isolated"]
        assert {m["name"] for m in pool["members"] if m["alive"]} == set(names)

        mark = {n: c.nodes[n].last_seq() for n in names}
        c.nodes["c"].host.link_down()
        orphans = [a for a, h in before.items() if h == ["c"]]

        def reachable_holders(address: str) -> list[str]:
            # c's link is down: the addresses still listed on its interface are unreachable
            return [h for h in c.holders(address) if h != "c"]

        wait_until("c's addresses move to the survivors", lambda: all(
            len(reachable_holders(a)) == 1 for a in orphans), timeout=20)
        assert {reachable_holders(a)[0] for a in orphans} == {"a", "b"}, \
            "a dead member's addresses are spread over the survivors, not piled on one"
        for a, h in before.items():
            if h != ["c"]:
                assert c.holders(a) == h, f"{a} moved although its member survived"
        assert any(e.seq > mark["a"] for e in c.nodes["a"].events("member_lost"))
        assert c.client.ping(orphans[0].split("/")[0])
        text = c.nodes["a"].cli("status").stdout
        assert "pool front as a" in text and "members alive: a, b" in text
