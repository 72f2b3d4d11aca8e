"""Memory footprint: MiniSFT with every sink vs with none vs keepalived.

1. MiniSFT, one monitor (primary for 192.0.2.10, so it claims the address at start and
   emits events) and EVERY sink configured and used: syslog to a unix socket this script
   binds, SNMP v2c trap + v3 authPriv (SHA-256/AES) trap to a real snmptrapd, apprise
   mailto:// (aiosmtpd) + json:// (HTTP receiver), and the Prometheus listener (scraped
   once). Sinks load lazily at their first delivery: the script waits until every
   receiver got an event before it reads the memory. apprise runs in a child process of
   the daemon (minisft.sinks.apprise_worker) that exits IDLE_EXIT (30 s) after the last
   delivery, so this row is measured twice, as the whole process tree (daemon + children):
   "while delivering" (settle seconds after the deliveries, the worker alive) and "at
   rest" (the worker gone, settle seconds after it exited).
2. The same with SNMP v2c only (no v3 target, so no SNMPv3 privacy and no cryptography),
   measured at rest.
3. MiniSFT, the same monitor and no sinks at all (no syslog, no alerting).
4. keepalived 2.2.7, VRRPv3, one instance, MASTER (alpha) + BACKUP (beta): parent + VRRP
   child of each.

Memory is VmRSS / VmHWM / PSS (smaps_rollup: shared pages split between the processes
that map them) after the daemon settled, summed over the daemon and its children. Both
MiniSFT daemons run with PYTHONPROFILEIMPORTTIME=1 (python -X importtime), so their logs
list every module they import, lazy imports included: that is the check that heavy
libraries (pysnmp, apprise, cryptography, prometheus_client, requests) load only when
configured. The apprise worker's stderr goes to /dev/null, so its imports are not in
that list: apprise must show 0 modules in the daemon process.

    python bench/footprint.py [--settle 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
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
    machine_line,
    mem_kib,
    monitor,
    ns_addresses,
    pss_kib,
    table,
    use_quiet_env,
    wait_until,
)

from minisft.sinks.apprise_sink import IDLE_EXIT
from tests.integration.cluster import Cluster, Node
from tests.support.receivers import LineReceiver
from tests.support.snmptrapd import TrapReceiver, V3User

VIP = "192.0.2.10/24"
CLIENT_IP = "192.0.2.100"
TRAP_PORT, SMTP_PORT, HTTP_PORT, PROM_PORT = 16162, 2525, 8080, 9523
COMMUNITY, USER, AUTH, PRIV = "bench-v2c", "bench-v3", "bench-auth-key", "bench-priv-key"
ENGINE_ID = bytes.fromhex("80007ed905") + b"minisft-bnch"
HEAVY = ("pysnmp", "apprise", "cryptography", "prometheus_client", "requests", "aiosmtpd",
         "yaml", "pyroute2", "icmplib")


# What each heavy library costs on its own: a fresh interpreter imports it (and, for
# apprise, adds the two URLs the sink uses, which loads its plugins), then reads VmRSS.
IMPORT_PROBES = [
    ("bare python", "pass"),
    ("minisft daemon modules", "import minisft.runtime.daemon"),
    ("apprise: import", "import apprise"),
    ("apprise: import + add mailto:// and json://",
     "import apprise; a = apprise.Apprise(); a.add('mailto://u@192.0.2.1'); "
     "a.add('json://192.0.2.1/x')"),
    ("pysnmp: hlapi v3arch asyncio (what the SNMP sink uses)",
     "import pysnmp.hlapi.v3arch.asyncio"),
    ("pysnmp: proto.api only (v1/v2c PDU codec)", "from pysnmp.proto import api"),
    ("stdlib smtplib + email + urllib.request",
     "import smtplib, email.message, urllib.request"),
]


def import_costs() -> list[tuple[str, int, int]]:
    """(what, VmRSS KiB, modules in sys.modules) per IMPORT_PROBES entry."""
    out = []
    for what, code in IMPORT_PROBES:
        probe = (f"{code}\nimport re, sys\n"
                 "s = open('/proc/self/status').read()\n"
                 "print(re.search(r'VmRSS:\\s+(\\d+)', s).group(1), len(sys.modules))")
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              cwd=ROOT, check=True)
        rss, mods = proc.stdout.split()
        out.append((what, int(rss), int(mods)))
    return out


def secret(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    return str(path)


def imported(node: Node) -> dict[str, int]:
    """Top-level packages in the daemon's -X importtime output, with module counts.

    -X importtime logs failed attempts too: pysnmp tries cryptography.hazmat.* when
    cryptography is hidden from it (SNMP without privacy). A package counts only if its
    top-level module itself was imported (or, for pyroute2, put in place as a shell by
    minisft.net.pyroute2_lite, which is no import), and each module once."""
    names: set[str] = set()
    for line in node.log().splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S.*)$", line)
        if m:
            names.add(m.group(1).strip())
    counts: dict[str, int] = {}
    for name in names:
        top = name.split(".")[0]
        if top in names or top == "pyroute2":
            counts[top] = counts.get(top, 0) + 1
    return counts


def children(pid: int) -> list[int]:
    """Pids of the processes whose parent is `pid`, recursively."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def daemon_memory(node: Node) -> dict[str, Any]:
    """The daemon's memory plus that of its children (the apprise worker)."""
    assert node.proc is not None
    pid = node.proc.pid
    m = mem_kib(pid)
    maps = Path(f"/proc/{pid}/maps").read_text()
    so = sorted({Path(line.split()[-1]).name for line in maps.splitlines()
                 if ".so" in line and "site-packages" in line})
    res: dict[str, Any] = {"rss_kib": m["VmRSS"], "hwm_kib": m["VmHWM"],
                           "pss_kib": pss_kib(pid) or 0, "anon_kib": m["RssAnon"],
                           "site_packages_so": so, "daemon_rss_kib": m["VmRSS"],
                           "children": []}
    for kid in children(pid):
        try:
            km = mem_kib(kid)
            cmd = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # exited meanwhile
        res["children"].append({"pid": kid, "cmd": cmd.strip(), "rss_kib": km["VmRSS"]})
        res["rss_kib"] += km["VmRSS"]
        res["hwm_kib"] += km["VmHWM"]
        res["pss_kib"] += pss_kib(kid) or 0
        res["anon_kib"] += km["RssAnon"]
    return res


