"""Switchover gap: `minisft switchover` vs keepalived's preemption, same lab, same run.

The address goes back to its primary after a failover, and a client (192.0.2.100) pings
it every 10 ms (`ping -D -i 0.01`); the gap is the longest time between two replies
around the move. Every trial builds a fresh lab and a fresh pair; trials alternate between
the two implementations so both see the same machine load.

* Both: alpha primary/MASTER, beta backup/BACKUP, started together; alpha's link goes down
  (`ip link set eth0 down`), beta takes the address; alpha's link comes back.
* MiniSFT: looksalive interval = the setting (nothing else, the daemon's defaults), each
  node's peer_ip the other; once alpha watches the address at beta, `minisft switchover
  web` on alpha (make-before-break: alpha binds and announces, beta yields on hearing it).
* keepalived: `vrrp_version 3`, alpha MASTER prio 150, beta BACKUP prio 100, `advert_int`
  = the setting, preempt (the default): alpha, back with its link, preempts beta as soon
  as it hears beta's lower-priority advertisement. keepalived has no command to move a
  VIP by hand; preemption is its way back, so that is what is measured.

* --ipv6: the address is 2001:db8::10/64 and each peer_ip the other node's IPv6 address;
  MiniSFT only (no keepalived IPv6 VRRP instance here). The failover is alpha's daemon
  stopped (it releases the address, beta takes it) and started again, not a link cut: a
  link cut also flushes the hosts' static IPv6 addresses, which the lab does not put
  back. Once alpha watches, the script waits until beta's status shows alpha resolving
  the address (peer.watching_mac), what makes beta take the move as a switchover.

    python bench/switchover.py [--trials 10] [--settings 1,0.1] [--ipv6] [--json F]

Not a test: prints tables; the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    ROOT,
    Keepalived,
    keepalived_conf,
    keepalived_version,
    machine_line,
    median,
    monitor,
    ns_addresses,
    outage,
    start_pings,
    table,
    wait_until,
)

from tests.integration.cluster import Cluster, Node

VIP = "192.0.2.10/24"
VIP_IP = "192.0.2.10"
VIP6 = "2001:db8::10/64"
SETTLE = 1.0  # s of pings before the move, and after it


_REPLY = re.compile(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+)", re.MULTILINE)


def stop_counting(proc: subprocess.Popen[str]) -> tuple[list[float], int]:
    """Stop a `ping -D`: the reply timestamps, and how many echo requests between the first
    and the last reply got none. Under load ping sends less often than every 10 ms, so the
    gap alone cannot tell a lost reply from a late request; the sequence numbers can."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    replies = [(float(m.group(1)), int(m.group(2))) for m in _REPLY.finditer(out)]
    seqs = sorted({seq for _, seq in replies})
    lost = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    return [t for t, _ in replies], lost


def baseline(stamps: list[float], before: float) -> float:
    """The longest gap between replies in the quiet second before the move: the client's
    own jitter on this machine, for scale."""
    quiet = [t for t in stamps if t < before]
    return max((b - a for a, b in itertools.pairwise(quiet)), default=0.0)


def _watching(node: Node) -> bool:
    m = node.monitor("web")
    return bool(m["state"] == "watching" and m["looksalive"]["health"] == "up")


def _own_ip(node: Node, ipv6: bool) -> str:
    return (node.host.ipv6 or "").split("/")[0] if ipv6 else node.host.ip


