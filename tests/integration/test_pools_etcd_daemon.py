"""Pools in etcd mode through the real daemon (`minisft run`), as an admin would run them.

Hosts: members a, b, c on 192.0.2.1-3 (one `minisft run` each, from tests/integration/
cluster.py), a client on 192.0.2.100, and a one-member etcd on 192.0.2.250 (the quorum cases
are in test_pools_etcd.py, which drives `EtcdPoolRuntime` directly). Lease TTL 3 s,
hold-down 1 s, the pool definition signed with a key_file. What is checked is what an admin
sees: `ip addr` on each member, `minisft status`, `minisft events`, `minisft pool push`.
A background sampler reads every member's interface all along: no address may ever be
bound on two members at once.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from minisft.pools.formula import assign
from tests.integration.cluster import Cluster, Node, wait_until
from tests.integration.etcd_support import EtcdCluster, etcd_available, pool_status

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not etcd_available(), reason="etcd not installed (apt-get install "
                       "etcd-server etcd-client)"),
]

MEMBERS = ["a", "b", "c"]
ADDRESSES = ["192.0.2.101/24", "192.0.2.102/24", "192.0.2.103/24", "2001:db8::101/64"]
TTL = 3
HOLD_DOWN = 1.0
PREFIX = "/minisft-daemon-test"
CONFIG_KEY = f"{PREFIX}/pools/front/config"


def expected(alive: list[str], addresses: list[str] | None = None) -> dict[str, str]:
    return assign(addresses or ADDRESSES, dict.fromkeys(alive, 1), {},
                  dict.fromkeys(MEMBERS, 1), pool="front")


def pool_cfg(key: Path, endpoints: list[str], addresses: list[str]) -> dict[str, Any]:
    return {
        "name": "front",
        "members": [{"name": m, "ip": f"192.0.2.{i}"} for i, m in enumerate(MEMBERS, 1)],
        "addresses": list(addresses),
        "key_file": str(key),
        "fallback": {"mode": "auto", "hold_down": f"{HOLD_DOWN:g}s"},
        "coordination": {"backend": "etcd", "endpoints": endpoints, "ttl": f"{TTL}s",
                         "prefix": PREFIX},
    }


class Sampler:
    """Reads every member's interface every 50 ms in the background: `layout()` for the
    test, and every moment an address was on two members (`duplicates`)."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.duplicates: list[tuple[float, str, list[str]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def holders(self, addresses: list[str]) -> dict[str, list[str]]:
        have = {n: {a.split("/")[0] for a in node.host.addresses()}
                for n, node in self.c.nodes.items()}
        return {a: [n for n in MEMBERS if a.split("/")[0] in have[n]] for a in addresses}

    def layout(self, addresses: list[str] | None = None) -> dict[str, str] | None:
        """Address -> its one holder; None while any address has 0 or 2+ holders."""
        holders = self.holders(addresses or ADDRESSES)
        if any(len(h) != 1 for h in holders.values()):
            return None
        return {a: h[0] for a, h in holders.items()}

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        watched = sorted(set(ADDRESSES) | {"192.0.2.110/24"})
        while not self._stop.is_set():
            try:
                for address, holders in self.holders(watched).items():
                    if len(holders) > 1:
                        self.duplicates.append((time.time(), address, holders))
                self.samples += 1
            except Exception:  # a namespace going away at the end
                pass
            self._stop.wait(0.05)


