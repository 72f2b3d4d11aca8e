"""The state edges of the monitor and the pool machine: data, checked, and drawn in the docs.

docs/design.md shows each machine's diagram; it is drawn here from the machine's `EDGES`,
the table `_go` checks, so a change of either the code or the doc without the other fails.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import pytest

from minisft.config.model import Role
from minisft.core import monitor
from minisft.core.actions import CancelProbe, Release, StartProbe
from minisft.core.edges import IllegalTransition, mermaid
from minisft.core.events import EventKind
from minisft.core.io import Command, LinkChanged, PingResult, Verb
from minisft.core.io import Started as MonitorStarted
from minisft.core.monitor import MonitorMachine, Purpose, State
from minisft.pools import etcd_machine
from minisft.pools import machine as pool_machine
from minisft.pools.actions import Emit, Started, Tick
from minisft.pools.machine import Phase, PoolMachine
from tests.unit.core_driver import make_config
from tests.unit.test_pool_machine import make_pool

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"

MACHINES: list[tuple[str, dict[State, frozenset[State]] | dict[Phase, frozenset[Phase]]
                     | dict[etcd_machine.Phase, frozenset[etcd_machine.Phase]], StrEnum]] = [
    ("monitor", monitor.EDGES, State.STARTING),
    ("pool", pool_machine.EDGES, Phase.STARTING),
    ("etcd pool", etcd_machine.EDGES, etcd_machine.Phase.STARTING),
]


@pytest.mark.parametrize(("name", "edges", "initial"), MACHINES, ids=[m[0] for m in MACHINES])
def test_design_doc_shows_the_diagram_drawn_from_the_table(
        name: str, edges: dict[StrEnum, frozenset[StrEnum]], initial: StrEnum) -> None:
    block = f"```mermaid\n{mermaid(edges, initial)}```"
    assert block in DESIGN.read_text(), (
        f"docs/design.md does not show the {name} machine's edges; paste:\n{block}")


@pytest.mark.parametrize(("name", "edges", "initial"), MACHINES, ids=[m[0] for m in MACHINES])
def test_every_state_has_a_row_and_is_reachable(
        name: str, edges: dict[StrEnum, frozenset[StrEnum]], initial: StrEnum) -> None:
    assert set(edges) == set(type(initial))
    seen, todo = {initial}, [initial]
    while todo:
        for new in edges[todo.pop()] - seen:
            seen.add(new)
            todo.append(new)
    assert seen == set(type(initial)), f"{name}: unreachable {set(type(initial)) - seen}"


def test_monitor_refuses_an_unlisted_edge_and_stays_put() -> None:
    m = MonitorMachine(make_config(), now=0.0)
    with pytest.raises(IllegalTransition, match="web: starting -> binding"):
        m._go(State.BINDING, "binding before anyone looked at the interface")
    assert m.state is State.STARTING
    assert m.reason == "starting: looking at the interface"


def test_pool_refuses_an_unlisted_edge_and_stays_put() -> None:
    m = PoolMachine(make_pool(["a", "b", "c"]), "a", now=0.0)
    with pytest.raises(IllegalTransition, match="pool front: starting -> active"):
        m._go(Phase.ACTIVE, "active without listening to the others first")
    assert m.phase is Phase.STARTING


def test_a_pool_member_that_starts_alone_goes_from_joining_to_isolated() -> None:
    # The JOINING -> ISOLATED edge: its peers are down, so after the join window it has no
    # quorum, says so, and takes nothing over.
    m = PoolMachine(make_pool(["a", "b", "c"]), "a", now=0.0)
    m.handle(Started(), 0.0)
    joined = m.phase
    actions = m.handle(Tick(), m.detection_time + 0.1)
    assert (joined, m.phase) == (Phase.JOINING, Phase.ISOLATED)
    kinds = [a.notice.kind for a in actions if isinstance(a, Emit)]
    assert EventKind.ISOLATED in kinds
    assert m.held == []


# The two monitor edges only the hypothesis histories took before: each gets a plain case.

def test_a_claim_during_a_takeover_probe_restarts_it_as_the_admin_s_probe() -> None:
    # PROBING -> PROBING
    m = MonitorMachine(make_config(startup_grace=0.0), now=0.0)
    m.handle(MonitorStarted(address_bound=False), 0.0)
    for t in (1.0, 2.0, 3.0):  # the holder stops answering; no probe result yet
        m.handle(PingResult(ok=False), t)
    assert (m.state, m.purpose) == (State.PROBING, Purpose.TAKEOVER)
    actions = m.handle(Command(Verb.CLAIM, by="admin"), 3.5)
    assert (m.state, m.purpose) == (State.PROBING, Purpose.CLAIM)
    assert [type(a) for a in actions] == [CancelProbe, StartProbe]


def test_link_lost_again_during_the_re_probe_keeps_the_address_bound() -> None:
    # PROBING -> HOLDING
    m = MonitorMachine(make_config(Role.PRIMARY), now=0.0)
    m.handle(MonitorStarted(address_bound=True), 0.0)
    m.handle(LinkChanged(up=False), 1.0)
    m.handle(LinkChanged(up=True), 2.0)
    assert (m.state, m.purpose) == (State.PROBING, Purpose.REPROBE)
    actions = m.handle(LinkChanged(up=False), 2.1)
    assert m.state is State.HOLDING
    assert m.reason == "link down again before the re-probe finished"
    assert any(isinstance(a, CancelProbe) for a in actions)
    assert not any(isinstance(a, Release) for a in actions)
