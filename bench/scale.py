"""Scale: one MiniSFT daemon watching N addresses held by another namespace.

The holder namespace (192.0.2.1) carries N addresses, half from 198.51.100.0/24 (at most
250) and the rest from 2001:db8:5::/64, and one TCP listener on [::]:7000 (dual stack, so
it answers on every address). The watcher (192.0.2.2, plus 198.51.100.254/24 and
2001:db8:5::fffe/64 so every address is on-link) runs one MiniSFT daemon with N backup
monitors: LooksAlive every 1 s (retry 3, timeout 333 ms), IsAlive `tcp` port 7000 every
10 s. After every monitor saw its address up and a warm-up, the daemon's CPU time
(utime+stime of /proc/PID/stat, all threads) is read over --duration seconds; RSS is
VmRSS at the end, VmHWM the peak.

keepalived, for comparison, on a second and third lab pair (MASTER on the holder, BACKUP
on the watcher, advert_int 1, VRRPv3), the BACKUP's parent + VRRP child measured alike:
* `vips`: the same N addresses as virtual addresses of 2 instances (one per family);
* `instances`: N instances of one address each (VRIDs 1..250 per family).
All labs of one N run at the same time.

Besides CPU %, each row gives the CPU per unit of work: MiniSFT's per ping sent in the
measured window (everything the daemon did, IsAlive included, divided by its pings), and
for keepalived per VRRP advertisement its BACKUP received; and for both the CPU per second
per watched address.

    python bench/scale.py [--sizes 10,100,500] [--duration 60] [--json F]
    python bench/scale.py --sizes 1 --interval 50ms        # one monitor at 50 ms
    python bench/scale.py --no-keepalived --up-within 10 --sizes 500,1000,1500,2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import (
    CLK_TCK,
    ROOT,
    Keepalived,
    cpu_ticks,
    keepalived_conf,
    keepalived_version,
    machine_line,
    mem_kib,
    table,
    wait_until,
)

from tests.integration.cluster import Cluster

PORT = 7000
LISTENER = """
import asyncio, socket
async def main():
    async def handle(r, w):
        w.close()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", PORT))
    srv = await asyncio.start_server(handle, sock=sock, backlog=1024)
    await srv.serve_forever()
