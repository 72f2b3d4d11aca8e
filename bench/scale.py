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

    python bench/scale.py [--sizes 10,100,500] [--duration 60] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
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


def measure(pids: list[int], duration: float) -> dict[str, float]:
    t0 = sum(cpu_ticks(p) for p in pids)
    w0 = time.monotonic()
    time.sleep(duration)
    t1 = sum(cpu_ticks(p) for p in pids)
    wall = time.monotonic() - w0
    mem = [mem_kib(p) for p in pids]
    return {"cpu_pct": (t1 - t0) / CLK_TCK / wall * 100,
            "rss_mib": sum(m["VmRSS"] for m in mem) / 1024,
            "hwm_mib": sum(m["VmHWM"] for m in mem) / 1024}


def minisft_scale(tmp: Path, n: int, duration: float, warmup: float,
                  profile: Path | None = None) -> dict[str, Any]:
    with Cluster(tmp, ["holder", "watcher"], ipv6=False) as c:
        holder, watcher = c.nodes["holder"], c.nodes["watcher"]
        addrs = addresses(n)
        add_batch(holder.host, addrs)
        add_batch(watcher.host, ["198.51.100.254/24", "2001:db8:5::fffe/64"])
        holder.host.popen(["python3", "-c", LISTENER])
        la = {"interval": "1s", "retry": 3, "timeout": "333ms"}
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
        wait_until(f"{n} monitors up", lambda: len(watcher.events("looksalive_up")) >= n,
                   timeout=60 + n / 10, step=1.0)
        ready = time.monotonic() - started
        time.sleep(warmup)
        res: dict[str, Any] = measure([pid], duration)
        st = watcher.status()["monitors"]
        res.update(
            n=n, ready_s=ready,
            up=sum(m["looksalive"]["health"] == "up" for m in st),
            isalive_ok=sum(bool(m["isalive"]["ok"]) for m in st),
            takeovers=len(watcher.events("takeover")),
            pings_lost=sum(m["looksalive"]["lost"] for m in st),
            pings_sent=sum(m["looksalive"]["sent"] for m in st))
        watcher.stop()
        return res


def keepalived_scale(tmp: Path, n: int, mode: str, duration: float,
                     warmup: float) -> dict[str, Any]:
    addrs = addresses(n)
    v4 = [a for a in addrs if ":" not in a]
    v6 = [a for a in addrs if ":" in a]
    with Cluster(tmp, ["holder", "watcher"], ipv6=False) as c:
        holder, watcher = c.nodes["holder"], c.nodes["watcher"]
        add_batch(watcher.host, ["198.51.100.254/24", "2001:db8:5::fffe/64"])

        def instances(state: str, prio: int) -> list[dict[str, Any]]:
            base = {"state": state, "priority": prio, "advert_int": 1}
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
            res.update(n=n, ready_s=ready, instances=count,
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
    ap.add_argument("--no-keepalived", action="store_true")
    ap.add_argument("--profile", type=Path, help="run MiniSFT under cProfile, write the "
                    "stats to PROFILE-N and print the top functions (CPU figures then "
                    "include the profiler's overhead)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)
    print(f"machine:    {machine_line()}")
    print(f"keepalived: {keepalived_version()}\n", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, dict[int, dict[str, Any]]] = {"minisft": {}, "keepalived-vips": {},
                                                     "keepalived-instances": {}}
    errors: list[BaseException] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmpdir:
        for n in sizes:
            jobs: list[tuple[str, Any]] = [
                ("minisft", lambda d, n=n: minisft_scale(
                    d, n, args.duration, args.warmup,
                    Path(f"{args.profile}-{n}").resolve() if args.profile else None))]
            if not args.no_keepalived:
                for mode in ("vips", "instances"):
                    jobs.append((f"keepalived-{mode}", lambda d, n=n, mode=mode:
                                 keepalived_scale(d, n, mode, args.duration, args.warmup)))

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

    rows = []
    for name, per in results.items():
        for n, r in per.items():
            extra = (f"{r['up']}/{n} up, {r['isalive_ok']}/{n} IsAlive ok, "
                     f"{r['takeovers']} takeovers, {r['pings_lost']}/{r['pings_sent']} "
                     "pings lost" if name == "minisft" else
                     f"{r['instances']} instance(s), backup became master "
                     f"{r['backup_masters']}x")
            rows.append([name, n, f"{r['cpu_pct']:.2f}", f"{r['rss_mib']:.1f}",
                         f"{r['hwm_mib']:.1f}", f"{r['ready_s']:.1f}", extra])
    print(f"\nCPU over {args.duration:g} s (% of one core) and memory (MiB)")
    print(table(["daemon", "N", "CPU %", "VmRSS", "VmHWM", "ready after (s)", "check"], rows))
    m = results["minisft"]
    if len(sizes) > 1 and min(sizes) in m and max(sizes) in m:
        lo, hi = m[min(sizes)], m[max(sizes)]
        print(f"\nMiniSFT growth {min(sizes)} -> {max(sizes)}: CPU {lo['cpu_pct']:.2f}% -> "
              f"{hi['cpu_pct']:.2f}% ({hi['cpu_pct'] / max(lo['cpu_pct'], 1e-9):.1f}x), "
              f"RSS {lo['rss_mib']:.1f} -> {hi['rss_mib']:.1f} MiB "
              f"(+{hi['rss_mib'] - lo['rss_mib']:.1f} MiB, "
              f"{(hi['rss_mib'] - lo['rss_mib']) * 1024 / (max(sizes) - min(sizes)):.0f} "
              "KiB per address)")
    if args.profile:
        import pstats
        for n in sizes:
            print(f"\ncProfile, N={n}: top 25 by own time")
            pstats.Stats(f"{args.profile}-{n}").sort_stats("tottime").print_stats(25)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
