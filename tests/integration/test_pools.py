"""Pools in a namespace lab: three real members (tests/integration/pool_node.py) on a bridge.

Hosts: members a, b (weight 2), c; a gateway `gw` (192.0.2.254, the witness) and an
outsider `x` that plays attacker. Heartbeats every 200 ms, lost after 3 x 200 ms + 200 ms
(0.8 s), hold-down 2 s. The expected layout is computed with the formula itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from minisft.pools.formula import assign
from tests.integration.cluster import wait_until
from tests.integration.pool_node import PoolMembers

pytestmark = pytest.mark.netns

MEMBERS = {"a": 1, "b": 2, "c": 1}
ADDRESSES = ["192.0.2.101/24", "192.0.2.102/24", "192.0.2.103/24", "192.0.2.104/24",
             "192.0.2.105/24", "2001:db8::101/64"]
DETECTION = 0.8
PORT = 7404


def expected(alive: list[str]) -> dict[str, str]:
    return assign(ADDRESSES, {m: MEMBERS[m] for m in alive}, {}, MEMBERS, pool="front")


class PoolLab(PoolMembers):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, MEMBERS, ADDRESSES)
        try:
            self.gw = self.lab.add_host("gw", "192.0.2.254/24", "2001:db8::254/64")
            self.x = self.lab.add_host("x", "192.0.2.200/24", "2001:db8::200/64")
        except BaseException:
            self.lab.close()
            raise
        self.key = tmp / "front.key"
        self.key.write_bytes(os.urandom(32))
        self.key.chmod(0o600)

    def config(self, name: str, addresses: list[str] | None = None,
               key: Path | None = None) -> Path:
        path = self.tmp / f"{name}.yaml"
        doc = {
            "node": {"name": name, "local_ip": self.hosts[name].ip},
            "logging": {"syslog": False},
            "pools": [{
                "name": "front",
                "members": [{"name": m, "ip": self.hosts[m].ip, "weight": w}
                            for m, w in MEMBERS.items()],
                "addresses": addresses or ADDRESSES,
                "key_file": str(key or self.key),
                "looksalive": {"interval": "200ms", "retry": 3, "timeout": "200ms"},
                "watch": "all",
                "fallback": {"mode": "auto", "hold_down": "2s"},
                "witness": "192.0.2.254",
                "port": PORT,
            }],
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def close(self, failed: bool) -> None:
        if failed:
            self.dump_logs()
        self.lab.close()


@contextmanager
def pool_lab(tmp_path: Path, **start: dict[str, Any]) -> Iterator[PoolLab]:
    pl = PoolLab(tmp_path)
    failed = True
    try:
        for name in MEMBERS:
            pl.start(name, **start.get(name, {}))
        wait_until("every address held once, per the formula",
                   lambda: pl.layout() == expected(list(MEMBERS)), timeout=30)
        yield pl
        failed = False
    finally:
        pl.close(failed)


def test_spread_failover_and_fallback(tmp_path: Path) -> None:
    with pool_lab(tmp_path) as pl:
        before = expected(list(MEMBERS))
        # kill b (link down): its addresses move to a and c per the formula
        t0 = time.monotonic()
        pl.hosts["b"].link_down()
        wait_until("b's addresses on a and c", lambda: pl.layout(["a", "c"]) == expected(
            ["a", "c"]), timeout=15, step=0.02)
        took = time.monotonic() - t0
        print(f"\nfailover after link down: {took:.2f}s (detection {DETECTION}s)")
        assert took < DETECTION + 3.0, f"failover took {took:.2f}s"
        for n in ("a", "c"):
            assert [e["details"]["member"] for e in pl.events(n, "member_lost")] == ["b"]
        # the event follows the bind (bound, announced, then reported to the machine): an
        # address already seen on the interface may have its address_moved a moment later
        b_had = sorted(a for a, m in before.items() if m == "b")

        def moved_events() -> list[dict[str, Any]]:
            return [e for n in ("a", "c") for e in pl.events(n, "address_moved")]

        wait_until("an address_moved for each of b's addresses",
                   lambda: sorted(e["address"] for e in moved_events()) == b_had,
                   timeout=2, step=0.02, describe=lambda: str(
                       [(n, e["kind"], e.get("address")) for n in ("a", "c")
                        for e in pl.events(n) if e.get("address") in b_had]))
        moved = moved_events()
        assert all(e["details"]["from"] == "b" for e in moved)
        # b judges its peers lost at about the moment they bind its addresses (the probe
        # round no longer delays them), or notices its link at the next housekeeping
        wait_until("b sees that it is cut off", lambda: pl.events("b", "isolated"),
                   timeout=DETECTION + 1.5, step=0.02)

        # link back: b kept its IPv4 addresses; the duplicates resolve by the formula
        pl.hosts["b"].link_up()
        wait_until("one holder per address again", lambda: pl.layout() == before,
                   timeout=20)
        assert pl.events("b", "rejoined")

        # graceful stop of b: it releases and says so, a and c take over at once
        pl.stop("b")
        t0 = time.monotonic()
        wait_until("b's addresses on a and c", lambda: pl.layout(["a", "c"]) == expected(
            ["a", "c"]), timeout=15, step=0.02)
        print(f"take-over after a graceful stop: {time.monotonic() - t0:.2f}s")
        assert time.monotonic() - t0 < DETECTION + 2.0
        assert "left the pool" in pl.events("a", "member_lost")[-1]["reason"]

        # restart b: auto fallback gives its addresses back after the 2 s hold-down
        pl.start("b")
        wait_until("a sees b back", lambda: len(pl.events("a", "member_back")) >= 1,
                   timeout=15, step=0.02)
        back = time.monotonic()
        time.sleep(1.2)
        assert pl.layout(["a", "c"]) == expected(["a", "c"]), "fell back before hold-down"
        wait_until("fallback to the full layout", lambda: pl.layout() == before, timeout=15)
        print(f"fallback {time.monotonic() - back:.2f}s after member_back (hold-down 2s)")
        assert time.monotonic() - back >= 1.8  # hold-down 2 s, minus polling lag
        pl.assert_alive()
        snap = pl.status("a")
        assert snap["phase"] == "active" and snap["assignment"] == before
        assert snap["counters"]["handovers"] >= 1


def test_partitioned_member_is_isolated_and_takes_nothing(tmp_path: Path) -> None:
    with pool_lab(tmp_path) as pl:
        before = expected(list(MEMBERS))
        mine = sorted(a for a, m in before.items() if m == "a")
        # a is cut off from b and c but still sees the gateway (the witness) and clients
        pl.lab.partition("a", "b")
        pl.lab.partition("a", "c")
        wait_until("a isolated", lambda: pl.status("a")["isolated"], timeout=15)
        wait_until("b and c took a's addresses", lambda: pl.layout(["b", "c"]) == expected(
            ["b", "c"]), timeout=15)
        time.sleep(1.0)
        snap = pl.status("a")
        assert snap["held"] == mine, "an isolated member keeps its own and takes nothing"
        assert "only breaks ties" in snap["reason"]
        isolated_at = pl.events("a", "isolated")[0]["seq"]
        assert not [e for e in pl.events("a") if e["seq"] > isolated_at
                    and e["kind"] in ("claimed", "address_moved")]
        pl.lab.heal()
        wait_until("one holder per address again", lambda: pl.layout() == before,
                   timeout=20)
        assert pl.events("a", "rejoined")
        yielded = [e for n in ("b", "c") for e in pl.events(n, "yielded")]
        assert sorted(e["address"] for e in yielded) == mine
        pl.assert_alive()


CAPTURE = r"""
import socket, sys
# argv: switch port, udp port, destination ip, source ip
# ETH_P_ALL: taps for one protocol do not see frames the port transmits
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0))
s.settimeout(10)
while True:
    frame = s.recv(65535)
    ip = frame[14:]
    if frame[12:14] != b"\x08\x00" or ip[9] != 17:
        continue
    ihl = (ip[0] & 15) * 4
    udp = ip[ihl:]
    dst, src = socket.inet_aton(sys.argv[3]), socket.inet_aton(sys.argv[4])
    # from one member only: c's heartbeats pass here too, and replayed from b's address
    # they would be wrong_sender, not replayed
    if int.from_bytes(udp[2:4], "big") == int(sys.argv[2]) and ip[16:20] == dst \
            and ip[12:16] == src:
        print(udp[8:].hex())
        break
