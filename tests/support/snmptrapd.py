"""A real net-snmp `snmptrapd` for tests: starts it with MINISFT-MIB loaded, waits until it
listens, and parses the notifications it logs.

    with TrapReceiver(tmp_path, users=[V3User("minisft", "SHA-256", AUTH, "AES", PRIV,
                                              engine_id=sink.engine_id)]) as rx:
        ... send to 127.0.0.1:rx.port ...
        n = rx.wait_for(lambda n: n.name == "minisftTakeover")
        assert n["minisftEventMonitor"] == "web"

For a namespace lab, pass `prefix=["ip", "netns", "exec", "ns1"]` and `host="0.0.0.0"`
(or the namespace's address); readiness is then detected from snmptrapd's own log, not
from the host's /proc/net/udp.

net-snmp 5.9 snmptrapd.conf syntax used here:
    authCommunity log public
    createUser -e 0x<ENGINEID> <user> SHA-256 <authpass> AES <privpass>   # v3 traps
    createUser <user> SHA-256 <authpass> AES <privpass>                   # v3 informs
    authUser log <user>
Auth: MD5 SHA SHA-224 SHA-256 SHA-384 SHA-512; priv: DES AES AES-192 AES-256 (the last
two with the Blumenthal key extension, pysnmp's usmAesBlumenthalCfb*Protocol).
A v3 TRAP needs the user keyed by the SENDER's engine ID (-e); a v3 INFORM by the
receiver's own engine ID (no -e): pysnmp discovers it first.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from minisft.lab.netns import stop_process_group

REPO = Path(__file__).resolve().parents[2]
MIB_DIRS = (REPO / "mibs", REPO / "mibs" / "ietf")
SNMPTRAPD = shutil.which("snmptrapd") or "/usr/sbin/snmptrapd"

BEGIN = "@@MINISFT-NOTIFICATION"
END = "@@MINISFT-END"
# %s version (0 v1, 1 v2c, 3 v3), %u security name / community, %b transport address.
FORMAT = BEGIN + " version=%s security=%u transport=%b\\n%V\\n%v\\n" + END + "\\n"
_HEADER = re.compile(r" version=(\S*) security=(.*?) transport=(.*)$")
_VARBIND = re.compile(r"^(?P<name>\S+) = (?:(?P<type>[A-Za-z0-9-]+): )?(?P<value>.*)$")


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class V3User:
    """One snmptrapd USM user. engine_id: the sender's engine ID (bytes) for traps; None
    for informs (keyed by snmptrapd's own engine ID)."""

    name: str
    auth_protocol: str = "SHA-256"
    auth_key: str | None = None
    priv_protocol: str = "AES"
    priv_key: str | None = None
    engine_id: bytes | None = None

    def conf_line(self) -> str:
        parts = ["createUser"]
        if self.engine_id is not None:
            parts += ["-e", "0x" + self.engine_id.hex()]
        parts.append(self.name)
        if self.auth_key:
            parts += [self.auth_protocol, self.auth_key]
            if self.priv_key:
                parts += [self.priv_protocol, self.priv_key]
        return " ".join(parts)


@dataclass
class Notification:
    """One received notification, as snmptrapd translated it with our MIB loaded."""

    version: str  # "1" (v2c), "3" (v3); "0" for SNMPv1
    security: str  # v3 user name, or the community
    transport: str
    varbinds: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, value)

    @property
    def trap_oid(self) -> str:
        """The translated snmpTrapOID.0, e.g. 'MINISFT-MIB::minisftTakeover'."""
        return self.get("snmpTrapOID") or ""

    @property
    def name(self) -> str:
        """The notification name without module, e.g. 'minisftTakeover'."""
        return self.trap_oid.split("::")[-1]

    def get(self, short: str) -> str | None:
        """The value of the varbind whose object descriptor is `short` (module and
        instance suffix ignored), or None."""
        for name, _type, value in self.varbinds:
            if name.split("::")[-1].split(".")[0] == short:
                return value
        return None

    def __getitem__(self, short: str) -> str:
        value = self.get(short)
        if value is None:
            raise KeyError(short)
        return value

    def names(self) -> list[str]:
        return [n.split("::")[-1].split(".")[0] for n, _t, _v in self.varbinds]


