"""The shipped rules in a real Prometheus server (Debian's, running as prometheus) that
scrapes a real daemon: a dead service behind a live host fires MiniSFTServiceDead."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cluster import Cluster, monitor_cfg, wait_until

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerting" / "prometheus" / "minisft-rules.yml"
VIP = "192.0.2.10/24"
METRICS_PORT = 9523
PROM_PORT = 9090



def test_prometheus_fires_service_dead_from_a_real_scrape(tmp_path: Path,
                                                           service_tmp: Path) -> None:
    storage = service_tmp / "data"
    storage.mkdir()
    shutil.chown(storage, "prometheus", "prometheus")
    shutil.copy(RULES, service_tmp / "minisft-rules.yml")
    with Cluster(tmp_path, ["alpha", "beta"]) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(service_tmp / "minisft-rules.yml")],
            "scrape_configs": [{"job_name": "minisft", "static_configs": [
                {"targets": [f"{beta.host.ip}:{METRICS_PORT}"]}]}],
        }
        (service_tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        # nothing listens on port 7 behind the address: the service is dead, ping is fine
        check = {"interval": "300ms", "retry": 2,
                 "check": {"type": "tcp", "port": 7, "timeout": "300ms"}}
        alpha.configure([monitor_cfg("web", VIP, "primary")])
        beta.configure([monitor_cfg("web", VIP, "backup", peer=alpha.host.ip, isalive=check)],
                       alerting={"prometheus": {"listen": f"{beta.host.ip}:{METRICS_PORT}"}})
        alpha.start()
        wait_until("alpha holds", lambda: alpha.holds(VIP))
        c.client.popen(["runuser", "-u", "prometheus", "--", "prometheus",
                        f"--config.file={service_tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={storage}",
                        f"--web.listen-address={c.client.ip}:{PROM_PORT}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        beta.start()
        beta.wait_event("service_dead", "web", timeout=20)

        def api(path: str) -> Any:
            proc = c.client.run(
                "python3", "-c", "import urllib.request,sys;sys.stdout.write(urllib.request."
                f"urlopen('http://{c.client.ip}:{PROM_PORT}{path}',timeout=5).read()"
                ".decode())", check=False)
            return json.loads(proc.stdout) if proc.returncode == 0 else None

        def firing() -> list[dict[str, Any]] | None:
            answer = api("/api/v1/alerts")
            alerts = [a for a in (answer or {}).get("data", {}).get("alerts", [])
                      if a["state"] == "firing"]
            return alerts if any(a["labels"]["alertname"] == "MiniSFTServiceDead"
                                 for a in alerts) else None

        alerts = wait_until("Prometheus to fire MiniSFTServiceDead", firing, timeout=60,
                            step=0.5)
        targets = api("/api/v1/targets")

    dead = [a for a in alerts if a["labels"]["alertname"] == "MiniSFTServiceDead"]
    assert dead[0]["labels"]["monitor"] == "web"
    assert dead[0]["labels"]["severity"] == "critical"
    assert dead[0]["labels"]["instance"] == f"192.0.2.2:{METRICS_PORT}"
    assert "service dead behind a live host" in dead[0]["annotations"]["summary"]
    # nothing else is wrong on this cluster: no other alert fires
    assert {a["labels"]["alertname"] for a in alerts} == {"MiniSFTServiceDead"}, alerts
    assert targets["data"]["activeTargets"][0]["health"] == "up"
