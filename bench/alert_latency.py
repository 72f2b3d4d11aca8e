"""Alert latency: from an event's journal timestamp to the receiver.

One MiniSFT daemon (alpha, primary for 192.0.2.10) in a namespace lab; in the lab's client
namespace (192.0.2.100) a real net-snmp snmptrapd (v2c trap target, MINISFT-MIB loaded,
its -F output read line by line through a pipe and stamped on arrival) and an aiosmtpd
SMTP server (apprise mailto:// target, stamps each mail in handle_DATA). Events are made
with the CLI, `minisft pause web` / `minisft resume web` (one event each). Latency =
receipt time - the event's `time` in the journal (same clock: one machine).

Three phases, each a fresh lab and daemon:

1. SNMP burst: --events (50) events back to back (as fast as the CLI goes); the mail
   target is filtered to `takeover` (none happen), so only SNMP is measured.
2. mail paced: --mail-events (12) events --spacing (6 s) apart; mail gets paused/resumed.
   apprise paces mail itself (one mail per 5.5 s per target, see
   minisft/sinks/apprise_sink.py), so events further apart than that measure the path,
   not the pacing.
3. mail burst: --burst (6) events back to back: shows the pacing (mail k arrives about
   5.5 x (k-1) s after its event).

    python bench/alert_latency.py [--events 50] [--mail-events 12] [--spacing 6] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    machine_line,
    median,
    monitor,
    pct,
    table,
    use_quiet_env,
    wait_until,
)

from tests.integration.cluster import Cluster
from tests.support.snmptrapd import BEGIN, TrapReceiver

VIP = "192.0.2.10/24"
CLIENT_IP = "192.0.2.100"
TRAP_PORT, SMTP_PORT = 16162, 2525
COMMUNITY = "bench-latency"
SEQ_TITLE = "[MiniSFT {severity}] {node}: {kind} {monitor} seq={seq}"
_SEQ_VARBIND = re.compile(r"minisftEventSeq\S* = (?:\S+: )?(\d+)")


class StampedTraps:
    """snmptrapd in a lab host, stdout line-buffered (stdbuf -oL) into a pipe; each
    notification is stamped when its first line arrives."""

    def __init__(self, host: Any, workdir: Path) -> None:
        self.rx = TrapReceiver(workdir, host=CLIENT_IP, port=TRAP_PORT,
                               communities=[COMMUNITY])
        self.host = host
        self.arrivals: dict[int, float] = {}
        self.text: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StampedTraps:
        self.rx.workdir.mkdir(parents=True, exist_ok=True)
        self.rx.write_conf()
        env = {k: v for k, v in os.environ.items() if k not in ("MIBS", "MIBDIRS")}
        env["SNMP_PERSISTENT_DIR"] = str(self.rx.persist)
        env["SNMPCONFPATH"] = str(self.rx.workdir)
        self.proc = self.host.popen(["stdbuf", "-oL", *self.rx.command()], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        wait_until("snmptrapd", lambda: any("NET-SNMP version" in s for s in self.lines()))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        started: float | None = None
        for raw in self.proc.stdout:
            now = time.time()
            line = raw.decode(errors="replace")
            with self._lock:
                self.text.append(line)
            if line.startswith(BEGIN):
                started = now
            m = _SEQ_VARBIND.search(line)
            if m and started is not None:
                with self._lock:
                    self.arrivals.setdefault(int(m.group(1)), started)

    def lines(self) -> list[str]:
        with self._lock:
            return list(self.text)

    def got(self) -> dict[int, float]:
        with self._lock:
            return dict(self.arrivals)


class StampedMail:
    """benchlib.py's SMTP receiver in a lab host: {"t", "subject"} JSON lines."""

    def __init__(self, host: Any, out: Path) -> None:
        self.host = host
        self.out = out

    def start(self) -> StampedMail:
        self.host.popen(["python3", str(ROOT / "bench" / "benchlib.py"), "smtp", "--host",
                         CLIENT_IP, "--port", str(SMTP_PORT), "--out", str(self.out)],
                        env=os.environ.copy(), stdout=subprocess.DEVNULL)
        wait_until("SMTP receiver", lambda: self.records(), timeout=30)
        return self

    def records(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(s) for s in self.out.read_text().splitlines() if s.strip()]
        except (FileNotFoundError, ValueError):
            return []

    def got(self) -> dict[int, float]:
        out = {}
        for r in self.records():
            m = re.search(r"seq=(\d+)", r.get("subject", ""))
            if r.get("type") == "mail" and m:
                out[int(m.group(1))] = float(r["t"])
        return out


