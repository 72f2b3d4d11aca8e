"""The Debian package, as an admin installs and uses it (scripts/build-deb, dpkg): the tools
run as the Debian users that run them, the demo runs from the package, lintian accepts it,
and purging it leaves the host as it was."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.package import (
    REPO,
    InstalledPackage,
    ensure_system_user,
    file_list,
    owned_by_another_package,
)
from tests.support.snmpd import without_first_run_notice

pytestmark = [
    pytest.mark.package,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a Debian package (root)"),
]

# A login-less service user's environment: nothing from our .venv on PATH.
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG": "C.UTF-8"}


def run_as(user: str, *argv: str | Path, stdin: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    ensure_system_user(user)
    return subprocess.run(["runuser", "-u", user, "--", *map(str, argv)], input=stdin,
                          capture_output=True, text=True, env=CLEAN_ENV, timeout=timeout,
                          cwd="/", check=False)


def test_check_minisft_runs_as_nagios(installed_minisft: InstalledPackage) -> None:
    """As NRPE or the Icinga agent starts it: the plugin path, user nagios."""
    proc = run_as("nagios", installed_minisft.nagios_plugin, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: check_minisft")
    # No daemon running: a Nagios UNKNOWN that says why, not "Permission denied".
    proc = run_as("nagios", installed_minisft.nagios_plugin)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.startswith("MINISFT UNKNOWN - status file /var/lib/minisft/status.json")


def test_snmp_pass_helper_answers_as_debian_snmp(installed_minisft: InstalledPackage) -> None:
    """As Debian's snmpd (-u Debian-snmp) runs a pass_persist program: PING, then a get."""
    proc = run_as("Debian-snmp", installed_minisft.snmp_pass,
                  stdin="PING\nget\n.1.3.6.1.4.1.32473.1.1.1.0\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "PONG"
    # No daemon: the helper says it has nothing for the OID instead of failing.
    assert lines[1] == "NONE"
    assert "Traceback" not in proc.stderr


def test_trap_handler_logs_as_debian_snmp(installed_minisft: InstalledPackage) -> None:
    """As Debian's snmptrapd (User=Debian-snmp) runs a traphandle: into /var/log/minisft."""
    log = installed_minisft.log_dir / "traps.log"
    trap = ("node-b.example\nUDP: [192.0.2.2]:40000->[192.0.2.100]:162\n"
            ".1.3.6.1.6.3.1.1.4.1.0 .1.3.6.1.4.1.32473.2.0.1\n"
            ".1.3.6.1.4.1.32473.2.1.3 2\n")
    try:
        proc = run_as("Debian-snmp", installed_minisft.traphandler, "--no-syslog", "--log",
                      log, stdin=trap)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(log.read_text().splitlines()[-1])
        assert record["host"] == "node-b.example"
        assert record["trap_oid"] == ".1.3.6.1.4.1.32473.2.0.1"
    finally:
        log.unlink(missing_ok=True)


def test_trap_log_dir_goes_to_snmptrapd_installed_later(
        installed_minisft: InstalledPackage) -> None:
    """snmptrapd (and its user) installed after minisft: the dpkg trigger on
    /usr/sbin/snmptrapd hands the log directory over, as installing snmptrapd would."""
    log_dir = installed_minisft.log_dir
    os.chown(log_dir, 0, -1)  # as postinst leaves it when Debian-snmp does not exist yet
    subprocess.run(["dpkg-trigger", "--by-package=snmptrapd", "--no-await",
                    "/usr/sbin/snmptrapd"], check=True)
    subprocess.run(["dpkg", "--triggers-only", "--pending"], check=True, capture_output=True)
    assert log_dir.owner() == "Debian-snmp"
    assert oct(log_dir.stat().st_mode & 0o7777) == "0o2750"


def test_example_config_passes_check_config(installed_minisft: InstalledPackage) -> None:
    proc = subprocess.run([installed_minisft.minisft, "check-config", "--config",
                           installed_minisft.config], capture_output=True, text=True,
                          env=CLEAN_ENV, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "/etc/minisft/minisft.yaml: OK" in proc.stdout


def test_unit_is_enabled_and_documented(installed_minisft: InstalledPackage) -> None:
    assert installed_minisft.unit_enabled_link.is_symlink()
    assert os.readlink(installed_minisft.unit_enabled_link) == str(installed_minisft.unit)
    unit = installed_minisft.unit.read_text()
    assert "ExecStart=/usr/bin/minisft run --config /etc/minisft/minisft.yaml" in unit
    for page in installed_minisft.man_pages:
        proc = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                              env={**CLEAN_ENV, "MANWIDTH": "100"}, check=False)
        assert proc.returncode == 0, proc.stderr
        program = page.name.removesuffix(".8.gz")
        assert re.search(rf"SYNOPSIS\n +{program} +\[-h\]", proc.stdout), proc.stdout


def test_bash_completion_completes_commands(installed_minisft: InstalledPackage) -> None:
    script = (f"source {installed_minisft.bash_completion}; COMP_WORDS=(minisft c); "
              "COMP_CWORD=1; _minisft; echo ${COMPREPLY[@]}; "
              "COMP_WORDS=(minisft events --fo); COMP_CWORD=2; _minisft; echo ${COMPREPLY[@]}")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env=CLEAN_ENV).stdout.splitlines()
    assert out == ["check-config claim", "--follow"]


