"""How much slower than a bare interpreter start is one check_minisft run?

Runs check_minisft N times against a freshly written status file and `python3 -c pass`
N times, alternating so both see the same machine load, and prints the median wall
times and their ratio. Not a test: numbers depend on the machine.

    python bench/check_plugin_walltime.py [-n 50] [--monitors 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def status(monitors: int) -> dict[str, Any]:
    now = time.time()
    mons = []
    for i in range(monitors):
        primary = i % 2 == 0
        mons.append({
            "name": f"m{i}", "address": f"192.0.2.{10 + i}", "prefixlen": 24,
            "role": "primary" if primary else "backup",
            "state": "holding" if primary else "watching",
            "purpose": None, "paused": False, "holder": "self" if primary else "other",
            "holder_mac": None, "reason": "bench", "link_up": True, "conflict_open": False,
            "seconds_since_change": 60.0,
            "looksalive": {"health": "up", "misses": 0, "icmp_misses": 0, "rtt_ms": 0.2,
                           "sent": 100, "lost": 0},
            "isalive": {"enabled": True, "check": "http", "ok": True, "dead": False,
                        "latency_ms": 3.0, "detail": ""},
            "peer": {"ip": None, "health": "unknown", "rtt_ms": None, "up_for": None,
                     "fallback": "manual", "hold_down": 60.0,
                     "auto_fallback_suspended": False},
            "counters": {"takeovers": 0, "claims": 1, "releases": 0, "fallbacks": 0,
                         "yields": 0, "conflicts": 0, "service_alarms": 0},
            "last_change_time": now - 60,
        })
    return {"version": 1, "node": "bench", "pid": os.getpid(), "started_at": now - 100,
            "updated_at": now, "software_version": "0.1.0", "last_event_seq": 1,
            "monitors": mons, "sinks": [], "pools": []}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1, 2):
        sys.exit(f"{argv} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("-n", type=int, default=50, help="runs of each (default 50)")
    ap.add_argument("--monitors", type=int, default=8, help="monitors in the status file")
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "status.json"
        plugin = [sys.executable, "-m", "minisft.nagios.plugin", "--status", str(path)]
        bare = [sys.executable, "-c", "pass"]
        plugin_times, bare_times = [], []
        for _ in range(args.n):
            # refresh like the daemon does, so the plugin never sees a stale file
            path.write_text(json.dumps(status(args.monitors)))
            plugin_times.append(timed(plugin, env))
            bare_times.append(timed(bare, env))

    p, b = statistics.median(plugin_times), statistics.median(bare_times)
    print(f"python:         {sys.executable} ({sys.version.split()[0]})")
    print(f"runs:           {args.n} each, {args.monitors} monitors in the status file")
    print(f"check_minisft:  median {p * 1000:.1f} ms  (min {min(plugin_times) * 1000:.1f} ms)")
    print(f"python -c pass: median {b * 1000:.1f} ms  (min {min(bare_times) * 1000:.1f} ms)")
    print(f"ratio:          {p / b:.2f}x  (plugin's own cost ~{(p - b) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
