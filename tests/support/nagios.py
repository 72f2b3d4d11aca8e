"""Debian's nagios4 as a receiver: a throw-away config tree, run as the nagios user.

The tree lives in a fresh directory under /tmp owned by nagios (pytest's tmp_path is
private to root). Objects: the hosts, contact and time period of the alerting tests, the
shipped minisft.cfg without its example services, and the shipped minisft-passive.cfg.
status.dat is written every second (status_update_interval=1).
"""

from __future__ import annotations

import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from minisft.lab.netns import Host
from tests.integration.test_alerting_defs import ALERTING, NAGIOS_OBJECTS

NAGIOS4 = "/usr/sbin/nagios4"
_BLOCK = re.compile(r"define\s+(\w+)\s*\{(.*?)\n\}", re.DOTALL)


def shipped_objects_without_example_services() -> str:
    """minisft.cfg's commands, templates and contact group: the passive file replaces its
    registered (example) services, as its install note says."""
    text = (ALERTING / "nagios4" / "minisft.cfg").read_text()
    kept = []
    for m in _BLOCK.finditer(text):
        kind, body = m.group(1), m.group(2)
        if kind == "service" and not re.search(r"^\s*register\s+0", body, re.MULTILINE):
            continue
        kept.append(m.group(0))
    return "\n".join(kept) + "\n"


class NagiosServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="minisft-nagios-"))
        self.command_file = self.dir / "rw" / "nagios.cmd"
        self.status_file = self.dir / "status.dat"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NagiosServer:
        d = self.dir
        for sub in ("rw", "cr"):
            (d / sub).mkdir()
        (d / "objects.cfg").write_text(NAGIOS_OBJECTS)
        (d / "minisft.cfg").write_text(shipped_objects_without_example_services())
        shutil.copy(ALERTING / "nagios4" / "minisft-passive.cfg", d / "minisft-passive.cfg")
        (d / "resource.cfg").write_text("$USER1$=/usr/lib/nagios/plugins\n")
        (d / "nagios.cfg").write_text("\n".join([
            f"log_file={d}/nagios.log", f"cfg_file={d}/objects.cfg",
            f"cfg_file={d}/minisft.cfg", f"cfg_file={d}/minisft-passive.cfg",
            f"resource_file={d}/resource.cfg", f"object_cache_file={d}/objects.cache",
            f"precached_object_file={d}/objects.precache", f"status_file={d}/status.dat",
            f"temp_file={d}/nagios.tmp", f"temp_path={d}", f"lock_file={d}/nagios.lock",
            f"check_result_path={d}/cr", f"state_retention_file={d}/retention.dat",
            f"command_file={self.command_file}", "check_external_commands=1",
            f"query_socket={d}/rw/nagios.qh",
            "status_update_interval=1", "nagios_user=nagios", "nagios_group=nagios",
            "illegal_macro_output_chars=`~$&|'\"<>", "",
        ]))
        nagios = pwd.getpwnam("nagios")
        d.chmod(0o755)
        for path in [d, *d.rglob("*")]:
            shutil.chown(path, nagios.pw_uid, nagios.pw_gid)
        return self.start()

    def start(self) -> NagiosServer:
        """Start (or start again after stop(): same config, same command file)."""
        d = self.dir
        self.status_file.unlink(missing_ok=True)
        self.log = open(d / "stdout.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["runuser", "-u", "nagios", "--", NAGIOS4,
                                      str(d / "nagios.cfg")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (self.command_file.exists() and self.status_file.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("nagios4 did not start:\n" + self.output())
            time.sleep(0.05)
        return self

    def output(self) -> str:
        parts = []
        for name in ("stdout.log", "nagios.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def services(self) -> dict[tuple[str, str], dict[str, str]]:
        """(host, service) -> the servicestatus fields of status.dat."""
        try:
            text = self.status_file.read_text(errors="replace")
        except FileNotFoundError:  # between Nagios' rename and the next write
            return {}
        out: dict[tuple[str, str], dict[str, str]] = {}
        for block in re.finditer(r"servicestatus \{\n(.*?)\n\t\}", text, re.DOTALL):
            fields = dict(line.strip().split("=", 1) for line in block.group(1).splitlines()
                          if "=" in line)
            out[(fields["host_name"], fields["service_description"])] = fields
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.log.close()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


NSCA = "/usr/sbin/nsca"
NSCA_PASSWORD = "nsca-S3cret-pw"
NSCA_ENCRYPTION = 14  # Rijndael-128, mcrypt's (the Debian build has it)


class NscaServer:
    """Debian's nsca daemon in a lab namespace, as nagios, writing into `nagios`'s
    command pipe: the remote-Nagios path send_nsca feeds."""

    def __init__(self, nagios: NagiosServer, host: Host, ip: str, port: int = 5667) -> None:
        self.nagios = nagios
        self.host = host
        self.ip = ip
        self.port = port
        self.config = nagios.dir / "nsca.cfg"
        self.proc: subprocess.Popen[bytes] | None = None

    def client_config(self, path: Path) -> Path:
        """send_nsca.cfg for the daemon's side: mode 0600, it holds the password."""
        path.write_text(f"password={NSCA_PASSWORD}\nencryption_method={NSCA_ENCRYPTION}\n")
        path.chmod(0o600)
        return path

    def __enter__(self) -> NscaServer:
        d = self.nagios.dir
        self.config.write_text("\n".join([
            f"pid_file={d}/nsca.pid", f"server_address={self.ip}", f"server_port={self.port}",
            "nsca_user=nagios", "nsca_group=nagios", "debug=1",
            f"command_file={self.nagios.command_file}", f"alternate_dump_file={d}/nsca.dump",
            "aggregate_writes=0", "append_to_file=0", "max_packet_age=30",
            f"password={NSCA_PASSWORD}", f"decryption_method={NSCA_ENCRYPTION}", ""]))
        self.config.chmod(0o600)
        shutil.chown(self.config, "nagios", "nagios")
        return self.start()

    def start(self) -> NscaServer:
        self.proc = self.host.popen(["runuser", "-u", "nagios", "--", NSCA, "-f", "-c",
                                     str(self.config), "--single"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.host.run("ss", "-Hltn", f"sport = :{self.port}", check=False
                            ).stdout.strip() == "":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("nsca did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.host.stop_process(self.proc)
            self.proc = None

    def __exit__(self, *exc: Any) -> None:
        self.stop()
