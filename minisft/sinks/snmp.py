"""Events as SNMP notifications (MINISFT-MIB) to ONE target: v2c or v3, trap or inform.

The runtime builds one `SnmpSink` per configured target and does queuing, spooling and
retries; this class only turns one `Event` into one notification and sends it.

* Each event kind is one NOTIFICATION-TYPE of MINISFT-MIB; the varbinds are the
  notification's OBJECTS, in order, read from the compiled MIB that ships in
  minisft/snmp/mibs (no MIB compiler at run time).
* One SnmpEngine per sink, never shared: pysnmp configures notification targets on the
  engine by tag, so an engine shared by two targets (or two credentials for one
  destination) sends each notification to all of them (even cleartext copies of a v3
  trap).
* The SNMPv3 engine ID is generated once and persisted (STATE_DIR/snmp-engine-id):
  receivers key v3 trap users by the sender's engine ID and silently drop traps from an
  engine ID they do not know. snmpEngineBoots is persisted as well and increases on every
  start: a receiver that saw our engine time at T drops v3 traps whose time is more than
  150 s below T with the same boots (RFC 3414 timeliness), which is what a restart with a
  constant boots value looks like.
* An inform that is not acknowledged raises DeliveryError (the runtime retries it). A
  trap has no acknowledgement: it is delivered when it is sent.
* Secrets (community, keys) never appear in logs, exception texts or `repr`.
* pysnmp is imported in `start()`, so a daemon without SNMP targets never loads it, and
  in a worker thread, so its ~100 ms of imports never stall the event loop. cryptography
  is loaded only for a target with privacy (v3 authPriv), pysmi never.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import importlib
import ipaddress
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minisft.config.model import SnmpTargetConfig
from minisft.core.events import Event, EventKind, Severity
from minisft.sinks.base import DeliveryError, EventFilter, Sink
from minisft.snmp import oids

log = logging.getLogger("minisft.sinks.snmp")

MIB_DIR = Path(__file__).resolve().parent.parent / "snmp" / "mibs"
MIB_MODULE = "MINISFT-MIB"
ENGINE_ID_FILE = "snmp-engine-id"
ENGINE_BOOTS_FILE = "snmp-engine-boots"
SNMP_TRAP_OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)  # SNMPv2-MIB::snmpTrapOID.0
MAX_TEXT = 255  # SnmpAdminString (SIZE (0..255))
MAX_BOOTS = 2147483646  # RFC 3414: 2147483647 means "latched", never send it

# pysnmp protocol constant names (looked up in start(), after the lazy import).
AUTH_PROTOCOLS = {
    "md5": "usmHMACMD5AuthProtocol",
    "sha": "usmHMACSHAAuthProtocol",
    "sha224": "usmHMAC128SHA224AuthProtocol",
    "sha256": "usmHMAC192SHA256AuthProtocol",
    "sha384": "usmHMAC256SHA384AuthProtocol",
    "sha512": "usmHMAC384SHA512AuthProtocol",
}
# aes192/aes256 use the key extension of net-snmp's AES-192/AES-256 (the Blumenthal
# draft); aes192c/aes256c that of Cisco and net-snmp's AES-192-C/AES-256-C (Reeder).
PRIV_PROTOCOLS = {
    "des": "usmDESPrivProtocol",
    "3des": "usm3DESEDEPrivProtocol",
    "aes": "usmAesCfb128Protocol",
    "aes128": "usmAesCfb128Protocol",
    "aes192": "usmAesBlumenthalCfb192Protocol",
    "aes256": "usmAesBlumenthalCfb256Protocol",
    "aes192c": "usmAesCfb192Protocol",
    "aes256c": "usmAesCfb256Protocol",
}

# pysnmp's privacy (DES, 3DES, AES) modules: each imports cryptography if it can and
# otherwise marks itself unusable (PysnmpCryptoError = True) for good.
PRIV_MODULES = ("pysnmp.proto.secmod.rfc3826.priv.aes", "pysnmp.proto.secmod.rfc3414.priv.des",
                "pysnmp.proto.secmod.eso.priv.des3")


@contextlib.contextmanager
def _not_installed(*packages: str) -> Iterator[None]:
    """Import as if `packages` were not installed, for the time of the import only.

    pysnmp imports what it can use whenever it is installed: pysmi, the MIB compiler with
    jinja2 and lark (~13 MiB of RSS), which the daemon never needs (our MIB ships
    compiled), and cryptography (~6.5 MiB), which only SNMPv3 privacy needs. A None in
    sys.modules makes such an import fail. A package already imported is left alone, so a
    process that uses it itself (the MIB tests use pysmi) is not affected. The engine
    set-up runs under _setup_lock; nothing else in the daemon imports these packages.
    """
    hidden = [p for p in packages if p not in sys.modules]
    for package in hidden:
        sys.modules[package] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for package in hidden:
            if package in sys.modules and sys.modules[package] is None:
                del sys.modules[package]


def _enable_privacy() -> None:
    """Make pysnmp's privacy modules usable when they were imported without cryptography.

    That is the case when the first SNMP sink of this process had no privacy and a later
    one (after a reload) has. Reloading a module runs it again in the same namespace, so
    the USM's existing DES/AES objects, whose methods look their cipher classes up there,
    see cryptography from then on.
    """
    for name in PRIV_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "PysnmpCryptoError", False):
            importlib.reload(module)


# Engine boots are bumped once per process and state dir, however many targets there are.
_boots_cache: dict[Path, int] = {}
# Engines are set up in worker threads (start()); one at a time.
_setup_lock = threading.Lock()


def sink_name(target: SnmpTargetConfig) -> str:
    raw = f"snmp-{target.host}-{target.port}-v{target.version}-{target.type}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


# ------------------------------------------------------------------ engine ID and boots


def new_engine_id() -> bytes:
    """RFC 3411 SnmpEngineID: enterprise (high bit set), format 5 (octets), 12 random."""
    pen = oids.ENTERPRISE[-1]
    return (0x80000000 | pen).to_bytes(4, "big") + b"\x05" + secrets.token_bytes(12)


def load_engine_id(state_dir: Path) -> bytes:
    """The node's persisted SNMP engine ID, created on first use."""
    path = state_dir / ENGINE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        return _parse_engine_id(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    engine_id = new_engine_id()
    tmp = path.with_name(f".{ENGINE_ID_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(engine_id.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _parse_engine_id(path)


def _parse_engine_id(path: Path) -> bytes:
    text = path.read_text().strip().lower().removeprefix("0x")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: not a hex SNMP engine ID") from None
    if not 5 <= len(value) <= 32:
        raise ValueError(f"{path}: an SNMP engine ID has 5 to 32 octets, not {len(value)}")
    return value


def next_engine_boots(state_dir: Path) -> int:
    """snmpEngineBoots for this process: one more than the last run's (persisted)."""
    key = state_dir.resolve()
    if key in _boots_cache:
        return _boots_cache[key]
    path = state_dir / ENGINE_BOOTS_FILE
    try:
        boots = int(path.read_text().strip()) + 1
    except (FileNotFoundError, ValueError):
        boots = 1
    boots = min(max(boots, 1), MAX_BOOTS)
    tmp = path.with_name(f".{ENGINE_BOOTS_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{boots}\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot persist %s (%s): v3 receivers may drop traps after a restart",
                    path, exc.strerror)
    _boots_cache[key] = boots
    return boots


# ------------------------------------------------------------------ event -> values


def date_and_time(epoch: float) -> bytes:
    """SNMPv2-TC DateAndTime, UTC, 11 octets."""
    t = time.gmtime(epoch)
    deci = int((epoch - calendar.timegm(t)) * 10) % 10
    return (t.tm_year.to_bytes(2, "big")
            + bytes([t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, min(t.tm_sec, 60), deci])
            + b"+\x00\x00")


def admin_string(text: str | None) -> bytes:
    """UTF-8, at most 255 octets, never cut inside a character."""
    data = (text or "").encode("utf-8")
    if len(data) > MAX_TEXT:
        data = data[:MAX_TEXT].decode("utf-8", "ignore").encode("utf-8")
    return data


def inet_address(text: str | None) -> tuple[int, bytes]:
    """(InetAddressType, InetAddress) for an address string; (unknown, '') if none."""
    if not text:
        return oids.INET_ADDRESS_TYPE["unknown"], b""
    try:
        addr = ipaddress.ip_interface(text.split("%", 1)[0]).ip
    except ValueError:
        return oids.INET_ADDRESS_TYPE["unknown"], b""
    kind = "ipv4" if addr.version == 4 else "ipv6"
    return oids.INET_ADDRESS_TYPE[kind], addr.packed


def mac_address(value: object) -> bytes:
    if not isinstance(value, str):
        return b""
    digits = re.sub(r"[:\-.]", "", value.strip())
    if not re.fullmatch(r"(?:[0-9A-Fa-f]{2}){6,20}", digits):
        return b""
    return bytes.fromhex(digits)


def monitor_state(text: str | None) -> int:
    """'holding (paused)' -> holding(5); anything unknown -> unknown(0)."""
    word = (text or "").split(" ", 1)[0].strip().lower()
    return oids.MONITOR_STATE.get(word, oids.MONITOR_STATE["unknown"])


def event_values(event: Event, node: str) -> dict[str, int | bytes]:
    """The value of every notification object for an event (plain Python values)."""
    addr_type, addr = inet_address(event.address)
    return {
        "minisftEventSeq": event.seq % 2**32,
        "minisftEventKind": event.kind.value.encode(),
        "minisftEventSeverity": int(event.severity),
        "minisftEventTime": date_and_time(event.time),
        "minisftEventNode": admin_string(event.node or node),
        "minisftEventReason": admin_string(event.reason),
        "minisftEventMonitor": admin_string(event.monitor),
        "minisftEventAddressType": addr_type,
        "minisftEventAddress": addr,
        "minisftEventNewState": monitor_state(event.state),
        "minisftEventPeerMac": mac_address(event.details.get("mac")),
    }


# ------------------------------------------------------------------ the sink


class _NoMibCompiler:
    """Stands in for pysnmp's on-demand MIB compiler: everything needed ships compiled."""

    def compile(self, *names: str, **options: Any) -> dict[str, str]:
        return {}


class SnmpSink(Sink):
    """Sends every accepted event as a MINISFT-MIB notification to one SNMP target."""

    def __init__(self, target: SnmpTargetConfig, *, state_dir: Path, node: str) -> None:
        if target.version not in ("2c", "3"):
            raise ValueError(f"SNMP target {target.host}: version must be 2c or 3")
        if target.type not in ("trap", "inform"):
            raise ValueError(f"SNMP target {target.host}: type must be trap or inform")
        if target.version == "2c" and not target.community:
            raise ValueError(f"SNMP target {target.host}: v2c needs a community")
        if target.version == "3":
            if not target.user:
                raise ValueError(f"SNMP target {target.host}: v3 needs a user")
            if target.priv_key and not target.auth_key:
                raise ValueError(f"SNMP target {target.host}: v3 privacy needs an auth key")
            if target.auth_key and target.auth_protocol not in AUTH_PROTOCOLS:
                raise ValueError(f"SNMP target {target.host}: unknown auth protocol "
                                 f"{target.auth_protocol!r}")
            if target.priv_key and target.priv_protocol not in PRIV_PROTOCOLS:
                raise ValueError(f"SNMP target {target.host}: unknown priv protocol "
                                 f"{target.priv_protocol!r}")
        self.target = target
        self.state_dir = Path(state_dir)
        self.node = node
        self.name = sink_name(target)
        self.filter = EventFilter(kinds=frozenset(target.kinds),
                                  min_severity=Severity.parse(target.min_severity))
        self.engine_id: bytes | None = None
        self.stats = {"sent": 0, "failed": 0}
        self._announced = False
        self._engine: Any = None
        self._auth: Any = None
        self._transport: Any = None
        self._context: Any = None
        self._send: Any = None
        self._object_type: Any = None
        self._object_identity: Any = None
        self._oid_type: Any = None
        # kind -> (notification OID, [(object OID, syntax prototype, object name), ...])
        self._notifications: dict[EventKind, tuple[tuple[int, ...],
                                                   list[tuple[tuple[int, ...], Any, str]]]] = {}

    def __repr__(self) -> str:
        t = self.target
        who = f", user={t.user!r}" if t.version == "3" else ""
        return (f"SnmpSink(name={self.name!r}, host={t.host!r}, port={t.port}, "
                f"version={t.version!r}, type={t.type!r}{who})")

    @property
    def security_level(self) -> str:
        t = self.target
        if t.version == "2c":
            return "community"
        if t.auth_key and t.priv_key:
            return "authPriv"
        return "authNoPriv" if t.auth_key else "noAuthNoPriv"

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._engine is None:
            # ~100 ms of imports and MIB loading at the first start: in a thread, so the
            # event loop (and with it the failover path) keeps running meanwhile
            await asyncio.to_thread(self._setup_engine)
        if self._transport is None:
            self._transport = await self._open_transport()

    def _setup_engine(self) -> None:
        with _setup_lock:  # one import of pysnmp at a time, and one boots counter
            self._setup_engine_locked()

    def _setup_engine_locked(self) -> None:
        t = self.target
        privacy = t.version == "3" and bool(t.priv_key)
        if privacy:
            try:  # pysnmp treats it as optional and then fails with an opaque message
                import cryptography.hazmat.decrepit  # noqa: F401
            except ImportError:
                raise DeliveryError(f"{self.name}: SNMPv3 privacy (AES/DES) needs the Python "
                                    "package 'cryptography' >= 43") from None
        with _not_installed("pysmi", *(() if privacy else ("cryptography",))):
            from pysnmp.hlapi.v3arch import asyncio as hlapi
            from pysnmp.proto.rfc1902 import ObjectIdentifier, OctetString
        if privacy:
            _enable_privacy()

        self.engine_id = load_engine_id(self.state_dir)
        engine = hlapi.SnmpEngine(snmpEngineID=OctetString(self.engine_id))
        mib = engine.get_mib_builder()
        (boots,) = mib.import_symbols("__SNMP-FRAMEWORK-MIB", "snmpEngineBoots")
        boots.syntax = boots.syntax.clone(next_engine_boots(self.state_dir))
        # A compiler that compiles nothing: with pysmi installed, pysnmp would otherwise
        # attach one that compiles missing MIBs from /usr/share/snmp/mibs into ~/.pysnmp.
        mib.set_mib_compiler(_NoMibCompiler(), str(MIB_DIR))
        mib.load_modules(MIB_MODULE)
        self._notifications = self._resolve_notifications(mib)

        if t.version == "2c":
            # An explicit index: pysnmp would otherwise derive one from the community's hash.
            self._auth = hlapi.CommunityData("minisft", t.community, mpModel=1)
        else:
            kwargs: dict[str, Any] = {}
            if t.auth_key:
                kwargs["authKey"] = t.auth_key
                kwargs["authProtocol"] = getattr(hlapi, AUTH_PROTOCOLS[t.auth_protocol])
            if t.priv_key:
                kwargs["privKey"] = t.priv_key
                kwargs["privProtocol"] = getattr(hlapi, PRIV_PROTOCOLS[t.priv_protocol])
            self._auth = hlapi.UsmUserData(t.user, **kwargs)
        self._context = hlapi.ContextData()
        self._send = hlapi.send_notification
        self._object_type = hlapi.ObjectType
        self._object_identity = hlapi.ObjectIdentity
        self._oid_type = ObjectIdentifier
        self._engine = engine
        first, self._announced = not self._announced, True
        log.log(logging.INFO if first else logging.DEBUG,
                "snmp sink %s: SNMP%s %s to %s:%d (%s), engine id %s", self.name,
                "v2c" if t.version == "2c" else "v3", t.type, t.host, t.port,
                self.security_level, self.engine_id.hex())

    @staticmethod
    def _resolve_notifications(mib: Any) -> dict[EventKind, tuple[tuple[int, ...], list[
            tuple[tuple[int, ...], Any, str]]]]:
        """Every kind's notification OID and OBJECTS (OID, syntax) from the compiled MIB."""
        out: dict[EventKind, tuple[tuple[int, ...], list[tuple[tuple[int, ...], Any, str]]]] = {}
        for kind, (_, name) in oids.NOTIFICATION.items():
            (notification,) = mib.import_symbols(MIB_MODULE, name)
            objects = []
            for module, obj_name in notification.getObjects():
                (obj,) = mib.import_symbols(module, obj_name)
                # Varbinds name instances: these are scalars, so instance .0.
                objects.append(((*obj.getName(), 0), obj.getSyntax(), obj_name))
            out[kind] = (tuple(notification.getName()), objects)
        return out

    async def _open_transport(self) -> Any:
        from pysnmp.hlapi.v3arch import asyncio as hlapi

        t = self.target
        ipv6 = ":" in t.host
        cls = hlapi.Udp6TransportTarget if ipv6 else hlapi.UdpTransportTarget
        # retries: pysnmp's, for informs only (a trap is sent once).
        retries = t.retries if t.type == "inform" else 0
        try:
            transport = await cls.create((t.host, t.port), timeout=t.timeout, retries=retries,
                                         tagList=self.name)
        except Exception as exc:
            if ipv6:
                raise DeliveryError(f"{self.name}: cannot resolve {t.host}: "
                                    f"{type(exc).__name__}") from None
            try:  # a host name that has only an IPv6 address
                transport = await hlapi.Udp6TransportTarget.create(
                    (t.host, t.port), timeout=t.timeout, retries=retries, tagList=self.name)
            except Exception:
                raise DeliveryError(f"{self.name}: cannot resolve {t.host}: "
                                    f"{type(exc).__name__}") from None
        return transport

    async def close(self) -> None:
        engine, self._engine, self._transport = self._engine, None, None
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close_dispatcher()

    # -------------------------------------------------------------- delivery

    def varbinds(self, event: Event) -> list[Any]:
        """snmpTrapOID.0 and the notification's OBJECTS, as pysnmp ObjectTypes."""
        notification_oid, objects = self._notifications[event.kind]
        values = event_values(event, self.node)
        ot, oi = self._object_type, self._object_identity
        out = [ot(oi(SNMP_TRAP_OID), self._oid_type(notification_oid))]
        for oid, syntax, name in objects:
            out.append(ot(oi(oid), syntax.clone(values[name])))
        return out

    async def deliver(self, event: Event) -> None:
        if self._engine is None or self._transport is None:
            await self.start()
        try:
            varbinds = self.varbinds(event)
        except Exception as exc:  # a value the MIB rejects: a bug, but never leak secrets
            raise DeliveryError(self._scrub(f"{self.name}: cannot encode event "
                                            f"{event.seq}: {exc}")) from None
        try:
            error_indication, error_status, error_index, _ = await self._send(
                self._engine, self._auth, self._transport, self._context, self.target.type,
                *varbinds)
        except Exception as exc:
            await self._failed()
            raise DeliveryError(self._scrub(f"{self.name}: {type(exc).__name__}: {exc}")) \
                from None
        if error_indication:
            await self._failed()
            what = "inform not acknowledged" if self.target.type == "inform" else "not sent"
            raise DeliveryError(self._scrub(f"{self.name}: {what}: {error_indication}"))
        if error_status and int(error_status):
            await self._failed()
            raise DeliveryError(self._scrub(f"{self.name}: receiver answered "
                                            f"{error_status.prettyPrint()} at {error_index}"))
        self.stats["sent"] += 1

    async def _failed(self) -> None:
        self.stats["failed"] += 1
        if self.target.version == "3":
            # pysnmp keeps the receiver's engine boots/time it discovered and does not
            # recover when the receiver restarts (its informs then time out forever): the
            # retry starts from a fresh engine, which rediscovers them.
            await self.close()

    def _scrub(self, text: str) -> str:
        """Belt and braces: no secret in an error text, whatever pysnmp put there."""
        for secret in (self.target.community, self.target.auth_key, self.target.priv_key):
            if secret:
                text = text.replace(secret, "***")
        return text
