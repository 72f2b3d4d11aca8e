"""`minisft demo`: a live takeover in a namespace lab, with the monitoring output visible.

Acts: both nodes start (alpha holds 192.0.2.10, beta watches); alpha's web service dies
(alarm, no takeover); alpha's link dies (beta takes over, the client measures the outage);
alpha returns (finds the address in use and says so); the manual fallback, a
switchover with no outage.
Everything runs in namespaces created here and removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from minisft.lab.netns import Host, Lab
from minisft.snmp import MIB_TEXT_DIRS

SERVICE_IP = "192.0.2.10"
COLORS = {"alpha": "\033[36m", "beta": "\033[35m"}
SEV_COLORS = {"critical": "\033[1;31m", "error": "\033[31m", "warning": "\033[33m",
              "notice": "\033[32m"}
RESET = "\033[0m"


def node_config(name: str, ip: str, role: str, peer: str, root: Path) -> str:
    return textwrap.dedent(f"""\
        # written by `minisft demo`
        node: {{name: {name}, local_ip: {ip}}}
        control_socket: {root}/{name}/minisft.sock
        state_dir: {root}/{name}/state
        logging: {{level: warning, syslog: false}}
        alerting:
          snmp:
            targets:
              - {{host: 192.0.2.100, port: 162, version: 2c, community: public, type: trap}}
        monitors:
          - name: web
            monitor_ip: {SERVICE_IP}
            monitor_subnet: 255.255.255.0
            role: {role}
            peer_ip: {peer}
            looksalive: {{interval: 200ms, retry: 3, timeout: 100ms}}
            isalive:
              interval: 1s
              retry: 2
              check: {{type: http, url: "http://{{address}}:8080/", timeout: 500ms}}
            fallback: {{mode: manual}}
            announce: {{count: 3, interval: 50ms, refresh: 2s}}
        """)


TRAP_FORMAT = "DEMOTRAP %V|%v\n"


def describe_trap(line: str) -> str | None:
    """One snmptrapd line (varbinds joined by '|') -> 'minisftTakeover node=beta ...'."""
    if not line.startswith("DEMOTRAP "):
        return None
    fields: dict[str, str] = {}
    for vb in line[len("DEMOTRAP "):].split("|"):
        name, _, value = vb.partition(" = ")
        value = value.split(": ", 1)[-1].strip().strip('"')
        fields[name.split("::")[-1].split(".")[0]] = value
    kind = fields.get("snmpTrapOID", "?").split("::")[-1]
    parts = [kind] + [f"{k}={fields[f'minisftEvent{k.capitalize()}']}"
                      for k in ("node", "monitor", "newState")
                      if f"minisftEvent{k.capitalize()}" in fields]
    return " ".join(parts)


class Demo:
    def __init__(self, fast: bool) -> None:
        self.pause = 1.0 if fast else 2.5
        self.color = sys.stdout.isatty()
        self.root = Path(tempfile.mkdtemp(prefix="minisft-demo-"))
        self.lab: Lab | None = None
        self.nodes: dict[str, Host] = {}
        self.web: dict[str, subprocess.Popen[Any]] = {}
        self._stop_follow = threading.Event()
        self._printed: dict[str, int] = {"alpha": 0, "beta": 0}
        self.trap_log = self.root / "snmptrapd.log"
        self._trap_pos = 0

    # -------------------------------------------------------------- output

    def say(self, text: str) -> None:
        bold = "\033[1m" if self.color else ""
        print(f"\n{bold}== {text}{RESET if self.color else ''}", flush=True)

    def _follow(self) -> None:
        from minisft.runtime.journal import EventJournal

        journals = {n: EventJournal(self.root / n / "state" / "journal") for n in self.nodes}
        while not self._stop_follow.is_set():
            for node, journal in journals.items():
                try:
                    events = list(journal.read(self._printed[node]))
                except OSError:
                    continue
                for ev in events:
                    self._printed[node] = ev.seq
                    self._print_event(node, ev)
            self._print_traps()
            time.sleep(0.1)

    def _print_traps(self) -> None:
        if not self.trap_log.exists():
            return
        with open(self.trap_log, errors="replace") as fh:
            fh.seek(self._trap_pos)
            text = fh.read()
        complete, _, _ = text.rpartition("\n")
        if not complete:
            return
        self._trap_pos += len(complete) + 1
        for line in complete.splitlines():
            described = describe_trap(line)
            if described:
                tag = "\033[2m" if self.color else ""
                print(f"  {tag}           SNMP trap received by snmptrapd: {described}"
                      f"{RESET if self.color else ''}", flush=True)

    def start_trap_receiver(self) -> None:
        """A real net-snmp snmptrapd on the client, translating traps with our MIB."""
        if not shutil.which("snmptrapd") or not (MIB_TEXT_DIRS[0] / "MINISFT-MIB.txt").is_file():
            print("  (snmptrapd or the MIB files are not available: no SNMP view)")
            return
        conf = self.root / "snmptrapd.conf"
        conf.write_text("authCommunity log public\n")
        env = {k: v for k, v in os.environ.items() if k not in ("MIBS", "MIBDIRS")}
        env["SNMP_PERSISTENT_DIR"] = str(self.root / "snmptrapd-state")
        log = open(self.trap_log, "wb")  # noqa: SIM115 - lives with the process
        self.client.popen(["snmptrapd", "-f", "-Lo", "-C", "-c", str(conf), "-n",
                           "-M", ":".join(str(d) for d in MIB_TEXT_DIRS),
                           "-m", "SNMPv2-MIB:MINISFT-MIB", "-F", TRAP_FORMAT,
                           "udp:192.0.2.100:162"], stdout=log, stderr=subprocess.STDOUT,
                          env=env)

    def check_plugin(self, name: str) -> str:
        proc = self.nodes[name].run(sys.executable, "-m", "minisft.nagios.plugin",
                                    "--status", str(self.root / name / "state" /
                                                    "status.json"), check=False)
        return f"  $ check_minisft   (on {name}, exit {proc.returncode})\n    " + \
            proc.stdout.strip().split(" | ")[0]

    def _print_event(self, node: str, ev: Any) -> None:
        millis = int(ev.time % 1 * 1000)
        stamp = time.strftime("%H:%M:%S", time.localtime(ev.time)) + f".{millis:03d}"
        sev = ev.severity.label
        if self.color:
            line = (f"  {stamp} {COLORS[node]}{node:5}{RESET} {SEV_COLORS.get(sev, '')}"
                    f"{sev:8} {ev.kind.value}{RESET} {ev.monitor or ''} {ev.reason}")
        else:
            line = f"  {stamp} {node:5} {sev:8} {ev.kind.value} {ev.monitor or ''} {ev.reason}"
        print(line, flush=True)

    # -------------------------------------------------------------- lab

    def build(self) -> None:
        self.lab = Lab()
        alpha = self.lab.add_host("alpha", "192.0.2.1/24")
        beta = self.lab.add_host("beta", "192.0.2.2/24")
        self.client = self.lab.add_host("client", "192.0.2.100/24")
        self.nodes = {"alpha": alpha, "beta": beta}
        for name, host, role, peer in (("alpha", alpha, "primary", "192.0.2.2"),
                                       ("beta", beta, "backup", "192.0.2.1")):
            (self.root / name).mkdir(parents=True)
            path = self.root / name / "minisft.yaml"
            path.write_text(node_config(name, host.ip, role, peer, self.root))
            self.start_web(name)
        self.start_trap_receiver()

    def start_web(self, name: str) -> None:
        host = self.nodes[name]
        self.web[name] = host.popen([sys.executable, "-m", "http.server", "8080", "--bind",
                                     "0.0.0.0", "--directory", str(self.root)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_web(self, name: str) -> None:
        proc = self.web.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)

    def start_daemon(self, name: str) -> None:
        host = self.nodes[name]
        log = open(self.root / name / "daemon.log", "ab")  # noqa: SIM115 - lives with the process
        host.popen([sys.executable, "-m", "minisft", "run", "--config",
                    str(self.root / name / "minisft.yaml")], stdout=log, stderr=log)
        sock = self.root / name / "minisft.sock"
        deadline = time.monotonic() + 15
        while not sock.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}'s daemon did not start: see "
                                   f"{self.root / name / 'daemon.log'}")
            time.sleep(0.05)

    def cli(self, name: str, *argv: str) -> str:
        host = self.nodes[name]
        cmd = [sys.executable, "-m", "minisft", *argv, "--config",
               str(self.root / name / "minisft.yaml")]
        proc = host.run(*cmd, check=False)
        return (proc.stdout + proc.stderr).strip()

    def wait_for(self, what: str, predicate: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for: {what}")
            time.sleep(0.05)

    def holder(self) -> str | None:
        for name, host in self.nodes.items():
            if host.has_address(f"{SERVICE_IP}/24"):
                return name
        return None

    # -------------------------------------------------------------- client

    def start_client_pings(self) -> subprocess.Popen[str]:
        return self.client.popen(["ping", "-D", "-n", "-i", "0.02", "-W", "0.1", SERVICE_IP],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    @staticmethod
    def outage(proc: subprocess.Popen[str]) -> float:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=5)
        stamps = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", out,
                                                          re.MULTILINE)]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        return max(gaps, default=0.0)

    # -------------------------------------------------------------- the show

    def run(self) -> int:
        self.say("Building a namespace lab: alpha 192.0.2.1 (primary), beta 192.0.2.2 "
                 f"(backup), a client; service address {SERVICE_IP}")
        self.build()
        follower = threading.Thread(target=self._follow, daemon=True)
        follower.start()
        self.say("Starting both daemons (LooksAlive every 200 ms, 3 retries; IsAlive http)")
        self.start_daemon("alpha")
        self.wait_for("alpha to hold the address", lambda: self.holder() == "alpha")
        self.start_daemon("beta")
        time.sleep(self.pause)
        print(self.cli("beta", "status"))

        self.say("Act 1: alpha's web service dies, the host stays up -> alarm, no takeover")
        self.stop_web("alpha")
        time.sleep(max(self.pause, 3.5))
        print(f"  address still on: {self.holder()}")
        print(self.check_plugin("beta"))
        self.start_web("alpha")
        time.sleep(max(self.pause, 2.5))

        self.say("Act 2: alpha's link goes down (host dead) -> beta takes over")
        pings = self.start_client_pings()
        time.sleep(0.5)
        self.nodes["alpha"].link_down()
        self.wait_for("beta to take over", lambda: self.holder() == "beta" or
                      self.nodes["beta"].has_address(f"{SERVICE_IP}/24"))
        time.sleep(1.0)
        print(f"  the client saw an outage of {self.outage(pings) * 1000:.0f} ms")
        print(self.check_plugin("beta"))
        time.sleep(self.pause)

        self.say("Act 3: alpha comes back, re-probes, finds the address in use and yields")
        self.nodes["alpha"].link_up()
        time.sleep(max(self.pause, 3.0))
        print(self.cli("alpha", "status"))

        self.say("Act 4: manual fallback without an outage: `minisft switchover web` on alpha "
                 "binds and announces first, then beta lets go")
        pings = self.start_client_pings()
        time.sleep(0.3)
        print("  $ minisft switchover web   (on alpha)\n    "
              + self.cli("alpha", "switchover", "web"))
        self.wait_for("beta to let go", lambda: not self.nodes["beta"].has_address(
            f"{SERVICE_IP}/24"))
        time.sleep(0.5)
        print(f"  the client saw an outage of {self.outage(pings) * 1000:.0f} ms")
        time.sleep(self.pause)
        print(self.cli("beta", "status"))
        print(self.check_plugin("alpha"))
        self.say("Done. The journal of each node: `minisft events --config FILE`; every event "
                 "above also went to the system log, and as an SNMP trap to snmptrapd; apprise, "
                 "Prometheus and more are one config block away (contrib/examples).")
        return 0

    def close(self) -> None:
        self._stop_follow.set()
        if self.lab is not None:
            self.lab.close()
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


def run_demo(fast: bool = False) -> int:
    if os.geteuid() != 0:
        print("minisft demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    demo = Demo(fast)

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up the lab", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"minisft demo: {exc}", file=sys.stderr)
        return 1
    finally:
        demo.close()