def test_mib_is_installed_for_net_snmp_and_in_the_wheel(
        installed_minisft: InstalledPackage) -> None:
    """The MIB where net-snmp looks (/usr/share/snmp/mibs), and in the Python package that
    pip installed from our wheel (what `minisft demo` and pip users load)."""
    source = (REPO / "mibs" / "MINISFT-MIB.txt").read_bytes()
    assert installed_minisft.mib.read_bytes() == source
    in_wheel = list(installed_minisft.prefix.glob(
        "lib/python3*/site-packages/minisft/snmp/asn1/MINISFT-MIB.txt"))
    assert [p.read_bytes() for p in in_wheel] == [source]


def test_net_snmp_loads_the_installed_mib_with_debians_config(
        installed_minisft: InstalledPackage) -> None:
    """With Debian's /etc/snmp/snmp.conf (`mibs :`, no IETF modules in the default path)
    the MIB loads as docs/packaging.md says: the modules it imports are in the package."""
    proc = run_as("Debian-snmp", "snmptranslate", "-M", f"+{installed_minisft.ietf_mib_dir}",
                  "-m", "MINISFT-MIB", "-On", "MINISFT-MIB::minisftTakeover")
    assert proc.returncode == 0 and without_first_run_notice(proc.stderr) == "", proc.stderr
    assert proc.stdout.strip().startswith(".1.3.6.1.4.1.32473.0.")


def test_installed_demo_runs_all_acts_with_the_mib(installed_minisft: InstalledPackage) -> None:
    proc = subprocess.run([installed_minisft.minisft, "demo", "--fast"], capture_output=True,
                          text=True, env={**CLEAN_ENV, "TERM": "dumb"}, timeout=300,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for act in ("Act 1:", "Act 2:", "Act 3:", "Act 4:", "Done."):
        assert act in out, out
    assert "the MIB files are not available" not in out
    # snmptrapd translated the traps with MINISFT-MIB from the package: names, not OIDs.
    assert "SNMP trap received by snmptrapd: minisftTakeover" in out, out


def test_address_hook_examples_are_installed_runnable(
        installed_minisft: InstalledPackage) -> None:
    """The paths README and the scripts' own comments give for hooks.up/down exist and
    run (the config loader refuses a hook that is not executable)."""
    hooks = Path("/usr/share/minisft/hooks")
    for name in ("restart-service", "aws-move-address"):
        assert os.access(hooks / name, os.X_OK), f"{hooks / name} missing or not executable"
    proc = subprocess.run([hooks / "restart-service"], capture_output=True, text=True,
                          env=CLEAN_ENV, check=False)
    assert (proc.returncode, proc.stderr) == (2, "usage: restart-service UNIT\n")


def test_lintian_reports_no_errors(installed_minisft: InstalledPackage) -> None:
    proc = subprocess.run(["lintian", "--no-tag-display-limit", str(installed_minisft.deb)],
                          capture_output=True, text=True, timeout=300, check=False)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.package_purge
def test_remove_keeps_config_and_purge_leaves_nothing(
        installed_minisft: InstalledPackage) -> None:
    # What running it leaves behind: a journal in state_dir, a trap log.
    state = Path("/var/lib/minisft")
    state.mkdir(exist_ok=True)
    (state / "events.jsonl").write_text("{}\n")
    (installed_minisft.log_dir / "traps.log").write_text("{}\n")

    installed_minisft.remove()
    assert not installed_minisft.prefix.exists()
    assert not installed_minisft.minisft.exists()
    assert installed_minisft.config.is_file()  # a conffile stays until purge

    installed_minisft.purge()
    after = file_list()
    new = set(after - installed_minisft.files_before)
    new -= owned_by_another_package(new)
    assert sorted(new) == []
    assert not installed_minisft.config.parent.exists()
    assert not installed_minisft.log_dir.exists()
