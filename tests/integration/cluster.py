"""Real MiniSFT daemons in a namespace lab, for the integration and fault tests.

A `Cluster` is a Lab plus one `Node` per daemon: its config file, state_dir and control
socket live in a temporary directory; the daemon runs as `python -m minisft run` inside the
node's namespace, exactly as an admin would run it (or as the installed package's
`/usr/bin/minisft run`: `Cluster(..., command=[str(installed_minisft.minisft)])`).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from minisft.core.events import Event
from minisft.lab.netns import Host, Lab

FAST_LOOKSALIVE = {"interval": "200ms", "retry": 3, "timeout": "100ms"}


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 20.0,
               step: float = 0.05, *, describe: Callable[[], str] | None = None) -> Any:
    """`predicate`'s first true value within `timeout` seconds; else AssertionError, with
    `describe()` (what was last seen) when given."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = describe() if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for: {what}"
                                 + (f"; last seen: {seen}" if seen else ""))
        time.sleep(step)


class Node:
    def __init__(self, cluster: Cluster, host: Host, root: Path) -> None:
        self.cluster = cluster
        self.host = host
        self.name = host.name
        self.root = root
        self.config_path = root / "minisft.yaml"
        self.state_dir = root / "state"
        self.socket = root / "run" / "minisft.sock"
        self.log_path = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config: dict[str, Any] = {}

    # ------------------------------------------------------------ config

    def configure(self, monitors: list[dict[str, Any]], **extra: Any) -> None:
        self.config = {
            "node": {"name": self.name, "local_ip": self.host.ip},
            "control_socket": str(self.socket),
            "state_dir": str(self.state_dir),
            "logging": {"level": "info", "syslog": False},
            "monitors": monitors,
            **extra,
        }
        self.write_config(self.config)

    def write_config(self, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        self.config_path.write_text(text)

    # ------------------------------------------------------------ process

    def start(self, wait: bool = True, *, wrap: Sequence[str] = ()) -> None:
        """Start the daemon; `wrap` is a command prefix run inside the namespace (e.g. a
        shell that mounts something first, then `exec "$@"`s the daemon)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = self.host.popen([*wrap, *self.cluster.command, "run",
                                     "--config", str(self.config_path)],
                                    stdout=log, stderr=log)
        if wait:
            wait_until(f"{self.name}'s daemon to listen", lambda: self._ready(), timeout=20)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name}'s daemon exited with {self.proc.returncode}:\n"
                                 + self.log())
        return self.socket.exists() and (self.state_dir / "status.json").exists()

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.send_signal(sig)
        code = self.proc.wait(timeout)
        self.host.procs.remove(self.proc) if self.proc in self.host.procs else None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------ observation

    def cli(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.host.run(*self.cluster.command, *argv, "--config",
                             str(self.config_path), check=check, timeout=30)

    def status(self) -> dict[str, Any]:
        proc = self.cli("status", "--json")
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def monitor(self, name: str) -> dict[str, Any]:
        for m in self.status()["monitors"]:
            if m["name"] == name:
                return dict(m)
        raise KeyError(name)

    def events(self, kind: str | None = None, monitor: str | None = None) -> list[Event]:
        from minisft.runtime.journal import EventJournal

        journal = EventJournal(self.state_dir / "journal")
        out = []
        for ev in journal.read(0):
            if kind and ev.kind.value != kind:
                continue
            if monitor and ev.monitor != monitor:
                continue
            out.append(ev)
        return out

    def wait_event(self, kind: str, monitor: str | None = None, timeout: float = 20.0,
                   after: int = 0) -> Event:
        def find() -> Event | None:
            for ev in self.events(kind, monitor):
                if ev.seq > after:
                    return ev
            return None

        found: Event = wait_until(f"{self.name}: event {kind}", find, timeout=timeout)
        return found

    def last_seq(self) -> int:
        evs = self.events()
        return evs[-1].seq if evs else 0

    def holds(self, address: str) -> bool:
        return self.host.has_address(address)

    # ------------------------------------------------------------ fault-test helpers

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon (no clean-up: addresses, sockets and the lock stay)."""
        code = self.stop(signal.SIGKILL)
        assert code == -signal.SIGKILL, f"{self.name}'s daemon exited with {code} first"

    def link_is_up(self) -> bool:
        """Administratively up (what Host.link_down/link_up change)."""
        out = self.host.run("ip", "-o", "link", "show", "dev", self.host.ifname).stdout
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
        return "UP" in flags

    def journal_records(self) -> list[dict[str, Any]]:
        """Every complete line of every journal segment, raw, in file order.

        Unlike `events()` (EventJournal.read skips a seq it has already seen, as a reader
        must), this shows duplicates, so tests can prove there are none. A complete line
        that is not JSON is returned as {"_corrupt": line}; an incomplete last line (a
        crash mid-write, repaired at the next start) is left out.
        """
        journal = self.state_dir / "journal"
        if not journal.is_dir():
            return []
        out: list[dict[str, Any]] = []
        for seg in sorted(journal.glob("events-*.jsonl"),
                          key=lambda p: int(p.name.split("-")[1].split(".")[0])):
            for line in seg.read_bytes().split(b"\n")[:-1]:
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"_corrupt": line.decode(errors="replace")})
        return out

    def logged_events(self) -> list[str]:
        """The event summaries the daemon wrote to its log (`Event.summary()`), in order,
        across restarts: what it emitted, to compare with what reached the journal."""
        from minisft.core.events import EventKind

        kinds = {k.value for k in EventKind}
        out = []
        for line in self.log().splitlines():
            _, sep, message = line.partition("] ")  # "... minisft[PID] LEVEL message"
            level, _, message = message.partition(" ")
            if sep and level in ("INFO", "WARNING", "ERROR") and \
                    message.split(" ", 1)[0] in kinds:
                out.append(message)
        return out