def parse_log(text: str) -> list[Notification]:
    out: list[Notification] = []
    current: Notification | None = None
    for line in text.splitlines():
        if line.startswith(BEGIN):
            h = _HEADER.match(line[len(BEGIN):])
            current = Notification(version=h.group(1), security=h.group(2),
                                   transport=h.group(3)) if h else Notification("", "", "")
        elif line.startswith(END):
            if current is not None:
                out.append(current)
            current = None
        elif current is not None and line.strip():
            m = _VARBIND.match(line)
            if m:
                value = m.group("value").strip()
                if m.group("type") == "STRING" and len(value) >= 2 and value[0] == '"' \
                        and value[-1] == '"':
                    value = value[1:-1]
                current.varbinds.append((m.group("name"), m.group("type") or "", value))
            elif current.varbinds:  # a value that spans lines
                name, typ, value = current.varbinds[-1]
                current.varbinds[-1] = (name, typ, value + "\n" + line)
    return out


class TrapReceiver:
    """snmptrapd in the foreground, logging to a file in `workdir`."""

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 communities: Sequence[str] = ("public",), users: Sequence[V3User] = (),
                 mib_dirs: Sequence[Path] = MIB_DIRS, prefix: Sequence[str] = (),
                 extra_conf: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_udp_port(host if host != "0.0.0.0" else "127.0.0.1")
        self.communities = tuple(communities)
        self.users = tuple(users)
        self.mib_dirs = tuple(mib_dirs)
        self.prefix = tuple(prefix)
        self.extra_conf = tuple(extra_conf)
        self.conf = self.workdir / "snmptrapd.conf"
        self.log = self.workdir / "snmptrapd.log"
        self.persist = self.workdir / "snmptrapd-persist"
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        return [*self.prefix, SNMPTRAPD,
                "-f",  # foreground
                "-Lo",  # log (and the -F notifications) to stdout, redirected to self.log
                "-C", "-c", str(self.conf),  # only our config file
                "-n",  # no reverse DNS for source addresses
                "-M", ":".join(str(d) for d in self.mib_dirs),
                "-m", "SNMPv2-MIB:MINISFT-MIB",
                "-F", FORMAT,
                f"udp:{self.host}:{self.port}"]

    def write_conf(self) -> None:
        lines = [f"authCommunity log {c}" for c in self.communities]
        for user in self.users:
            lines.append(user.conf_line())
        for name in sorted({u.name for u in self.users}):
            lines.append(f"authUser log {name}")
        lines += self.extra_conf
        self.conf.write_text("\n".join(lines) + "\n")
        os.chmod(self.conf, 0o600)

    def start(self, timeout: float = 20.0) -> TrapReceiver:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_conf()
        env = {k: v for k, v in os.environ.items() if k not in ("MIBS", "MIBDIRS")}
        # Keep snmptrapd's persistent state (its engine ID, boots, users) out of /var/lib.
        env["SNMP_PERSISTENT_DIR"] = str(self.persist)
        env["SNMPCONFPATH"] = str(self.workdir)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        # snmptrapd logs "NET-SNMP version ..." once its transports are open.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"snmptrapd exited ({self.proc.returncode}):\n"
                                   f"{self.text()}")
            if "NET-SNMP version" in self.text() and self._listening():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"snmptrapd not ready after {timeout}s:\n{self.text()}")

    def _listening(self) -> bool:
        if self.prefix:  # another namespace: our /proc/net/udp does not show it
            return True
        try:
            table = Path("/proc/net/udp").read_text() + Path("/proc/net/udp6").read_text()
        except OSError:
            return True
        return f":{self.port:04X} " in table

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process_group(proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> TrapReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ output

    def text(self) -> str:
        try:
            return self.log.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def notifications(self) -> list[Notification]:
        return parse_log(self.text())

    def wait_for(self, match: Callable[[Notification], bool] = lambda n: True, *,
                 count: int = 1, timeout: float = 30.0) -> Notification:
        """Wait until `count` notifications match; return the last of them."""
        found = self.wait_all(match, count=count, timeout=timeout)
        return found[-1]

    def wait_all(self, match: Callable[[Notification], bool] = lambda n: True, *,
                 count: int = 1, timeout: float = 30.0) -> list[Notification]:
        deadline = time.monotonic() + timeout
        while True:
            found = [n for n in self.notifications() if match(n)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} matching notification(s) after "
                                   f"{timeout}s; snmptrapd log:\n{self.text()}")
            time.sleep(0.05)


def hex_value(value: str) -> bytes:
    """'C0 00 02 0A ' (a Hex-STRING as snmptrapd prints it) -> bytes."""
    return bytes.fromhex(value.replace(" ", "").replace("\n", ""))
