"""The network layer against real kernels: netlink addresses, ARP and NDP in a namespace lab.

Sockets and netlink are per namespace, so each lab host runs a small agent process
(`AGENT` below) that owns a `Netlink` and a `NeighbourWatch` and takes JSON commands on
stdin; the other side of every exchange is the host's own kernel or stock tools (arping,
ip), never our own code, wherever that is possible.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minisft.lab.netns import Host, Lab

pytestmark = pytest.mark.netns

REPO = str(Path(__file__).resolve().parents[2])
VIP = "192.0.2.10"
VIP6 = "2001:db8::10"
REPLY_TIMEOUT = 30.0  # generous: other suites share this 2-core machine

AGENT = r"""
import asyncio, ipaddress, json, sys, time
sys.path.insert(0, sys.argv[1])
from minisft.net.link import Netlink, LinkError, Interface
from minisft.net.neighbour import NeighbourWatch

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

async def main():
    netlink = Netlink()
    # called on the loop thread on purpose: Netlink must cope (plain pyroute2 cannot)
    iface = netlink.interface_for(ipaddress.ip_address(sys.argv[2]))
    watch = NeighbourWatch(iface)
    await watch.start()
    out({"ready": True, "iface": [iface.name, iface.index, iface.mac]})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()

    async def handle(cmd):
        op, started = cmd["op"], time.monotonic()
        try:
            if op == "probe":
                result = await watch.probe(ipaddress.ip_address(cmd["ip"]), cmd["count"],
                                           cmd["interval"],
                                           on_prober=cmd.get("on_prober", "yield"))
            elif op == "announce":
                result = await watch.announce(ipaddress.ip_address(cmd["ip"]), cmd["count"],
                                              cmd["interval"])
            elif op == "watch":
                ip = cmd["ip"]
                watch.watch(ipaddress.ip_address(ip),
                            lambda mac, ip=ip: out({"event": "conflict", "ip": ip, "mac": mac}))
                result = None
            elif op == "unwatch":
                result = watch.unwatch(ipaddress.ip_address(cmd["ip"]))
            elif op == "stats":
                result = dict(watch.stats)
            elif op == "netlink":
                args = [ipaddress.ip_interface(a) if "/" in a else ipaddress.ip_address(a)
                        for a in cmd.get("args", [])]
                target = Interface(*cmd["iface"]) if "iface" in cmd else iface
                fn = getattr(netlink, cmd["call"])
                if cmd["call"] == "interface_for":
                    result = await asyncio.to_thread(fn, *args)
                    result = [result.name, result.index, result.mac]
                else:
                    result = await asyncio.to_thread(fn, target, *args)
            else:
                raise ValueError(f"unknown op {op}")
            out({"id": cmd["id"], "result": result, "elapsed": time.monotonic() - started})
        except Exception as exc:
            out({"id": cmd["id"], "error": f"{type(exc).__name__}: {exc}",
                 "elapsed": time.monotonic() - started})

    while line := await reader.readline():
        task = asyncio.ensure_future(handle(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await watch.close()
    await asyncio.to_thread(netlink.close)

asyncio.run(main())
"""


class Agent:
    """A Netlink + NeighbourWatch living in one lab host; commands return their replies."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.proc = host.popen([sys.executable, "-u", "-c", AGENT, REPO, host.ip],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.PIPE, text=True, cwd=REPO)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            hello = self._lines.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"{host.name}: agent did not start") from None
        assert hello.get("ready"), f"{host.name}: agent failed: {hello}"
        self.iface: list[Any] = hello["iface"]
        self.mac: str = self.iface[2]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._cond:
                if "id" in msg:
                    self._replies[msg["id"]] = msg
                elif "event" in msg:
                    self.events.append(msg)
                else:
                    self._lines.put(msg)
                self._cond.notify_all()
        self._lines.put({"ready": False, "stderr": self._stderr()})

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.proc.wait(5)
            assert self.proc.stderr is not None
            return str(self.proc.stderr.read())
        return ""

    def send(self, op: str, **args: Any) -> int:
        ident = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": ident, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return ident

    def reply(self, ident: int, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._replies, timeout):
                raise AssertionError(f"{self.host.name}: no reply to command {ident}")
            return self._replies.pop(ident)

    def call(self, op: str, **args: Any) -> Any:
        msg = self.reply(self.send(op, **args))
        if "error" in msg:
            raise AgentError(msg["error"])
        return msg["result"]

    def timed(self, op: str, **args: Any) -> tuple[Any, float]:
        msg = self.reply(self.send(op, **args))
        assert "error" not in msg, msg["error"]
        return msg["result"], msg["elapsed"]

    def netlink(self, call: str, *args: str, iface: list[Any] | None = None) -> Any:
        extra = {"iface": iface} if iface is not None else {}
        return self.call("netlink", call=call, args=list(args), **extra)

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        with self._cond:
            found: list[dict[str, Any]] = []

            def seen() -> bool:
                found[:] = [e for e in self.events if predicate(e)]
                return bool(found)

            if not self._cond.wait_for(seen, timeout):
                raise AssertionError(f"{self.host.name}: no matching event; got {self.events}")
            return found[0]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


class AgentError(Exception):
    pass


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.fixture
def agents(lab: Lab) -> Iterator[Callable[[Host], Agent]]:
    started: list[Agent] = []

    def start(host: Host) -> Agent:
        agent = Agent(host)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


def neigh_mac(host: Host, ip: str) -> str | None:
    """The link-layer address `host`'s kernel has for ip, if any."""
    out = host.run("ip", "neigh", "show", ip, "dev", "eth0").stdout
    match = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return match.group(1) if match else None


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
    return value


# --------------------------------------------------------------------------- probe


@pytest.mark.parametrize("vip, free", [(VIP, "192.0.2.11"), (VIP6, "2001:db8::11")])
def test_probe_finds_the_holder_and_nobody_for_a_free_address(
        lab: Lab, agents: Callable[[Host], Agent], vip: str, free: str) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    b.add_address(f"{vip}/{24 if '.' in vip else 64}")
    agent = agents(a)

    # the holder's kernel answers: the probe returns its MAC at once, not after 5 rounds
    mac, elapsed = agent.timed("probe", ip=vip, count=5, interval=1.0)
    assert mac == b.mac
    assert elapsed < 4.0

    mac, elapsed = agent.timed("probe", ip=free, count=3, interval=0.1)
    assert mac is None
    assert elapsed >= 0.29  # all three rounds plus the wait after the last
    stats = agent.call("stats")
    assert stats["probes_sent"] >= 4 and stats["probe_answers"] >= 1


@pytest.mark.parametrize("vip", [VIP, VIP6])
def test_two_hosts_probing_at_once_see_each_other(
        lab: Lab, agents: Callable[[Host], Agent], vip: str) -> None:
    """RFC 5227 2.1.1 / RFC 4862 5.4.3: a simultaneous probe counts as an answer, so two
    backups can never both find a free address free. (Often only one of them backs off:
    whoever stops at the other's probe sends no more, and the other may have missed its
    first one. Either way at most one proceeds.)"""
    a = agents(lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64"))
    b = agents(lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64"))
    for _ in range(3):
        ida = a.send("probe", ip=vip, count=10, interval=0.5)
        idb = b.send("probe", ip=vip, count=10, interval=0.5)
        seen_by_a, seen_by_b = a.reply(ida)["result"], b.reply(idb)["result"]
        assert (seen_by_a, seen_by_b) != (None, None), "both would take the address"
        assert seen_by_a in (None, b.mac) and seen_by_b in (None, a.mac)


@pytest.mark.parametrize("vip", [VIP, VIP6])
def test_simultaneous_probes_with_a_tie_break_let_exactly_one_proceed(
        lab: Lab, agents: Callable[[Host], Agent], vip: str) -> None:
    """Two daemons whose probes keep colliding must not livelock: with "tiebreak" the
    lower MAC goes ahead, with "ignore" on one side that side goes ahead."""
    a = agents(lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64"))
    b = agents(lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64"))
    low, high = sorted([a, b], key=lambda agent: agent.mac)
    for _ in range(2):
        idl = low.send("probe", ip=vip, count=6, interval=0.3, on_prober="tiebreak")
        idh = high.send("probe", ip=vip, count=6, interval=0.3, on_prober="tiebreak")
        assert low.reply(idl)["result"] is None
        assert high.reply(idh)["result"] == low.mac
    idh = high.send("probe", ip=vip, count=6, interval=0.3, on_prober="ignore")
    idl = low.send("probe", ip=vip, count=6, interval=0.3)
    assert high.reply(idh)["result"] is None
    assert low.reply(idl)["result"] == high.mac
    # a real holder answers whatever the policy
    lab.hosts["b"].add_address(f"{vip}/{24 if '.' in vip else 64}")
    assert a.call("probe", ip=vip, count=3, interval=0.5, on_prober="ignore") == b.mac


def test_an_arping_probe_from_another_host_answers_ours(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    a = agents(lab.add_host("a", "192.0.2.1/24"))
    b = lab.add_host("b", "192.0.2.2/24")
    ident = a.send("probe", ip="192.0.2.44", count=40, interval=0.5)
    time.sleep(0.5)
    # Habets arping: -0 sends from 0.0.0.0, i.e. an RFC 5227 probe
    b.run("arping", "-0", "-i", "eth0", "-c", "3", "-w", "1", "192.0.2.44", check=False)
    assert a.reply(ident)["result"] == b.mac


def test_probe_ignores_requests_that_only_ask_for_the_address(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    """A client ARPing for a free address is asking, not holding: not an answer."""
    a = agents(lab.add_host("a", "192.0.2.1/24"))
    c = lab.add_host("c", "192.0.2.3/24")
    pinger = c.popen(["ping", "-n", "-i", "0.2", "-c", "15", "192.0.2.44"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mac, _ = a.timed("probe", ip="192.0.2.44", count=6, interval=0.3)
    pinger.kill()
    assert mac is None
    assert a.call("stats")["frames_seen"] >= 1  # c's requests did reach us


# --------------------------------------------------------------------------- announce


@pytest.mark.parametrize("vip, prefix", [(VIP, 24), (VIP6, 64)])
def test_announce_moves_a_clients_neighbour_entry(
        lab: Lab, agents: Callable[[Host], Agent], vip: str, prefix: int) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    client = lab.add_host("client", "192.0.2.3/24", "2001:db8::3/64")
    b.add_address(f"{vip}/{prefix}")
    assert client.ping(vip, timeout=2.0)
    assert neigh_mac(client, vip) == b.mac

    # b dies quietly; a takes the address over and announces it
    b.run("ip", "addr", "del", f"{vip}/{prefix}", "dev", "eth0")
    agent = agents(a)
    agent.netlink("bind", f"{vip}/{prefix}")
    time.sleep(1.0)
    assert neigh_mac(client, vip) == b.mac  # nothing moves the entry by itself this soon
    agent.call("announce", ip=vip, count=2, interval=0.2)
    wait_until("the client to learn a's MAC", lambda: neigh_mac(client, vip) == a.mac,
               timeout=10)
    assert client.ping(vip, timeout=2.0)
    assert agent.call("stats")["announcements_sent"] == 2


# --------------------------------------------------------------------------- watch


def test_watch_reports_a_gratuitous_arp_for_our_address(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    b = lab.add_host("b", "192.0.2.2/24")
    agent = agents(a)
    agent.netlink("bind", f"{VIP}/24")
    agent.call("watch", ip=VIP)

    # our own announcements and someone probing (sender 0.0.0.0) are not conflicts
    agent.call("announce", ip=VIP, count=2, interval=0.1)
    b.run("arping", "-0", "-i", "eth0", "-c", "2", "-w", "1", VIP, check=False)
    time.sleep(0.5)
    assert agent.events == []

    b.run("arping", "-U", "-S", VIP, "-i", "eth0", "-c", "2", "-w", "1", VIP, check=False)
    event = agent.wait_event(lambda e: e["ip"] == VIP)
    assert event["mac"] == b.mac
    assert all(e["mac"] == b.mac for e in agent.events)

    # after unwatch, the same claim is no longer reported
    agent.call("unwatch", ip=VIP)
    seen = len(agent.events)
    b.run("arping", "-U", "-S", VIP, "-i", "eth0", "-c", "1", "-w", "1", VIP, check=False)
    time.sleep(0.5)
    assert len(agent.events) == seen


def test_watch_reports_another_host_answering_arp_for_our_address(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    """A second holder's kernel uses the address as its ARP sender when it resolves a
    neighbour from it: that is a conflict too (RFC 5227 2.4)."""
    a = lab.add_host("a", "192.0.2.1/24")
    b = lab.add_host("b", "192.0.2.2/24")
    b.add_address(f"{VIP}/24")
    agent = agents(a)
    agent.netlink("bind", f"{VIP}/24")
    agent.call("watch", ip=VIP)
    # b asks for a's address from VIP (b's address too)
    b.run("arping", "-S", VIP, "-i", "eth0", "-c", "2", "-w", "1", "192.0.2.1", check=False)
    assert agent.wait_event(lambda e: e["ip"] == VIP)["mac"] == b.mac


def test_watch_reports_an_unsolicited_na_for_our_ipv6_address(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    agent = agents(a)
    agent.netlink("bind", f"{VIP6}/64")
    agent.call("watch", ip=VIP6)
    agent.call("announce", ip=VIP6, count=2, interval=0.1)
    time.sleep(0.5)
    assert agent.events == []  # our own NAs are not conflicts

    # with ndisc_notify the kernel announces an address it adds: b's kernel claims VIP6
    b.run("sysctl", "-qw", "net.ipv6.conf.eth0.ndisc_notify=1")
    b.run("ip", "addr", "add", f"{VIP6}/64", "dev", "eth0")
    event = agent.wait_event(lambda e: e["ip"] == VIP6)
    assert event["mac"] == b.mac
    assert agent.call("stats")["conflicts_seen"] >= 1


def test_probe_and_watch_survive_a_link_flap(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    b.add_address(f"{VIP6}/64")
    agent = agents(a)
    agent.call("watch", ip=VIP)
    a.link_down()
    # a probe that cannot go out must fail loudly, never report "nobody there"
    with pytest.raises(AgentError, match="cannot send on eth0"):
        agent.call("probe", ip=VIP6, count=2, interval=0.1)
    a.link_up()
    wait_until("eth0 up", lambda: agent.netlink("link_up") is True)
    assert agent.call("probe", ip=VIP6, count=5, interval=0.5) == b.mac
    b.run("arping", "-U", "-S", VIP, "-i", "eth0", "-c", "2", "-w", "1", VIP, check=False)
    assert agent.wait_event(lambda e: e["ip"] == VIP)["mac"] == b.mac


def test_ordinary_ipv6_traffic_never_reaches_userspace(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    """The kernel-side filter passes only NS/NA: a busy IPv6 link costs us nothing."""
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    agent = agents(a)
    before = agent.call("stats")["frames_seen"]
    b.run("ping", "-n", "-q", "-c", "40", "-i", "0.02", "-s", "1000", "2001:db8::1")
    seen = agent.call("stats")["frames_seen"] - before
    assert 1 <= seen < 10  # the neighbour exchange before the first echo, not 40 echoes


def test_garbage_on_the_wire_is_counted_not_fatal(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    b = lab.add_host("b", "192.0.2.2/24", "2001:db8::2/64")
    b.add_address(f"{VIP}/24")
    agent = agents(a)
    junk = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
src = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
for ethertype in (b"\x08\x06", b"\x86\xdd"):
    for n in range(0, 120, 7):
        body = bytes((i * 37 + n) % 256 for i in range(n))
        s.send(b"\xff" * 6 + src + ethertype + body)
# an NS/NA-shaped IPv6 frame that passes the kernel filter but has a bad checksum
s.send(b"\xff" * 6 + src + b"\x86\xdd" + bytes.fromhex("6000000000183aff") + bytes(32)
       + bytes([136, 0, 0, 1]) + bytes(20))
"""
    b.run(sys.executable, "-c", junk)
    time.sleep(0.5)
    stats = agent.call("stats")
    assert stats["malformed"] >= 10
    # and the watcher still works
    assert agent.call("probe", ip=VIP, count=3, interval=0.5) == b.mac


# --------------------------------------------------------------------------- netlink


@pytest.mark.parametrize("address", [f"{VIP}/24", f"{VIP6}/64"])
def test_bind_and_release_are_idempotent_and_visible(
        lab: Lab, agents: Callable[[Host], Agent], address: str) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    agent = agents(a)
    ip = address.split("/")[0]
    assert agent.netlink("has_address", ip) is False
    agent.netlink("bind", address)
    agent.netlink("bind", address)  # already there: fine
    assert address in a.addresses()
    assert agent.netlink("has_address", ip) is True
    if ":" in ip:
        line = a.run("ip", "-6", "-o", "addr", "show", "dev", "eth0", "to", ip).stdout
        assert "nodad" in line and "tentative" not in line
    agent.netlink("release", address)
    agent.netlink("release", address)  # already gone: fine
    assert not a.has_address(address)
    assert agent.netlink("has_address", ip) is False


def test_bind_failure_names_address_and_interface(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    agent = agents(lab.add_host("a", "192.0.2.1/24"))
    with pytest.raises(AgentError, match=r"LinkError: cannot add 192\.0\.2\.10/24 to ghost0"):
        agent.netlink("bind", f"{VIP}/24", iface=["ghost0", 9999, "02:00:00:00:00:01"])


def test_interface_for_finds_the_interface_or_says_what_is_wrong(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    a = lab.add_host("a", "192.0.2.1/24", "2001:db8::1/64")
    agent = agents(a)
    assert agent.iface[0] == "eth0" and agent.mac == a.mac
    assert agent.netlink("interface_for", "2001:db8::1") == agent.iface
    with pytest.raises(AgentError) as err:
        agent.netlink("interface_for", "192.0.2.99")
    assert str(err.value) == ("LinkError: node.local_ip 192.0.2.99 is not configured on any "
                              "interface of this host")


def test_link_up_follows_admin_state_and_carrier(
        lab: Lab, agents: Callable[[Host], Agent]) -> None:
    a = lab.add_host("a", "192.0.2.1/24")
    agent = agents(a)
    assert agent.netlink("link_up") is True
    a.link_down()
    assert agent.netlink("link_up") is False
    a.link_up()
    wait_until("eth0 up again", lambda: agent.netlink("link_up") is True)
    # carrier loss: our side stays admin-up, the switch port goes away
    lab.switch_run("ip", "link", "set", a.port, "down")
    assert agent.netlink("link_up") is False
    lab.switch_run("ip", "link", "set", a.port, "up")
    wait_until("carrier back", lambda: agent.netlink("link_up") is True)
