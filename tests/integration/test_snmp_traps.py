"""SnmpSink against a REAL net-snmp snmptrapd on loopback, with MINISFT-MIB loaded, so the
assertions are on the notification names and values as an NMS would show them.

snmptrapd runs in the foreground with a temporary config (tests/support/snmptrapd.py):
    snmptrapd -f -Lo -C -c DIR/snmptrapd.conf -n -M mibs:mibs/ietf \
              -m SNMPv2-MIB:MINISFT-MIB -F FORMAT udp:127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minisft.config.model import SnmpTargetConfig
from minisft.core.events import Event, EventKind, Severity
from minisft.sinks import snmp as snmp_sink
from minisft.sinks.base import DeliveryError
from minisft.sinks.snmp import SnmpSink, load_engine_id
from minisft.snmp import oids
from tests.support.snmptrapd import Notification, TrapReceiver, V3User, free_udp_port

pytestmark = pytest.mark.skipif(shutil.which("snmptrapd") is None
                                and not Path("/usr/sbin/snmptrapd").exists(),
                                reason="net-snmp snmptrapd not installed")

COMMUNITY = "c0mmunity-S3cret"
AUTH_KEY = "auth-S3cret-key-1"
PRIV_KEY = "priv-S3cret-key-2"
USER = "minisft"


def event(kind: EventKind = EventKind.TAKEOVER, seq: int = 42, **kw: object) -> Event:
    fields: dict[str, object] = {
        "seq": seq, "time": 1_700_000_000.5, "node": "alpha", "kind": kind,
        "severity": kind.default_severity, "reason": f"{kind.value}: took over, héllo",
        "monitor": "web", "address": "192.0.2.10", "state": "holding",
    }
    fields.update(kw)
    return Event(**fields)  # type: ignore[arg-type]


def v2c(port: int, type_: str = "trap", **kw: object) -> SnmpTargetConfig:
    return SnmpTargetConfig(host="127.0.0.1", port=port, version="2c", type=type_,
                            community=COMMUNITY, timeout=1.0, retries=1, **kw)  # type: ignore[arg-type]


def v3(port: int, type_: str = "trap", auth: str = "sha256", priv: str = "aes128",
       **kw: object) -> SnmpTargetConfig:
    return SnmpTargetConfig(host="127.0.0.1", port=port, version="3", type=type_, user=USER,
                            auth_protocol=auth, priv_protocol=priv, auth_key=AUTH_KEY,
                            priv_key=PRIV_KEY, timeout=1.0, retries=1, **kw)  # type: ignore[arg-type]


def send(sink: SnmpSink, *events: Event) -> None:
    async def go() -> None:
        try:
            await sink.start()
            for ev in events:
                await sink.deliver(ev)
        finally:
            await sink.close()

    asyncio.run(go())


def assert_takeover(n: Notification, seq: int = 42) -> None:
    assert n.trap_oid == "MINISFT-MIB::minisftTakeover"
    assert n["minisftEventSeq"] == str(seq)
    assert n["minisftEventKind"] == "takeover"
    assert n["minisftEventSeverity"] == "warning(4)"
    assert n["minisftEventNode"] == "alpha"
    assert n["minisftEventReason"] == "takeover: took over, héllo"
    assert n["minisftEventMonitor"] == "web"
    assert n["minisftEventAddressType"] == "ipv4(1)"
    assert n["minisftEventAddress"] == "192.0.2.10"  # text, not a Hex-STRING
    assert n["minisftEventNewState"] == "holding(5)"
    assert n["minisftEventTime"] == "2023-11-14,22:13:20.5,+0:0"
    assert n.names() == ["sysUpTime", "snmpTrapOID", *oids.varbinds_for(EventKind.TAKEOVER)]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


# ---------------------------------------------------------------------- v2c


def test_v2c_trap(tmp_path: Path, state_dir: Path) -> None:
    with TrapReceiver(tmp_path / "rx", communities=[COMMUNITY]) as rx:
        sink = SnmpSink(v2c(rx.port), state_dir=state_dir, node="alpha")
        send(sink, event())
        n = rx.wait_for()
    assert n.version == "1" and n.security == COMMUNITY
    assert_takeover(n)
    assert sink.name == f"snmp-127.0.0.1-{rx.port}-v2c-trap"
    assert sink.stats == {"sent": 1, "failed": 0}


def test_v2c_inform(tmp_path: Path, state_dir: Path) -> None:
    with TrapReceiver(tmp_path / "rx", communities=[COMMUNITY]) as rx:
        sink = SnmpSink(v2c(rx.port, "inform"), state_dir=state_dir, node="alpha")
        send(sink, event(seq=7), event(EventKind.SERVICE_DEAD, seq=8, state="watching"))
        first, second = rx.wait_all(count=2)
    assert_takeover(first, seq=7)
    assert second.trap_oid == "MINISFT-MIB::minisftServiceDead"
    assert second["minisftEventSeverity"] == "critical(2)"
    assert second["minisftEventNewState"] == "watching(2)"
    assert sink.stats["sent"] == 2


def test_every_event_kind_maps_to_its_notification(tmp_path: Path, state_dir: Path) -> None:
    kinds = list(EventKind)
    events = []
    for i, kind in enumerate(kinds, start=1):
        node_wide = kind in oids.NODE_KINDS
        events.append(event(kind, seq=i, monitor=None if node_wide else "db",
                            address=None if node_wide else "2001:db8::7",
                            state=None if node_wide else "watching (paused)",
                            details={"mac": "02:00:5e:10:00:01"}))
    with TrapReceiver(tmp_path / "rx", communities=[COMMUNITY]) as rx:
        send(SnmpSink(v2c(rx.port), state_dir=state_dir, node="alpha"), *events)
        got = rx.wait_all(count=len(kinds), timeout=60)
    by_seq = {int(n["minisftEventSeq"]): n for n in got}
    assert sorted(by_seq) == list(range(1, len(kinds) + 1))
    for i, kind in enumerate(kinds, start=1):
        n = by_seq[i]
        assert n.trap_oid == f"MINISFT-MIB::{oids.NOTIFICATION[kind][1]}", kind
        assert n.names() == ["sysUpTime", "snmpTrapOID", *oids.varbinds_for(kind)], kind
        assert n["minisftEventKind"] == kind.value
        sev = kind.default_severity
        assert n["minisftEventSeverity"] == f"{sev.label}({int(sev)})"
        if kind in oids.NODE_KINDS:
            continue
        assert n["minisftEventMonitor"] == "db"
        assert n["minisftEventAddressType"] == "ipv6(2)"
        assert n["minisftEventAddress"] == "2001:db8::7"
        assert n["minisftEventNewState"] == "watching(2)"
        if kind in oids.MAC_KINDS:
            assert n["minisftEventPeerMac"] == "2:0:5e:10:0:1"


def test_filter_from_target(state_dir: Path) -> None:
    sink = SnmpSink(v2c(162, kinds=("takeover", "service_dead"), min_severity="warning"),
                    state_dir=state_dir, node="alpha")
    assert sink.accepts(event(EventKind.TAKEOVER))
    assert sink.accepts(event(EventKind.SERVICE_DEAD))
    assert not sink.accepts(event(EventKind.LOOKSALIVE_DOWN))
    assert not sink.accepts(event(EventKind.TAKEOVER, severity=Severity.INFO))


# ---------------------------------------------------------------------- v3


def test_v3_authpriv_trap(tmp_path: Path, state_dir: Path) -> None:
    engine_id = load_engine_id(state_dir)  # what the sink will use
    users = [V3User(USER, "SHA-256", AUTH_KEY, "AES", PRIV_KEY, engine_id=engine_id)]
    with TrapReceiver(tmp_path / "rx", communities=[], users=users) as rx:
        sink = SnmpSink(v3(rx.port), state_dir=state_dir, node="alpha")
        conflict = event(EventKind.ADDRESS_CONFLICT, seq=43, state="holding",
                         details={"mac": "02:00:00:00:00:0b"})
        send(sink, event(), conflict)
        first, second = rx.wait_all(count=2)
    assert sink.engine_id == engine_id
    assert first.version == "3" and first.security == USER
    assert_takeover(first)
    assert second.trap_oid == "MINISFT-MIB::minisftAddressConflict"
    assert second["minisftEventPeerMac"] == "2:0:0:0:0:b"


def test_v3_authpriv_inform_sha512_aes256(tmp_path: Path, state_dir: Path) -> None:
    # An inform is keyed by the receiver's engine ID (discovered by pysnmp): no -e.
    users = [V3User(USER, "SHA-512", AUTH_KEY, "AES-256", PRIV_KEY)]
    with TrapReceiver(tmp_path / "rx", communities=[], users=users) as rx:
        sink = SnmpSink(v3(rx.port, "inform", auth="sha512", priv="aes256"),
                        state_dir=state_dir, node="alpha")
        send(sink, event())
        n = rx.wait_for()
    assert n.version == "3" and n.security == USER
    assert_takeover(n)
    assert sink.stats == {"sent": 1, "failed": 0}


def test_v3_aes256_with_sha1_matches_net_snmp_key_extension(tmp_path: Path,
                                                           state_dir: Path) -> None:
    # SHA-1 gives a 20-octet key, too short for AES-256: the key extension matters.
    # net-snmp's AES-256 is the Blumenthal one (pysnmp's usmAesCfb256Protocol is Reeder's,
    # and net-snmp drops those traps silently).
    engine_id = load_engine_id(state_dir)
    users = [V3User(USER, "SHA", AUTH_KEY, "AES-256", PRIV_KEY, engine_id=engine_id)]
    with TrapReceiver(tmp_path / "rx", communities=[], users=users) as rx:
        send(SnmpSink(v3(rx.port, auth="sha", priv="aes256"), state_dir=state_dir,
                      node="alpha"), event())
        assert_takeover(rx.wait_for())


def test_v3_trap_from_unknown_engine_id_is_dropped(tmp_path: Path, state_dir: Path) -> None:
    """Why the engine ID is persisted: a receiver keyed to it ignores any other."""
    known = load_engine_id(state_dir)
    other_dir = tmp_path / "other-state"
    users = [V3User(USER, "SHA-256", AUTH_KEY, "AES", PRIV_KEY, engine_id=known)]
    with TrapReceiver(tmp_path / "rx", communities=[], users=users) as rx:
        stranger = SnmpSink(v3(rx.port), state_dir=other_dir, node="alpha")
        send(stranger, event(seq=1))
        assert stranger.engine_id != known
        send(SnmpSink(v3(rx.port), state_dir=state_dir, node="alpha"), event(seq=2))
        rx.wait_for(lambda n: n.get("minisftEventSeq") == "2")
        time.sleep(0.3)
        assert [n["minisftEventSeq"] for n in rx.notifications()] == ["2"]


def test_engine_id_persisted_across_sink_instances(tmp_path: Path, state_dir: Path) -> None:
    first = SnmpSink(v3(free_udp_port()), state_dir=state_dir, node="alpha")
    send(first, )  # start/close only: creates the engine ID
    assert first.engine_id is not None
    path = state_dir / "snmp-engine-id"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes.fromhex(path.read_text().strip()) == first.engine_id
    assert first.engine_id[:5] == bytes.fromhex("80007ed905")  # PEN 32473, format octets

    # A restarted daemon (a new sink) is still known to a receiver keyed to that ID.
    users = [V3User(USER, "SHA-256", AUTH_KEY, "AES", PRIV_KEY, engine_id=first.engine_id)]
    with TrapReceiver(tmp_path / "rx", communities=[], users=users) as rx:
        second = SnmpSink(v3(rx.port), state_dir=state_dir, node="alpha")
        send(second, event())
        assert_takeover(rx.wait_for())
    assert second.engine_id == first.engine_id


def test_engine_boots_increase_per_process(state_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snmp_sink, "_boots_cache", {})
    first = snmp_sink.next_engine_boots(state_dir)
    assert snmp_sink.next_engine_boots(state_dir) == first  # once per process
    monkeypatch.setattr(snmp_sink, "_boots_cache", {})  # a restart
    assert snmp_sink.next_engine_boots(state_dir) == first + 1
    assert (state_dir / "snmp-engine-boots").read_text().strip() == str(first + 1)


# ---------------------------------------------------------------------- failures


def test_inform_to_stopped_receiver_raises_delivery_error(
        tmp_path: Path, state_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_udp_port()
    errors: list[str] = []
    for target in (v2c(port, "inform"), v3(port, "inform")):
        sink = SnmpSink(target, state_dir=state_dir, node="alpha")
        t0 = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            send(sink, event())
        assert time.monotonic() - t0 < 15
        assert "not acknowledged" in str(info.value)
        assert sink.stats["failed"] == 1
        errors.append(str(info.value) + repr(info.value) + repr(sink))
    text = "\n".join(errors) + caplog.text
    for secret in (COMMUNITY, AUTH_KEY, PRIV_KEY):
        assert secret not in text


def test_v3_inform_failing_beside_another_send_does_not_strand_it(state_dir: Path) -> None:
    """A test alert sent while the runtime's own retry to the same dead v3 target is in
    flight (issue 13: test-alert took 30 s with timeout 500 ms x 3): the retry failing
    must not leave the other send waiting forever; each fails within its own bound."""
    target = dataclasses.replace(v3(free_udp_port(), "inform"), timeout=0.5, retries=2)
    sink = SnmpSink(target, state_dir=state_dir, node="alpha")
    bound = 0.5 * 3

    async def one(delay: float) -> tuple[str, float]:
        await asyncio.sleep(delay)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(sink.deliver(event()), 10 * bound)
        except DeliveryError as exc:
            return str(exc), time.monotonic() - t0
        except TimeoutError:
            return "no outcome", time.monotonic() - t0
        return "delivered", time.monotonic() - t0

    async def go() -> list[tuple[str, float]]:
        await sink.start()
        try:
            # the second starts while the first is waiting, and is waiting when it fails
            return list(await asyncio.gather(one(0.0), one(bound / 2)))
        finally:
            await sink.close()

    for text, took in asyncio.run(go()):
        assert "not acknowledged" in text or "no answer" in text, text
        assert took < bound + 1.0, f"{text}: took {took:.1f} s"


def test_inform_delivered_after_receiver_comes_back(tmp_path: Path, state_dir: Path) -> None:
    port = free_udp_port()
    sink = SnmpSink(v2c(port, "inform"), state_dir=state_dir, node="alpha")

    async def go(rx_dir: Path) -> Notification:
        await sink.start()
        try:
            with pytest.raises(DeliveryError):
                await sink.deliver(event())
            with TrapReceiver(rx_dir, port=port, communities=[COMMUNITY]) as rx:
                await sink.deliver(event())  # the runtime's retry, same sink
                return rx.wait_for()
        finally:
            await sink.close()

    assert_takeover(asyncio.run(go(tmp_path / "rx")))


def test_v3_inform_recovers_after_receiver_restart(tmp_path: Path, state_dir: Path) -> None:
    """A restarted receiver keeps its engine ID but bumps its boots; pysnmp's cached
    timeline then makes informs time out until the sink starts from a fresh engine."""
    port = free_udp_port()
    users = [V3User(USER, "SHA-256", AUTH_KEY, "AES", PRIV_KEY)]
    sink = SnmpSink(v3(port, "inform"), state_dir=state_dir, node="alpha")

    def receiver() -> TrapReceiver:
        return TrapReceiver(tmp_path / "rx", port=port, communities=[], users=users)

    async def go() -> list[str]:
        try:
            with receiver():
                await sink.deliver(event(seq=1))
            with receiver() as rx:
                for _attempt in range(2):  # what the runtime's retry does
                    try:
                        await sink.deliver(event(seq=2))
                        break
                    except DeliveryError:
                        continue
                rx.wait_for()
                return [n["minisftEventSeq"] for n in rx.notifications()]
        finally:
            await sink.close()

    assert asyncio.run(go()) == ["2"]


def test_secrets_not_in_repr_logs_or_errors(tmp_path: Path, state_dir: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    engine_id = load_engine_id(state_dir)
    users = [V3User(USER, "SHA-256", AUTH_KEY, "AES", PRIV_KEY, engine_id=engine_id)]
    with TrapReceiver(tmp_path / "rx", communities=[COMMUNITY], users=users) as rx:
        sinks = [SnmpSink(v2c(rx.port), state_dir=state_dir, node="alpha"),
                 SnmpSink(v3(rx.port), state_dir=state_dir, node="alpha")]
        for sink in sinks:
            send(sink, event())
        rx.wait_all(count=2)
    text = caplog.text + "".join(repr(s) + str(vars(s.target).get("host")) for s in sinks)
    text += "".join(repr(s) for s in sinks)
    for secret in (COMMUNITY, AUTH_KEY, PRIV_KEY):
        assert secret not in text
    for path in state_dir.iterdir():
        for secret in (COMMUNITY, AUTH_KEY, PRIV_KEY):
            assert secret not in path.read_text()


def test_bad_target_rejected_without_secrets(state_dir: Path) -> None:
    bad = SnmpTargetConfig(host="192.0.2.9", version="3", user=USER, auth_key=AUTH_KEY,
                           priv_key=PRIV_KEY, priv_protocol="rot13")
    with pytest.raises(ValueError) as info:
        SnmpSink(bad, state_dir=state_dir, node="alpha")
    assert "rot13" in str(info.value) and PRIV_KEY not in str(info.value)
    with pytest.raises(ValueError):
        SnmpSink(SnmpTargetConfig(host="192.0.2.9"), state_dir=state_dir, node="alpha")


def test_pysnmp_loaded_only_when_started(state_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from minisft.config.model import SnmpTargetConfig\n"
        "from minisft.sinks.snmp import SnmpSink\n"
        f"s = SnmpSink(SnmpTargetConfig(host='192.0.2.9', community='x'), "
        f"state_dir=Path({str(state_dir)!r}), node='n')\n"
        "assert not [m for m in sys.modules if m.startswith('pysnmp')], 'pysnmp imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2],
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


# One process: a v2c target first, then (as after a reload) a v3 authPriv one.
V2C_THEN_PRIVACY = """
import asyncio, sys
from pathlib import Path
from minisft.config.model import SnmpTargetConfig
from minisft.core.events import Event, EventKind
from minisft.sinks.snmp import SnmpSink
port, state, community, user, auth, priv = sys.argv[1:]
def event(seq):
    return Event(seq=seq, time=1_700_000_000.5, node='alpha', kind=EventKind.TAKEOVER,
                 severity=EventKind.TAKEOVER.default_severity, reason='took over')
