"""Properties of the failover decision over random histories (hypothesis).

A history is a random start-up followed by random steps: time passing, ping results, the
outstanding probe or bind finishing (only results of actions actually issued, via
`core_driver`), stale results of cancelled work, link flaps, conflicts, removals, admin
commands, IsAlive and peer results, and the world changing under the node. Every input fed
is legal in the state it is fed in; the properties are checked on the recorded trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisft.config.model import FallbackMode, MonitorConfig, Role
from minisft.core.actions import (
    Bind,
    BindDone,
    ProbeDone,
    Release,
)
from minisft.core.io import (
    AddressVanished,
    Started,
    Verb,
)
from minisft.core.monitor import AlreadyDone, CommandRefused, Purpose, State
from tests.unit.core_driver import (
    HOLDER_MAC,
    INTRUDER_MAC,
    Host,
    Lan,
    Node,
    View,
    make_config,
)

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- histories


@st.composite
def configs(draw: st.DrawFn, *, roles: tuple[Role, ...] = (Role.PRIMARY, Role.BACKUP),
            min_retry: int = 1) -> MonitorConfig:
    role = draw(st.sampled_from(roles))
    auto = draw(st.booleans())
    return make_config(
        role,
        peer_ip="192.0.2.1" if draw(st.booleans()) else None,
        retry=draw(st.integers(min_retry, 4)),
        interval=draw(st.sampled_from([0.5, 1.0, 3.0])),
        timeout=draw(st.sampled_from([0.2, 1.0])),
        check=draw(st.sampled_from(["always", "http"])),
        isalive_retry=draw(st.integers(1, 3)),
        on_holder=draw(st.booleans()),
        fallback=FallbackMode.AUTO if auto else FallbackMode.MANUAL,
        hold_down=draw(st.sampled_from([1.0, 5.0, 20.0])),
        probe_count=draw(st.integers(1, 3)),
        refresh=draw(st.sampled_from([0.0, 2.0, 10.0])),
    )


MACS = st.sampled_from([HOLDER_MAC, INTRUDER_MAC])

def weighted(*choices: tuple[int, st.SearchStrategy[tuple[str, Any]]]
             ) -> st.SearchStrategy[tuple[str, Any]]:
    """Pick an op kind with the given weights (repeats in sampled_from), then its argument."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(lambda i: pool[i])


