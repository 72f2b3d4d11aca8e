"""contrib/minisft.service: valid for systemd, and only the capabilities a failover needs."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "minisft.service"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_only_net_admin_and_net_raw() -> None:
    service = _unit()["Service"]
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(service["AmbientCapabilities"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert service["NoNewPrivileges"] == "yes"
    assert service["Type"] == "notify" and service["WatchdogSec"]
    assert "AF_PACKET" in service["RestrictAddressFamilies"]  # ARP/NDP probes need it


def test_systemd_accepts_the_unit_and_rates_it_ok(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd)"
    # the binaries are not installed system-wide here: point Exec lines at /bin/true
    unit = tmp_path / "minisft.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/minisft", "/bin/true"))
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run([analyze, "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for minisft.service: ([\d.]+)", security.stdout)
    assert match, security.stdout[-500:]
    assert float(match.group(1)) <= 3.5, security.stdout[-2000:]
