"""Pools coordinated through a real etcd 3.4 cluster, in a namespace lab.

Hosts: pool members a, b (weight 2), c on 192.0.2.1-3; a three-member etcd cluster
etcd0-2 on 192.0.2.250-252, each in its own namespace. Each member lists the endpoints
starting with "its" etcd (a: etcd0, b: etcd1, c: etcd2), as a site would spread them.
Lease TTL 3 s: keepalive every 0.5 s, fencing at 2 s. Hold-down 2 s. The expected layout is
computed with the formula itself.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml

from minisft.pools.formula import assign
from tests.integration.cluster import wait_until
from tests.integration.etcd_support import EtcdCluster, etcd_available, push
from tests.integration.pool_node import PoolMembers

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not etcd_available(), reason="etcd not installed (apt-get install "
                       "etcd-server etcd-client)"),
]

MEMBERS = {"a": 1, "b": 2, "c": 1}
ADDRESSES = ["192.0.2.101/24", "192.0.2.102/24", "192.0.2.103/24", "192.0.2.104/24",
             "192.0.2.105/24", "2001:db8::101/64"]
TTL = 3
FENCE_AFTER = TTL * 2 / 3
HOLD_DOWN = 2.0
PREFIX = "/minisft-test"
OWNERS = f"{PREFIX}/pools/front/owners/"
REGISTERED = f"{PREFIX}/pools/front/members/"


def expected(alive: list[str], addresses: list[str] | None = None) -> dict[str, str]:
    return assign(addresses or ADDRESSES, {m: MEMBERS[m] for m in alive}, {}, MEMBERS,
                  pool="front")


class EtcdPoolLab(PoolMembers):
    def __init__(self, tmp: Path, fallback: str = "auto") -> None:
        super().__init__(tmp, MEMBERS, ADDRESSES)
        self.fallback = fallback
        self.etcd: EtcdCluster | None = None
        try:
            self.etcd = EtcdCluster(self.lab, 3)
            self.etcd.start()
        except BaseException:
            self.close(True)
            raise

    def endpoints(self, name: str) -> list[str]:
        assert self.etcd is not None
        eps = self.etcd.endpoints
        i = list(MEMBERS).index(name)
        return eps[i:] + eps[:i]

    def config(self, name: str, addresses: list[str] | None = None) -> Path:
        path = self.tmp / f"{name}.yaml"
        doc = {
            "node": {"name": name, "local_ip": self.hosts[name].ip},
            "logging": {"syslog": False},
            "pools": [{
                "name": "front",
                "members": [{"name": m, "ip": self.hosts[m].ip, "weight": w}
                            for m, w in MEMBERS.items()],
                "addresses": addresses or ADDRESSES,
                "fallback": {"mode": self.fallback, "hold_down": f"{HOLD_DOWN:g}s"},
                "coordination": {"backend": "etcd", "endpoints": self.endpoints(name),
                                 "ttl": f"{TTL}s", "prefix": PREFIX},
            }],
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def owners_in_etcd(self) -> dict[str, str]:
        """Address (as configured) -> the member etcd names as its owner."""
        assert self.etcd is not None
        by_ip = {a.split("/")[0]: a for a in ADDRESSES}
        out = {}
        for key, kv in self.etcd.get_prefix(OWNERS).items():
            out[by_ip.get(key[len(OWNERS):], key)] = json.loads(kv["value"])["member"]
        return out

    def registered(self) -> set[str]:
        assert self.etcd is not None
        return {k[len(REGISTERED):] for k in self.etcd.get_prefix(REGISTERED)}

    def close(self, failed: bool) -> None:
        try:
            if failed:
                self.dump_logs()
                if self.etcd is not None:
                    sys.stderr.write(self.etcd.tail())
            for name in list(self.procs):
                with suppress(Exception):
                    self.stop(name)
        finally:
            try:
                if self.etcd is not None:
                    self.etcd.stop()
            finally:
                self.lab.close()


class DuplicateWatch:
    """Samples every member's interface in the background: an address on two members at
    once is the one thing the fencing rule must prevent."""

    def __init__(self, pl: EtcdPoolLab, names: list[str]) -> None:
        self.pl = pl
        self.names = names
        self.seen: list[tuple[float, str, list[str]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DuplicateWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for address, holders in self.pl.holders(self.names).items():
                    if len(holders) > 1:
                        self.seen.append((time.time(), address, holders))
                self.samples += 1
            except Exception:
                pass
            self._stop.wait(0.05)


@contextmanager
def etcd_pool_lab(tmp_path: Path, **start: dict[str, Any]) -> Iterator[EtcdPoolLab]:
    pl = EtcdPoolLab(tmp_path)
    failed = True
    try:
        # a first: it writes the pool definition (its config is the reference)
        pl.start("a", **start.get("a", {}))
        wait_until("a registered", lambda: pl.registered() == {"a"}, timeout=30, step=0.2)
        for name in ("b", "c"):
            pl.start(name, **start.get(name, {}))
        wait_until("every address held once, per the formula",
                   lambda: pl.layout() == expected(list(MEMBERS)), timeout=45)
        yield pl
        failed = False
    finally:
        pl.close(failed)


def first_time(events: list[dict[str, Any]]) -> float:
    return float(min(e["time"] for e in events))


def test_spread_failover_and_fallback(tmp_path: Path) -> None:
    with etcd_pool_lab(tmp_path) as pl:
        before = expected(list(MEMBERS))
        # every address held by exactly one member, recorded as such in etcd
        wait_until("owners recorded in etcd", lambda: pl.owners_in_etcd() == before,
                   timeout=10, step=0.2)
        assert pl.registered() == set(MEMBERS)
        snap = pl.status("a")
        assert snap["backend"] == "etcd" and snap["phase"] == "active"
        assert snap["assignment"] == before and snap["config_drift"] is None
        for n in MEMBERS:
            assert not pl.events(n, "lease_lost"), f"{n} fenced while healthy"
            assert not pl.events(n, "config_drift")

        # kill b (link down): b fences itself; its lease expires; a and c take over
        t0, t0_wall = time.monotonic(), time.time()
        pl.hosts["b"].link_down()
        wait_until("b's addresses on a and c", lambda: pl.layout(["a", "c"]) == expected(
            ["a", "c"]), timeout=30, step=0.02)
        took = time.monotonic() - t0
        print(f"\nfailover after link down: {took:.2f}s (ttl {TTL}s)")
        assert took < TTL + 4.0, f"failover took {took:.2f}s"
        lost = pl.events("b", "lease_lost")
        assert len(lost) == 1 and lost[0]["severity"] == "critical"
        assert not [a for a in ADDRESSES if pl.hosts["b"].has_address(a)], \
            "a fenced member keeps nothing"
        # (a, which started first, handed addresses to b and c at start-up: not counted)
        moved = [e for n in ("a", "c") for e in pl.events(n, "address_moved")
                 if e["time"] >= t0_wall]
        assert sorted(e["address"] for e in moved) == sorted(
            a for a, m in before.items() if m == "b")
        assert all(e["details"]["from"] == "b" for e in moved)
        margin = first_time(moved) - lost[0]["time"]
        print(f"b released {lost[0]['details']['released_after']}s after its last "
              f"keepalive; survivors bound {margin:.2f}s after that")
        assert margin > 0.3, "survivors bound before the fenced member released"
        for n in ("a", "c"):
            member_lost = pl.events(n, "member_lost")
            assert [e["details"]["member"] for e in member_lost] == ["b"]
            assert "lease expired" in member_lost[0]["reason"]
        wait_until("etcd records the survivors",
                   lambda: pl.owners_in_etcd() == expected(["a", "c"]), timeout=10)

        # link back: b gets a new lease; auto fallback after the hold-down
        pl.hosts["b"].link_up()
        wait_until("a sees b back", lambda: pl.events("a", "member_back"), timeout=30,
                   step=0.02)
        back = time.monotonic()
        wait_until("fallback to the full layout", lambda: pl.layout() == before, timeout=30)
        print(f"fallback {time.monotonic() - back:.2f}s after member_back "
              f"(hold-down {HOLD_DOWN:g}s)")
        assert time.monotonic() - back >= HOLD_DOWN - 0.3
        assert pl.events("b", "rejoined")
        wait_until("etcd records the full layout", lambda: pl.owners_in_etcd() == before,
                   timeout=10)

        # graceful stop of b: it releases and revokes its lease: immediate take-over
        pl.stop("b")
        t0 = time.monotonic()
        wait_until("b's addresses on a and c", lambda: pl.layout(["a", "c"]) == expected(
            ["a", "c"]), timeout=15, step=0.02)
        took = time.monotonic() - t0
        print(f"take-over after a graceful stop: {took:.2f}s")
        assert took < 2.0
        assert "left the pool" in pl.events("a", "member_lost")[-1]["reason"]
        assert "b" not in pl.registered()
        pl.assert_alive()
        assert pl.status("a")["counters"]["handovers"] >= 1


def test_quorum_loss_fences_before_the_lease_expires(tmp_path: Path) -> None:
    with etcd_pool_lab(tmp_path) as pl:
        before = expected(list(MEMBERS))
        mine = sorted(a for a, m in before.items() if m == "a")
        assert mine
        # a and etcd0 are cut off from everyone else: a reaches only an etcd member
        # without quorum (and without its pool peers); b and c keep the majority, and
        # its leader (so that this is not also an election: see lead_elsewhere)
        assert pl.etcd is not None
        pl.etcd.lead_elsewhere(0)
        with DuplicateWatch(pl, list(MEMBERS)) as dup:
            t0 = time.time()
            for other in ("b", "c", "etcd1", "etcd2"):
                pl.lab.partition("a", other)
                pl.lab.partition("etcd0", other)
            wait_until("a fenced", lambda: pl.events("a", "lease_lost"), timeout=20,
                       step=0.02)
            lost = pl.events("a", "lease_lost")[0]
            wait_until("b and c took a's addresses",
                       lambda: pl.layout(["b", "c"]) == expected(["b", "c"]), timeout=30,
                       step=0.02)
            moved = [e for n in ("b", "c") for e in pl.events(n, "address_moved")
                     if e["time"] >= t0]
            assert sorted(e["address"] for e in moved) == mine
        assert dup.samples > 20
        assert not dup.seen, f"an address was on two members at once: {dup.seen[:5]}"
        assert not [a for a in ADDRESSES if pl.hosts["a"].has_address(a)], \
            "a fenced member keeps nothing (its link is up)"
        d = lost["details"]
        released_after = d["released_after"]
        margin = first_time(moved) - lost["time"]
        print(f"\npartition -> fence {lost['time'] - t0:.2f}s; released "
              f"{released_after}s after the last good keepalive (fence at "
              f"{FENCE_AFTER:.2f}s, ttl {TTL}s); survivors bound {margin:.2f}s later")
        assert FENCE_AFTER - 0.2 <= d["since_keepalive"] <= FENCE_AFTER + 0.5
        assert released_after < TTL, "released after the lease could have expired"
        assert margin > 0.3
        assert pl.status("a")["phase"] == "fenced"
        for n in ("b", "c"):
            assert not pl.events(n, "lease_lost"), f"{n} fenced though it kept the majority"

        # heal: a gets a (new) lease, and its addresses back after the hold-down
        pl.lab.heal()
        wait_until("a rejoined", lambda: pl.events("a", "rejoined"), timeout=30)
        wait_until("one holder per address again", lambda: pl.layout() == before,
                   timeout=30)
        wait_until("etcd records the full layout", lambda: pl.owners_in_etcd() == before,
                   timeout=10)
        pl.assert_alive()


def test_config_drift_and_push(tmp_path: Path) -> None:
    drifted = ADDRESSES[:-1]  # c's config does not know the IPv6 address
    with etcd_pool_lab(tmp_path, c={"addresses": drifted}) as pl:
        # c raised CONFIG_DRIFT once and still uses etcd's definition (the layout above
        # includes the IPv6 address)
        drift = pl.events("c", "config_drift")
        assert len(drift) == 1 and drift[0]["severity"] == "critical"
        assert drift[0]["details"]["differs"] == "addresses"
        assert pl.status("c")["config_drift"]
        assert pl.status("c")["assignment"] == expected(list(MEMBERS))
        assert not pl.events("a", "config_drift") and not pl.events("b", "config_drift")
        wait_until("a lists c as drifted", lambda: pl.status("a")["drift"] == ["c"],
                   timeout=10)

        # push c's config: the IPv6 address leaves the pool; c matches, a and b drift
        assert pl.etcd is not None
        result = push(pl.hosts["c"], pl.tmp / "c.yaml")
        assert result["previous"] != result["digest"]
        wait_until("c's drift resolved", lambda: len(pl.events("c", "config_drift")) == 2,
                   timeout=10)
        assert pl.events("c", "config_drift")[1]["details"]["resolved"] is True
        wait_until("a and b drift", lambda: pl.events("a", "config_drift")
                   and pl.events("b", "config_drift"), timeout=10)
        wait_until("the IPv6 address released", lambda: not pl.holders()[ADDRESSES[-1]],
                   timeout=10)
        wait_until("layout of the pushed definition", lambda: pl.layout(
            addresses=drifted) == expected(list(MEMBERS), drifted), timeout=20)
        assert pl.status("a")["assignment"] == expected(list(MEMBERS), drifted)
        pl.assert_alive()


COLD_STARTS = 10


def test_members_booted_together_spread_per_the_formula(tmp_path: Path) -> None:
    """A rack after a power cut: the three members start at the same moment against an
    empty etcd, in a different order each time. With manual fallback a wrong first
    placement would stay (holders never hand over), so the layout first reached must be
    the formula's over all three, every time, without a single hand-over."""
    pl = EtcdPoolLab(tmp_path, fallback="manual")
    failed = True
    want = expected(list(MEMBERS))
    rng = random.Random(20261204)
    spread_ok = 0
    try:
        for trial in range(COLD_STARTS):
            for name in MEMBERS:
                pl.journal_path(name).unlink(missing_ok=True)
            order = list(MEMBERS)
            rng.shuffle(order)
            for name in order:
                pl.start(name)
            # every address has one holder: each member only takes what its formula gives
            # it, so the first complete layout is the placement the members agreed on
            first = wait_until("every address held once", pl.layout, timeout=30, step=0.05)
            assert first == want, (
                f"cold start {trial + 1} (order {order}): first placement {first}, the "
                f"formula gives {want}")
            for name in MEMBERS:
                for kind in ("released", "yielded", "member_back", "address_conflict"):
                    assert not pl.events(name, kind), (
                        f"cold start {trial + 1}: {name} reported {kind}: "
                        f"{pl.events(name, kind)}")
            spread_ok += 1
            pl.assert_alive()
            for name in list(pl.procs):
                pl.stop(name)  # SIGTERM: release, revoke the lease
            wait_until("the pool empty in etcd", lambda: not pl.registered()
                       and not pl.owners_in_etcd(), timeout=15, step=0.1)
        print(f"\ncold starts spread per the formula: {spread_ok}/{COLD_STARTS}")
        failed = False
    finally:
        pl.close(failed)
