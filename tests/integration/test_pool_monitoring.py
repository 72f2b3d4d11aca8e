"""A real pool as the monitoring shows it: `minisft status`, check_minisft (as an
unprivileged user, like nagios under NRPE), a real Prometheus scraping the members with
the shipped rules, and a real snmpd serving MINISFT-MIB's pool address table.

Three daemons of pool `front` start together, as a rack does. Each address is first on
its preferred member (the formula's home); then c's link goes down, its addresses move to
the survivors, and every tool must name the member that really has the address bound
(`ip addr` on the hosts is the truth) and the member it belongs on; when c is back, the
automatic fallback brings them home and check_minisft says OK again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from minisft.pools.formula import home
from tests.integration.cluster import Cluster, Node, wait_until
from tests.integration.test_monitoring_e2e import as_nobody, unprivileged_python
from tests.support.snmpd import SnmpAgent

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerting" / "prometheus" / "minisft-rules.yml"
NAMES = ["a", "b", "c"]
ADDRESSES = [f"192.0.2.{n}/24" for n in range(101, 107)]
HOME = home(ADDRESSES, dict.fromkeys(NAMES, 1), pool="front")
METRICS_PORT = 9523
PROM_PORT = 9090


def pool_cluster(base: Path) -> Cluster:
    key = base / "front.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    c = Cluster(base, NAMES, ipv6=False)
    front = {
        "name": "front",
        "members": [{"name": m, "ip": f"192.0.2.{i}"} for i, m in enumerate(NAMES, 1)],
        "addresses": ADDRESSES, "key_file": str(key),
        "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"},
        "fallback": {"mode": "auto", "hold_down": "2s"},
    }
    for n in NAMES:
        metrics = {"prometheus": {"listen": f"{c.nodes[n].host.ip}:{METRICS_PORT}"}}
        c.nodes[n].configure([], pools=[front], alerting=metrics)
    for n in NAMES:  # together, as a rack powers up
        c.nodes[n].start(wait=False)
    for n in NAMES:
        wait_until(f"{n}'s daemon to listen", c.nodes[n]._ready, timeout=20)
    return c


def pool_table(node: Node) -> dict[str, tuple[str, str, str, str]]:
    """`minisft status`'s pool table: address -> (owner, preferred, state, moves)."""
    text = node.cli("status", check=True).stdout
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ADDRESS", "OWNER"])
    rows = {}
    for line in lines[head + 1:]:
        m = re.match(r"^  (\S+)\s+(\S+)\s+(\S+)\s+(.+?)\s+(\d+)$", line)
        if not m:
            break
        rows[m.group(1)] = (m.group(2), m.group(3), m.group(4), m.group(5))
    return rows


def check_pool(node: Node, python: str) -> subprocess.CompletedProcess[str]:
    return node.host.run(*as_nobody(python, "--status", str(node.state_dir / "status.json"),
                                    "--pool", "front", "--no-sinks"), check=False)


def check_until(node: Node, python: str, code: int, what: str
                ) -> subprocess.CompletedProcess[str]:
    """check_pool's first answer with exit `code` (status.json trails the live state, which
    `minisft status` shows, by up to a second)."""
    seen: list[str] = []

    def answer() -> subprocess.CompletedProcess[str] | None:
        proc = check_pool(node, python)
        seen.append(proc.stdout + proc.stderr)
        return proc if proc.returncode == code else None
    return wait_until(f"check_minisft to see {what}", answer, timeout=5, step=0.2,
                      describe=lambda: seen[-1] if seen else "")


def snmp_pool_rows(node: Node, workdir: Path) -> list[dict[str, str]]:
    """minisftPoolAddressTable as snmptable reads it from a real snmpd on `node`, whose
    pass_persist helper serves the node's status.json."""
    with SnmpAgent(workdir, node.state_dir / "status.json", prefix=node.host.cmd()) as agent:
        table = agent.table("MINISFT-MIB::minisftPoolAddressTable", "-Cf", "|")
    lines = [line.split("|") for line in table.splitlines() if line.count("|") > 5]
    header = lines[0]
    return [dict(zip(header, line, strict=True)) for line in lines[1:]]