class Cluster:
    """`with Cluster(tmp_path, ["alpha", "beta"]) as c:` -> c.nodes["alpha"], c.client."""

    def __init__(self, tmp: Path, names: list[str], *, ipv6: bool = True,
                 command: Sequence[str] = (sys.executable, "-m", "minisft")) -> None:
        self.command = tuple(command)  # how the daemon and the CLI are run
        self.lab = Lab()
        self.nodes: dict[str, Node] = {}
        try:
            for i, name in enumerate(names, start=1):
                host = self.lab.add_host(name, f"192.0.2.{i}/24",
                                         f"2001:db8::{i}/64" if ipv6 else None)
                root = tmp / name
                (root / "run").mkdir(parents=True)
                self.nodes[name] = Node(self, host, root)
            self.client = self.lab.add_host("client", "192.0.2.100/24",
                                            "2001:db8::100/64" if ipv6 else None)
        except Exception:
            self.lab.close()
            raise

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is not None:  # show the daemons' own words on failure
            for node in self.nodes.values():
                sys.stderr.write(f"\n----- {node.name} daemon log -----\n{node.log()[-6000:]}\n")
        self.lab.close()

    def holders(self, address: str) -> list[str]:
        return [n.name for n in self.nodes.values() if n.holds(address)]

    def live_holders(self, address: str) -> list[str]:
        """Holders whose link is up: a dead host keeps its addresses on a down link, where
        nobody can reach them."""
        return [n.name for n in self.nodes.values() if n.link_is_up() and n.holds(address)]

    def client_pings(self, address: str) -> subprocess.Popen[str]:
        return self.client.popen(["ping", "-D", "-n", "-i", "0.01", "-W", "0.1", address],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def longest_gap(proc: subprocess.Popen[str]) -> float:
    """Stop a `ping -D` started by client_pings; return the longest gap between replies."""
    import re

    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    stamps = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", out,
                                                      re.MULTILINE)]
    assert stamps, "the client never got a reply"
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)


def rebalance_under_pings(cluster: Cluster, member: Node, holder: Node, address: str,
                          after: int) -> tuple[Event, float]:
    """`minisft rebalance front` on `member` while the client pings `address` every
    10 ms: the holder's `switchover` event (after its event `after`) and the longest gap
    between the client's replies."""
    pings = cluster.client_pings(address.split("/")[0])
    time.sleep(1.0)
    out = member.cli("rebalance", "front")
    assert out.returncode == 0, out.stderr
    assert "taking make-before-break" in out.stdout and address in out.stdout
    gave = holder.wait_event("switchover", "front", after=after, timeout=5)
    time.sleep(1.0)
    gap = longest_gap(pings)
    sys.stderr.write(f"rebalance gap seen by the client: {gap * 1000:.1f} ms\n")
    return gave, gap


def start_pair(tmp: Path, address: str = "192.0.2.10/24", *,
               alpha_extra: dict[str, Any] | None = None,
               beta_extra: dict[str, Any] | None = None,
               config_extra: dict[str, Any] | None = None,
               prepare: Callable[[Cluster], object] | None = None) -> Cluster:
    """alpha (primary) holds `address`, beta (backup, peer_ip alpha) watches it.

    `alpha_extra`/`beta_extra` go into the monitor's config, `config_extra` into both
    daemons' top level (e.g. alerting); `prepare(cluster)` runs before the daemons start
    (e.g. to start receivers in the client namespace). Cleans the lab up if the start
    fails."""
    c = Cluster(tmp, ["alpha", "beta"])
    try:
        if prepare is not None:
            prepare(c)
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.configure([monitor_cfg("web", address, "primary", peer=beta.host.ip,
                                     **(alpha_extra or {}))], **(config_extra or {}))
        beta.configure([monitor_cfg("web", address, "backup", peer=alpha.host.ip,
                                    **(beta_extra or {}))], **(config_extra or {}))
        alpha.start()
        wait_until("alpha to claim the address", lambda: alpha.holds(address))
        beta.start()
        beta.wait_event("looksalive_up", "web")
    except BaseException:
        c.__exit__(*sys.exc_info())
        raise
    return c


def monitor_cfg(name: str, address: str, role: str, *, peer: str | None = None,
                **extra: Any) -> dict[str, Any]:
    ip, _, prefix = address.partition("/")
    cfg: dict[str, Any] = {"name": name, "monitor_ip": ip, "monitor_subnet": int(prefix or 24),
                           "role": role, "looksalive": dict(FAST_LOOKSALIVE),
                           "announce": {"count": 3, "interval": "50ms", "refresh": "1s"}}
    if peer:
        cfg["peer_ip"] = peer
    cfg.update(extra)
    return cfg