@contextmanager
def etcd_daemons(tmp_path: Path) -> Iterator[tuple[Cluster, EtcdCluster, Sampler]]:
    """etcd, then the three daemons; yields once every address is held once, per the
    formula. Every namespace and process goes away at the end, also on failure."""
    key = tmp_path / "front.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    with Cluster(tmp_path, MEMBERS) as c:
        etcd = EtcdCluster(c.lab, 1)
        try:
            etcd.start()
            with Sampler(c) as sampler:
                for n in MEMBERS:
                    c.nodes[n].configure([], pools=[pool_cfg(key, etcd.endpoints,
                                                             ADDRESSES)])
                    c.nodes[n].start(wait=False)
                for n in MEMBERS:
                    wait_until(f"{n}'s daemon to listen", c.nodes[n]._ready, timeout=20)
                t0 = time.monotonic()
                wait_until("every address held once, per the formula",
                           lambda: sampler.layout() == expected(MEMBERS), timeout=20)
                print(f"\nlayout reached {time.monotonic() - t0:.2f}s after the daemons "
                      "listened")
                yield c, etcd, sampler
            assert sampler.samples > 20, "the duplicate sampler did not run"
            assert not sampler.duplicates, \
                f"an address was on two members at once: {sampler.duplicates[:5]}"
        except BaseException:
            sys.stderr.write(etcd.tail())
            raise
        finally:
            etcd.stop()


def reported(node: Node, assignment: dict[str, str]) -> dict[str, Any] | None:
    """The pool's status once it reports `assignment`."""
    pool = pool_status(node)
    return pool if pool["assignment"] == assignment else None


def cli_events(node: Node, kind: str) -> list[dict[str, Any]]:
    """`minisft events --json --kind KIND --last 0`, as an admin would read the journal."""
    proc = node.cli("events", "--json", "--kind", kind, "--last", "0")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_daemons_spread_fail_over_and_fall_back(tmp_path: Path) -> None:
    with etcd_daemons(tmp_path) as (c, etcd, sampler):
        before = expected(MEMBERS)
        # what the admin sees: the pool, its backend, the layout, etcd's owners
        for n in MEMBERS:
            pool = wait_until(f"{n} reports the full layout",
                              partial(reported, c.nodes[n], before), timeout=10)
            assert pool["backend"] == "etcd" and pool["phase"] == "active"
            assert pool["etcd"]["connected"] and pool["etcd"]["lease"]
            assert pool["etcd"]["endpoint"] == etcd.endpoints[0]
            assert pool["config_drift"] is None and pool["drift"] == []
            assert sorted(pool["held"]) == sorted(a for a, m in before.items() if m == n)
            assert not c.nodes[n].events("config_drift")
            assert not c.nodes[n].events("lease_lost")
        owners = {k.rsplit("/", 1)[1]: json.loads(v["value"])["member"] for k, v in
                  etcd.get_prefix(f"{PREFIX}/pools/front/owners/").items()}
        assert owners == {a.split("/")[0]: m for a, m in before.items()}
        text = c.nodes["a"].cli("status", check=True).stdout
        assert "pool front as a: active, members alive: a, b, c" in text
        assert f"etcd {etcd.endpoints[0]}: connected, lease " in text
        assert f"(ttl {TTL}s)" in text

        # the member holding the most addresses dies (its link goes down): it fences
        # itself (2 s without keepalive), its lease expires (3 s), the others take over
        victim = max(MEMBERS, key=lambda m: (list(before.values()).count(m), m))
        survivors = [m for m in MEMBERS if m != victim]
        orphans = sorted(a for a, m in before.items() if m == victim)
        after = expected(survivors)
        mark = {n: c.nodes[n].last_seq() for n in MEMBERS}
        t0, t0_wall = time.monotonic(), time.time()
        c.nodes[victim].host.link_down()
        wait_until(f"{victim}'s addresses on {' and '.join(survivors)}",
                   lambda: sampler.layout() == after, timeout=TTL + 6, step=0.02)
        took = time.monotonic() - t0
        print(f"failover through the daemons after {victim}'s link went down: {took:.2f}s "
              f"(ttl {TTL}s; moved {', '.join(orphans)})")
        assert took < TTL + 4.0, f"failover took {took:.2f}s"

        # the dead member says why (its control socket still answers)
        lost = wait_until(f"{victim}: lease_lost", lambda: c.nodes[victim].events(
            "lease_lost"), timeout=5)
        assert len(lost) == 1 and lost[0].severity.label == "critical"
        # `ip link set down` flushes a link's IPv6 addresses (keep_addr_on_down=0): the
        # daemon reports those as address_removed, and fences with what was left
        vanished = [e for e in c.nodes[victim].events("address_removed")
                    if e.seq > mark[victim]]
        assert lost[0].details["released"] + len(vanished) == len(orphans)
        assert not [a for a in ADDRESSES if c.nodes[victim].holds(a)], \
            "a fenced member keeps nothing"
        assert lost[0].details["released_after"] < TTL
        assert c.nodes[victim].events("link_down")
        wait_until(f"{victim} reports fenced, not connected", lambda: (
            (p := pool_status(c.nodes[victim]))["phase"] == "fenced"
            and not p["etcd"]["connected"]), timeout=10)
        assert "NOT CONNECTED" in c.nodes[victim].cli("status", check=True).stdout

        # the survivors: member_lost, then address_moved for exactly the orphans
        for n in survivors:
            ml = [e for e in c.nodes[n].events("member_lost") if e.seq > mark[n]]
            assert [e.details["member"] for e in ml] == [victim]
            assert "lease expired" in ml[0].reason
        moved = [e for n in survivors for e in cli_events(c.nodes[n], "address_moved")
                 if e["time"] >= t0_wall]
        assert sorted(e["address"] for e in moved) == orphans
        assert all(e["details"]["from"] == victim and e["details"]["to"] == after[e["address"]]
                   for e in moved)
        margin = min(e["time"] for e in moved) - lost[0].time
        print(f"{victim} released {lost[0].details['released_after']}s after its last "
              f"keepalive; the survivors bound {margin:.2f}s after that")
        assert margin > 0.3, "a survivor bound before the fenced member released"
        for a in orphans:
            assert c.client.ping(a.split("/")[0]), f"{a} unreachable after the failover"
        text = c.nodes[survivors[0]].cli("status", check=True).stdout
        assert f"members alive: {', '.join(survivors)};" in text

        # link back: a new lease, and the addresses back after the hold-down
        c.nodes[victim].host.link_up()
        wait_until(f"{victim} rejoined", lambda: c.nodes[victim].events("rejoined"),
                   timeout=15)
        t1 = time.monotonic()
        wait_until("the full layout again", lambda: sampler.layout() == before, timeout=15)
        print(f"fallback {time.monotonic() - t1:.2f}s after the rejoin "
              f"(hold-down {HOLD_DOWN:g}s)")
        for n in survivors:
            assert [e.details["member"] for e in c.nodes[n].events("member_back")
                    if e.seq > mark[n]] == [victim]
        assert pool_status(c.nodes[victim])["phase"] == "active"
        for n in MEMBERS:
            assert c.nodes[n].running, f"{n}'s daemon died:\n{c.nodes[n].log()[-3000:]}"