def op(name: str, arg: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.tuples(st.just(name), arg)


OPS = weighted(
    (4, op("time", st.floats(0.01, 8.0))),
    (6, op("ping", st.sampled_from([None, None, True, False, False]))),
    (6, op("probe", st.sampled_from(["wire", "wire", "clear", "answered"]))),
    (4, op("bind", st.sampled_from([None, None, None, "EPERM"]))),
    (1, op("stale_probe", st.sampled_from([None, HOLDER_MAC]))),
    (1, op("stale_bind", st.sampled_from([None, "EPERM"]))),
    (3, op("link", st.booleans())),
    (3, op("cmd", st.sampled_from(list(Verb)))),
    (2, op("conflict", MACS)),
    (1, op("vanish", st.none())),
    (1, op("service", st.booleans())),
    (2, op("peer_ping", st.sampled_from([None, True, False]))),
    (1, op("peer_service", st.booleans())),
    (2, op("world", st.sampled_from(["gone", "back", "icmp_off", "icmp_on", "arp_off",
                                     "arp_on"]))),
    (1, op("reload", configs())),  # SIGHUP with new settings, at any moment
)


@dataclass
class History:
    config: MonitorConfig
    bound_at_start: bool
    link_down_at_start: bool
    holder: Host
    ops: list[tuple[str, Any]]


@st.composite
def histories(draw: st.DrawFn, *, ops: st.SearchStrategy[tuple[str, Any]] = OPS,
              cfg: st.SearchStrategy[MonitorConfig] | None = None,
              bound: st.SearchStrategy[bool] | None = None) -> History:
    holder = Host(has_address=draw(st.booleans()), icmp=draw(st.booleans()),
                  arp=draw(st.booleans()), service=draw(st.booleans()))
    return History(
        config=draw(cfg if cfg is not None else configs()),
        bound_at_start=draw(bound if bound is not None else st.booleans()),
        link_down_at_start=draw(st.integers(0, 9)) == 0,
        holder=holder,
        ops=draw(st.lists(ops, min_size=40, max_size=120)),
    )


def command(node: Node, verb: Verb) -> None:
    """An admin command: refused or carried out, never anything else (property 4)."""
    before = _comparable(node)
    try:
        node.command(verb)
    except (CommandRefused, AlreadyDone) as exc:
        message = str(exc)
        assert message.startswith(f"{node.name}: ") and len(message) > len(node.name) + 8
        assert _comparable(node) == before, "a refused or no-op command changed the machine"


def _comparable(node: Node) -> dict[str, Any]:
    snap = node.machine.snapshot()
    snap.pop("seconds_since_change")
    return snap


def play(h: History) -> Node:
    """Feed a history to a fresh machine; returns the node with its trace."""
    lan = Lan(holder=h.holder, peer=Host(mac="02:00:00:00:00:01"))
    node = lan.add(h.config)
    if h.link_down_at_start:
        node.link(False)
    for verb in Verb:  # nothing is accepted before start-up
        command(node, verb)
    node.start(h.bound_at_start)
    for op, arg in h.ops:
        apply(node, op, arg)
    return node


def apply(node: Node, op: str, arg: Any) -> None:
    m, lan = node.machine, node.lan
    holder = lan.holder
    assert holder is not None
    if op == "time":
        node.tick(arg)
    elif op == "ping":
        node.ping(arg)
    elif op == "probe" and node.probe is not None:
        answers = {"wire": lan.arp_answer(node), "clear": None, "answered": INTRUDER_MAC}
        node.probe_done(answers[arg])
    elif op == "bind" and node.bind_token is not None:
        node.bind_done(arg)
    elif op == "stale_probe":
        node.stale_probe_done(arg)
    elif op == "stale_bind":
        node.stale_bind_done(arg)
    elif op == "link":
        lan.set_link(node, arg)
    elif op == "cmd":
        command(node, arg)
    elif op == "conflict":
        node.conflict(arg)  # legal in every state after start-up (ignored unless holding)
    elif op == "vanish":
        if node.bound:
            lan.remove_address(node)  # the runtime notices it like the daemon does:
            if node.wire_up and m.state is State.HOLDING:
                node.feed(AddressVanished())
        elif m.state is not State.HOLDING:
            node.feed(AddressVanished())  # noise: ignored where it cannot apply
    elif op == "service":
        node.service(arg)
    elif op == "reload":
        node.reload(arg)
    elif op == "peer_ping":
        node.peer_ping(arg)
    elif op == "peer_service":
        node.peer_service(arg)
    elif op == "world":
        setattr(holder, *{"gone": ("has_address", False), "back": ("has_address", True),
                          "icmp_off": ("icmp", False), "icmp_on": ("icmp", True),
                          "arp_off": ("arp", False), "arp_on": ("arp", True)}[arg])


def check_events(node: Node) -> None:
    for n in node.notices:
        assert n.monitor == node.name and n.address == str(node.config.ip)
        assert n.state and n.state.split(" ")[0] in {s.value for s in State}
        assert n.reason.strip(), n


# ---------------------------------------------------------------------------- properties


@FAST
@given(histories())
def test_never_binds_over_an_answered_probe_or_an_open_conflict(h: History) -> None:
    """(1) A Bind needs a clear probe round since the last answered one, and no open
    conflict."""
    node = play(h)
    answered = False  # the last live probe result was an answer
    for step in node.trace:
        ev = step.event
        if isinstance(ev, ProbeDone) and ev.token == step.current_probe:
            answered = ev.answered_by is not None
        if step.binds:
            assert not answered, step
            assert not step.after.conflict_open, step
    check_events(node)


QUIET_OPS = weighted(
    (3, op("time", st.floats(0.01, 8.0))),
    (6, op("ping", st.booleans())),
    (4, op("probe", st.sampled_from(["wire", "clear", "answered"]))),
    (1, op("stale_probe", st.sampled_from([None, HOLDER_MAC]))),
    (1, op("link", st.booleans())),
    (1, op("cmd", st.sampled_from([Verb.PAUSE, Verb.RESUME]))),
    (1, op("service", st.booleans())),
    (1, op("peer_ping", st.booleans())),
    (1, op("world", st.sampled_from(["gone", "back", "icmp_off", "arp_off"]))),
)


@FAST
@given(histories(ops=QUIET_OPS, cfg=configs(roles=(Role.BACKUP,), min_retry=2),
                 bound=st.just(False)))
def test_isolated_lost_pings_never_lead_to_a_bind(h: History) -> None:
    """(2) Whatever ARP says, a lost ping between answered ones never causes a takeover."""
    lan = Lan(holder=h.holder)
    node = lan.add(h.config)
    node.start(False)
    last_ok = True
    for op, arg in h.ops:
        if op == "ping":
            ok = arg if last_ok else True  # a miss is always followed by an answer
            if node.machine.wants_looksalive:
                last_ok = ok
            node.ping(ok)
        else:
            apply(node, op, arg)
    assert node.bind_count() == 0, [s for s in node.trace if s.binds]
    check_events(node)


@FAST
@given(histories())
def test_never_binds_with_the_link_down_or_paused(h: History) -> None:
    """(3) No Bind while the link is down; none while paused except re-asserting an address
    the paused node still holds after a link flap."""
    node = play(h)
    for step in node.trace:
        for bind in step.binds:
            assert step.after.link_up and step.before.link_up, (bind, step)
            if step.after.paused:
                assert step.after.purpose is Purpose.REPROBE, step
    check_events(node)


@FAST
@given(histories(ops=weighted((3, OPS), (1, op("cmd", st.sampled_from(list(Verb)))))))
def test_commands_only_ever_raise_command_refused(h: History) -> None:
    """(4) Every command, in every state, is done or refused with a reason (`command`
    re-raises anything else and checks a refusal changed nothing)."""
    node = play(h)
    for verb in Verb:
        command(node, verb)
    check_events(node)


def owns(v: View) -> bool:
    """`holds`, plus a re-bind after a link flap in flight (the address is still on the
    interface then, although `holds` is False while BINDING)."""
    return v.holds or (v.state is State.BINDING and v.purpose is Purpose.REPROBE)


@FAST
@given(histories())
def test_holds_exactly_between_bind_and_release(h: History) -> None:
    """(5) `holds` turns on only with a successful BindDone or adoption and off only with a
    Release (or the address vanishing behind our back), and matches the interface after
    every step."""
    node = play(h)
    for step in node.trace:
        ev, acts = step.event, step.actions
        released = any(isinstance(a, Release) for a in acts)
        if not owns(step.before) and owns(step.after):
            assert (isinstance(ev, BindDone) and ev.error is None) or \
                (isinstance(ev, Started) and ev.address_bound), step
        if owns(step.before) and not owns(step.after):
            assert released or isinstance(ev, AddressVanished), step
        if released:
            assert owns(step.before) and not owns(step.after), step
        if any(isinstance(a, Bind) for a in acts):
            assert step.after.state is State.BINDING, step
        # the machine's view matches the interface whenever no bind is in flight and
        # nobody deleted the address behind its back (noticed within ADDRESS_POLL)
        if step.after.state is not State.BINDING and not step.removed_after:
            assert step.after.holds == step.bound_after, (step, node)


# ---------------------------------------------------------------------------- two nodes


TWO_NODE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.floats(0.1, 15.0)),
        st.tuples(st.just("link"), st.sampled_from(["primary", "backup"]), st.booleans()),
        st.tuples(st.just("partition"), st.booleans()),
    ),
    max_size=12,
)


