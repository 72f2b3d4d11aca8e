"""The validated configuration, as plain frozen dataclasses.

`minisft.config.loader` turns YAML into these (naming the bad key and its line on error);
everything else only ever sees these types. Durations are float seconds. Defaults follow
the original script (LooksAlive every 3 s, 3 retries, 1 s timeout; IsAlive every 10 s).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

DEFAULT_CONFIG_PATH = Path("/etc/minisft/minisft.yaml")
DEFAULT_CONTROL_SOCKET = Path("/run/minisft/minisft.sock")
DEFAULT_STATE_DIR = Path("/var/lib/minisft")


class Role(StrEnum):
    PRIMARY = "primary"
    BACKUP = "backup"


class FallbackMode(StrEnum):
    MANUAL = "manual"
    AUTO = "auto"


@dataclass(frozen=True)
class LooksAliveConfig:
    """ICMP echo to the watched address. A miss is backed up by an ARP/NDP probe.

    `timeout` is the longest a ping may wait for its reply; the daemon times pings out
    sooner, on an estimate from the measured round-trip times (`minisft.core.rto`).
    """

    interval: float = 3.0
    retry: int = 3
    timeout: float = 1.0  # default_timeout(3.0)

    @staticmethod
    def default_timeout(interval: float) -> float:
        """The timeout when only the interval is configured: a third of the interval, at
        most 1 s. A third leaves room for the back-to-back retries within about one
        interval, and gives the original script's 1 s at its 3 s interval."""
        return round(min(1.0, interval / 3), 6)


@dataclass(frozen=True)
class CheckConfig:
    """One IsAlive check. `type` is http, https, tcp, tls, command, python or always.

    `params` holds the type's own keys (validated by the loader against the check's schema),
    e.g. {"url": "http://{address}/health", "expect_status": 200} for http. The placeholder
    `{address}` is replaced by the address under test (service address or peer_ip).
    """

    type: str = "always"
    timeout: float = 5.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IsAliveConfig:
    interval: float = 10.0
    retry: int = 2  # consecutive failures before the service_dead alarm
    check: CheckConfig = field(default_factory=CheckConfig)
    on_holder: bool = False  # the node holding the address also checks its own service

    @property
    def enabled(self) -> bool:
        return self.check.type != "always"


@dataclass(frozen=True)
class FallbackConfig:
    mode: FallbackMode = FallbackMode.MANUAL
    hold_down: float = 60.0  # peer must pass continuously this long before auto fallback


@dataclass(frozen=True)
class ProbeConfig:
    """RFC 5227 ARP probe / IPv6 DAD-style NS before binding.

    The RFC's 1-2 s spacing is for hosts configuring themselves at boot; on a failover path
    we use LAN-scale spacing, and the probe runs while LooksAlive retries, so it adds little.
    """

    count: int = 3
    interval: float = 0.05

    @property
    def duration(self) -> float:
        return self.count * self.interval

    @staticmethod
    def interval_for(looksalive: LooksAliveConfig, count: int) -> float:
        """Default spacing: the round starts at the first miss, so it should end by the
        last retry ((retry - 1) x timeout later), or it delays the takeover. 50 ms at
        most, 10 ms at least (a LAN answers in well under a millisecond)."""
        fit = (looksalive.retry - 1) * looksalive.timeout / max(1, count)
        return round(min(0.05, max(0.01, fit)), 4)


@dataclass(frozen=True)
class AnnounceConfig:
    """Gratuitous ARP / unsolicited NA after binding, and periodic refresh while holding."""

    count: int = 3
    interval: float = 0.1
    refresh: float = 10.0  # 0 disables the periodic refresh


# Two daemons launched at the same moment (a rack powered up together) reach their first
# look at the interface within about this of each other: interpreter start, imports, config,
# netlink, on a busy host. Part of a starting backup's grace (MonitorConfig.backup_grace).
START_SKEW = 2.0


class HookMode(StrEnum):
    """What address hooks (`monitors[].hooks`) do to binding."""

    AFTER = "after"  # bind/announce, then `up`; release, then `down`
    INSTEAD = "instead"  # `up`/`down` move the address (a cloud API); nothing bound here


# The placeholders an address hook's argv may use ({address} {prefixlen} ...).
HOOK_PLACEHOLDERS = ("address", "prefixlen", "interface", "monitor")


