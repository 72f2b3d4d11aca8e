"""Push latency: from an event's journal timestamp to an event command, Nagios and Icinga 2.

One MiniSFT daemon (alpha, primary for 192.0.2.10) in a namespace lab with four sinks:

* `alerting.exec`: a shell script that stamps its own start (`date +%s.%N`) with MINISFT_SEQ;
* `alerting.nagios`: Debian's nagios4 (as nagios, status_update_interval=1, the shipped
  minisft.cfg templates and minisft-passive.cfg), status.dat polled every 5 ms;
* `alerting.nsca`: send_nsca -> Debian's nsca in the client namespace -> the same Nagios,
  for the other host (lb-beta), status.dat polled the same way;
* `alerting.icinga2`: Debian's icinga2 with its API (as nagios, in the client namespace),
  polled with curl in that namespace (each poll costs a few tens of ms: an upper bound).

Events are `minisft pause web` / `minisft resume web`, alternating (WARNING / OK in the
monitoring systems), --spacing seconds apart. Latency = the first time the receiver shows
the event's state - the event's `time` in the journal (one machine, one clock).

    python bench/push_latency.py [--events 10] [--spacing 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import machine_line, median, monitor, pct, table, use_quiet_env, wait_until

from tests.integration.cluster import Cluster
from tests.integration.test_monitoring_e2e import private_file
from tests.support.icinga2 import PUSH_PASSWORD, PUSH_USER, IcingaServer
from tests.support.nagios import NagiosServer, NscaServer

VIP = "192.0.2.10/24"
CLIENT_IP = "192.0.2.100"
HOOK = """#!/bin/sh
printf '%s %s\\n' "$(date +%s.%N)" "$MINISFT_SEQ" >> {out}
"""


def first_seen(stamps: dict[int, float], seq: int, now: float) -> None:
    stamps.setdefault(seq, now)


def run(tmp: Path, events: int, spacing: float) -> dict[str, Any]:
    hook_out = tmp / "hook.log"
    script = tmp / "hook"
    script.write_text(HOOK.format(out=hook_out))
    script.chmod(0o755)
    with Cluster(tmp, ["alpha"], ipv6=False) as c, NagiosServer() as nagios, \
            IcingaServer(c.client, CLIENT_IP) as icinga, \
            NscaServer(nagios, c.client, CLIENT_IP) as nsca:
        alpha = c.nodes["alpha"]
        alerting = {
            "exec": [{"name": "bench", "command": [str(script)], "events": ["paused", "resumed"]}],
            "nagios": {"command_file": str(nagios.command_file), "host": "lb-alpha"},
            "nsca": {"server": CLIENT_IP, "host": "lb-beta", "config_file":
                     str(nsca.client_config(tmp / "send_nsca.cfg"))},
            "icinga2": {"url": icinga.url, "user": PUSH_USER, "host": "lb-beta",
                        "ca_file": str(icinga.ca_file), "password_file":
                        private_file(tmp / "icinga2-password", PUSH_PASSWORD)},
        }
        alpha.configure([monitor("web", VIP, "primary")], alerting=alerting)
        alpha.start()
        wait_until("alpha to hold web", lambda: alpha.holds(VIP))
        wait_until("Nagios to have alpha's state", lambda: nagios.services().get(
            ("lb-alpha", "MiniSFT web"), {}).get("has_been_checked") == "1", timeout=30)

        got: dict[str, dict[int, float]] = {"exec": {}, "nagios": {}, "nsca": {}, "icinga2": {}}
        current: dict[str, Any] = {"seq": 0, "paused": False}
        done = threading.Event()

        def poll_icinga() -> None:
            while not done.is_set():
                attrs = icinga.service("lb-beta!minisft-web") or {}
                out = str((attrs.get("last_check_result") or {}).get("output", ""))
                if current["seq"] and ("paused" in out) == current["paused"]:
                    first_seen(got["icinga2"], current["seq"], time.time())

        poller = threading.Thread(target=poll_icinga, daemon=True)
        poller.start()
        records = []
        try:
            for i in range(events):
                pause = i % 2 == 0
                after = alpha.last_seq()
                assert alpha.cli("pause" if pause else "resume", "web").returncode == 0
                event = alpha.wait_event("paused" if pause else "resumed", "web", after=after)
                current.update(seq=event.seq, paused=pause)
                deadline = time.monotonic() + spacing
                while time.monotonic() < deadline:
                    now = time.time()
                    services = nagios.services()
                    for name, host in (("nagios", "lb-alpha"), ("nsca", "lb-beta")):
                        out = services.get((host, "MiniSFT web"), {}).get("plugin_output", "")
                        if ("paused" in out) == pause:
                            first_seen(got[name], event.seq, now)
                    time.sleep(0.005)
                records.append({"seq": event.seq, "time": event.time})
        finally:
            done.set()
            poller.join(10)
            alpha.stop()
        for line in hook_out.read_text().splitlines():
            start, seq = line.split()
            first_seen(got["exec"], int(seq), float(start))
    return {"events": records, "seen": {k: {str(s): t for s, t in v.items()}
                                        for k, v in got.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--spacing", type=float, default=2.0, help="s between events (2)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    use_quiet_env()
    print(f"machine: {machine_line()}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmpdir:
        out = run(Path(tmpdir), args.events, args.spacing)
    rows = []
    for receiver, seen in out["seen"].items():
        lat = [(seen[str(e["seq"])] - e["time"]) * 1000 for e in out["events"]
               if str(e["seq"]) in seen]
        rows.append([receiver, f"{len(lat)}/{len(out['events'])}",
                     f"{median(lat):.0f}" if lat else "-", f"{pct(lat, 90):.0f}" if lat else "-",
                     f"{max(lat):.0f}" if lat else "-"])
    print("latency, journal timestamp -> receiver shows it (ms)")
    print(table(["receiver", "events seen", "p50", "p90", "max"], rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