def two_node_config(role: Role, auto: bool, refresh: float) -> MonitorConfig:
    return make_config(
        role,
        peer_ip="192.0.2.1" if role is Role.BACKUP else None,
        interval=1.0, retry=3, timeout=0.3,
        fallback=FallbackMode.AUTO if auto else FallbackMode.MANUAL, hold_down=5.0,
        refresh=refresh,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TWO_NODE_OPS, st.booleans(), st.sampled_from([1.0, 3.0]), st.booleans())
def test_two_nodes_converge_on_one_holder(ops: list[tuple[Any, ...]], auto: bool,
                                          refresh: float, primary_first: bool) -> None:
    """(6) Primary and backup share one address through link failures and partitions; once
    the network heals, exactly one of them holds it."""
    lan = Lan()
    primary = lan.add(two_node_config(Role.PRIMARY, auto, refresh), "02:00:00:00:00:01")
    backup = lan.add(two_node_config(Role.BACKUP, auto, refresh), "02:00:00:00:00:02")
    lan.peer_node = primary
    if not primary_first:
        lan.nodes.reverse()
    nodes = {"primary": primary, "backup": backup}
    for op in ops:
        if op[0] == "run":
            lan.run(op[1])
        elif op[0] == "link":
            lan.start_all()
            lan.set_link(nodes[op[1]], op[2])
        else:
            lan.partitioned = op[1]
    # heal
    lan.start_all()
    lan.partitioned = False
    for node in nodes.values():
        lan.set_link(node, True)
    lan.run(60.0)
    holders = [n for n in nodes.values() if n.machine.holds]
    bound = [n for n in nodes.values() if n.bound]
    assert len(holders) == 1, (holders, nodes)
    assert holders == bound
    for node in nodes.values():
        check_events(node)
        for step in node.trace:
            for _ in step.binds:
                assert step.after.link_up and not step.after.paused