def minisft_trial(tmp: Path, interval: float, ipv6: bool = False) -> dict[str, float]:
    vip = VIP6 if ipv6 else VIP
    vip_ip = vip.split("/")[0]
    with Cluster(tmp, ["alpha", "beta"], ipv6=ipv6) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        la = {"looksalive": {"interval": f"{round(interval * 1000)}ms"}}
        alpha.configure([monitor("web", vip, "primary", peer=_own_ip(beta, ipv6), **la)])
        beta.configure([monitor("web", vip, "backup", peer=_own_ip(alpha, ipv6), **la)])
        alpha.start(wait=False)
        beta.start(wait=False)
        for node in (alpha, beta):
            wait_until(f"{node.name}'s daemon to listen", node._ready, timeout=30)
        wait_until("alpha holds, beta watches",
                   lambda: c.holders(vip) == ["alpha"] and _watching(beta), timeout=60)
        cut = beta.last_seq()  # a takeover before this (a false one under load) is not it
        cut_alpha = alpha.last_seq()
        if ipv6:
            alpha.stop()  # releases the address (see the module docstring)
            beta.wait_event("takeover", "web", timeout=30, after=cut)
            alpha.start()
        else:
            alpha.host.link_down()
            beta.wait_event("takeover", "web", timeout=30, after=cut)
            # alpha polls its link: a flap shorter than that, it never sees, and keeps holding
            alpha.wait_event("link_down", timeout=30, after=cut_alpha)
            alpha.host.link_up()
        wait_until("alpha watches the address at beta", lambda: _watching(alpha), timeout=30)
        wait_until("beta has seen alpha resolve the address", lambda: beta.monitor("web")
                   ["peer"].get("watching_mac") == alpha.host.mac, timeout=90)
        mark = beta.last_seq()
        pings = start_pings(c.client, vip_ip)
        time.sleep(SETTLE)
        asked = time.time()
        out = alpha.cli("switchover", "web")
        answered = time.time()
        if out.returncode != 0:
            stop_counting(pings)
            raise RuntimeError(f"minisft switchover failed: {out.stderr.strip()}")
        gave = beta.wait_event("switchover", "web", after=mark, timeout=10)
        time.sleep(SETTLE)
        stamps, lost = stop_counting(pings)
        took = alpha.events("switchover", "web")[-1]
        _, _, gap = outage(stamps, asked)
        assert c.holders(vip) == ["alpha"], c.holders(vip)
        return {"gap": gap, "lost": lost, "baseline": baseline(stamps, asked),
                "command": answered - asked, "bound": took.time - asked,
                "yielded": gave.time - took.time}


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
            alpha.host.link_down()
            kb.wait_line("Entering MASTER STATE", timeout=30)
            wait_until("beta holds", lambda: VIP_IP in ns_addresses(beta.host.ns))
            pings = start_pings(c.client, VIP_IP)
            time.sleep(SETTLE)
            back = time.time()
            alpha.host.link_up()
            masters = wait_until("alpha preempts", lambda: [
                t for t, _ in ka.lines("Entering MASTER STATE") if t > back], timeout=30)
            backups = wait_until("beta gives way", lambda: [
                t for t, _ in kb.lines("Entering BACKUP STATE") if t > back], timeout=30)
            time.sleep(SETTLE)
            stamps, lost = stop_counting(pings)
            _, _, gap = outage(stamps, back)
            assert VIP_IP not in ns_addresses(beta.host.ns)
            return {"gap": gap, "lost": lost, "baseline": baseline(stamps, back),
                    "bound": masters[0] - back, "yielded": backups[0] - masters[0]}
        finally:
            kb.stop()
            ka.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--trials", type=int, default=10, help="trials per implementation and "
                    "setting (default 10)")
    ap.add_argument("--settings", default="1,0.1",
                    help="looksalive interval = advert_int, seconds (default 1,0.1)")
    ap.add_argument("--ipv6", action="store_true",
                    help="an IPv6 address (2001:db8::10/64), MiniSFT only")
    ap.add_argument("--json", type=Path, help="write the raw trials here")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)
    settings = [float(s) for s in args.settings.split(",")]
    impls = ["minisft"] if args.ipv6 else ["minisft", "keepalived"]
    print(f"machine:    {machine_line()}")
    print(f"keepalived: {keepalived_version()}\n")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-switchover-") as tmpdir:
        for interval in settings:
            key = f"{interval:g}"
            results[key] = {i: [] for i in impls}
            for n in range(args.trials):
                for impl in impls:
                    tmp = Path(tmpdir) / f"{impl}-{key}-{n}"
                    tmp.mkdir()
                    if impl == "minisft":
                        r = minisft_trial(tmp, interval, ipv6=args.ipv6)
                    else:
                        r = keepalived_trial(tmp, interval)
                    results[key][impl].append(r)
                    print(f"  {key}s trial {n + 1:2d} {impl:10s} gap {r['gap'] * 1000:6.1f} ms  "
                          + f"lost {r['lost']:.0f}  "
                          + " ".join(f"{k}={v * 1000:.1f}ms" for k, v in r.items()
                                     if k not in ("gap", "lost")), flush=True)
    rows: list[list[Any]] = []
    for key, per in results.items():
        gaps = {impl: [t["gap"] * 1000 for t in per[impl]] for impl in impls}
        for impl in impls:
            g = gaps[impl]
            quiet = [t["baseline"] * 1000 for t in per[impl]]
            lost = [t["lost"] for t in per[impl]]
            rows.append([f"{key} s", impl, len(g), f"{median(g):.1f}", f"{min(g):.1f}",
                         f"{max(g):.1f}", sum(1 for x in g if x > 50), f"{median(quiet):.1f}",
                         f"{sum(lost)} ({max(lost)})"])
        if "keepalived" not in gaps:
            continue
        m, k = gaps["minisft"], gaps["keepalived"]
        rows.append([f"{key} s", "**ratio MiniSFT/keepalived**", "",
                     f"**{median(m) / median(k):.2f}**", "", f"**{max(m) / max(k):.2f}**", "", "",
                     ""])
    print("\ngap seen by the client (longest time between two replies around the move), ms")
    print(table(["setting", "implementation", "trials", "median", "min", "max", "> 50 ms",
                 "longest gap in the quiet second before (median)",
                 "replies lost in all trials (most in one)"], rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
