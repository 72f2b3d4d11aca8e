"""Stability under random loss: 10% loss on the watching node's link, 100 ms x 3.

alpha holds 192.0.2.10 and stays alive the whole time; beta watches it, with nftables
`numgen random` dropping 10% of the frames on beta's link in each direction (ARP too,
`Host.set_loss`). Every 100 ms the benchmark reads `ip addr` in both namespaces. Counted:

* false takeovers: MiniSFT `takeover` events on beta; keepalived: beta's
  "Entering MASTER STATE" lines (alpha was alive throughout, so every one is false);
* seconds with two holders: time during which both alpha and beta had the address.

MiniSFT: looksalive 100 ms, retry 3, timeout 33 ms; probe/announce defaults.
keepalived: VRRPv3, advert_int 0.1, MASTER 150 / BACKUP 100.
The two run at the same time, each in its own lab (--sequential to run one after the other).
--interval sets both the looksalive interval and advert_int; with --interval-only MiniSFT's
config has only `looksalive: {interval: ...}` (the daemon's default timeout, retry, probe).

    python bench/stability.py [--duration 300] [--loss 10] [--interval 0.1]
                              [--interval-only] [--sequential] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
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
    monitor,
    ns_addresses,
    table,
    wait_until,
)

from tests.integration.cluster import Cluster

VIP = "192.0.2.10/24"
VIP_IP = "192.0.2.10"
POLL = 0.1  # how often both namespaces' addresses are read


def watch(alpha_ns: str, beta_ns: str, duration: float) -> dict[str, float]:
    """Poll both namespaces every 100 ms for `duration`; time with two holders etc."""
    end = time.monotonic() + duration
    samples = both = neither = 0
    both_s = 0.0
    prev: tuple[float, bool] | None = None
    while True:
        now = time.monotonic()
        if now >= end:
            break
        a = VIP_IP in ns_addresses(alpha_ns)
        b = VIP_IP in ns_addresses(beta_ns)
        samples += 1
        both += a and b
        neither += not a and not b
        if prev is not None and prev[1]:
            both_s += now - prev[0]
        prev = (now, a and b)
        time.sleep(max(0.0, POLL - (time.monotonic() - now)))
    return {"samples": samples, "two_holder_samples": both, "two_holder_s": both_s,
            "no_holder_samples": neither}


def run_minisft(tmp: Path, duration: float, loss: int, out: dict[str, Any],
                interval: float, interval_only: bool) -> None:
    with Cluster(tmp, ["alpha", "beta"], ipv6=False) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        la = looksalive(interval)
        if interval_only:
            la = {"interval": la["interval"]}
        alpha.configure([monitor("web", VIP, "primary", peer=beta.host.ip, looksalive=la)])
        beta.configure([monitor("web", VIP, "backup", peer=alpha.host.ip, looksalive=la)])
        alpha.start()
        wait_until("alpha to claim the address", lambda: alpha.holds(VIP))
        beta.start()
        beta.wait_event("looksalive_up", "web")
        after = beta.last_seq()
        beta.host.set_loss(loss)
        try:
            res: dict[str, Any] = watch(alpha.host.ns, beta.host.ns, duration)
        finally:
            beta.host.clear_loss()
        st = beta.monitor("web")
        kinds: dict[str, int] = {}
        for ev in beta.events():
            if ev.seq > after:
                kinds[ev.kind.value] = kinds.get(ev.kind.value, 0) + 1
        res.update(false_takeovers=kinds.get("takeover", 0), beta_events=kinds,
                   pings_sent=st["looksalive"]["sent"], pings_lost=st["looksalive"]["lost"],
                   alpha_holds_at_end=alpha.holds(VIP), beta_holds_at_end=beta.holds(VIP))
        for node in (beta, alpha):
            node.stop()
        out["minisft"] = res


def run_keepalived(tmp: Path, duration: float, loss: int, out: dict[str, Any],
                   interval: float, interval_only: bool) -> None:
    with Cluster(tmp, ["alpha", "beta"], ipv6=False) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]

        def conf(name: str, state: str, prio: int) -> str:
            return keepalived_conf(name, [{"name": "web", "state": state, "priority": prio,
                                           "vrid": 51, "advert_int": f"{interval:g}",
                                           "vips": [VIP]}])
        ka = Keepalived(alpha.host, tmp / "ka-alpha", conf("alpha", "MASTER", 150)).start()
        kb = Keepalived(beta.host, tmp / "ka-beta", conf("beta", "BACKUP", 100)).start()
        try:
            ka.wait_line("Entering MASTER STATE")
            kb.wait_line("Entering BACKUP STATE")
            wait_until("alpha holds", lambda: VIP_IP in ns_addresses(alpha.host.ns))
            time.sleep(1.0)
            before = len(kb.lines("Entering MASTER STATE"))
            loss_from = time.time()
            beta.host.set_loss(loss)
            try:
                res: dict[str, Any] = watch(alpha.host.ns, beta.host.ns, duration)
            finally:
                beta.host.clear_loss()
            # how long each false MASTER episode lasted, from beta's own log (stamped as
            # the lines arrive): shorter than the 100 ms poll, so the poll can miss them
            episodes: list[float] = []
            start: float | None = None
            for t, line in kb.lines("(web) Entering"):
                if t < loss_from:
                    continue
                if "MASTER STATE" in line:
                    start = t
                elif start is not None:
                    episodes.append(t - start)
                    start = None
            res.update(false_takeovers=len(kb.lines("Entering MASTER STATE")) - before,
                       master_episodes_s=[round(e, 4) for e in episodes],
                       alpha_holds_at_end=VIP_IP in ns_addresses(alpha.host.ns),
                       beta_holds_at_end=VIP_IP in ns_addresses(beta.host.ns))
            out["keepalived"] = res
        finally:
            kb.stop()
            ka.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    ap.add_argument("--loss", type=int, default=10, help="percent, each direction (10)")
    ap.add_argument("--interval", type=float, default=0.1,
                    help="looksalive interval = advert_int, seconds (default 0.1)")
    ap.add_argument("--interval-only", action="store_true",
                    help="configure MiniSFT's looksalive interval and nothing else")
    ap.add_argument("--sequential", action="store_true", help="one after the other")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)
    print(f"machine:    {machine_line()}")
    print(f"keepalived: {keepalived_version()}")
    how = "interval only" if args.interval_only else "retry 3, timeout interval/3"
    print(f"{args.loss}% loss on the watcher's link for {args.duration:g} s, "
          f"{args.interval * 1000:g} ms ({how}) "
          f"({'sequential' if args.sequential else 'both at once, separate labs'})\n",
          flush=True)
    out: dict[str, Any] = {}
    errors: list[BaseException] = []
    with tempfile.TemporaryDirectory(prefix="bench-stability-") as tmpdir:
        jobs = [(run_minisft, Path(tmpdir) / "minisft"), (run_keepalived, Path(tmpdir) / "ka")]
        for _, d in jobs:
            d.mkdir()

        def guarded(fn: Any, d: Path) -> None:
            try:
                fn(d, args.duration, args.loss, out, args.interval, args.interval_only)
            except BaseException as exc:
                errors.append(exc)
                raise
        if args.sequential:
            for fn, d in jobs:
                fn(d, args.duration, args.loss, out, args.interval, args.interval_only)
        else:
            threads = [threading.Thread(target=guarded, args=job) for job in jobs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
    rows = []
    for impl in ("minisft", "keepalived"):
        r = out[impl]
        rows.append([impl, f"{args.duration:g} s", r["false_takeovers"],
                     f"{r['two_holder_s']:.1f}", f"{r['two_holder_samples']}/{r['samples']}",
                     r["no_holder_samples"],
                     "alpha" if r["alpha_holds_at_end"] and not r["beta_holds_at_end"]
                     else f"alpha={r['alpha_holds_at_end']} beta={r['beta_holds_at_end']}"])
    print(table(["implementation", "duration", "false takeovers", "seconds with two holders",
                 "polls with two holders", "polls with no holder", "holder at the end"], rows))
    k = out["keepalived"]
    if k.get("master_episodes_s"):
        eps = k["master_episodes_s"]
        print(f"\nkeepalived beta's false MASTER episodes (from its log): {len(eps)}, "
              f"{sum(eps):.3f} s in all, longest {max(eps) * 1000:.0f} ms "
              "(the VIP was on both hosts for about that long)")
    m = out["minisft"]
    print(f"\nMiniSFT beta: {m['pings_lost']}/{m['pings_sent']} pings lost; "
          f"events during the loss: {json.dumps(m['beta_events'], sort_keys=True)}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
