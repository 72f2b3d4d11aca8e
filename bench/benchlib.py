"""Shared helpers for the benchmarks in bench/: keepalived in a namespace lab, MiniSFT
monitor configs, /proc sampling, small statistics and table printing.

Every benchmark builds its own `minisft.lab.netns.Lab` (directly or through
`tests.integration.cluster.Cluster`) and closes it in a `finally`/`with`, so namespaces and
processes go away on failure and on Ctrl-C too. Only documentation addresses are used.

Run as a script, this file is also a tiny timestamping SMTP receiver (for alert_latency.py):

    python bench/benchlib.py smtp --host 192.0.2.100 --port 2525 --out FILE
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from minisft.lab.netns import Host  # noqa: E402

KEEPALIVED = "/usr/sbin/keepalived"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------- machine, misc


def machine_line() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    kver = os.uname().release
    return (f"{os.cpu_count()} CPUs ({model}), kernel {kver}, Python "
            f"{sys.version.split()[0]}, load average {' '.join(load)} at start, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def keepalived_version() -> str:
    proc = subprocess.run([KEEPALIVED, "--version"], capture_output=True, text=True)
    return (proc.stderr or proc.stdout).splitlines()[0].strip()


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 20.0,
               step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for: {what}")
        time.sleep(step)


def quiet_env() -> dict[str, str]:
    """The daemons inherit this: no proxies for apprise's json:// and mailto://."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = "*"
    env["PYTHONPATH"] = str(ROOT)
    return env


def use_quiet_env() -> None:
    """Make `quiet_env()` this process's environment, so every daemon started inherits it."""
    env = quiet_env()
    os.environ.clear()
    os.environ.update(env)


def ns_addresses(ns: str, ifname: str = "eth0") -> set[str]:
    """Addresses (without prefix) on `ifname` in namespace `ns`; `ip -n` (no mount ns)."""
    out = subprocess.run(["ip", "-n", ns, "-o", "addr", "show", "dev", ifname],
                         capture_output=True, text=True, timeout=10).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        for fam in ("inet", "inet6"):
            if fam in parts:
                found.add(parts[parts.index(fam) + 1].split("/")[0])
    return found


# ---------------------------------------------------------------------- statistics


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-markdown table (also readable as plain text)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    out = [line(headers), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells]
    return "\n".join(out)


# ---------------------------------------------------------------------- /proc sampling


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def mem_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    return out


def pss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------- MiniSFT configs


def looksalive(interval: float, retry: int = 3, timeout: float | None = None) -> dict[str, Any]:
    """LooksAlive with the benchmark's timeout rule: interval/3 unless given."""
    t = timeout if timeout is not None else interval / 3
    return {"interval": f"{round(interval * 1000)}ms", "retry": retry,
            "timeout": f"{round(t * 1000)}ms"}


def monitor(name: str, address: str, role: str, *, peer: str | None = None,
            **extra: Any) -> dict[str, Any]:
    """A monitor with the daemon's defaults for probe/announce (unlike the tests' helper,
    which speeds announcements up)."""
    ip, _, prefix = address.partition("/")
    cfg: dict[str, Any] = {"name": name, "monitor_ip": ip,
                           "monitor_subnet": int(prefix or 24), "role": role}
    if peer:
        cfg["peer_ip"] = peer
    cfg.update(extra)
    return cfg


# ---------------------------------------------------------------------- keepalived


def keepalived_conf(name: str, instances: Sequence[dict[str, Any]]) -> str:
    """A VRRPv3 keepalived.conf. Each instance: name, state, priority, vrid, advert_int,
    vips (list of 'addr/prefix'), optional family 6."""
    out = ["global_defs {", f"  router_id {name}", "  vrrp_version 3",
           "  vrrp_garp_master_refresh 0", "}", ""]
    for inst in instances:
        out += [f"vrrp_instance {inst['name']} {{",
                f"  state {inst['state']}",
                "  interface eth0",
                f"  virtual_router_id {inst['vrid']}",
                f"  priority {inst['priority']}",
                f"  advert_int {inst['advert_int']}",
                "  virtual_ipaddress {"]
        out += [f"    {vip} dev eth0" for vip in inst["vips"]]
        out += ["  }", "}", ""]
    return "\n".join(out)