async def send(target, seq):
    sink = SnmpSink(target, state_dir=Path(state), node='alpha')
    await sink.start()
    await sink.deliver(event(seq))
    await sink.close()
async def main():
    await send(SnmpTargetConfig(host='127.0.0.1', port=int(port), community=community), 1)
    print('after v2c:', 'cryptography' in sys.modules)
    await send(SnmpTargetConfig(host='127.0.0.1', port=int(port), version='3', user=user,
                                auth_key=auth, priv_key=priv), 2)
    print('after v3 authPriv:', 'cryptography' in sys.modules)
asyncio.run(main())
"""


def test_cryptography_loaded_for_privacy_only(tmp_path: Path, state_dir: Path) -> None:
    """cryptography (~6.5 MiB) loads for a target with privacy only; a privacy target
    added later to a running process (a reload) still gets through."""
    engine_id = load_engine_id(state_dir)
    users = [V3User(USER, "SHA-256", AUTH_KEY, "AES", PRIV_KEY, engine_id=engine_id)]
    root = Path(__file__).resolve().parents[2]
    with TrapReceiver(tmp_path / "rx", communities=[COMMUNITY], users=users) as rx:
        proc = subprocess.run(
            [sys.executable, "-c", V2C_THEN_PRIVACY, str(rx.port), str(state_dir), COMMUNITY,
             USER, AUTH_KEY, PRIV_KEY], capture_output=True, text=True, timeout=60, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)})
        assert proc.returncode == 0, proc.stderr
        got = rx.wait_all(count=2)
    assert proc.stdout.split("\n")[:2] == ["after v2c: False", "after v3 authPriv: True"]
    assert [(n.version, n.security, n["minisftEventSeq"]) for n in got] == \
        [("1", COMMUNITY, "1"), ("3", USER, "2")]


def test_first_start_does_not_stall_the_event_loop(state_dir: Path) -> None:
    """Setting pysnmp up (imports, MIB modules: tens of ms) runs beside the event loop,
    which the failover path shares: the loop keeps ticking meanwhile."""
    async def go() -> tuple[float, float]:
        sink = SnmpSink(v3(free_udp_port()), state_dir=state_dir, node="alpha")
        ticks: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.002)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        try:
            await sink.start()
        finally:
            t1 = time.perf_counter()
            done.set()
            await task
            await sink.close()
        during = [t0, *(t for t in ticks if t0 < t < t1), t1]
        return max(b - a for a, b in itertools.pairwise(during)), t1 - t0

    longest_gap, took = asyncio.run(go())
    print(f"start took {took * 1000:.0f} ms, longest loop gap {longest_gap * 1000:.0f} ms")
    assert longest_gap < took / 2, f"the loop stalled {longest_gap * 1000:.0f} ms of a " \
                                   f"{took * 1000:.0f} ms start"


def test_through_the_delivery_runtime(tmp_path: Path, state_dir: Path) -> None:
    """The runtime spools and retries: informs to a receiver that is down at first all
    arrive, in order, once it is up."""
    from minisft.core.events import Notice
    from minisft.runtime.delivery import DeliveryManager
    from minisft.runtime.journal import EventJournal

    port = free_udp_port()

    async def go() -> list[Notification]:
        journal = EventJournal(tmp_path / "journal")
        journal.open()
        mgr = DeliveryManager(journal, [SnmpSink(v2c(port, "inform"), state_dir=state_dir,
                                                 node="alpha")],
                              backoff_initial=0.2, backoff_max=1.0)
        await mgr.start()
        try:
            for i in range(3):
                mgr.publish(journal.append(Notice(EventKind.PEER_DOWN, f"peer gone {i}",
                                                  monitor="web", address="192.0.2.10",
                                                  state="watching"),
                                           node="alpha", time=time.time()))
            await asyncio.sleep(1.5)  # a few failed attempts
            with TrapReceiver(tmp_path / "rx", port=port, communities=[COMMUNITY]) as rx:
                for _ in range(600):
                    if len(rx.notifications()) >= 3:
                        break
                    await asyncio.sleep(0.1)
                return rx.notifications()
        finally:
            await mgr.stop()
            journal.close()

    got = asyncio.run(go())
    assert [n["minisftEventReason"] for n in got] == [f"peer gone {i}" for i in range(3)]
    assert all(n.trap_oid == "MINISFT-MIB::minisftPeerDown" for n in got)