@dataclass(frozen=True)
class AddressHooksConfig:
    """`monitors[].hooks`: commands run synchronously around bind and release (see
    minisft.runtime.monitor_runtime). argv items may hold HOOK_PLACEHOLDERS."""

    up: tuple[str, ...] = ()  # empty: no command
    down: tuple[str, ...] = ()
    timeout: float = 30.0
    mode: HookMode = HookMode.AFTER

    @property
    def binds_locally(self) -> bool:
        return self.mode is HookMode.AFTER


@dataclass(frozen=True)
class MonitorConfig:
    name: str
    address: IPInterface  # monitor_ip with monitor_subnet
    role: Role
    peer_ip: IPAddress | None = None
    looksalive: LooksAliveConfig = field(default_factory=LooksAliveConfig)
    isalive: IsAliveConfig = field(default_factory=IsAliveConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    announce: AnnounceConfig = field(default_factory=AnnounceConfig)
    startup_grace: float | None = None  # backup only; None: derived, see `backup_grace`
    hooks: AddressHooksConfig = field(default_factory=AddressHooksConfig)

    @property
    def backup_grace(self) -> float:
        """How long a starting backup leaves an address it has never seen answer to its
        primary (keepalived's backup waits one master-down interval likewise).

        The primary, started at the same moment, needs its start-up (START_SKEW), its probe
        round and the backup's own detection of the bound address: derived from those
        unless `startup_grace` is set. A primary that is really down is taken over at most
        `backup_grace + detection_time + probe.duration` after the backup started."""
        if self.startup_grace is not None:
            return self.startup_grace
        return round(START_SKEW + self.probe.duration + self.detection_time, 3)

    @property
    def ip(self) -> IPAddress:
        return self.address.ip

    @property
    def detection_time(self) -> float:
        """Worst case from the last answered ping to a takeover decision."""
        return self.looksalive.interval + self.looksalive.retry * self.looksalive.timeout


@dataclass(frozen=True)
class NodeConfig:
    name: str
    local_ip: IPAddress
    release_on_stop: bool = True  # SIGTERM releases the addresses this daemon holds


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    syslog: bool = True
    syslog_socket: Path = Path("/dev/log")
    syslog_facility: str = "daemon"


@dataclass(frozen=True)
class JournalConfig:
    """The event journal in state_dir/journal: how much history it keeps.

    Defaults: 213 bytes an event, so 256 MiB holds about 1.2 million events: a link
    flapping every second (two events) for a week."""

    max_bytes: int = 256 << 20  # oldest segments go first beyond this, delivered or not
    max_age: float = 7 * 86400.0  # segments older than this go once every sink has them


@dataclass(frozen=True)
class SnmpTargetConfig:
    host: str
    port: int = 162
    version: str = "2c"  # "2c" or "3"
    type: str = "trap"  # "trap" or "inform"
    # secrets stay out of repr(): configs get logged and printed in tracebacks
    community: str | None = field(default=None, repr=False)
    user: str | None = None
    auth_protocol: str = "sha256"
    priv_protocol: str = "aes128"
    # resolved from auth_key_file / auth_key_env by the loader
    auth_key: str | None = field(default=None, repr=False)
    priv_key: str | None = field(default=None, repr=False)
    kinds: tuple[str, ...] = ()  # empty: every kind
    min_severity: str = "debug"
    timeout: float = 2.0
    retries: int = 2


@dataclass(frozen=True)
class AppriseConfig:
    # a URL string or a {url, tag, kinds, min_severity} mapping (see sinks.apprise_sink);
    # URLs hold passwords and tokens: kept out of repr, never logged
    urls: tuple[str | dict[str, Any], ...] = field(default=(), repr=False)
    config_file: Path | None = None
    kinds: tuple[str, ...] = ()
    min_severity: str = "debug"
    title: str = "[MiniSFT {severity}] {node}: {kind} {monitor}"
    body: str = "{reason}\n\nnode={node} monitor={monitor} address={address} state={state}"


# The PATH event commands run with (they do not inherit the daemon's environment), also
# where the loader looks up a bare program name.
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ExecHookConfig:
    """One event command (`alerting.exec[]`): run once per matching event, in journal
    order, with the event as JSON on stdin (see minisft.sinks.exec_sink)."""

    name: str
    command: tuple[str, ...]  # argv; command[0] is an absolute path (resolved by the loader)
    kinds: tuple[str, ...] = ()  # `events:` in the YAML; empty: every kind
    min_severity: str = "debug"
    timeout: float = 30.0


@dataclass(frozen=True)
class NagiosConfig:
    """Passive check results into a Nagios 4 / Icinga 1 external command file
    (minisft.sinks.nagios_cmd)."""

    command_file: Path = Path("/var/lib/nagios4/rw/nagios.cmd")
    host: str | None = None  # the Nagios host_name; None: node.name
    service_prefix: str = "MiniSFT "  # + monitor name, or + "daemon"


@dataclass(frozen=True)
class Icinga2Config:
    """Passive check results through the Icinga 2 REST API (minisft.sinks.icinga2)."""

    url: str  # https://icinga.example.org:5665, no trailing slash
    user: str
    password: str = field(default="", repr=False)  # from password_file; never logged
    ca_file: Path | None = None  # None: the system's CAs
    host: str | None = None  # the Icinga host name; None: node.name
    service_prefix: str = "minisft-"  # + monitor name, or + "daemon" (as in minisft.conf)
    timeout: float = 10.0


@dataclass(frozen=True)
class NscaConfig:
    """Passive check results to a remote Nagios through send_nsca (minisft.sinks.nsca)."""

    server: str  # the NSCA daemon's host name or address
    config_file: Path  # send_nsca.cfg: password and encryption_method; mode 0600
    port: int = 5667
    host: str | None = None  # this node's host_name in Nagios; None: node.name
    service_prefix: str = "MiniSFT "
    timeout: float = 10.0
    send_nsca: str = "/usr/sbin/send_nsca"  # resolved by the loader


@dataclass(frozen=True)
class AlertingConfig:
    snmp_targets: tuple[SnmpTargetConfig, ...] = ()
    apprise: AppriseConfig | None = None
    exec_hooks: tuple[ExecHookConfig, ...] = ()
    nagios: NagiosConfig | None = None
    icinga2: Icinga2Config | None = None
    nsca: NscaConfig | None = None
    prometheus_listen: str | None = None  # "127.0.0.1:9523"
    prometheus_max_connections: int = 16  # at once; beyond, closed unanswered
    queue_size: int = 1000  # per sink, in memory; the journal is the durable spool
    max_backlog: int = 100_000  # per sink; older undelivered events are skipped and counted


@dataclass(frozen=True)
class PoolMemberConfig:
    name: str
    ip: IPAddress
    weight: int = 1


class CoordinationBackend(StrEnum):
    EMBEDDED = "embedded"  # members watch each other with UDP heartbeats
    ETCD = "etcd"  # ownership and liveness are leases in an etcd cluster


@dataclass(frozen=True)
class EtcdTLSConfig:
    """Client TLS for etcd: `ca_file` checks the servers, `cert_file` + `key_file` (both or
    neither) authenticate this member. Paths; the files are read when connecting."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class CoordinationConfig:
    """How the members of a pool agree. `embedded` ignores every other field."""

    backend: CoordinationBackend = CoordinationBackend.EMBEDDED
    endpoints: tuple[str, ...] = ()  # "http://192.0.2.250:2379", normalised by the loader
    ttl: int = 5  # lease TTL, whole seconds (etcd leases have a one-second grain)
    prefix: str = "/minisft"  # no trailing slash
    tls: EtcdTLSConfig | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # from password_file

    @property
    def etcd(self) -> bool:
        return self.backend is CoordinationBackend.ETCD


@dataclass(frozen=True)
class PoolConfig:
    name: str
    members: tuple[PoolMemberConfig, ...]
    addresses: tuple[IPInterface, ...]
    key: bytes | None = field(default=None, repr=False)  # from key_file; never logged
    looksalive: LooksAliveConfig = field(default_factory=LooksAliveConfig)
    watch: str = "all"  # "neighbour" or "all"
    # str(ip) of one of `addresses` (no prefix) -> member name
    preferred: dict[str, str] = field(default_factory=dict)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    witness: IPAddress | None = None
    port: int = 7404
    coordination: CoordinationConfig = field(default_factory=CoordinationConfig)
    hooks: AddressHooksConfig = field(default_factory=AddressHooksConfig)  # {monitor}: name


@dataclass(frozen=True)
class Config:
    node: NodeConfig
    monitors: tuple[MonitorConfig, ...] = ()
    pools: tuple[PoolConfig, ...] = ()
    control_socket: Path = DEFAULT_CONTROL_SOCKET
    control_max_connections: int = 256  # CLI connections open at once; beyond, closed
    state_dir: Path = DEFAULT_STATE_DIR
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    source: Path | None = None  # the file this was loaded from

    def monitor(self, name: str) -> MonitorConfig:
        for m in self.monitors:
            if m.name == name:
                return m
        raise KeyError(name)
