"""The `minisft` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from minisft import __version__
from minisft.config.model import DEFAULT_CONFIG_PATH
from minisft.status import PoolAddressStatus, StatusDocument, StatusError, parse

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NO_DAEMON = 3

TEST_ALERT_REPLY_MARGIN = 3.0  # s over the slowest sink's bound: the daemon's own work
TEST_ALERT_FALLBACK_WAIT = 300.0  # s, when the config on disk does not load

DESCRIPTION = """\
MiniSFT keeps service IP addresses alive across servers. A node watches an address it does
not hold with LooksAlive (ICMP ping, backed by ARP/NDP) and IsAlive (a real service check);
when LooksAlive fails `retry` times it probes the address (RFC 5227), binds it on the
interface that carries node.local_ip and announces it. Every decision is an event: system
log, the journal in state_dir, SNMP traps, apprise, Nagios/Icinga, Prometheus.
"""

EPILOG = """\
manual fallback, the original procedure as commands:
  on the node that took over:   minisft release web    (removes it, pauses watching)
  on the primary:               minisft claim web      (probes, binds, announces)
  back on the first node:       minisft resume web     (watches again)

switchover, the same move without an outage (make-before-break):
  on the primary:               minisft switchover web (binds at once; the backup yields)
  pools, on the member back:    minisft rebalance front (takes its addresses back)

examples:
  minisft run --config /etc/minisft/minisft.yaml       foreground, for systemd
  minisft check-config --config ./alpha.yaml           validate, change nothing
  minisft status --json                                live state of every monitor
  minisft events --follow                              the event journal, as it grows
  minisft demo                                         a two-node takeover in a namespace lab

exit codes: 0 ok (also when the wanted state already held: release, claim, pause, resume,
switchover and rebalance are idempotent), 1 command refused or failed, 2 bad
configuration, 3 daemon unreachable.
"""


SWITCHOVER_HELP = """\
Move a service address back to this node, its primary, without an outage: the
make-before-break form of the manual fallback (release on the backup, claim here).

Run it on the primary, after a failover, once the primary is healthy again. It binds
the address here and announces it at once, without waiting for the backup to let go;
the backup hears the announcement, releases the address and watches it again (both
sides report a `switchover` event). Clients see a gap of a few milliseconds, not the
primary's detection time.

Before binding it checks, and refuses with the reason (exit 1) when:
  - this node is not the address's primary (role backup),
  - this node's link is down,
  - this node fails its own IsAlive check (the configured check, run against its
    node.local_ip, as a backup checks its peer before an automatic fallback),
  - nobody holds the address (then `minisft claim NAME` is the command),
  - the node that answers for the address is not the configured peer_ip (compared
    by MAC): it never takes an address from a third node. The primary's monitor
    needs peer_ip set to the backup's own address for this.
Already holding the address here: says so, changes nothing, exit 0.

The backup recognises the switchover when the primary resolved the address by
ARP/NDP while watching it (over IPv6 also from its link-local address, known by
its MAC); `minisft status` on the backup shows it as the peer's watching_mac.
Otherwise it still yields, and reports a split brain.
"""


REBALANCE_HELP = """\
Move a pool's addresses back to the members the formula gives them: the manual
fallback of a pool (fallback: {mode: manual}), where addresses stay on the member
that took them over until an admin acts.

Run it on the member that should get its addresses back, once it is healthy and
active again (`minisft status` shows the pool active). It takes them without a gap,
make-before-break: it binds each of its addresses at once, without waiting for the
member holding it to let go, and announces it; the holder hears that it is held
twice, the pool's duplicates rule names this member keeper, and the holder
releases it (both sides report a `switchover` event). Clients see a gap of a few
milliseconds at most, not a detection time.

Run on a member that holds addresses another member asks for, it also hands those
over, break-before-make (release here, the other member probes, then binds).

