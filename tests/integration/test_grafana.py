"""alerting/grafana/minisft-dashboard.json: built by scripts/grafana-dashboard (with
grafana-foundation-sdk), and every query names a metric a real daemon exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, monitor_cfg, wait_until

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "alerting" / "grafana" / "minisft-dashboard.json"
PROM_PORT = 9523
VIP = "192.0.2.10/24"


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_shipped_dashboard_is_what_the_builder_writes() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "grafana-dashboard"),
                           "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert {"Addresses held, per node", "Failovers", "LooksAlive round-trip time",
            "LooksAlive loss", "IsAlive latency", "Alert sink backlog"} <= titles


def test_every_query_names_an_exported_metric(tmp_path: Path) -> None:
    """A scrape of a backup node (LooksAlive, IsAlive) with an SNMP sink: the metric
    names the dashboard queries must all be in it."""
    with Cluster(tmp_path, ["alpha", "beta"]) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        check = {"interval": "300ms", "retry": 2,
                 "check": {"type": "tcp", "port": 22, "timeout": "300ms"}}
        alerting = {"prometheus": {"listen": f"{beta.host.ip}:{PROM_PORT}"},
                    "snmp": {"targets": [{"host": c.client.ip, "port": 10162,
                                          "version": "2c", "community": "minisft-traps"}]}}
        alpha.configure([monitor_cfg("web", VIP, "primary")])
        beta.configure([monitor_cfg("web", VIP, "backup", peer=alpha.host.ip,
                                    isalive=check)], alerting=alerting)
        alpha.start()
        wait_until("alpha holds", lambda: alpha.holds(VIP))
        beta.start()
        beta.wait_event("looksalive_up", "web")

        def scrape() -> str | None:
            proc = c.client.run("python3", "-c", "import urllib.request,sys;sys.stdout.write("
                                f"urllib.request.urlopen('http://{beta.host.ip}:{PROM_PORT}"
                                "/metrics',timeout=5).read().decode())", check=False)
            text = proc.stdout
            # wait for an RTT sample and an IsAlive latency, so their metrics are there
            return text if "minisft_monitor_looksalive_rtt_seconds{" in text and \
                "minisft_monitor_isalive_latency_seconds{" in text else None

        text: str = wait_until("a scrape with LooksAlive and IsAlive samples", scrape)

    exported = set(re.findall(r"^(\w+)[{ ]", text, re.M))
    queries = dashboard_queries()
    assert len(queries) >= 9
    named = {name for q in queries for name in re.findall(r"\bminisft_\w+", q)}
    missing = named - exported
    assert not missing, f"dashboard queries metrics the daemon does not export: {missing}"
    for q in queries:  # every query reads at least one real metric
        assert set(re.findall(r"\bminisft_\w+", q)) & exported, q