def start_syslog(path: Path, got: list[bytes]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)

    def read() -> None:
        while True:
            try:
                got.append(sock.recv(65536))
            except OSError:
                return
    threading.Thread(target=read, daemon=True).start()
    return sock


def minisft_all_sinks(tmp: Path, settle: float, snmp_v3: bool = True) -> dict[str, Any]:
    with Cluster(tmp, ["alpha"], ipv6=False) as c:
        alpha = c.nodes["alpha"]
        secrets = tmp / "secrets"
        alpha.state_dir.mkdir(parents=True, exist_ok=True)
        secret(alpha.state_dir / "snmp-engine-id", ENGINE_ID.hex())
        syslog_path = tmp / "syslog.sock"
        got_syslog: list[bytes] = []
        sock = start_syslog(syslog_path, got_syslog)
        targets = [
            {"host": CLIENT_IP, "port": TRAP_PORT, "version": "2c", "type": "trap",
             "community_file": secret(secrets / "community", COMMUNITY)},
            {"host": CLIENT_IP, "port": TRAP_PORT, "version": "3", "type": "trap",
             "user": USER, "auth_protocol": "sha256", "priv_protocol": "aes128",
             "auth_key_file": secret(secrets / "auth", AUTH),
             "priv_key_file": secret(secrets / "priv", PRIV)},
        ][:2 if snmp_v3 else 1]
        mail = (f"mailto://{CLIENT_IP}:{SMTP_PORT}?to=ops@example.org"
                "&from=minisft@example.org&mode=insecure")
        alpha.configure(
            [monitor("web", VIP, "primary")],
            logging={"level": "info", "syslog": True, "syslog_socket": str(syslog_path)},
            alerting={"snmp": {"targets": targets},
                      "apprise": {"urls": [mail, f"json://{CLIENT_IP}:{HTTP_PORT}/hook"]},
                      "prometheus": {"listen": f"0.0.0.0:{PROM_PORT}"}})
        rx = TrapReceiver(tmp / "snmptrapd", host=CLIENT_IP, port=TRAP_PORT,
                          communities=[COMMUNITY],
                          users=[V3User(USER, "SHA-256", AUTH, "AES", PRIV,
                                        engine_id=ENGINE_ID)], prefix=c.client.cmd())
        smtp = LineReceiver(c.client, "smtp", CLIENT_IP, SMTP_PORT, tmp / "smtp.jsonl")
        http = LineReceiver(c.client, "http", CLIENT_IP, HTTP_PORT, tmp / "http.jsonl")
        try:
            rx.start()
            smtp.start()
            http.start()
            os.environ["PYTHONPROFILEIMPORTTIME"] = "1"
            try:
                alpha.start()
            finally:
                del os.environ["PYTHONPROFILEIMPORTTIME"]
            wait_until("alpha holds", lambda: alpha.holds(VIP))
            wait_until("a v2c trap", lambda: any(n.security == COMMUNITY
                                                 for n in rx.notifications()), 60)
            if snmp_v3:
                wait_until("a v3 trap", lambda: any(n.security == USER
                                                    for n in rx.notifications()), 60)
            wait_until("a mail", lambda: smtp.messages(), 60)
            wait_until("a json post", lambda: http.messages(), 60)
            wait_until("a syslog datagram", lambda: got_syslog, 30)
            scrape = c.client.run("python3", "-c", "import urllib.request,sys;sys.stdout.write("
                                  f"urllib.request.urlopen('http://192.0.2.1:{PROM_PORT}"
                                  "/metrics',timeout=5).read().decode())")
            assert "minisft" in scrape.stdout, "no metrics"
            assert alpha.proc is not None
            time.sleep(min(settle, 10.0))  # well inside IDLE_EXIT: the worker is alive
            busy = daemon_memory(alpha)
            assert busy["children"], "no apprise worker while delivering"
            wait_until("the apprise worker to exit when idle",
                       lambda: not children(alpha.proc.pid), IDLE_EXIT + 30)
            gone = time.time()
            last = max(s["last_delivery_time"] or 0 for s in alpha.status()["sinks"]
                       if s["name"] == "apprise")
            busy["idle_exit_after_s"] = round(gone - last, 1)
            time.sleep(settle)
            rest = daemon_memory(alpha)
            sinks = alpha.status()["sinks"]
            res = {"busy": busy, "rest": rest,
                   "sinks": {s["name"]: s["delivered"] for s in sinks},
                   "imports": imported(alpha)}
            alpha.stop()
            return res
        finally:
            for r in (smtp, http):
                r.stop()
            rx.stop()
            sock.close()