class Keepalived:
    """keepalived -n (foreground) in a lab host, its own pid files and log."""

    def __init__(self, host: Host, workdir: Path, conf: str) -> None:
        self.host = host
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "keepalived.conf"
        self.conf.write_text(conf)
        self.log_path = self.dir / "keepalived.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def argv(self) -> list[str]:
        d = self.dir
        return [KEEPALIVED, "-n", "-l", "-D", "-G", "-P",  # foreground, console, VRRP only
                "-f", str(self.conf), "-p", str(d / "keepalived.pid"),
                "-r", str(d / "vrrp.pid"), "-c", str(d / "checkers.pid"),
                "-b", str(d / "bfd.pid"), "-i", self.host.name]

    def start(self) -> Keepalived:
        self.proc = self.host.popen(self.argv(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        threading.Thread(target=self._reader, daemon=True).start()
        return self

    def _reader(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "ab") as log:
            for raw in self.proc.stdout:
                now = time.time()
                log.write(f"[{now:.6f}] ".encode() + raw)
                log.flush()
                with self._lock:
                    self._lines.append((now, raw.decode(errors="replace").rstrip()))

    def lines(self, pattern: str = "") -> list[tuple[float, str]]:
        with self._lock:
            return [(t, s) for t, s in self._lines if pattern in s]

    def wait_line(self, pattern: str, timeout: float = 20.0) -> tuple[float, str]:
        def find() -> tuple[float, str] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"keepalived on {self.host.name} exited "
                                   f"({self.proc.returncode}):\n{self.text()}")
            got = self.lines(pattern)
            return got[0] if got else None
        found: tuple[float, str] = wait_until(f"keepalived {self.host.name}: {pattern}",
                                              find, timeout)
        return found

    def text(self) -> str:
        return "\n".join(s for _, s in self.lines())

    def pids(self) -> list[int]:
        """The parent and its VRRP child."""
        assert self.proc is not None
        pids = [self.proc.pid]
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((self.dir / "vrrp.pid").read_text().split()[0]))
        return pids

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self.host.stop_process(proc)


# ---------------------------------------------------------------------- ping client


_STAMP = re.compile(r"^\[(\d+\.\d+)\].*bytes from", re.MULTILINE)


def start_pings(client: Host, address: str) -> subprocess.Popen[str]:
    return client.popen(["ping", "-D", "-n", "-i", "0.01", "-W", "0.1", address],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def stop_pings(proc: subprocess.Popen[str]) -> list[float]:
    """Stop a `ping -D` and return the reply timestamps (epoch seconds)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    return [float(m.group(1)) for m in _STAMP.finditer(out)]


def outage(stamps: Sequence[float], cut: float) -> tuple[float, float, float]:
    """(last reply before the outage, first reply after it, gap) from `ping -D` timestamps:
    the longest gap between consecutive replies that ends after `cut` (replies can still
    arrive while `ip link set down` is running)."""
    pairs = [(a, b) for a, b in itertools.pairwise(stamps) if b > cut]
    if not pairs or stamps[0] > cut:
        raise RuntimeError(f"no replies around the cut ({len(stamps)} replies)")
    a, b = max(pairs, key=lambda p: p[1] - p[0])
    return a, b, b - a


# ---------------------------------------------------------------------- SMTP receiver


def serve_smtp(host: str, port: int, out: Path) -> None:
    """aiosmtpd; appends {"t": receipt time, "subject": ...} per mail to `out`."""
    import email
    import email.policy

    from aiosmtpd.controller import Controller

    lock = threading.Lock()

    def append(rec: dict[str, Any]) -> None:
        with lock, open(out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            t = time.time()
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            append({"type": "mail", "t": t, "subject": str(msg["Subject"])})
            return "250 OK"

    controller = Controller(Handler(), hostname=host, port=port)
    controller.start()
    append({"type": "ready", "t": time.time()})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="timestamping receivers for the benchmarks")
    p.add_argument("kind", choices=["smtp"])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    serve_smtp(args.host, args.port, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
