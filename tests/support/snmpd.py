"""A real net-snmp `snmpd` for tests, serving MINISFT-MIB through our pass_persist helper,
plus thin wrappers around snmpwalk/snmpget/snmptable with the MIB loaded.

    with SnmpAgent(tmp_path, status_file) as agent:
        out = agent.walk("MINISFT-MIB::minisftObjects")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from minisft.lab.netns import stop_process_group
from tests.support.snmptrapd import MIB_DIRS, REPO, free_udp_port


def without_first_run_notice(stderr: str) -> str:
    """A net-snmp tool's stderr without the "Created directory: /var/lib/snmp/..." line
    it prints the first time any net-snmp tool runs on a machine (its persistent store):
    that line says nothing about what the test checks, and which test runs a net-snmp
    tool first depends on the order and on the machine."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("Created directory: "))


SNMPD = shutil.which("snmpd") or "/usr/sbin/snmpd"
PASS_OID = ".1.3.6.1.4.1.32473.1"  # minisftObjects


def mib_args(mib_dirs: Sequence[Path] = MIB_DIRS) -> list[str]:
    return ["-M", "+" + ":".join(str(d) for d in mib_dirs), "-m", "MINISFT-MIB"]


class SnmpAgent:
    """snmpd in the foreground on 127.0.0.1:PORT with a read-only v2c community."""

    def __init__(self, workdir: Path, status_file: Path, *, community: str = "public",
                 host: str = "127.0.0.1", port: int | None = None,
                 prefix: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.status_file = Path(status_file)
        self.community = community
        self.host = host
        self.port = port or free_udp_port(host)
        self.prefix = tuple(prefix)
        self.conf = self.workdir / "snmpd.conf"
        self.log = self.workdir / "snmpd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def pass_command(self) -> str:
        return f"{sys.executable} -m minisft.snmp.passpersist --status {self.status_file}"

    def command(self) -> list[str]:
        return [*self.prefix, SNMPD, "-f", "-Lf", str(self.log), "-C", "-c", str(self.conf),
                "-M", ":".join(str(d) for d in MIB_DIRS), "-m", "SNMPv2-MIB:MINISFT-MIB",
                f"udp:{self.host}:{self.port}"]

    def start(self, timeout: float = 20.0) -> SnmpAgent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"rocommunity {self.community} 127.0.0.1\n"
                             f"pass_persist {PASS_OID} {self.pass_command()}\n")
        env = {k: v for k, v in os.environ.items() if k not in ("MIBS", "MIBDIRS")}
        env["SNMP_PERSISTENT_DIR"] = str(self.workdir / "snmpd-persist")
        env["SNMPCONFPATH"] = str(self.workdir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                          env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpd exited ({self.proc.returncode}):\n{self.text()}")
            if "NET-SNMP version" in self.text():
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"snmpd not ready after {timeout}s:\n{self.text()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process_group(proc)  # the group: snmpd and its pass_persist child

    def __enter__(self) -> SnmpAgent:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ clients

    def _run(self, tool: str, options: Sequence[str], oids: Sequence[str],
             timeout: float = 60.0) -> str:
        cmd = [*self.prefix, tool, "-v2c", "-c", self.community, "-t", "5", "-r", "2",
               *mib_args(), *options, f"{self.host}:{self.port}", *oids]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def walk(self, oid: str = "MINISFT-MIB::minisftObjects", *options: str) -> str:
        return self._run("snmpwalk", options, [oid])

    def get(self, *oids: str) -> str:
        return self._run("snmpget", (), oids)

    def table(self, oid: str = "MINISFT-MIB::minisftMonitorTable", *options: str) -> str:
        return self._run("snmptable", options, [oid])