asyncio.run(main())
""".replace("PORT", str(PORT))


def addresses(n: int) -> list[str]:
    n4 = min(n // 2, 250)
    return ([f"198.51.100.{i}/24" for i in range(1, n4 + 1)]
            + [f"2001:db8:5::{i:x}/64" for i in range(1, n - n4 + 1)])


def add_batch(host: Any, addrs: list[str]) -> None:
    lines = [f"addr add {a} dev eth0" + (" nodad" if ":" in a else "") for a in addrs]
    host.run("ip", "-batch", "-", input="\n".join(lines) + "\n")


def seconds(text: str) -> float:
    """'50ms', '1s' or '0.05' in seconds."""
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.removesuffix("s"))


def looksalive_config(interval: str) -> dict[str, Any]:
    """At 1 s the config every earlier scale figure used; otherwise the interval alone, as an
    admin sets it (the RTO and the defaults do the rest)."""
    if seconds(interval) == 1.0:
        return {"interval": "1s", "retry": 3, "timeout": "333ms"}
    return {"interval": interval}


NEIGH_SYSCTL = "/proc/sys/net/{family}/neigh/default/gc_thresh{level}"


@contextlib.contextmanager
def neighbour_tables_for(n: int) -> Iterator[None]:
    """Room for N more neighbours per family for the run, the old limits restored after.

    The kernel has one neighbour table per family for the whole host, every namespace
    included, and the limits are set in the initial namespace only: by default 1024
    entries (gc_thresh3), and past 512 (gc_thresh2) entries are evicted after 5 s. The
    watcher needs one entry per watched address: with 1,500 monitors exactly 250 IPv4 +
    1,022 IPv6 came up, with the old pinger and with the hub alike, and the rest never did
    (their pings are dropped for want of an entry before they leave)."""
    old: dict[Path, str] = {}
    for family in ("ipv4", "ipv6"):
        for level, value in ((2, 2 * n + 512), (3, 2 * n + 1024)):
            path = Path(NEIGH_SYSCTL.format(family=family, level=level))
            old[path] = path.read_text().strip()
            if int(old[path]) < value:
                path.write_text(f"{value}\n")
    print("neighbour tables: " + ", ".join(
        f"{p.parts[4]} {p.name} {old[p]} -> {p.read_text().strip()}" for p in old), flush=True)
    try:
        yield
    finally:
        for path in sorted(old, key=lambda p: p.name, reverse=True):  # thresh3 >= thresh2
            path.write_text(old[path] + "\n")


def measure(pids: list[int], duration: float) -> dict[str, float]:
    """CPU time (utime + stime, all threads) the processes consumed while we slept: what
    they used, not what the other tenants of the machine left them."""
    t0 = sum(cpu_ticks(p) for p in pids)
    w0 = time.monotonic()
    time.sleep(duration)
    t1 = sum(cpu_ticks(p) for p in pids)
    wall = time.monotonic() - w0
    mem = [mem_kib(p) for p in pids]
    cpu_s = (t1 - t0) / CLK_TCK
    return {"cpu_s": cpu_s, "wall_s": wall, "cpu_pct": cpu_s / wall * 100,
            "rss_mib": sum(m["VmRSS"] for m in mem) / 1024,
            "hwm_mib": sum(m["VmHWM"] for m in mem) / 1024}


def per_address_us(res: dict[str, Any]) -> float:
    """CPU microseconds per second per watched address."""
    return float(res["cpu_s"] / res["wall_s"] / res["n"] * 1e6)


def pings_sent(watcher: Any) -> int:
    return sum(int(m["looksalive"]["sent"]) for m in watcher.status()["monitors"])


def minisft_scale(tmp: Path, n: int, duration: float, warmup: float,
                  profile: Path | None = None, *, interval: str = "1s",
                  up_within: float | None = None) -> dict[str, Any]:
    """One run at N; with `up_within`, a run whose monitors are not all up within that many
    seconds of the start ends there and says how many were."""
    with Cluster(tmp, ["holder", "watcher"], ipv6=False) as c:
        holder, watcher = c.nodes["holder"], c.nodes["watcher"]
        addrs = addresses(n)
        add_batch(holder.host, addrs)
        add_batch(watcher.host, ["198.51.100.254/24", "2001:db8:5::fffe/64"])
        holder.host.popen(["python3", "-c", LISTENER])
        la = looksalive_config(interval)
        isalive = {"interval": "10s", "check": {"type": "tcp", "port": PORT, "timeout": "2s"}}
        mons = []
        for i, a in enumerate(addrs):
            ip, _, prefix = a.partition("/")
            mons.append({"name": f"m{i}", "monitor_ip": ip, "monitor_subnet": int(prefix),
                         "role": "backup", "looksalive": la, "isalive": isalive})
        watcher.configure(mons)
        started = time.monotonic()
        # --profile: the daemon runs under cProfile (written when SIGTERM stops it)
        wrap = ["sh", "-c", f'p="$1"; shift; exec "$p" -m cProfile -o {profile} "$@"',
                "sh"] if profile else []
        watcher.start(wrap=wrap)
        assert watcher.proc is not None
        pid = watcher.proc.pid
        try:
            wait_until(f"{n} monitors up",
                       lambda: len(watcher.events("looksalive_up")) >= n,
                       timeout=up_within or 60 + n / 10, step=0.25 if up_within else 1.0)
        except TimeoutError:
            if up_within is None:
                raise
            up = len(watcher.events("looksalive_up"))
            watcher.stop()
            return {"n": n, "ready_s": None, "up_at_deadline": up}
        ready = time.monotonic() - started
        time.sleep(warmup)
        sent_before = pings_sent(watcher)
        res: dict[str, Any] = measure([pid], duration)
        pings = pings_sent(watcher) - sent_before
        st = watcher.status()["monitors"]
        res.update(
            n=n, ready_s=ready, pings=pings,
            us_per_ping=res["cpu_s"] / max(pings, 1) * 1e6,
            up=sum(m["looksalive"]["health"] == "up" for m in st),
            isalive_ok=sum(bool(m["isalive"]["ok"]) for m in st),
            takeovers=len(watcher.events("takeover")),
            pings_lost=sum(m["looksalive"]["lost"] for m in st),
            pings_sent=sum(m["looksalive"]["sent"] for m in st))
        watcher.stop()
        return res


def keepalived_scale(tmp: Path, n: int, mode: str, duration: float,
                     warmup: float, *, interval: str = "1s") -> dict[str, Any]:
    addrs = addresses(n)
    v4 = [a for a in addrs if ":" not in a]
    v6 = [a for a in addrs if ":" in a]
    with Cluster(tmp, ["holder", "watcher"], ipv6=False) as c:
        holder, watcher = c.nodes["holder"], c.nodes["watcher"]
        add_batch(watcher.host, ["198.51.100.254/24", "2001:db8:5::fffe/64"])

        def instances(state: str, prio: int) -> list[dict[str, Any]]:
            base = {"state": state, "priority": prio, "advert_int": seconds(interval)}
            if mode == "vips":
                return [{**base, "name": f"v{fam}", "vrid": 1, "vips": group}
                        for fam, group in ((4, v4), (6, v6)) if group]
            return ([{**base, "name": f"a{i}", "vrid": i + 1, "vips": [a]}
                     for i, a in enumerate(v4)]
                    + [{**base, "name": f"b{i}", "vrid": i + 1, "vips": [a]}
                       for i, a in enumerate(v6)])
        km = Keepalived(holder.host, tmp / "ka-holder",
                        keepalived_conf("holder", instances("MASTER", 150))).start()
        kb = Keepalived(watcher.host, tmp / "ka-watcher",
                        keepalived_conf("watcher", instances("BACKUP", 100))).start()
        try:
            started = time.monotonic()
            count = len(instances("BACKUP", 100))
            wait_until("master holds every address",
                       lambda: len(km.lines("Entering MASTER STATE")) >= count,
                       timeout=60 + n / 10, step=0.5)
            ready = time.monotonic() - started
            time.sleep(warmup)
            pids = kb.pids()
            assert len(pids) == 2, f"no VRRP child pid: {pids}"
            res: dict[str, Any] = measure(pids, duration)
            adverts = count * res["wall_s"] / seconds(interval)  # what the BACKUP received
            res.update(n=n, ready_s=ready, instances=count,
                       us_per_advert=res["cpu_s"] / adverts * 1e6,
                       backup_masters=len(kb.lines("Entering MASTER STATE")))
            return res
        finally:
            kb.stop()
            km.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds (60)")
    ap.add_argument("--warmup", type=float, default=12.0,
                    help="seconds after all are up before measuring (12: one IsAlive round)")
    ap.add_argument("--interval", default="1s",
                    help="LooksAlive interval, and keepalived's advert_int (1s: retry 3, "
                    "timeout 333ms as in every earlier figure; any other: the interval "
                    "alone, e.g. 50ms)")
    ap.add_argument("--no-keepalived", action="store_true")
    ap.add_argument("--up-within", type=float, metavar="SECONDS",
                    help="MiniSFT only: run the sizes in increasing order, each must have "
                    "all its monitors up within SECONDS of the start; stop at the first "
                    "that does not and report the largest N that did")
    ap.add_argument("--fit-neigh-tables", action="store_true",
                    help="raise the host's neighbour table limits (one table per family for "
                    "the whole host, every namespace included; 1024 entries by default) to "
                    "fit the largest N, and restore them at the end; without it, N above "
                    "~1,000 hits that limit, not MiniSFT's")
    ap.add_argument("--profile", type=Path, help="run MiniSFT under cProfile, write the "
                    "stats to PROFILE-N and print the top functions (CPU figures then "
                    "include the profiler's overhead)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)
    print(f"machine:    {machine_line()}")
    print(f"keepalived: {keepalived_version()}\n", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.up_within is not None:
        sizes.sort()
        args.no_keepalived = True
    results: dict[str, dict[int, dict[str, Any]]] = {"minisft": {}, "keepalived-vips": {},
                                                     "keepalived-instances": {}}
    errors: list[BaseException] = []
    with contextlib.ExitStack() as stack:
        if args.fit_neigh_tables:
            stack.enter_context(neighbour_tables_for(max(sizes)))
        tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-"))
        for n in sizes:
            jobs: list[tuple[str, Any]] = [
                ("minisft", lambda d, n=n: minisft_scale(
                    d, n, args.duration, args.warmup,
                    Path(f"{args.profile}-{n}").resolve() if args.profile else None,
                    interval=args.interval, up_within=args.up_within))]
            if not args.no_keepalived:
                for mode in ("vips", "instances"):
                    jobs.append((f"keepalived-{mode}", lambda d, n=n, mode=mode:
                                 keepalived_scale(d, n, mode, args.duration, args.warmup,
                                                  interval=args.interval)))

            def run(name: str, fn: Any, n: int = n) -> None:
                d = Path(tmpdir) / f"{name}-{n}"
                d.mkdir()
                try:
                    results[name][n] = fn(d)
                    print(f"  N={n} {name}: {json.dumps(results[name][n])}", flush=True)
                except BaseException as exc:
                    errors.append(exc)
                    raise
            threads = [threading.Thread(target=run, args=job) for job in jobs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            if results["minisft"][n]["ready_s"] is None:
                break  # --up-within: the ladder ends at the first size that was not up

    rows = []
    for name, per in results.items():
        for n, r in per.items():
            if r["ready_s"] is None:
                rows.append([name, n, "", "", "", "", "", "", f"not all up within "
                             f"{args.up_within:g} s: {r['up_at_deadline']}/{n}"])
                continue
            extra = (f"{r['up']}/{n} up, {r['isalive_ok']}/{n} IsAlive ok, "
                     f"{r['takeovers']} takeovers, {r['pings_lost']}/{r['pings_sent']} "
                     "pings lost" if name == "minisft" else
                     f"{r['instances']} instance(s), backup became master "
                     f"{r['backup_masters']}x")
            per_unit = (f"{r['us_per_ping']:.0f} per ping" if name == "minisft" else
                        f"{r['us_per_advert']:.0f} per advert")
            rows.append([name, n, f"{r['cpu_pct']:.2f}", per_unit,
                         f"{per_address_us(r):.1f}", f"{r['rss_mib']:.1f}",
                         f"{r['hwm_mib']:.1f}", f"{r['ready_s']:.1f}", extra])
    print(f"\nLooksAlive interval / advert_int {args.interval}. CPU time consumed over "
          f"{args.duration:g} s (% of one core, µs per unit of work, µs per second per "
          "address) and memory (MiB)")
    print(table(["daemon", "N", "CPU %", "CPU µs", "µs/s per address", "VmRSS", "VmHWM",
                 "ready after (s)", "check"], rows))
    m = {n: r for n, r in results["minisft"].items() if r["ready_s"] is not None}
    if args.up_within is not None:
        failed = [n for n, r in results["minisft"].items() if r["ready_s"] is None]
        print(f"\nlargest N with all monitors up within {args.up_within:g} s: "
              f"{max(m) if m else 'none'}" +
              (f" (N={failed[0]} was not)" if failed else
               " (every size tried was: try larger ones)"))
    if len(m) > 1:
        lo, hi = m[min(m)], m[max(m)]
        print(f"\nMiniSFT growth {min(m)} -> {max(m)}: CPU {lo['cpu_pct']:.2f}% -> "
              f"{hi['cpu_pct']:.2f}% ({hi['cpu_pct'] / max(lo['cpu_pct'], 1e-9):.1f}x), "
              f"RSS {lo['rss_mib']:.1f} -> {hi['rss_mib']:.1f} MiB "
              f"(+{hi['rss_mib'] - lo['rss_mib']:.1f} MiB, "
              f"{(hi['rss_mib'] - lo['rss_mib']) * 1024 / (max(m) - min(m)):.0f} "
              "KiB per address)")
    if args.profile:
        import pstats
        for n in m:
            print(f"\ncProfile, N={n}: top 25 by own time")
            pstats.Stats(f"{args.profile}-{n}").sort_stats("tottime").print_stats(25)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
