"""Failover outage: MiniSFT vs keepalived (VRRPv3) in the same namespace lab, same run.

A client (192.0.2.100) pings the service address 192.0.2.10 every 10 ms (`ping -D -i 0.01`);
the holder's link goes down (`ip link set eth0 down`); the outage is the time from the last
reply before the cut to the first reply after it. Every trial builds a fresh lab and a fresh
pair (alpha holds, beta watches), and trials alternate between the two implementations so
both see the same machine load.

* keepalived: `vrrp_version 3`, one vrrp_instance, alpha MASTER prio 150, beta BACKUP prio
  100, `advert_int` = the setting, virtual_ipaddress 192.0.2.10/24 dev eth0.
* MiniSFT: alpha primary, beta backup (peer_ip alpha), looksalive interval = the setting,
  retry 3, timeout = interval/3 (333 ms, 33 ms), probe/announce left at their defaults
  (probe 3 x (retry-1) x timeout / 3, between 10 and 50 ms; announce 3 x 100 ms) unless
  --probe is given. With --interval-only, MiniSFT's config has only `looksalive: {interval:
  ...}`: everything else (timeout, retry, probe) is the daemon's default, as a new admin
  would write it (issue 14).

    python bench/failover.py [--trials 10] [--settings 1,0.1] [--probe 3x10ms]
                             [--interval-only] [--json F]

Not a test: prints tables; the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    Keepalived,
    keepalived_conf,
    keepalived_version,
    looksalive,
    machine_line,
    median,
    monitor,
    ns_addresses,
    outage,
    start_pings,
    stop_pings,
    table,
    wait_until,
)

from tests.integration.cluster import Cluster

VIP = "192.0.2.10/24"
VIP_IP = "192.0.2.10"
MAX_ATTEMPTS = 5  # per trial, when the backup takes over before the cut


class NotSteady(Exception):
    """The backup took the address before the cut (a false takeover under load): the trial
    measures nothing, it is counted and run again."""


def minisft_trial(tmp: Path, interval: float, probe: dict[str, Any] | None,
                  interval_only: bool = False) -> dict[str, float]:
    with Cluster(tmp, ["alpha", "beta"], ipv6=False) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        extra: dict[str, Any] = {"looksalive": {"interval": looksalive(interval)["interval"]}
                                 if interval_only else looksalive(interval)}
        if probe:
            extra["probe"] = probe
        alpha.configure([monitor("web", VIP, "primary", peer=beta.host.ip, **extra)])
        beta.configure([monitor("web", VIP, "backup", peer=alpha.host.ip, **extra)])
        alpha.start()
        wait_until("alpha to claim the address", lambda: alpha.holds(VIP))
        beta.start()
        beta.wait_event("looksalive_up", "web")
        pings = start_pings(c.client, VIP_IP)
        time.sleep(1.0 + random.uniform(0, interval))
        if beta.events("takeover", "web"):
            stop_pings(pings)
            raise NotSteady("MiniSFT: beta took over before the cut")
        cut = time.time()
        alpha.host.link_down()
        took = beta.wait_event("takeover", "web", timeout=20)
        wait_until("replies again", lambda: c.client.ping(VIP_IP, timeout=0.5), timeout=10)
        time.sleep(0.2)
        stamps = stop_pings(pings)
        last, first, gap = outage(stamps, cut)
        down = beta.events("looksalive_down", "web")[-1]
        return {"outage": gap, "cut_after_last_reply": cut - last,
                "detect": down.time - cut, "decide_bind": took.time - down.time,
                "to_first_reply": first - took.time}


def keepalived_trial(tmp: Path, interval: float) -> dict[str, float]:
    with Cluster(tmp, ["alpha", "beta"], ipv6=False) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        advert = f"{interval:g}"
        def conf(name: str, state: str, prio: int) -> str:
            return keepalived_conf(name, [{"name": "web", "state": state, "priority": prio,
                                           "vrid": 51, "advert_int": advert, "vips": [VIP]}])
        ka = Keepalived(alpha.host, tmp / "ka-alpha", conf("alpha", "MASTER", 150)).start()
        kb = Keepalived(beta.host, tmp / "ka-beta", conf("beta", "BACKUP", 100)).start()
        try:
            ka.wait_line("Entering MASTER STATE")
            kb.wait_line("Entering BACKUP STATE")
            wait_until("alpha holds", lambda: VIP_IP in ns_addresses(alpha.host.ns))
            pings = start_pings(c.client, VIP_IP)
            time.sleep(1.0 + random.uniform(0, interval))
            if kb.lines("Entering MASTER STATE"):
                stop_pings(pings)
                raise NotSteady("keepalived: beta became MASTER before the cut")
            cut = time.time()
            alpha.host.link_down()
            t_master, _ = kb.wait_line("Entering MASTER STATE", timeout=20)
            wait_until("replies again", lambda: c.client.ping(VIP_IP, timeout=0.5), timeout=10)
            time.sleep(0.2)
            stamps = stop_pings(pings)
            last, first, gap = outage(stamps, cut)
            return {"outage": gap, "cut_after_last_reply": cut - last,
                    "detect": t_master - cut, "to_first_reply": first - t_master}
        finally:
            kb.stop()
            ka.stop()


def parse_probe(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    count, _, interval = text.partition("x")
    return {"count": int(count), "interval": interval}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--trials", type=int, default=10, help="trials per implementation and "
                    "setting (default 10)")
    ap.add_argument("--settings", default="1,0.1",
                    help="looksalive interval = advert_int, seconds (default 1,0.1)")
    ap.add_argument("--probe", help="MiniSFT probe override, e.g. 3x10ms (default: the "
                    "daemon's: 3 probes spread over the last (retry-1) timeouts, 10-50 ms "
                    "apart)")
    ap.add_argument("--interval-only", action="store_true",
                    help="configure MiniSFT's looksalive interval and nothing else (the "
                    "daemon's default timeout, retry and probe)")
    ap.add_argument("--only", choices=["minisft", "keepalived"], help="run one side only")
    ap.add_argument("--json", type=Path, help="write the raw trials here")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)
    probe = parse_probe(args.probe)
    settings = [float(s) for s in args.settings.split(",")]
    impls = [args.only] if args.only else ["minisft", "keepalived"]

    print(f"machine:    {machine_line()}")
    print(f"keepalived: {keepalived_version()}")
    if args.interval_only:
        print("MiniSFT:    looksalive: {interval: the setting} and nothing else: defaults "
              "for timeout, retry, probe and announce\n")
    else:
        print(f"MiniSFT:    timeout = interval/3, retry 3, probe "
              f"{args.probe or 'default (3 x 22 ms at 0.1 s, 3 x 50 ms at 1 s)'}, "
              "announce default (3x100ms)\n")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    discarded: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmpdir:
        for interval in settings:
            key = f"{interval:g}"
            results[key] = {i: [] for i in impls}
            for n in range(args.trials):
                for impl in impls:
                    for attempt in range(MAX_ATTEMPTS):
                        tmp = Path(tmpdir) / f"{impl}-{key}-{n}-{attempt}"
                        tmp.mkdir()
                        try:
                            if impl == "minisft":
                                r = minisft_trial(tmp, interval, probe, args.interval_only)
                            else:
                                r = keepalived_trial(tmp, interval)
                            break
                        except NotSteady as exc:
                            discarded[impl] = discarded.get(impl, 0) + 1
                            print(f"  {key}s trial {n + 1:2d} {impl:10s} discarded: {exc}",
                                  flush=True)
                    else:
                        raise SystemExit(f"{impl} at {key}s: no steady trial in "
                                         f"{MAX_ATTEMPTS} attempts")
                    results[key][impl].append(r)
                    print(f"  {key}s trial {n + 1:2d} {impl:10s} outage {r['outage']:.3f}s  "
                          + " ".join(f"{k}={v:.3f}" for k, v in r.items() if k != "outage"),
                          flush=True)

    rows = []
    for key, per in results.items():
        stats = {impl: [t["outage"] for t in per[impl]] for impl in impls}
        for impl in impls:
            o = stats[impl]
            rows.append([f"{key} s x 3", impl, len(o), f"{median(o):.3f}", f"{min(o):.3f}",
                         f"{max(o):.3f}"])
        if len(impls) == 2:
            m, k = stats["minisft"], stats["keepalived"]
            rows.append([f"{key} s x 3", "**ratio MiniSFT/keepalived**", "",
                         f"**{median(m) / median(k):.2f}**", "",
                         f"**{max(m) / max(k):.2f}**"])
    if discarded:
        print("\ntrials discarded (the backup took over before the cut): "
              + ", ".join(f"{impl} {count}" for impl, count in discarded.items()))
    print("\noutage (last reply before the cut -> first reply after), seconds")
    print(table(["setting", "implementation", "trials", "median", "min", "max"], rows))

    print("\nwhere the time goes (medians, seconds; cut = `ip link set down` on the holder)")
    brows = []
    for key, per in results.items():
        for impl in impls:
            ts = per[impl]
            cols = ["cut_after_last_reply", "detect", "decide_bind", "to_first_reply"]
            brows.append([f"{key} s", impl] + [
                f"{median([t[c] for t in ts]):.3f}" if c in ts[0] else "-" for c in cols])
    print(table(["setting", "implementation", "last reply -> cut",
                 "cut -> down decided (MiniSFT: looksalive_down; keepalived: MASTER)",
                 "looksalive_down -> takeover event (probe + bind)",
                 "takeover/MASTER -> first reply"], brows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
