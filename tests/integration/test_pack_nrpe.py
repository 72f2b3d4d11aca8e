"""alerting/nrpe/minisft.cfg with Debian's NRPE daemon (running as nagios) on a MiniSFT
node and Debian's check_nrpe (as nagios) on the monitoring server, in two namespaces,
calling the installed check_minisft against a real running daemon's state."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, wait_until
from tests.support.package import InstalledPackage, ensure_system_user

pytestmark = [
    pytest.mark.package,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a Debian package (root)"),
]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "alerting" / "nrpe" / "minisft.cfg"
NRPE = "/usr/sbin/nrpe"
CHECK_NRPE = "/usr/lib/nagios/plugins/check_nrpe"



def nrpe_config(tmp: Path, listen: str, client: str) -> Path:
    """Debian's /etc/nagios/nrpe.cfg as an admin adapts it: the server's address in
    allowed_hosts, and the shipped file in the include directory."""
    nrpe_d = tmp / "nrpe.d"
    nrpe_d.mkdir()
    shutil.copy(SHIPPED, nrpe_d / "minisft.cfg")
    text = Path("/etc/nagios/nrpe.cfg").read_text()
    for key, value in (("allowed_hosts", client), ("server_address", listen),
                       ("pid_file", str(tmp / "nrpe.pid")), ("include_dir", str(nrpe_d)),
                       ("include", str(tmp / "nrpe_local.cfg"))):
        text, n = re.subn(rf"^#?{key}=.*$", f"{key}={value}", text, count=1, flags=re.M)
        assert n == 1, key
    (tmp / "nrpe_local.cfg").write_text("")
    cfg = tmp / "nrpe.cfg"
    cfg.write_text(text)
    return cfg


def test_nrpe_commands_judge_the_running_daemon(installed_minisft: InstalledPackage,
                                                service_tmp: Path,
                                                node_with_web_and_pool: Cluster) -> None:
    ensure_system_user("nagios")
    assert installed_minisft.nagios_plugin.exists()
    c = node_with_web_and_pool
    alpha = c.nodes["alpha"]
    cfg = nrpe_config(service_tmp, alpha.host.ip, c.client.ip)
    # check_minisft reads the default /etc/minisft/minisft.yaml, as the shipped file
    # says: in NRPE's own mount namespace that is this daemon's config
    nrpe = alpha.host.popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$0" /etc/minisft && exec "$@"', str(alpha.root),
         NRPE, "-c", str(cfg), "-f"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def check_nrpe(command: str) -> subprocess.CompletedProcess[str]:
        return c.client.run("runuser", "-u", "nagios", "--", CHECK_NRPE, "-H",
                            alpha.host.ip, "-t", "20", "-c", command, check=False)

    def nrpe_answers() -> subprocess.CompletedProcess[str] | None:
        assert nrpe.poll() is None, nrpe.communicate()[0]
        r = check_nrpe("check_minisft_daemon")
        return r if "Connection refused" not in r.stdout + r.stderr else None

    daemon = wait_until("NRPE to answer", nrpe_answers, timeout=20)
    assert daemon.returncode == 0, daemon.stdout + daemon.stderr
    assert daemon.stdout.startswith("MINISFT OK - alpha: daemon running"), daemon.stdout
    # NRPE switched to nagios (its effective uid) before running the plugin
    status = Path(f"/proc/{nrpe.pid}/status").read_text()
    uid = status.split("\nUid:\t", 1)[1].split()[1]
    assert int(uid) == int(subprocess.run(["id", "-u", "nagios"], capture_output=True,
                                          text=True, check=True).stdout)

    monitors = check_nrpe("check_minisft_monitors")
    assert monitors.returncode == 0, monitors.stdout
    assert "web" in monitors.stdout and "'web_takeovers'=" in monitors.stdout

    # the pools count in the all-monitors command, and the per-pool one names its pool
    assert "pool front" in monitors.stdout and "'pool_front_held'=2" in monitors.stdout, \
        monitors.stdout
    pool = check_nrpe("check_minisft_pool_front")
    assert pool.returncode == 0, pool.stdout
    assert pool.stdout.startswith(
        "MINISFT OK - alpha: pool front: 2 addresses on their preferred members"), pool.stdout
    assert "web" not in pool.stdout.split("|")[0], pool.stdout

    web = check_nrpe("check_minisft_web")
    assert web.returncode == 0, web.stdout
    assert web.stdout.startswith("MINISFT OK - alpha: 1 monitor as configured")

    # what the admin does shows in the next check: a paused monitor is a WARNING
    alpha.cli("pause", "web", check=True)
    paused = wait_until("the paused monitor in the NRPE check", lambda: (
        r if (r := check_nrpe("check_minisft_web")).returncode == 1 else None))
    assert paused.stdout.startswith("MINISFT WARNING"), paused.stdout
    assert "paused" in paused.stdout

    # what Debian's NRPE does with arguments: refused, which is why every command is fixed
    with_args = c.client.run("runuser", "-u", "nagios", "--", CHECK_NRPE, "-H",
                             alpha.host.ip, "-c", "check_minisft_web", "-a", "x",
                             check=False)
    assert with_args.returncode != 0
