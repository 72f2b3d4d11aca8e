"""The shipped Icinga 2 files in a running icinga2 (as nagios, as Debian runs it) on a
MiniSFT node: it executes the installed check_minisft against a real daemon, takes the
perfdata without "Ignoring invalid perfdata", and judges the services OK."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, wait_until
from tests.integration.test_alerting_defs import ICINGA_PLUGIN_DIRS
from tests.support.package import InstalledPackage, ensure_system_user

pytestmark = [
    pytest.mark.package,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a Debian package (root)"),
]

ROOT = Path(__file__).resolve().parents[2]
ICINGA = ROOT / "alerting" / "icinga2"

SERVICES = ("minisft-web", "minisft-pool-front", "minisft-daemon")

MAIN = ICINGA_PLUGIN_DIRS + """\
const NodeName = "lb-alpha"
const ZoneName = "lb-alpha"
include <itl>
include <plugins>
include "{command}"
include "{rules}"
object Host "lb-alpha" {{
  check_command = "dummy"
  vars.minisft_monitors = [ "web" ]
  vars.minisft_pools = [ "front" ]
  vars.minisft_config = "{config}"
}}
object CheckerComponent "checker" {{ }}
object ExternalCommandListener "command" {{ command_path = "{d}/run/icinga2.cmd" }}
object PerfdataWriter "perfdata" {{
  host_perfdata_path = "{d}/spool/host-perfdata"
  service_perfdata_path = "{d}/spool/service-perfdata"
  host_temp_path = "{d}/spool/host-tmp"
  service_temp_path = "{d}/spool/service-tmp"
  rotation_interval = 1s
}}
object FileLogger "log" {{ path = "{d}/log/icinga2.log"; severity = "information" }}
"""


def test_icinga2_as_nagios_runs_check_minisft(installed_minisft: InstalledPackage,
                                              service_tmp: Path,
                                              node_with_web_and_pool: Cluster) -> None:
    ensure_system_user("nagios")
    d = service_tmp / "icinga"
    for sub in ("data", "log", "cache", "spool", "run"):
        (d / sub).mkdir(parents=True)
        shutil.chown(d / sub, "nagios", "nagios")
    alpha = node_with_web_and_pool.nodes["alpha"]
    main = d / "icinga2.conf"
    main.write_text(MAIN.format(command=ICINGA / "minisft-command.conf",
                                rules=ICINGA / "minisft.conf",
                                config=alpha.config_path, d=d))
    icinga = alpha.host.popen(
        ["icinga2", "daemon", "-c", str(main), f"-DDataDir={d}/data",
         f"-DLogDir={d}/log", f"-DCacheDir={d}/cache", f"-DSpoolDir={d}/spool",
         f"-DInitRunDir={d}/run", "-DRunAsUser=nagios", "-DRunAsGroup=nagios"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pipe = d / "run" / "icinga2.cmd"
    wait_until("icinga2's command pipe", pipe.exists, timeout=30)

    def perfdata() -> str | None:
        # check now rather than at a random point of the 30 s interval
        now = int(time.time())
        for service in SERVICES:  # one command per write
            with open(pipe, "w") as fh:
                fh.write(f"[{now}] SCHEDULE_FORCED_SVC_CHECK;lb-alpha;{service};{now}\n")
        text = "".join(p.read_text() for p in (d / "spool").glob("service-perfdata*"))
        return text if all(f"SERVICEDESC::{s}\t" in text for s in SERVICES) else None

    try:
        text: str = wait_until("icinga2 to run the three checks", perfdata, timeout=40,
                               step=1)
    except AssertionError:
        log_file = d / "log" / "icinga2.log"
        print(log_file.read_text() if log_file.exists() else "no icinga2 log")
        print(sorted(str(p) for p in d.rglob("*")))
        raise
    # the effective uid of every icinga2 process of this config (umbrella, daemon)
    uids = {line.split()[2] for pid in os.listdir("/proc") if pid.isdigit()
            and str(main) in _cmdline(pid)
            for line in _status(pid) if line.startswith("Uid:")}
    assert icinga.poll() is None
    log = (d / "log" / "icinga2.log").read_text()
    assert "Ignoring invalid perfdata" not in log, log
    web = next(line for line in text.splitlines() if "SERVICEDESC::minisft-web" in line)
    assert "SERVICESTATE::OK" in web, web
    assert "web_takeovers=0c" in web and "web_rtt" not in web, web  # held here: no RTT
    daemon = next(line for line in text.splitlines() if "SERVICEDESC::minisft-daemon" in line)
    assert "SERVICESTATE::OK" in daemon and "status_age=" in daemon, daemon
    assert "web_" not in daemon and "pool_" not in daemon, daemon
    # the pool service (vars.minisft_pools) judges the pool, and only the pool
    pool = next(line for line in text.splitlines()
                if "SERVICEDESC::minisft-pool-front" in line)
    assert "SERVICESTATE::OK" in pool, pool
    assert "pool_front_held=2" in pool and "pool_front_off_preferred=0" in pool, pool
    assert "web_" not in pool, pool
    nagios = subprocess.run(["id", "-u", "nagios"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert uids == {nagios}, uids  # icinga2 runs as nagios, so does the plugin it starts


def _status(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
