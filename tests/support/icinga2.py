"""Debian's icinga2 as a receiver: the API feature on a throw-away tree, run as nagios
(Debian's icinga2 user) inside a lab namespace.

TLS as `icinga2 api setup` lays it out (DataDir/certs/<NodeName>.crt|.key and ca.crt), made
with openssl so nothing under /var/lib/icinga2 is touched; the server certificate names
the listening address. Objects: the shipped minisft-command.conf, minisft.conf and
minisft-passive.conf, the host lb-beta with vars.minisft_pushed_monitors, and two
ApiUsers: `minisft` (only actions/process-check-result, what the daemon gets) and
`observer` (queries, for the test). No CheckerComponent: only pushed results change a state here.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from minisft.lab.netns import Host
from tests.integration.test_alerting_defs import ALERTING

ICINGA2 = "/usr/sbin/icinga2"
PORT = 5665
NODE = "icinga-lab"
PUSH_USER, PUSH_PASSWORD = "minisft", "icinga-push-S3cret"
OBSERVER, OBSERVER_PASSWORD = "observer", "observer-pw"

MAIN = """\
const PluginDir = "/usr/lib/nagios/plugins"
const ManubulonPluginDir = "/usr/lib/nagios/plugins"
const PluginContribDir = "/usr/lib/nagios/plugins"
const NodeName = "{node}"
const ZoneName = "{node}"
include <itl>
include <plugins>
object Endpoint NodeName {{ }}
object Zone ZoneName {{ endpoints = [ NodeName ] }}
object ApiListener "api" {{ bind_host = "{ip}"; bind_port = {port} }}
object ApiUser "{push_user}" {{
  password = "{push_password}"
  permissions = [ "actions/process-check-result" ]
}}
object ApiUser "{observer}" {{
  password = "{observer_password}"
  permissions = [ "objects/query/*" ]
}}
include "minisft-command.conf"
include "minisft.conf"
include "minisft-passive.conf"
object Host "lb-beta" {{
  check_command = "dummy"
  vars.minisft_pushed_monitors = [ "web" ]
}}
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _group_alive(pgid: int) -> bool:
    """Is any live (not zombie) process in process group `pgid`?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class IcingaServer:
    def __init__(self, host: Host, ip: str) -> None:
        self.host = host
        self.ip = ip
        self.url = f"https://{ip}:{PORT}"
        self.dir = Path(tempfile.mkdtemp(prefix="minisft-icinga2-"))
        self.ca_file = self.dir / "data" / "certs" / "ca.crt"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> IcingaServer:
        d = self.dir
        for sub in ("data/certs", "log", "cache", "spool", "run"):
            (d / sub).mkdir(parents=True)
        certs = d / "data" / "certs"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                 "-out", str(self.ca_file), "-days", "2", "-subj", "/CN=minisft-lab-ca",
                 cwd=d)
        (d / "san.ext").write_text(f"subjectAltName=IP:{self.ip},DNS:{NODE}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(certs / f"{NODE}.key"),
                 "-out", "server.csr", "-subj", f"/CN={NODE}", cwd=d)
        _openssl("x509", "-req", "-in", "server.csr", "-CA", str(self.ca_file), "-CAkey",
                 "ca.key", "-CAcreateserial", "-out", str(certs / f"{NODE}.crt"), "-days",
                 "2", "-extfile", "san.ext", cwd=d)
        (d / "ca.key").unlink()
        for shipped in ("minisft-command.conf", "minisft.conf", "minisft-passive.conf"):
            shutil.copy(ALERTING / "icinga2" / shipped, d / shipped)
        (d / "icinga2.conf").write_text(MAIN.format(
            node=NODE, ip=self.ip, port=PORT, push_user=PUSH_USER,
            push_password=PUSH_PASSWORD, observer=OBSERVER,
            observer_password=OBSERVER_PASSWORD))
        nagios = pwd.getpwnam("nagios")
        d.chmod(0o755)
        for path in [d, *d.rglob("*")]:
            shutil.chown(path, nagios.pw_uid, nagios.pw_gid)
        return self.start()

    def start(self) -> IcingaServer:
        d = self.dir
        self.log = open(d / "icinga2.out", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = self.host.popen(
            ["runuser", "-u", "nagios", "--", ICINGA2, "daemon", "-c", str(d / "icinga2.conf"),
             f"-DDataDir={d}/data", f"-DLogDir={d}/log", f"-DCacheDir={d}/cache",
             f"-DSpoolDir={d}/spool", f"-DInitRunDir={d}/run", "-DRunAsUser=nagios",
             "-DRunAsGroup=nagios"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while self.service("lb-beta!minisft-web") is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("icinga2 did not start:\n" + self.output())
            time.sleep(0.1)
        return self

    def output(self) -> str:
        path = self.dir / "icinga2.out"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def service(self, name: str) -> dict[str, Any] | None:
        """The service's attributes through the API (as the observer), None if the API
        does not answer (yet)."""
        proc = self.host.run(
            "curl", "-s", "--max-time", "5", "--cacert", str(self.ca_file), "-u",
            f"{OBSERVER}:{OBSERVER_PASSWORD}", "-H", "Accept: application/json",
            f"{self.url}/v1/objects/services/{name}", check=False, timeout=10)
        try:
            attrs: dict[str, Any] = json.loads(proc.stdout)["results"][0]["attrs"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        return attrs

    def stop(self) -> None:
        if self.proc is not None:
            group = self.proc.pid  # popen starts a new session: its pid is the group's
            self.host.stop_process(self.proc, timeout=20)
            # stop_process waits for runuser only; icinga2's processes (same group) can
            # outlive it and go on serving the API, so wait for the group, then kill it
            deadline = time.monotonic() + 10
            while _group_alive(group):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                    deadline = time.monotonic() + 10
                time.sleep(0.05)
            self.proc = None
            self.log.close()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