It refuses with the reason (exit 1), binding nothing, when:
  - this member is not active (still joining, or isolated: no quorum),
  - this member's link is down,
  - it became active less than one detection time ago (after a restart or a healed
    partition the members' views are still settling: try again in a moment),
  - the holder of an address is isolated, has gone quiet, counts this member lost
    (it would not hear this member hold the address and would keep it too), or by
    its own view of the pool would keep the address.
Those addresses stay where they are; the others still move.
Nothing to move: says so, changes nothing, exit 0.

Pools coordinated through etcd switch make-before-break too: this member binds and
announces, then moves the owner key in etcd in one transaction (lost or unanswered:
the copy is removed at once); the holder releases on seeing the key. It also refuses
while this member does not follow etcd or its lease was not renewed recently enough.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minisft", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"minisft {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=description or help,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG_PATH,
                        metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH})")
        return sp

    run = add("run", "run the daemon in the foreground (for systemd: Type=notify)",
              "Run the daemon in the foreground. SIGTERM stops it (releasing held addresses "
              "if node.release_on_stop), SIGHUP reloads the config (a bad file is refused "
              "and the running config stays).")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="override logging.level")
    add("check-config", "validate the config file; change nothing",
        "Validate the config file: on error, name the key and its line and exit 2. "
        "Touches nothing on the host.")
    st = add("status", "show every monitor: state, holder, last results, counters")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    for verb, text in (
        ("release", "remove the address here and pause watching (manual fallback step 1)"),
        ("claim", "probe the address and bind it here now (manual fallback step 2)"),
        ("pause", "stop watching (a held address stays bound)"),
        ("resume", "watch again after release or pause"),
    ):
        sp = add(verb, text)
        sp.add_argument("monitor", metavar="NAME", help="monitor name from the config")
    so = add("switchover", "move the address back to this node, its primary, without an "
             "outage", SWITCHOVER_HELP)
    so.add_argument("monitor", metavar="NAME", help="monitor name from the config")
    rb = add("rebalance", "pools: on a member back after a failover, take its addresses "
             "back without a gap (the manual fallback of a pool)", REBALANCE_HELP)
    rb.add_argument("pool", metavar="POOL", help="pool name from the config")
    pool = sub.add_parser("pool", help="pools in etcd mode: manage the definition in etcd",
                          description="Pools coordinated through etcd keep their definition "
                          "in etcd (docs/pools.md, etcd mode).")
    pool_sub = pool.add_subparsers(dest="pool_command", metavar="ACTION", required=True)
    push = pool_sub.add_parser(
        "push", help="write this config's definition of POOL to etcd",
        description="Write the pool definition (members, weights, addresses, preferred, "
        "fallback) from this config file to etcd, replacing the one there. Every member "
        "applies it at once from its watch. Edit the pool in every node's file (a member "
        "whose file differs raises config_drift), then run this once, on any node.")
    push.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG_PATH,
                      metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH})")
    push.add_argument("pool", metavar="POOL", help="pool name from the config")
    ev = add("events", "show the event journal (works without the daemon)")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--last", "-n", type=int, default=20, metavar="N",
                    help="show the last N events first (default 20; 0 = all)")
    ev.add_argument("--kind", action="append", metavar="KIND", help="only this kind (repeat)")
    ev.add_argument("--monitor", metavar="NAME", help="only this monitor")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    add("reload", "reload the config file in the running daemon (like SIGHUP)")
    add("test-alert", "send a test event through every configured sink; report each")
    demo = sub.add_parser("demo", help="a live two-node takeover in a namespace lab (root)",
                          description="Build a namespace lab (two nodes and a client), start "
                          "two daemons, kill the holder's link, show the takeover and the "
                          "events as they happen, then fall back by hand. Cleans up after "
                          "itself, also on Ctrl-C.")
    demo.add_argument("--fast", action="store_true", help="shorter pauses between the acts")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _load(args: argparse.Namespace, *, secrets: bool = True) -> Any:
    """Load the config or exit 2 naming every bad key. Commands that only need to find the
    daemon pass secrets=False, so they do not need to read root-only key files."""
    from minisft.config.loader import ConfigError, load_config

    try:
        return load_config(args.config, secrets=secrets)
    except ConfigError as exc:
        print(f"minisft: config error: {exc.report()}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from minisft.runtime.daemon import Daemon
    from minisft.runtime.heap import one_malloc_arena
    from minisft.runtime.journald import configure_logging
    from minisft.sinks.syslog import facility_code

    config = _load(args)
    one_malloc_arena()  # before the daemon starts its threads
    level = (args.log_level or config.logging.level).upper()
    logs_to_journal = configure_logging(getattr(logging, level, logging.INFO),
                                        facility=facility_code(config.logging.syslog_facility))
    return asyncio.run(Daemon(config, config_path=args.config,
                              logs_to_journal=logs_to_journal).run())


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"{args.config}: OK")
    print(f"  node {config.node.name}, local_ip {config.node.local_ip}")
    for m in config.monitors:
        la = m.looksalive
        check = m.isalive.check.type
        print(f"  monitor {m.name}: {m.address} role {m.role.value}, LooksAlive every "
              f"{la.interval:g}s x{la.retry} (timeout {la.timeout:g}s), IsAlive {check}, "
              f"fallback {m.fallback.mode.value}")
    for pool in config.pools:
        print(f"  pool {pool.name}: {len(pool.members)} members, {len(pool.addresses)} "
              "addresses")
    sinks = (["syslog"] if config.logging.syslog else []) + \
        [f"snmp {t.host}:{t.port} v{t.version} {t.type}" for t in config.alerting.snmp_targets]
    if config.alerting.apprise is not None:
        sinks.append("apprise")
    print(f"  sinks: {', '.join(sinks) or 'none (journal only)'}")
    print(f"  state_dir {config.state_dir}, control_socket {config.control_socket}")
    return EXIT_OK