def minisft_no_sinks(tmp: Path, settle: float) -> dict[str, Any]:
    with Cluster(tmp, ["alpha"], ipv6=False) as c:
        alpha = c.nodes["alpha"]
        alpha.configure([monitor("web", VIP, "primary")])
        os.environ["PYTHONPROFILEIMPORTTIME"] = "1"
        try:
            alpha.start()
        finally:
            del os.environ["PYTHONPROFILEIMPORTTIME"]
        wait_until("alpha holds", lambda: alpha.holds(VIP))
        time.sleep(settle)
        res = daemon_memory(alpha)
        res["imports"] = imported(alpha)
        alpha.stop()
        return res


def keepalived_pair(tmp: Path, settle: float) -> dict[str, Any]:
    with Cluster(tmp, ["alpha", "beta"], ipv6=False) as c:
        def conf(name: str, state: str, prio: int) -> str:
            return keepalived_conf(name, [{"name": "web", "state": state, "priority": prio,
                                           "vrid": 51, "advert_int": 1, "vips": [VIP]}])
        ka = Keepalived(c.nodes["alpha"].host, tmp / "ka-alpha",
                        conf("alpha", "MASTER", 150)).start()
        kb = Keepalived(c.nodes["beta"].host, tmp / "ka-beta",
                        conf("beta", "BACKUP", 100)).start()
        try:
            ka.wait_line("Entering MASTER STATE")
            kb.wait_line("Entering BACKUP STATE")
            wait_until("alpha holds", lambda: "192.0.2.10" in ns_addresses(
                c.nodes["alpha"].host.ns))
            time.sleep(settle)
            out: dict[str, Any] = {}
            for role, k in (("master", ka), ("backup", kb)):
                pids = k.pids()
                assert len(pids) == 2, pids
                mems = [mem_kib(p) for p in pids]
                out[role] = {"rss_kib": [m["VmRSS"] for m in mems],
                             "hwm_kib": [m["VmHWM"] for m in mems],
                             "pss_kib": [pss_kib(p) for p in pids]}
            return out
        finally:
            kb.stop()
            ka.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds after the last delivery before reading memory (5)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    use_quiet_env()
    os.environ["PYTHONPATH"] = str(ROOT)
    print(f"machine:    {machine_line()}")
    print(f"keepalived: {keepalived_version()}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmpdir:
        base = Path(tmpdir)
        for d in ("all", "v2c", "none", "ka"):
            (base / d).mkdir()
        full = minisft_all_sinks(base / "all", args.settle)
        v2c = minisft_all_sinks(base / "v2c", args.settle, snmp_v3=False)
        bare = minisft_no_sinks(base / "none", args.settle)
        ka = keepalived_pair(base / "ka", args.settle)

    mib = 1024.0
    ka_b, ka_m = ka["backup"], ka["master"]
    ka_rss = sum(ka_b["rss_kib"])
    ka_pss = sum(p or 0 for p in ka_b["pss_kib"])
    def tree(r: dict[str, Any]) -> str:
        parts = [r["daemon_rss_kib"], *(k["rss_kib"] for k in r["children"])]
        total = f"{r['rss_kib'] / mib:.1f}"
        return total if len(parts) == 1 else \
            f"{total} ({' + '.join(f'{p / mib:.1f}' for p in parts)})"

    busy, rest = full["busy"], full["rest"]
    rows = [
        ["MiniSFT, every sink, while delivering (daemon + apprise worker)", tree(busy),
         f"{busy['hwm_kib'] / mib:.1f}", f"{busy['pss_kib'] / mib:.1f}",
         f"{busy['rss_kib'] / ka_rss:.1f}x"],
        [f"MiniSFT, every sink, at rest (IDLE_EXIT={IDLE_EXIT:.0f} s after the last event)",
         tree(rest), f"{rest['hwm_kib'] / mib:.1f}", f"{rest['pss_kib'] / mib:.1f}",
         f"{rest['rss_kib'] / ka_rss:.1f}x"],
        ["MiniSFT, every sink but SNMPv3 (SNMP v2c only), at rest", tree(v2c["rest"]),
         f"{v2c['rest']['hwm_kib'] / mib:.1f}", f"{v2c['rest']['pss_kib'] / mib:.1f}",
         f"{v2c['rest']['rss_kib'] / ka_rss:.1f}x"],
        ["MiniSFT, 1 monitor, no sinks", f"{bare['rss_kib'] / mib:.1f}",
         f"{bare['hwm_kib'] / mib:.1f}", f"{(bare['pss_kib'] or 0) / mib:.1f}",
         f"{bare['rss_kib'] / ka_rss:.1f}x"],
        ["keepalived BACKUP (parent + VRRP child)",
         f"{ka_rss / mib:.1f} ({' + '.join(f'{r / mib:.1f}' for r in ka_b['rss_kib'])})",
         f"{sum(ka_b['hwm_kib']) / mib:.1f}", f"{ka_pss / mib:.1f}", "1.0x"],
        ["keepalived MASTER (parent + VRRP child)",
         f"{sum(ka_m['rss_kib']) / mib:.1f} "
         f"({' + '.join(f'{r / mib:.1f}' for r in ka_m['rss_kib'])})",
         f"{sum(ka_m['hwm_kib']) / mib:.1f}",
         f"{sum(p or 0 for p in ka_m['pss_kib']) / mib:.1f}", ""],
    ]
    print("memory (MiB)")
    print(table(["daemon", "VmRSS", "VmHWM", "PSS", "RSS vs keepalived BACKUP"], rows))
    print(f"\nevery sink: delivered per sink {json.dumps(full['sinks'], sort_keys=True)}")
    print(f"every sink: the apprise worker exited {busy['idle_exit_after_s']} s after the "
          "last delivery")
    print(f"every sink: HWM is per process (the daemon's peak + the worker's), the daemon "
          f"alone peaked at {rest['hwm_kib'] / mib:.1f} MiB")
    print("\nheavy packages imported (-X importtime, module count; 0 = never imported):")
    print(table(["package", "every sink", "SNMP v2c only", "no sinks"],
                [[p, full["imports"].get(p, 0), v2c["imports"].get(p, 0),
                  bare["imports"].get(p, 0)] for p in HEAVY]))
    print("\nsite-packages shared objects mapped (/proc/PID/maps):")
    print(f"  every sink: {', '.join(rest['site_packages_so']) or '-'}")
    print(f"  no sinks:   {', '.join(bare['site_packages_so']) or '-'}")
    costs = import_costs()
    print("\nstand-alone import cost (fresh interpreter, VmRSS):")
    print(table(["imports", "VmRSS MiB", "over bare python", "modules loaded"],
                [[w, f"{r / mib:.1f}", f"+{(r - costs[0][1]) / mib:.1f}", n]
                 for w, r, n in costs]))
    if args.json:
        args.json.write_text(json.dumps({"all": full, "v2c": v2c, "none": bare,
                                         "keepalived": ka,
                                         "import_costs": costs},
                                        indent=1))


if __name__ == "__main__":
    main()