def run_phase(tmp: Path, *, events: int, spacing: float, mail_kinds: list[str],
              want_mail: bool) -> dict[str, Any]:
    with Cluster(tmp, ["alpha"], ipv6=False) as c:
        alpha = c.nodes["alpha"]
        mail = (f"mailto://{CLIENT_IP}:{SMTP_PORT}?to=ops@example.org"
                "&from=minisft@example.org&mode=insecure")
        alpha.configure(
            [monitor("web", VIP, "primary")],
            alerting={"snmp": {"targets": [{"host": CLIENT_IP, "port": TRAP_PORT,
                                            "version": "2c", "type": "trap",
                                            "community": COMMUNITY}]},
                      "apprise": {"urls": [{"url": mail, "kinds": mail_kinds}],
                                  "title": SEQ_TITLE}})
        os.chmod(alpha.config_path, 0o600)  # an inline community wants a private file
        traps = StampedTraps(c.client, tmp / "snmptrapd").start()
        smtp = StampedMail(c.client, tmp / "smtp.jsonl").start()
        alpha.start()
        wait_until("alpha holds", lambda: alpha.holds(VIP))
        wait_until("start-up events delivered", lambda: alpha.last_seq() in traps.got(), 30)
        time.sleep(1.0)
        first = alpha.last_seq()
        for i in range(events):
            t0 = time.monotonic()
            proc = alpha.cli("pause" if i % 2 == 0 else "resume", "web")
            assert proc.returncode == 0, proc.stderr
            time.sleep(max(0.0, spacing - (time.monotonic() - t0)))
        evs = [e for e in alpha.events() if e.seq > first
               and e.kind.value in ("paused", "resumed")]
        assert len(evs) == events, f"{len(evs)} of {events} events in the journal"
        seqs = {e.seq: e.time for e in evs}
        wait_until("every trap", lambda: set(seqs) <= set(traps.got()), 60)
        if want_mail:
            wait_until("every mail", lambda: set(seqs) <= set(smtp.got()),
                       60 + 6 * events)
        t, m = traps.got(), smtp.got()
        alpha.stop()
        return {"events": [{"seq": s, "time": et, "snmp": t.get(s), "mail": m.get(s)}
                           for s, et in sorted(seqs.items())],
                "cli_spacing": (max(seqs.values()) - min(seqs.values())) / max(1, events - 1)}


def summary(phase: str, res: dict[str, Any], sink: str) -> list[object]:
    lat = [(e[sink] - e["time"]) * 1000 for e in res["events"] if e[sink] is not None]
    return [phase, sink, len(lat), f"{res['cli_spacing']:.2f}", f"{median(lat):.1f}",
            f"{pct(lat, 90):.1f}", f"{pct(lat, 99):.1f}", f"{max(lat):.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--events", type=int, default=50, help="SNMP burst events (50)")
    ap.add_argument("--mail-events", type=int, default=12, help="paced mail events (12)")
    ap.add_argument("--spacing", type=float, default=6.0, help="paced spacing, s (6)")
    ap.add_argument("--burst", type=int, default=6, help="mail burst events (6)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    use_quiet_env()
    print(f"machine: {machine_line()}\n", flush=True)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmpdir:
        phases = [("1 SNMP burst", dict(events=args.events, spacing=0.0,
                                         mail_kinds=["takeover"], want_mail=False)),
                  ("2 mail paced", dict(events=args.mail_events, spacing=args.spacing,
                                        mail_kinds=["paused", "resumed"], want_mail=True)),
                  ("3 mail burst", dict(events=args.burst, spacing=0.0,
                                        mail_kinds=["paused", "resumed"], want_mail=True))]
        for i, (name, kw) in enumerate(phases):
            d = Path(tmpdir) / f"phase{i + 1}"
            d.mkdir()
            out[name] = run_phase(d, **kw)
            print(f"  phase {name}: done", flush=True)
    rows = [summary("1 SNMP burst", out["1 SNMP burst"], "snmp"),
            summary("2 mail paced", out["2 mail paced"], "snmp"),
            summary("2 mail paced", out["2 mail paced"], "mail"),
            summary("3 mail burst", out["3 mail burst"], "snmp"),
            summary("3 mail burst", out["3 mail burst"], "mail")]
    print("\nlatency, journal timestamp -> receiver (ms)")
    print(table(["phase", "receiver", "events", "s between events", "p50", "p90", "p99",
                 "max"], rows))
    burst = out["3 mail burst"]["events"]
    print("\nmail burst, per event (s after the event): "
          + ", ".join(f"{e['mail'] - e['time']:.1f}" for e in burst if e["mail"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