def _locate(args: argparse.Namespace, key: str, default: Path) -> Path:
    """Find control_socket or state_dir WITHOUT validating the whole file: in an incident
    someone may have broken the config on disk, and status, release or reload (which
    reports exactly what is wrong) must still reach the running daemon. A file that is no
    config at all (too large, too deeply nested, not text) is one clear line, exit 2."""
    import yaml

    from minisft.config.loader import MAX_CONFIG_BYTES, YAML_LOADER

    try:
        with open(args.config, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        print(f"minisft: cannot read {args.config}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if len(raw) > MAX_CONFIG_BYTES:
        print(f"minisft: {args.config}: larger than {MAX_CONFIG_BYTES // 1024} KiB: not a "
              "config file", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    # a stray non-UTF-8 byte elsewhere must not hide the one line we need
    text = raw.decode("utf-8-sig", errors="replace")
    try:
        data = yaml.load(text, Loader=YAML_LOADER)
    except (yaml.YAMLError, RecursionError):
        data = None
    # Not YAML any more (half-edited, truncated): find a top-level `key: value` line.
    value = data.get(key) if isinstance(data, dict) else _top_level_line(text, key)
    if not isinstance(value, str) or not value:
        return default
    path = Path(value)
    return path if path.is_absolute() else Path(args.config).resolve().parent / path


def _top_level_line(text: str, key: str) -> str | None:
    """`key: value` at the start of a line (quotes and a trailing comment stripped)."""
    import re

    m = re.search(rf"^{re.escape(key)}:[ \t]*(['\"]?)([^'\"#\n]*?)\1[ \t]*(?:#.*)?$", text,
                  re.MULTILINE)
    return m.group(2) if m and m.group(2) else None


def _request(args: argparse.Namespace, payload: dict[str, Any],
             timeout: float | None = None) -> dict[str, Any]:
    from minisft.config.model import DEFAULT_CONTROL_SOCKET
    from minisft.runtime.control import ControlError, request

    socket_path = _locate(args, "control_socket", DEFAULT_CONTROL_SOCKET)
    try:
        if timeout is None:
            return request(socket_path, payload)
        return request(socket_path, payload, timeout=timeout)
    except ControlError as exc:
        print(f"minisft: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_NO_DAEMON) from None


def cmd_status(args: argparse.Namespace) -> int:
    answer = _request(args, {"cmd": "status"})
    if args.json:
        print(json.dumps(answer.get("status", {}), indent=2, sort_keys=True))
        return EXIT_OK
    try:
        status = parse(answer.get("status"), "the daemon's status answer")
    except StatusError as exc:  # a daemon of another version
        print(f"minisft: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    print(format_status(status))
    return EXIT_OK


def format_status(st: StatusDocument, now: float | None = None) -> str:
    now = time.time() if now is None else now
    up = now - (st.started_at if st.started_at is not None else now)
    lines = [f"node {st.node} on {st.interface} ({st.local_ip}), pid {st.pid}, up "
             f"{_duration(up)}, link {'up' if st.link_up else 'DOWN'}"]
    header = ("MONITOR", "ADDRESS", "ROLE", "STATE", "HOLDER", "LOOKSALIVE", "ISALIVE",
              "TAKEOVERS", "CONFLICTS", "SINCE")
    rows: list[tuple[str, ...]] = [header]
    for m in st.monitors:
        la, ia = m.looksalive, m.isalive
        rtt = f" {la.rtt_ms}ms" if la.rtt_ms is not None and la.health == "up" else ""
        if la.rto_ms is not None and la.health != "unknown":
            rtt += f" rto {la.rto_ms:g}ms"  # how long the next ping waits for its reply
        if not ia.enabled:
            isalive = "-"
        elif ia.dead:
            isalive = "DEAD"
        else:
            isalive = {True: "ok", False: "failing", None: "pending"}[ia.ok]
            if ia.latency_ms is not None:
                isalive += f" {ia.latency_ms:.0f}ms"
        state = f"{m.state}{' (paused)' if m.paused else ''}"
        if m.conflict_open:
            state += " CONFLICT"
        rows.append((str(m.name), f"{m.address}/{m.prefixlen}", str(m.role), state,
                     str(m.holder), f"{la.health}{rtt}", isalive,
                     str(m.counters.get("takeovers", 0)), str(m.counters.get("conflicts", 0)),
                     _duration(m.seconds_since_change or 0.0)))
    lines.extend(_table(rows))
    for m in st.monitors:
        lines.append(f"  {m.name}: {m.reason}")
    for pool in st.pools:
        alive = [str(m.name) for m in pool.members if m.alive]
        lines.append(f"pool {pool.name} as {pool.member}: {pool.phase}"
                     f"{' ISOLATED' if pool.isolated else ''}, members alive: "
                     f"{', '.join(alive)}; holding here: {', '.join(pool.held) or 'none'}"
                     + (f"; CONFIG DRIFT with {', '.join(pool.drift)}" if pool.drift
                        else ""))
        if pool.etcd is not None:
            etcd = pool.etcd
            lines.append(f"  etcd {etcd.endpoint}: "
                         + ("connected" if etcd.connected else "NOT CONNECTED")
                         + f", lease {etcd.lease or 'none'} (ttl {etcd.ttl}s)"
                         + (f", last error: {etcd.last_error}" if etcd.last_error
                            and not etcd.connected else ""))
            if pool.config_drift:
                lines.append(f"  CONFIG DRIFT: {pool.config_drift}")
        if pool.reason:
            lines.append(f"  {pool.reason}")
        if pool.placement:
            rows = [("ADDRESS", "OWNER", "PREFERRED", "STATE", "MOVES")]
            rows.extend((str(a.address), _owner_text(a), str(a.preferred or "-"),
                         _placement_state(a), str(a.moves)) for a in pool.placement)
            lines.extend("  " + row for row in _table(rows))
        else:  # a daemon from before the placement table
            for address, owner in sorted((pool.assignment or {}).items()):
                lines.append(f"  {address} -> {owner}")
    sinks = st.sinks
    if sinks:
        parts = []
        for s in sinks:
            text = f"{s['name']} {s.get('state', '?')} ({s.get('delivered', 0)} delivered"
            if s.get("sent_unconfirmed"):
                text += f", {s['sent_unconfirmed']} sent unconfirmed"
            if s.get("pending"):
                text += f", {s['pending']} pending"
            if s.get("dropped"):
                text += f", {s['dropped']} dropped"
            text += ")"
            if s.get("last_error") and s.get("state") != "ok":
                text += f": {s['last_error']}"
            parts.append(text)
        lines.append("sinks: " + "; ".join(parts))
    return "\n".join(lines)


def _owner_text(address: PoolAddressStatus) -> str:
    if address.state == "duplicate":
        return "+".join(address.holders)
    return address.owner or "NOBODY"


def _placement_state(address: PoolAddressStatus) -> str:
    """The state, and whether it is where it belongs: an admin scans for the odd one."""
    if address.owner is None or address.state != "held":
        return address.state or "?"
    return "held" if address.on_preferred else "held, not preferred"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def cmd_admin(args: argparse.Namespace) -> int:
    answer = _request(args, {"cmd": args.command, "monitor": args.monitor, "by": "cli"})
    if not answer.get("ok"):
        print(f"minisft: {args.command} refused: {answer.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    m = answer.get("monitor", {})
    if answer.get("already"):  # idempotent: the wanted end state already held
        print(f"{answer['already']}; nothing to do")
    print(f"{args.monitor}: {m.get('state')}{' (paused)' if m.get('paused') else ''} - "
          f"{m.get('reason')}")
    return EXIT_OK


def cmd_pool(args: argparse.Namespace) -> int:
    import asyncio

    config = _load(args)
    pool = next((p for p in config.pools if p.name == args.pool), None)
    if pool is None:
        known = ", ".join(p.name for p in config.pools) or "none"
        print(f"minisft: no pool named {args.pool!r} in {args.config} (known: {known})",
              file=sys.stderr)
        return EXIT_FAILED
    if not pool.coordination.etcd:
        print(f"minisft: pool {pool.name} is not in etcd mode (coordination.backend: "
              f"{pool.coordination.backend.value}); its members compare config digests instead",
              file=sys.stderr)
        return EXIT_FAILED
    from minisft.pools.etcd_backend import EtcdUnavailable, push_definition

    try:
        result = asyncio.run(push_definition(pool))
    except (EtcdUnavailable, RuntimeError) as exc:
        print(f"minisft: pool push {pool.name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    before = result["previous"]
    print(f"{pool.name}: definition {result['digest']} written to {result['key']} via "
          f"{result['endpoint']}" + (" (signed)" if result["signed"] else ""))
    print("  previous: " + ("none" if before is None else
                            "identical" if before == result["digest"] else before))
    return EXIT_OK


def cmd_rebalance(args: argparse.Namespace) -> int:
    answer = _request(args, {"cmd": "rebalance", "pool": args.pool, "by": "cli"})
    if not answer.get("ok"):
        print(f"minisft: rebalance refused: {answer.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.pool}: {answer.get('message') or 'rebalancing to the formula layout'}")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    answer = _request(args, {"cmd": "reload"})
    if not answer.get("ok"):
        print(f"minisft: {answer.get('error')}", file=sys.stderr)
        return EXIT_CONFIG
    print(answer.get("message"))
    return EXIT_OK


def _test_alert_wait(args: argparse.Namespace) -> float:
    """How long the daemon may take to answer test-alert: the slowest configured sink's
    bound plus a margin. A config that does not load (the daemon runs an older one):
    a wait no configured sink can exceed."""
    from minisft.config.loader import load_config
    from minisft.runtime.delivery import alert_test_bound
    from minisft.sinks.factory import build_sinks

    try:
        sinks = build_sinks(load_config(Path(args.config)))
    except Exception:  # whatever is wrong with the file, reload reports it; not this
        return TEST_ALERT_FALLBACK_WAIT
    return max((alert_test_bound(s) for s in sinks), default=0.0) + TEST_ALERT_REPLY_MARGIN


def cmd_test_alert(args: argparse.Namespace) -> int:
    answer = _request(args, {"cmd": "test-alert"}, timeout=_test_alert_wait(args))
    results: dict[str, str | None] = answer.get("results", {})
    if not results:
        print("no sinks configured (events go to the journal only)")
        return EXIT_OK
    failed = 0
    for name, error in results.items():
        if error is None:
            print(f"  {name}: delivered")
        else:
            failed += 1
            print(f"  {name}: FAILED: {error}")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    from minisft.config.model import DEFAULT_STATE_DIR
    from minisft.runtime.journal import EventJournal, format_event, read_events

    state_dir = _locate(args, "state_dir", DEFAULT_STATE_DIR)
    color = sys.stdout.isatty()
    kinds = set(args.kind) if args.kind else None
    last_seq = 0
    for event in read_events(state_dir, last=args.last or None, kinds=kinds,
                             monitor=args.monitor):
        print(event.to_json() if args.json else format_event(event, color), flush=True)
        last_seq = event.seq
    if not args.follow:
        return EXIT_OK
    journal = EventJournal(state_dir / "journal")
    if last_seq == 0:
        last_seq = max((e.seq for e in read_events(state_dir, last=1)), default=0)
    for event in journal.follow(last_seq):
        if kinds and event.kind.value not in kinds:
            continue
        if args.monitor and event.monitor != args.monitor:
            continue
        print(event.to_json() if args.json else format_event(event, color), flush=True)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from minisft.lab.demo import run_demo

    return run_demo(fast=args.fast)


_COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "status": cmd_status,
    "release": cmd_admin,
    "claim": cmd_admin,
    "pause": cmd_admin,
    "resume": cmd_admin,
    "switchover": cmd_admin,
    "events": cmd_events,
    "reload": cmd_reload,
    "rebalance": cmd_rebalance,
    "pool": cmd_pool,
    "test-alert": cmd_test_alert,
    "demo": cmd_demo,
}

if __name__ == "__main__":
    sys.exit(main())