def test_pool_push_changes_every_member_and_reports_drift(tmp_path: Path) -> None:
    with etcd_daemons(tmp_path) as (c, etcd, sampler):
        a, b, cc = (c.nodes[n] for n in MEMBERS)
        before = expected(MEMBERS)
        removed = next(x for x in ADDRESSES if before[x] == "a")  # a holds it
        added = "192.0.2.110/24"
        new = [*(x for x in ADDRESSES if x != removed), added]
        wait_until("a reports the full layout", partial(reported, a, before), timeout=10)
        mark = {n: c.nodes[n].last_seq() for n in MEMBERS}

        # a's config file gets the new address list: a reload restarts a's pool, which
        # still uses etcd's definition and reports the drift; nothing moves, and a keeps
        # (adopts) the address its own file no longer lists
        a.config["pools"][0]["addresses"] = new
        a.write_config(a.config)
        proc = a.cli("reload")
        assert proc.returncode == 0, proc.stderr
        assert "pool front restarted" in proc.stdout
        drift = a.wait_event("config_drift", "front", after=mark["a"], timeout=10)
        assert drift.severity.label == "critical"
        assert drift.details["differs"] == "addresses"
        wait_until("a active again on etcd's definition", lambda: (
            (p := pool_status(a))["phase"] == "active"
            and p["assignment"] == before), timeout=10)
        assert pool_status(a)["config_drift"]
        assert sampler.layout() == before, "a reload moved addresses"
        time.sleep(TTL + 1)  # a lease the reload dropped would have expired by now
        for n in ("b", "c"):
            assert not [e for e in c.nodes[n].events("member_lost") if e.seq > mark[n]], \
                f"{n} saw a lost on a's reload: the restarted pool must keep a's lease"
        wait_until(f"a adopted {removed} again", lambda: [
            e for e in a.events("adopted") if e.address == removed and e.seq > mark["a"]],
            timeout=10)
        assert not [e for e in a.events("claimed") if e.seq > mark["a"]]
        for n in MEMBERS:
            assert not c.nodes[n].events("address_conflict"), \
                f"{n}: a conflict after a's reload (a's owner key was given up under it)"

        # push it: every member applies the new definition at once
        t0 = time.monotonic()
        proc = a.cli("pool", "push", "front")
        assert proc.returncode == 0, proc.stderr
        assert CONFIG_KEY in proc.stdout and "(signed)" in proc.stdout
        assert "previous: none" not in proc.stdout and "identical" not in proc.stdout
        target = expected(MEMBERS, new)
        wait_until("the pushed definition's layout", lambda: sampler.layout(new) == target
                   and not any(sampler.holders([removed]).values()), timeout=15)
        print(f"\npush applied on every interface in {time.monotonic() - t0:.2f}s "
              f"({removed} gone from a, {added} on {target[added]})")
        stored = json.loads(etcd.get_prefix(CONFIG_KEY)[CONFIG_KEY]["value"])
        assert stored["definition"]["addresses"] == new and stored["mac"]
        released = [e for e in a.events("released")
                    if e.address == removed and e.seq > mark["a"]]
        assert released and "left the pool definition" in released[0].reason

        # a matches etcd again (resolved); b and c now differ from it
        wait_until("a's drift resolved", lambda: [
            e.details.get("resolved") for e in a.events("config_drift")
            if e.seq > mark["a"]] == [None, True], timeout=10)
        assert pool_status(a)["config_drift"] is None
        for node in (b, cc):
            ev = node.wait_event("config_drift", "front", after=mark[node.name], timeout=10)
            assert ev.severity.label == "critical" and ev.details["differs"] == "addresses"
            assert [e["kind"] for e in cli_events(node, "config_drift")] == ["config_drift"]
            pool = pool_status(node)
            assert pool["config_drift"] and "minisft pool push" in pool["config_drift"]
            assert pool["assignment"] == target, f"{node.name} does not use etcd's definition"
            assert "CONFIG DRIFT:" in node.cli("status", check=True).stdout
        wait_until("a lists b and c as drifted",
                   lambda: pool_status(a)["drift"] == ["b", "c"], timeout=10)

        # pushing the same again: said so
        proc = a.cli("pool", "push", "front")
        assert proc.returncode == 0 and "previous: identical" in proc.stdout

        # refusals, with the reason
        proc = a.cli("pool", "push", "nosuch")
        assert proc.returncode == 1
        assert "no pool named 'nosuch'" in proc.stderr and "known: front" in proc.stderr
        embedded = tmp_path / "embedded.yaml"
        emb_cfg = dict(a.config, state_dir=str(tmp_path / "emb-state"),
                       control_socket=str(tmp_path / "emb.sock"))
        emb_pool = {k: v for k, v in a.config["pools"][0].items() if k != "coordination"}
        emb_cfg["pools"] = [dict(emb_pool, name="back")]
        embedded.write_text(yaml.safe_dump(emb_cfg))
        proc = a.host.run(sys.executable, "-m", "minisft", "pool", "push", "--config",
                          str(embedded), "back", check=False, timeout=30)
        assert proc.returncode == 1
        assert "not in etcd mode" in proc.stderr, proc.stderr
        assert json.loads(etcd.get_prefix(CONFIG_KEY)[CONFIG_KEY]["value"]) == stored
        for n in MEMBERS:
            assert not c.nodes[n].events("address_conflict"), f"{n}: address_conflict"
        for n in MEMBERS:
            assert c.nodes[n].running, f"{n}'s daemon died:\n{c.nodes[n].log()[-3000:]}"
