"""alerting/snmptt/minisft.conf with Debian's snmptt: a real daemon sends real traps to
snmptrapd (running as root, as Debian's snmptrapd unit runs it), which hands them to snmptt
in standalone mode; snmptt writes whole sentences with our severities."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, monitor_cfg, wait_until

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "alerting" / "snmptt" / "minisft.conf"
VIP = "192.0.2.10/24"
TRAP_PORT = 10162
COMMUNITY = "minisft-traps"


def test_shipped_snmptt_config_is_what_the_generator_writes() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "snmptt-config"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def snmptt_ini(tmp: Path) -> Path:
    """Debian's /etc/snmp/snmptt.ini, pointed at the shipped file and a log in tmp."""
    text = Path("/etc/snmp/snmptt.ini").read_text()
    for key, value in (("mode", "standalone"), ("log_enable", "1"),
                       ("log_file", str(tmp / "snmptt.log")), ("syslog_enable", "0"),
                       ("syslog_system_enable", "0"), ("log_system_enable", "0"),
                       ("unknown_trap_log_enable", "1"),
                       ("unknown_trap_log_file", str(tmp / "unknown.log"))):
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert n == 1, key
    text, n = re.subn(r"^snmptt_conf_files = <<END\n.*?\nEND$",
                      f"snmptt_conf_files = <<END\n{SHIPPED}\nEND", text, count=1,
                      flags=re.M | re.S)
    assert n == 1
    ini = tmp / "snmptt.ini"
    ini.write_text(text)
    return ini


def test_snmptt_writes_sentences_with_severities(tmp_path: Path) -> None:
    ini = snmptt_ini(tmp_path)
    conf = tmp_path / "snmptrapd.conf"
    conf.write_text(f"authCommunity log,execute {COMMUNITY}\n"
                    f"traphandle default /usr/sbin/snmptt --ini={ini}\n")
    log = tmp_path / "snmptt.log"
    with Cluster(tmp_path, ["alpha", "beta"]) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        c.client.popen(["snmptrapd", "-f", "-On", "-Lo", "-C", "-c", str(conf),
                        f"udp:{c.client.ip}:{TRAP_PORT}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        alerting = {"snmp": {"targets": [{"host": c.client.ip, "port": TRAP_PORT,
                                          "version": "2c", "type": "trap",
                                          "community": COMMUNITY}]}}
        alpha.configure([monitor_cfg("web", VIP, "primary")])
        beta.configure([monitor_cfg("web", VIP, "backup", peer=alpha.host.ip)],
                       alerting=alerting)
        alpha.start()
        wait_until("alpha holds", lambda: alpha.holds(VIP))
        beta.start()
        beta.wait_event("looksalive_up", "web")
        alpha.host.link_down()  # alpha dies: beta takes over
        beta.wait_event("takeover", "web")

        def logged() -> str | None:
            text = log.read_text() if log.exists() else ""
            return text if "took over" in text else None

        text: str = wait_until("snmptt to log the takeover", logged, timeout=30)

    unknown = tmp_path / "unknown.log"
    assert not unknown.exists() or not unknown.read_text().strip(), unknown.read_text()
    lines = text.splitlines()
    started = [ln for ln in lines if "MiniSFT started on node beta" in ln]
    assert started and " Normal " in started[0], text
    takeover = [ln for ln in lines if "took over" in ln]
    assert len(takeover) == 1, text
    # a whole sentence with the address as text, and the kind's severity
    assert re.search(r' Warning "Status Events" \S+ - Node beta took over address '
                     r"192\.0\.2\.10 of monitor web: .+\.$", takeover[0]), takeover[0]
    print(text)  # shown with -s: what an admin reads
    down = [ln for ln in lines if "stop answering" in ln]
    assert down and " Warning " in down[0], text
