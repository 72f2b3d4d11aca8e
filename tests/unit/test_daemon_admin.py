"""The admin commands as the control socket delivers them (`minisft claim|release|pause|
resume|switchover|rebalance NAME`): the real Daemon and MonitorRuntime on the fake host
(`minisft.testing.fakes`), answered by `Daemon.handle_request` as the CLI receives them.

What an admin would notice: the answer (ok, or the one-line reason), whether the address
is on the interface afterwards, and the events; a refused command changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from minisft.core.events import EventKind
from minisft.core.monitor import State
from minisft.testing.fakes import FakeHost
from tests.unit.daemon_harness import DaemonOnFakeHost, run_daemon

ADDRESS = "192.0.2.10/24"
PEER = "192.0.2.1"  # the other node's own address (its node.local_ip)
PEER_MAC = "02:00:00:00:00:aa"
THIRD_MAC = "02:00:00:00:00:cc"


def write_config(path: Path, role: str) -> None:
    doc = {"node": {"name": "alpha", "local_ip": "127.0.0.1"},
           "state_dir": str(path.parent / "state"),
           "control_socket": str(path.parent / "minisft.sock"),
           "logging": {"level": "info", "syslog": False},
           "monitors": [{"name": "web", "monitor_ip": "192.0.2.10", "monitor_subnet": 24,
                         "role": role, "peer_ip": PEER,
                         "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"},
                         "probe": {"count": 2, "interval": "50ms"}}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


Node = DaemonOnFakeHost[FakeHost]  # the shared harness: the daemon, its events, `ask`


def run(tmp_path: Path, role: str, host: FakeHost,
        scenario: Callable[[Node], Awaitable[None]]) -> None:
    path = tmp_path / "minisft.yaml"
    write_config(path, role)
    run_daemon(path, host, scenario)


def peer_holding_the_address() -> FakeHost:
    """The other node (peer_ip) holds the service address, as after a failover."""
    host = FakeHost()
    host.add_neighbour(PEER_MAC, ADDRESS.split("/")[0], PEER)
    return host


def test_unknown_names_and_commands_are_refused_with_what_is_known(tmp_path: Path) -> None:
    async def scenario(node: Node) -> None:
        answer = await node.ask("claim", monitor="wbe")
        assert answer == {"ok": False, "error": "no monitor named 'wbe' (known: web)"}
        answer = await node.ask("rebalance", pool="front")
        assert answer == {"ok": False, "error": "no pool named 'front' (known: none)"}
        answer = await node.ask("reboot")
        assert answer == {"ok": False, "error": "unknown command 'reboot'"}
        assert not node.host.bound

    run(tmp_path, "backup", peer_holding_the_address(), scenario)


def test_pause_and_resume_are_idempotent(tmp_path: Path) -> None:
    async def scenario(node: Node) -> None:
        await node.until("watching", lambda: node.web.machine.state is State.WATCHING)
        first = await node.ask("pause", monitor="web")
        assert first["ok"] and "already" not in first, first
        assert node.web.machine.paused
        again = await node.ask("pause", monitor="web")
        assert again["ok"] and again["already"] == "web: already paused", again
        assert node.kinds().count(EventKind.PAUSED) == 1  # the second changed nothing
        resumed = await node.ask("resume", monitor="web")
        assert resumed["ok"] and not node.web.machine.paused, resumed
        assert (await node.ask("resume", monitor="web"))["already"]
        assert node.kinds().count(EventKind.RESUMED) == 1

    run(tmp_path, "backup", peer_holding_the_address(), scenario)


def test_switchover_on_the_primary_binds_at_once_and_announces(tmp_path: Path) -> None:
    """After a failover the peer holds the address; the primary watches it. The
    switchover binds without waiting for the peer to let go, and is answered only once
    the address is here."""
    async def scenario(node: Node) -> None:
        await node.until("the primary watching the peer's address",
                         lambda: node.web.machine.state is State.WATCHING)
        node.host.log.clear()
        answer = await node.ask("switchover", monitor="web")
        assert answer["ok"], answer
        assert node.host.holds(ADDRESS)  # answered after the bind, not before
        assert node.web.machine.state is State.HOLDING
        after = node.host.log[node.host.log.index(f"bind {ADDRESS}"):]
        assert "announce 192.0.2.10" in after, node.host.log
        switched = [n for n in node.events if n.kind is EventKind.SWITCHOVER]
        assert len(switched) == 1 and switched[0].monitor == "web", node.events
        again = await node.ask("switchover", monitor="web")
        assert again["ok"] and "already holds" in again["already"], again

    run(tmp_path, "primary", peer_holding_the_address(), scenario)


def test_switchover_from_a_third_node_is_refused_and_binds_nothing(tmp_path: Path) -> None:
    host = FakeHost()
    host.add_neighbour(PEER_MAC, PEER)  # the peer is up ...
    host.add_neighbour(THIRD_MAC, ADDRESS.split("/")[0])  # ... but a third node holds it

    async def scenario(node: Node) -> None:
        await node.until("watching", lambda: node.web.machine.state is State.WATCHING)
        answer = await node.ask("switchover", monitor="web")
        assert not answer["ok"]
        assert answer["error"].startswith(f"web: 192.0.2.10 is held by {THIRD_MAC}, which "
                                          f"is not the peer {PEER}"), answer
        assert "\n" not in answer["error"]
        assert not node.host.bound and not any(e.startswith("bind") for e in node.host.log)
        assert EventKind.SWITCHOVER not in node.kinds()
        assert node.web.machine.state is State.WATCHING

    run(tmp_path, "primary", host, scenario)


def test_switchover_on_the_backup_is_refused_and_names_the_way(tmp_path: Path) -> None:
    async def scenario(node: Node) -> None:
        await node.until("watching", lambda: node.web.machine.state is State.WATCHING)
        answer = await node.ask("switchover", monitor="web")
        assert not answer["ok"]
        assert "this node is the backup" in answer["error"], answer
        assert "minisft claim web" in answer["error"], answer
        assert not node.host.bound

    run(tmp_path, "backup", peer_holding_the_address(), scenario)


def test_claim_of_an_address_someone_answers_for_is_refused(tmp_path: Path) -> None:
    """The peer holds the address and answers ARP: a claim probes, hears it, and says
    so; the address is not bound here."""
    async def scenario(node: Node) -> None:
        await node.until("watching", lambda: node.web.machine.state is State.WATCHING)
        answer = await node.ask("claim", monitor="web")
        assert not answer["ok"], answer
        assert answer["error"].startswith("web: claim refused:"), answer
        assert PEER_MAC in answer["error"], answer
        assert not node.host.bound

    run(tmp_path, "backup", peer_holding_the_address(), scenario)


def test_release_removes_the_address_and_says_so(tmp_path: Path) -> None:
    host = FakeHost()
    host.add_neighbour(PEER_MAC, PEER)  # the address is free: the primary claims it

    async def scenario(node: Node) -> None:
        await node.until("the primary holding", lambda: node.web.machine.state is State.HOLDING)
        assert node.host.holds(ADDRESS)
        answer = await node.ask("release", monitor="web")
        assert answer["ok"], answer
        await node.until("the address gone from the interface",
                         lambda: not node.host.holds(ADDRESS))
        assert EventKind.RELEASED in node.kinds()
        again = await node.ask("release", monitor="web")
        assert again["ok"] and "already released" in again["already"], again

    run(tmp_path, "primary", host, scenario)