"""

SEND = r"""
import socket, sys
# argv: target ip, port, source ip or "-", hex datagrams. From a source ip the datagrams
# leave from the pool port, as a member's do (the member's own sockets share it)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sys.argv[3] != "-":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((sys.argv[3], int(sys.argv[2])))
for hexdata in sys.argv[4:]:
    s.sendto(bytes.fromhex(hexdata), (sys.argv[1], int(sys.argv[2])))
"""


def test_forged_replayed_and_drifted(tmp_path: Path) -> None:
    forged_key = tmp_path / "forged.key"
    forged_key.write_bytes(os.urandom(32))
    forged_key.chmod(0o600)
    drifted = ADDRESSES[:-1]  # c does not know the IPv6 address
    with pool_lab(tmp_path, c={"addresses": drifted}) as pl:
        a_ip = pl.hosts["a"].ip
        # config drift: raised once on each side
        wait_until("drift seen", lambda: pl.events("a", "config_drift"), timeout=10)
        drift = pl.events("a", "config_drift")
        assert len(drift) == 1 and drift[0]["details"]["member"] == "c"
        assert drift[0]["severity"] == "critical"
        assert pl.status("a")["drift"] == ["c"]
        assert len(pl.events("c", "config_drift")) == 2

        # capture a real heartbeat b -> a on a's switch port, replay it
        port = pl.hosts["a"].port
        cap = subprocess.run(["ip", "netns", "exec", pl.lab.switch_ns, sys.executable, "-c",
                              CAPTURE, port, str(PORT), a_ip, pl.hosts["b"].ip],
                             capture_output=True,
                             text=True, timeout=30)
        real = cap.stdout.strip()
        assert real, cap.stderr
        # a forged one: a real-looking heartbeat signed with another key, from a real
        # member name; plus garbage
        from minisft.pools.protocol import Heartbeat, encode

        forged = encode(Heartbeat(pool="front", member="b", boot="0123456789abcdef",
                                  seq=10**9, time=time.time(), state="alive",
                                  holds=tuple(ADDRESSES), digest="0" * 32),
                        forged_key.read_bytes()).hex()
        # from x, a non-member: the kernel drops them before a reads anything
        datagrams = [real, real, forged, os.urandom(64).hex(), b"mSFT\x01garbage".hex()]
        before = pl.status("a")["transport"]["dropped"]
        pl.x.run(sys.executable, "-c", SEND, a_ip, str(PORT), "-", *datagrams)
        time.sleep(0.5)
        assert pl.status("a")["transport"]["dropped"] == before
        # from b's own address and port (replayed by someone on b, or spoofed): checked
        pl.hosts["b"].run(sys.executable, "-c", SEND, a_ip, str(PORT), pl.hosts["b"].ip,
                          *datagrams)
        wait_until("drops counted", lambda: pl.status("a")["transport"]["dropped"][
            "replayed"] >= before["replayed"] + 2, timeout=10)
        after = pl.status("a")["transport"]["dropped"]
        assert after["forged"] == before["forged"] + 1
        assert after["malformed"] == before["malformed"] + 2
        # an authenticated heartbeat naming c, from b's address
        c_named = encode(Heartbeat(pool="front", member="c", boot="0123456789abcdef",
                                   seq=1, time=time.time(), state="alive", holds=(),
                                   digest="0" * 32),
                         pl.key.read_bytes().rstrip(b"\r\n")).hex()  # as the daemon reads it
        pl.hosts["b"].run(sys.executable, "-c", SEND, a_ip, str(PORT), pl.hosts["b"].ip,
                          c_named)
        wait_until("wrong sender counted", lambda: pl.status("a")["transport"]["dropped"][
            "wrong_sender"] == before["wrong_sender"] + 1, timeout=10)
        time.sleep(1.0)
        pl.assert_alive()
        assert pl.layout() == expected(list(MEMBERS)), "forged claims changed nothing"
        assert not pl.events("a", "member_lost")


FLOOD = r"""
import os, socket, sys, time
# wrong-key datagrams shaped like heartbeats (header, JSON-sized body, 32-byte MAC), sent
# as fast as one process can, bounded by a count and a duration: it stops by itself
target, port, seconds, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
payloads = [b"mSFT\x01" + os.urandom(260) + os.urandom(32) for _ in range(64)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
sent, start = 0, time.monotonic()
end = start + seconds
while sent < limit:
    for p in payloads:
        try:
            s.sendto(p, (target, port))
            sent += 1
        except OSError:  # ENOBUFS and the like: the flood goes on
            pass
    if time.monotonic() >= end:
        break
print(sent, time.monotonic() - start)
"""
FLOOD_SECONDS = 10.0
FLOODERS = 3


def test_flood_from_outside_the_pool_loses_nobody(tmp_path: Path) -> None:
    """A non-member floods every member's heartbeat port with wrong-key datagrams for 10 s:
    nothing a non-member sends may make a member think another is lost, so nobody is lost,
    isolated or moved, and the layout stays as it is."""
    with pool_lab(tmp_path) as pl:
        before = expected(list(MEMBERS))
        time.sleep(2.5)  # past the start-up hand-overs
        seqs = {n: max((e["seq"] for e in pl.events(n)), default=0) for n in MEMBERS}
        flooders = [pl.x.popen([sys.executable, "-c", FLOOD, pl.hosts[name].ip, str(PORT),
                                str(FLOOD_SECONDS), str(50_000_000)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for name in list(MEMBERS)[:FLOODERS]]
        results = []
        for proc in flooders:
            out, err = proc.communicate(timeout=FLOOD_SECONDS + 30)
            assert proc.returncode == 0, err
            sent, took = out.split()
            results.append((int(sent), float(took)))
        time.sleep(DETECTION + 1.0)  # a loss during the flood is reported by now
        total = sum(n for n, _ in results)
        pps = total / max(t for _, t in results)
        print(f"\nflood: {total} datagrams in {FLOOD_SECONDS:g}s from one non-member to "
              f"{FLOODERS} members, {pps:,.0f} pps")
        assert total > 100_000, "the flood was too weak to test anything"
        after = {n: [e for e in pl.events(n) if e["seq"] > seqs[n]] for n in MEMBERS}
        bad = {n: [(e["kind"], e["reason"]) for e in evs
                   if e["kind"] in ("member_lost", "isolated", "address_moved", "claimed",
                                    "released", "yielded", "address_conflict")]
               for n, evs in after.items()}
        assert not any(bad.values()), f"the flood changed the pool: {bad}"
        assert pl.layout() == before
        pl.assert_alive()
