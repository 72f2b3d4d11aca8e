"""Reloads at every moment of a monitor's life: the real Daemon and MonitorRuntime on a
fake host (in-memory interface, ARP probes and pings that take real, short time).

A reload that changes a monitor must never strand it: a probe round or a bind under way
when SIGHUP arrives still ends in the state it was heading for. A reload that cannot be
applied (a pool's new port is taken) changes nothing and says why.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from minisft.config.loader import parse_config
from minisft.config.model import IsAliveConfig
from minisft.core.actions import (
    Emit,
)
from minisft.core.events import EventKind
from minisft.core.io import (
    Command,
    LinkChanged,
    PingResult,
    Reconfigured,
    ServiceResult,
    Started,
    Verb,
)
from minisft.core.monitor import TRANSITIONS, IllegalInput, MonitorMachine, Purpose, State
from minisft.runtime.daemon import Daemon
from minisft.testing.fakes import FakeHost, fake_host_ports
from tests.unit.core_driver import make_config
from tests.unit.daemon_harness import DaemonOnFakeHost, run_daemon

HOLDER_MAC = "02:00:00:00:00:aa"
PEER = ipaddress.ip_address("192.0.2.1")
BIND_LATENCY = 0.4  # long enough for a reload to land while the bind is under way


class ReloadHost(FakeHost):
    """The shared fake host; the holder of the address and the primary's own host
    (peer_ip) are switched on and off by the scenarios."""

    def __init__(self) -> None:
        super().__init__()
        self.bind_latency = BIND_LATENCY
        self.holder = self.add_neighbour(HOLDER_MAC, "192.0.2.10")
        self.peer = self.add_neighbour("02:00:00:00:00:bb")

    @property
    def holder_alive(self) -> bool:  # another host holds the address and answers for it
        return bool(self.holder.holds)

    @holder_alive.setter
    def holder_alive(self, alive: bool) -> None:
        self.holder.holds = {ipaddress.ip_address("192.0.2.10")} if alive else set()

    @property
    def arp_answers(self) -> bool:
        return self.holder.answers_arp

    @arp_answers.setter
    def arp_answers(self, answers: bool) -> None:
        self.holder.answers_arp = answers

    @property
    def peer_alive(self) -> bool:  # the primary's own host (peer_ip)
        return bool(self.peer.holds)

    @peer_alive.setter
    def peer_alive(self, alive: bool) -> None:
        self.peer.holds = {PEER} if alive else set()


def monitor(role: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "web", "monitor_ip": "192.0.2.10", "monitor_subnet": 24, "role": role,
        "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"},
        "probe": {"count": 3, "interval": "300ms"},
    }
    cfg.update(extra)
    return cfg


def write_config(path: Path, monitors: list[dict[str, Any]], **extra: Any) -> None:
    doc = {"node": {"name": "beta", "local_ip": "127.0.0.1"},
           "state_dir": str(path.parent / "state"),
           "control_socket": str(path.parent / "minisft.sock"),
           "logging": {"level": "info", "syslog": False},
           "monitors": monitors, **extra}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


Harness = DaemonOnFakeHost[ReloadHost]  # the shared harness: the daemon and its events


def run(path: Path, scenario: Callable[[Harness], Awaitable[None]], *,
        holder_alive: bool = True) -> None:
    host = ReloadHost()
    host.holder_alive = holder_alive
    run_daemon(path, host, scenario)


def in_state(h: Harness, state: State, purpose: Purpose | None) -> bool:
    m = h.web.machine
    return m.state is state and m.purpose is purpose


# What each case does before the reload, and the (state, purpose) it waits for: every
# moment at which the monitor has work in flight (a probe round or a bind).
async def takeover_probe(h: Harness) -> None:
    h.host.holder_alive = False


async def takeover_bind(h: Harness) -> None:
    h.host.holder_alive = False


async def claim_probe(h: Harness) -> None:
    h.host.arp_answers = False  # the holder answers ping but not ARP: the claim binds
    h.web.feed(Command(Verb.CLAIM, by="test"))


async def reprobe(h: Harness) -> None:
    h.host.holder_alive = False
    await h.until("the takeover", lambda: h.web.machine.state is State.HOLDING, 10)
    h.web.feed(LinkChanged(False))
    h.web.feed(LinkChanged(True))


CASES = {
    "backup, takeover probe round": ("backup", takeover_probe, State.PROBING, Purpose.TAKEOVER),
    "backup, takeover bind": ("backup", takeover_bind, State.BINDING, Purpose.TAKEOVER),
    "backup, claim probe round": ("backup", claim_probe, State.PROBING, Purpose.CLAIM),
    "primary, start-up probe round": ("primary", None, State.PROBING, Purpose.STARTUP),
    "primary, start-up bind": ("primary", None, State.BINDING, Purpose.STARTUP),
    "backup, re-probe after link down": ("backup", reprobe, State.PROBING, Purpose.REPROBE),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_reload_in_flight_never_strands_the_monitor(tmp_path: Path, case: str) -> None:
    role, drive, state, purpose = CASES[case]
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor(role)])

    async def scenario(h: Harness) -> None:
        if drive is not None:
            await drive(h)
        await h.until(f"{state.value} ({purpose.value})", lambda: in_state(h, state, purpose),
                      10)
        # a changed monitor: a slower LooksAlive interval (takes effect on the next ping)
        write_config(path, [monitor(role, looksalive={"interval": "300ms", "retry": 3,
                                                       "timeout": "100ms"})])
        ok, message = await h.daemon.reload()
        assert ok and "updated web" in message, message
        cfg = h.web.config
        assert cfg.looksalive.interval == 0.3, "the new settings must be in force"
        # the probe round (or bind) under way finishes and the monitor ends holding
        bound = cfg.probe.duration + cfg.detection_time + BIND_LATENCY + 1.0
        await h.until("the monitor to hold the address",
                      lambda: h.web.machine.state is State.HOLDING, bound)
        assert h.host.holds("192.0.2.10/24")

    # a primary starts on a free address; a backup starts watching a live holder
    run(path, scenario, holder_alive=role == "backup")


def test_a_monitor_removed_while_binding_does_not_leave_its_address_behind(
        tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("primary")])

    async def scenario(h: Harness) -> None:
        await h.until("the start-up bind", lambda: h.web.machine.state is State.BINDING, 10)
        write_config(path, [])
        ok, message = await h.daemon.reload()
        assert ok and "removed web" in message, message
        # the bind under way finished; the monitor is gone, so must its address be. Waited
        # for, not assumed: the release is a task of its own, and a no-op queued on the
        # netlink thread now may run before that task has queued its call
        await h.until("the address released", lambda: not h.host.holds("192.0.2.10/24"), 2)
        await asyncio.sleep(0.5)  # and it stays released: no late bind puts it back
        assert not h.host.holds("192.0.2.10/24")

    run(path, scenario, holder_alive=False)


def test_a_paused_monitor_stays_paused_across_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("backup")])

    async def scenario(h: Harness) -> None:
        await h.until("watching", lambda: h.web.machine.looks.health.value == "up", 10)
        h.web.feed(Command(Verb.PAUSE, by="test"))
        write_config(path, [monitor("backup", looksalive={"interval": "300ms", "retry": 3,
                                                           "timeout": "100ms"})])
        ok, message = await h.daemon.reload()
        assert ok and "updated web" in message, message
        h.host.holder_alive = False
        await asyncio.sleep(h.web.config.detection_time + h.web.config.probe.duration + 0.5)
        assert h.web.machine.paused and h.web.machine.state is State.WATCHING
        assert not h.host.bound, "a paused monitor took the address over after a reload"

    run(path, scenario)


def test_a_reload_while_watching_still_takes_over(tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("backup")])

    async def scenario(h: Harness) -> None:
        await h.until("watching", lambda: h.web.machine.looks.health.value == "up", 10)
        write_config(path, [monitor("backup", looksalive={"interval": "300ms", "retry": 3,
                                                           "timeout": "100ms"})])
        ok, message = await h.daemon.reload()
        assert ok and "updated web" in message, message
        h.host.holder_alive = False
        cfg = h.web.config
        await h.until("the takeover", lambda: h.web.machine.state is State.HOLDING,
                      cfg.detection_time + cfg.probe.duration + BIND_LATENCY + 1.0)

    run(path, scenario)


def test_a_reload_in_the_fallback_grace_keeps_the_grace_then_takes_back(
        tmp_path: Path) -> None:
    """Automatic fallback hands the address back; the primary never claims it. A reload in
    the grace period neither cuts the grace short nor loses the take-back after it."""
    path = tmp_path / "minisft.yaml"
    auto = {"peer_ip": str(PEER), "fallback": {"mode": "auto", "hold_down": "1s"}}
    write_config(path, [monitor("backup", **auto)])

    async def scenario(h: Harness) -> None:
        await h.until("the takeover", lambda: h.web.machine.state is State.HOLDING, 10)
        h.host.peer_alive = True  # the primary's host is back (but will not claim)
        await h.until("the fallback", lambda: h.web.machine.counters.fallbacks == 1, 10)
        released_at, grace = time.monotonic(), h.web.machine.fallback_grace
        # the release is a task of its own: wait for it rather than for the netlink queue
        await h.until("the release", lambda: not h.host.bound, 2)
        assert h.web.machine.state is State.WATCHING
        write_config(path, [monitor("backup", **auto, looksalive={
            "interval": "300ms", "retry": 3, "timeout": "100ms"})])
        ok, message = await h.daemon.reload()
        assert ok and "updated web" in message, message
        cfg = h.web.config
        await h.until("the take-back after the grace", lambda: h.web.machine.state is
                      State.HOLDING, grace + cfg.detection_time + cfg.probe.duration
                      + BIND_LATENCY + 1.0)
        assert time.monotonic() - released_at >= grace, "the reload cut the grace short"
        assert h.web.machine.counters.takeovers == 2

    run(path, scenario, holder_alive=False)


# ---------------------------------------------------------------- the reloader's other paths

SLOWER = {"interval": "300ms", "retry": 3, "timeout": "100ms"}
WEB = ipaddress.ip_address("192.0.2.10")


def needs_a_restart(path: Path) -> None:
    write_config(path, [monitor("backup", looksalive=SLOWER)],
                 node={"name": "gamma", "local_ip": "127.0.0.1"})


def not_a_config(path: Path) -> None:
    path.write_text("monitors: [\n")


REFUSALS = {
    "a key that needs a restart": (needs_a_restart,
                                   "node.name changed (beta -> gamma); that needs a restart"),
    "a file that does not load": (not_a_config, "minisft.yaml:2: not valid YAML"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_reload_says_why_and_leaves_the_monitors_as_they_run(
        tmp_path: Path, case: str) -> None:
    write_new, why = REFUSALS[case]
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("backup")])

    async def scenario(h: Harness) -> None:
        await h.until("watching", lambda: h.web.machine.looks.health.value == "up", 10)
        running, config, seen = h.web, h.daemon.config, len(h.events)
        write_new(path)
        ok, message = await h.daemon.reload()
        assert not ok
        assert message.startswith("reload refused, the running config stays: "), message
        assert why in message, message
        assert [(e.kind, e.reason) for e in h.events[seen:]] == [
            (EventKind.CONFIG_REJECTED, message)]
        assert h.daemon.config is config
        assert h.web is running and h.web.config is config.monitors[0]
        assert h.web.config.looksalive.interval == 0.2
        assert h.web.machine.state is State.WATCHING

    run(path, scenario)


def test_a_removed_monitor_that_holds_its_address_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("primary")])

    async def scenario(h: Harness) -> None:
        await h.until("holding", lambda: h.web.machine.state is State.HOLDING, 10)
        assert h.host.holds("192.0.2.10/24")
        write_config(path, [])
        ok, message = await h.daemon.reload()
        assert ok and message == "config reloaded: removed web", message
        assert not h.host.holds("192.0.2.10/24")
        assert h.host.log[-1] == "release 192.0.2.10/24"
        released = [e for e in h.events if e.kind is EventKind.RELEASED]
        assert [(e.monitor, e.address, e.reason) for e in released] == [
            ("web", "192.0.2.10", "monitor removed from the config: released its address")]
        assert "web" not in h.daemon.runtimes
        # no frame for its address reaches the stopped runtime
        assert WEB not in h.host.watched and WEB not in h.host.askers

    run(path, scenario, holder_alive=False)


def test_a_removed_monitor_that_holds_nothing_touches_no_address(tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("backup")])

    async def scenario(h: Harness) -> None:
        await h.until("watching", lambda: h.web.machine.looks.health.value == "up", 10)
        write_config(path, [])
        ok, message = await h.daemon.reload()
        assert ok and message == "config reloaded: removed web", message
        assert not [line for line in h.host.log if line.startswith("release")]
        assert not [e for e in h.events if e.kind is EventKind.RELEASED]
        assert WEB not in h.host.watched

    run(path, scenario)


def test_a_monitor_moved_to_another_address_releases_the_old_one_and_starts_anew(
        tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    moved = ipaddress.ip_address("192.0.2.11")
    write_config(path, [monitor("primary")])

    async def scenario(h: Harness) -> None:
        await h.until("holding", lambda: h.web.machine.state is State.HOLDING, 10)
        before = h.web
        write_config(path, [monitor("primary", monitor_ip=str(moved))])
        ok, message = await h.daemon.reload()
        assert ok and message == "config reloaded: replaced web; added web", message
        assert not h.host.holds("192.0.2.10/24")
        assert [e.address for e in h.events if e.kind is EventKind.RELEASED] == ["192.0.2.10"]
        assert h.web is not before and h.web.config.ip == moved
        assert WEB not in h.host.watched and moved in h.host.watched
        cfg = h.web.config
        await h.until("the new address held", lambda: h.host.holds("192.0.2.11/24"),
                      cfg.probe.duration + BIND_LATENCY + 1.0)

    run(path, scenario, holder_alive=False)


def test_a_reload_of_the_same_file_changes_nothing_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("backup")])

    async def scenario(h: Harness) -> None:
        running, seen = h.web, len(h.events)
        ok, message = await h.daemon.reload()
        assert ok and message == "config reloaded: no changes", message
        assert [(e.kind, e.reason) for e in h.events[seen:]] == [
            (EventKind.CONFIG_RELOADED, message)]
        assert h.web is running

    run(path, scenario)


def test_a_daemon_started_without_a_file_has_nothing_to_reload(tmp_path: Path) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, [monitor("backup")])
    daemon = Daemon(parse_config(path.read_text()), ports=fake_host_ports(ReloadHost()))
    assert asyncio.run(daemon.reload()) == (False, "no config file to reload")


# ---------------------------------------------------------------- pools


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pool(port: int, key_file: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "front", "port": port, "key_file": str(key_file),
            "members": [{"name": "beta", "ip": "127.0.0.1"},
                        {"name": "alpha", "ip": "127.0.0.2"}],
            "addresses": ["192.0.2.101/24"],
            "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"}, **extra}


def key(tmp_path: Path) -> Path:
    path = tmp_path / "pool.key"
    path.write_bytes(b"0123456789abcdef0123456789abcdef")
    path.chmod(0o600)
    return path


def test_a_pool_reload_to_a_port_in_use_keeps_everything_running(tmp_path: Path) -> None:
    path, secret = tmp_path / "minisft.yaml", key(tmp_path)
    old_port, taken_port = free_udp_port(), free_udp_port()
    while taken_port == old_port:
        taken_port = free_udp_port()
    write_config(path, [monitor("backup")], pools=[pool(old_port, secret)])

    async def scenario(h: Harness) -> None:
        running = h.daemon.pools["front"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind(("127.0.0.1", taken_port))
            # the pool moves to a port some other program uses; a monitor changes as well
            write_config(path, [monitor("backup", looksalive={"interval": "300ms",
                                                               "retry": 3, "timeout": "100ms"})],
                         pools=[pool(taken_port, secret)])
            ok, message = await h.daemon.reload()
        assert not ok
        assert f"cannot listen on 127.0.0.1:{taken_port}" in message, message
        rejected = [e for e in h.events if e.kind is EventKind.CONFIG_REJECTED]
        assert len(rejected) == 1 and "the running config stays" in rejected[0].reason
        assert "Address already in use" in rejected[0].reason
        # all of the old config runs on: the same pool runtime on its port, the old monitor
        assert h.daemon.pools["front"] is running and running.transport.listening
        assert h.daemon.config.pools[0].port == old_port
        assert h.web.config.looksalive.interval == 0.2
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, \
                pytest.raises(OSError):  # still bound by the running pool
            other.bind(("127.0.0.1", old_port))

    run(path, scenario)


def test_a_pool_reload_on_the_same_port_hands_the_socket_over(tmp_path: Path) -> None:
    path, secret = tmp_path / "minisft.yaml", key(tmp_path)
    port = free_udp_port()
    write_config(path, [monitor("backup")], pools=[pool(port, secret)])

    async def scenario(h: Harness) -> None:
        before = h.daemon.pools["front"]
        write_config(path, [monitor("backup")], pools=[pool(port, secret, addresses=[
            "192.0.2.101/24", "192.0.2.102/24"])])
        ok, message = await h.daemon.reload()
        assert ok and "pool front restarted" in message, message
        after = h.daemon.pools["front"]
        assert after is not before and after.transport.listening
        # datagrams from the peer member to the pool port reach the new runtime (here:
        # dropped as not signed); the member sockets take only the member's address and port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.2", port))
            peer.sendto(b"not a heartbeat", ("127.0.0.1", port))
        await h.until("the datagram to arrive", lambda: after.transport.counters["received"]
                      >= 1, 5)

    run(path, scenario)


def test_a_refused_reload_closes_the_sockets_it_opened_for_other_pools(
        tmp_path: Path) -> None:
    """The pools' sockets are opened before the commit; a later one that cannot listen
    refuses the reload, and the ones opened before it are closed again."""
    path, secret = tmp_path / "minisft.yaml", key(tmp_path)
    port, back_port, moved_port, taken_port = (free_udp_port() for _ in range(4))
    assert len({port, back_port, moved_port, taken_port}) == 4
    write_config(path, [], pools=[pool(port, secret),
                                  pool(back_port, secret, name="back",
                                       addresses=["192.0.2.102/24"])])

    async def scenario(h: Harness) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind(("127.0.0.1", taken_port))
            write_config(path, [], pools=[pool(moved_port, secret),
                                          pool(taken_port, secret, name="back",
                                               addresses=["192.0.2.102/24"])])
            ok, message = await h.daemon.reload()
        assert not ok and f"cannot listen on 127.0.0.1:{taken_port}" in message, message
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", moved_port))  # raises if the reload kept it open
        assert [p.port for p in h.daemon.config.pools] == [port, back_port]

    run(path, scenario)


def test_a_removed_pool_stops_and_frees_its_port(tmp_path: Path) -> None:
    path, secret = tmp_path / "minisft.yaml", key(tmp_path)
    port = free_udp_port()
    write_config(path, [monitor("backup")], pools=[pool(port, secret)])

    async def scenario(h: Harness) -> None:
        running = h.daemon.pools["front"]
        write_config(path, [monitor("backup")])
        ok, message = await h.daemon.reload()
        assert ok and message == "config reloaded: pool front removed (its addresses " \
            "released)", message
        assert "front" not in h.daemon.pools and not running.transport.listening
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", port))

    run(path, scenario)


# ---------------------------------------------------------------- the machine's side


def test_every_state_takes_new_settings() -> None:
    missing = [s.value for s in State if Reconfigured not in TRANSITIONS[s]]
    assert not missing, f"a reload in these states would raise IllegalInput: {missing}"


def test_a_changed_check_closes_the_alarm_of_the_old_one() -> None:
    cfg = make_config(check="tcp", isalive_retry=1)
    m = MonitorMachine(cfg, now=0.0)
    m.handle(Started(False), 0.0)
    m.handle(PingResult(True, 0.001), 1.0)
    m.handle(ServiceResult(False, None, "refused"), 2.0)
    assert m.service.dead
    # the admin removes the check: the alarm must not stay open with nothing to close it
    out = m.handle(Reconfigured(replace(cfg, isalive=IsAliveConfig())), 3.0)
    kinds = [a.notice.kind for a in out if isinstance(a, Emit)]
    assert kinds == [EventKind.SERVICE_RECOVERED]
    assert not m.service.dead and m.config.isalive == IsAliveConfig()


def test_a_reload_cannot_move_a_running_machine() -> None:
    cfg = make_config()
    m = MonitorMachine(cfg, now=0.0)
    with pytest.raises(IllegalInput):
        m.handle(Reconfigured(replace(cfg, address=ipaddress.ip_interface("192.0.2.11/24"))), 1.0)


def test_a_reload_that_changes_peer_ip_learns_the_new_peers_mac_not_the_old_ones(
        tmp_path: Path) -> None:
    """The peer's MAC tells its IPv6 link-local solicitations from anyone's (switchover):
    after a reload to another peer_ip only frames for the new one set it, and a removed
    monitor listens for none."""
    path = tmp_path / "minisft.yaml"
    new_peer = ipaddress.ip_address("192.0.2.3")
    write_config(path, [monitor("backup", peer_ip=str(PEER))])

    async def scenario(h: Harness) -> None:
        def frame_for(ip: Any, mac: str) -> None:  # a frame showing which MAC uses ip
            for callback in list(h.host.users.get(ip, [])):
                callback(mac)

        frame_for(PEER, "02:00:00:00:00:bb")
        assert h.web.machine.peer.link_mac == "02:00:00:00:00:bb"
        write_config(path, [monitor("backup", peer_ip=str(new_peer))])
        ok, message = await h.daemon.reload()
        assert ok and "updated web" in message, message
        assert h.web.machine.peer.link_mac is None  # another host now
        frame_for(PEER, "02:00:00:00:00:bb")
        assert h.web.machine.peer.link_mac is None
        frame_for(new_peer, "02:00:00:00:00:cc")
        assert h.web.machine.peer.link_mac == "02:00:00:00:00:cc"
        write_config(path, [])
        ok, message = await h.daemon.reload()
        assert ok and "removed web" in message, message
        assert not h.host.users.get(new_peer)

    run(path, scenario)