class PrometheusServer:
    """Debian's prometheus, as user prometheus on the client host, scraping the three
    members every second with the shipped rules."""

    def __init__(self, c: Cluster, base: Path) -> None:
        self.c = c
        storage = base / "prometheus-data"
        storage.mkdir()
        shutil.chown(storage, "prometheus", "prometheus")
        shutil.copy(RULES, base / "minisft-rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(base / "minisft-rules.yml")],
            "scrape_configs": [{"job_name": "minisft", "static_configs": [{"targets": [
                f"{c.nodes[n].host.ip}:{METRICS_PORT}" for n in NAMES]}]}],
        }
        (base / "prometheus.yml").write_text(yaml.safe_dump(config))
        c.client.popen(["runuser", "-u", "prometheus", "--", "prometheus",
                        f"--config.file={base / 'prometheus.yml'}",
                        f"--storage.tsdb.path={storage}",
                        f"--web.listen-address={c.client.ip}:{PROM_PORT}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def api(self, path: str) -> Any:
        proc = self.c.client.run(
            "python3", "-c", "import urllib.request,sys;sys.stdout.write(urllib.request."
            f"urlopen('http://{self.c.client.ip}:{PROM_PORT}{path}',timeout=5).read()"
            ".decode())", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def owners_seen_by(self, node: str) -> dict[str, str]:
        """minisft_pool_address_owner as scraped from `node`: address -> owner."""
        instance = f"{self.c.nodes[node].host.ip}:{METRICS_PORT}"
        answer = self.api("/api/v1/query?query=minisft_pool_address_owner") or {}
        return {r["metric"]["address"]: r["metric"]["owner"]
                for r in answer.get("data", {}).get("result", [])
                if r["metric"]["instance"] == instance}

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        answer = self.api("/api/v1/alerts") or {}
        return [a for a in answer.get("data", {}).get("alerts", [])
                if a["state"] == "firing" and a["labels"]["alertname"] == alertname]


def test_the_monitoring_names_the_real_holder_and_the_preferred_member(
        service_tmp: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    python = unprivileged_python()
    with pool_cluster(service_tmp) as c:
        a = c.nodes["a"]
        prometheus = PrometheusServer(c, service_tmp)
        wait_until("every address held once, on its preferred member", lambda: all(
            c.holders(addr) == [HOME[addr]] for addr in ADDRESSES), timeout=30)
        wait_until("a's table to show them all at home", lambda: pool_table(a) == {
            addr: (HOME[addr], HOME[addr], "held", "0") for addr in ADDRESSES}, timeout=10)
        ok = check_until(a, python, 0, "the pool at home")
        assert ok.stdout.startswith("MINISFT OK - a: pool front: 6 addresses on their "
                                    "preferred members |"), ok.stdout
        wait_until("Prometheus to scrape a's owners", lambda: prometheus.owners_seen_by(
            "a") == {addr: HOME[addr] for addr in ADDRESSES}, timeout=30, step=0.5)

        c.nodes["c"].host.link_down()
        moved = [addr for addr in ADDRESSES if HOME[addr] == "c"]
        assert moved, "the formula gives c a share of six addresses"
        wait_until("c's addresses to be on a survivor", lambda: all(
            len(c.live_holders(addr)) == 1 for addr in moved), timeout=20)
        truth = {addr: c.live_holders(addr)[0] for addr in ADDRESSES}
        assert {truth[addr] for addr in moved} <= {"a", "b"}
        wait_until("a's table to show where they went", lambda: all(
            pool_table(a)[addr][:2] == (truth[addr], "c") for addr in moved), timeout=10)
        table = pool_table(a)
        for addr in ADDRESSES:
            if addr in moved:
                assert table[addr] == (truth[addr], "c", "held, not preferred", "1"), table
            else:
                assert table[addr] == (HOME[addr], HOME[addr], "held", "0"), table
        warning = check_until(a, python, 1, "c's addresses away")
        first = warning.stdout.splitlines()[0]
        assert first.startswith("MINISFT WARNING - a: pool front: "), first
        for addr in moved:
            assert f"{addr} is on {truth[addr]}, not on its preferred member c " \
                   "(no fallback yet)" in first
        wait_until("Prometheus to scrape where c's addresses went", lambda: prometheus.
                   owners_seen_by("a") == truth, timeout=15, step=0.5)
        away = wait_until("Prometheus to fire MiniSFTPoolAddressNotOnPreferred", lambda: [
            x for x in prometheus.firing("MiniSFTPoolAddressNotOnPreferred")
            if x["labels"]["instance"] == f"{a.host.ip}:{METRICS_PORT}"], timeout=20,
            step=0.5)
        assert sorted(x["labels"]["address"] for x in away) == sorted(moved)
        assert not prometheus.firing("MiniSFTPoolAddressHeldByNobody")
        rows = snmp_pool_rows(a, service_tmp / "snmpd")
        assert {r["minisftPoolAddress"] + "/24": (
            r["minisftPoolAddressOwner"], r["minisftPoolAddressPreferredOwner"],
            r["minisftPoolAddressState"], r["minisftPoolAddressOnPreferred"])
            for r in rows} == {addr: (truth[addr], HOME[addr], "held",
                                      "false" if addr in moved else "true")
                               for addr in ADDRESSES}

        c.nodes["c"].host.link_up()
        seen: list[str] = []

        def back_home() -> bool:
            proc = check_pool(a, python)
            seen.append(proc.stdout)
            return proc.returncode == 0
        wait_until("the fallback to bring c's addresses home", back_home, timeout=30,
                   describe=lambda: seen[-1] if seen else "")
        assert all(c.live_holders(addr) == [HOME[addr]] for addr in ADDRESSES)
