"""YAML text into the validated dataclasses of `minisft.config.model`.

Every error names the dotted key and the line it is on::

    /etc/minisft/minisft.yaml:12: monitors[0].looksalive.interval: expected a duration
    such as 0.5, 100ms, 3s or 1m, got 'fast'

The YAML is composed (not loaded) so that each key keeps its line; the loader then walks
the node tree itself. All errors are collected: the raised `ConfigError` is the first in
the file and its `errors` lists every one (`ConfigError.report()` prints them all).

Secrets (SNMP keys and communities, apprise URLs, pool keys) can come from files or the
environment; they are read (`secret_sources`) but never put into an error message, and
the dataclasses leave them out of their repr. Secret files must not be readable by group
or others.

This module is the entry point and builds the top level (node, logging, journal); the
rest lives by concern beside it: `yamlfile` (reading the YAML), `errors`, `validation`
(the error-collecting context), `scalars` (typed values), `redact` (keeping secrets out
of messages), `secret_sources`, and one module per section (`monitors`, `alerting`,
`pools`). Their public names stay importable from here.

Deliberately light (stdlib, yaml, minisft.config/core and the IsAlive parameter schemas):
the CLI and the Nagios plugin import it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from minisft.config.alerting import MIN_SNMP_KEY, MIN_SNMP_TIMEOUT, SNMP_AUTH, SNMP_PRIV, _alerting
from minisft.config.durations import parse_duration
from minisft.config.errors import ConfigError, _Skip
from minisft.config.model import (
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_STATE_DIR,
    AlertingConfig,
    Config,
    JournalConfig,
    LoggingConfig,
    NodeConfig,
)
from minisft.config.monitors import (
    MIN_ANNOUNCE_INTERVAL,
    MIN_ANNOUNCE_REFRESH,
    MIN_CHECK_INTERVAL,
    MIN_CHECK_TIMEOUT,
    MIN_HOLD_DOWN,
    MIN_PING_INTERVAL,
    MIN_PING_TIMEOUT,
    MIN_PROBE_INTERVAL,
    _monitors,
)
from minisft.config.pools import ETCD_MAX_TTL, ETCD_MIN_TTL, MIN_POOL_KEY, _pools
from minisft.config.redact import _got
from minisft.config.scalars import (
    MAX_DURATION,
    UNIX_PATH_MAX,
    _bool,
    _choice,
    _int,
    _ip,
    _name,
    _path,
    _socket_path,
)
from minisft.config.secret_sources import MAX_SECRET_BYTES
from minisft.config.validation import Converter, _Ctx, _Map
from minisft.config.yamlfile import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_NODES, YAML_LOADER, _compose

# the public names of the modules this was split into stay importable from here
__all__ = ["ETCD_MAX_TTL", "ETCD_MIN_TTL", "LOG_LEVELS", "MAX_CONFIG_BYTES", "MAX_DEPTH",
           "MAX_DURATION", "MAX_JOURNAL_AGE", "MAX_NODES", "MAX_SECRET_BYTES",
           "MIN_ANNOUNCE_INTERVAL", "MIN_ANNOUNCE_REFRESH", "MIN_CHECK_INTERVAL",
           "MIN_CHECK_TIMEOUT", "MIN_HOLD_DOWN", "MIN_JOURNAL_BYTES", "MIN_PING_INTERVAL",
           "MIN_PING_TIMEOUT", "MIN_POOL_KEY", "MIN_PROBE_INTERVAL", "MIN_SNMP_KEY",
           "MIN_SNMP_TIMEOUT", "SNMP_AUTH", "SNMP_PRIV", "SYSLOG_FACILITIES", "UNIX_PATH_MAX",
           "YAML_LOADER", "ConfigError", "Converter", "collect_errors", "load_config",
           "parse_config"]


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
                     "uucp", "cron", "authpriv", "ftp", *(f"local{i}" for i in range(8)))


# ====================================================================== sections

_TOP_KEYS = ("node", "control_socket", "control_max_connections", "state_dir", "logging",
             "monitors", "alerting", "pools", "journal")
_JOURNAL_KEYS = ("max_bytes", "max_age")
_NODE_KEYS = ("name", "local_ip", "release_on_stop")
_LOGGING_KEYS = ("level", "syslog", "syslog_socket", "syslog_facility")


def _build(data: Any, ctx: _Ctx, source_path: Path | None) -> Config:
    if isinstance(data, dict):
        # "x-..." keys are free for YAML anchors (&defaults) that other sections merge in
        data = {k: v for k, v in data.items() if not k.startswith("x-")}
    top = _Map(ctx, "", data, _TOP_KEYS)
    node = ctx.section(None, _node, ctx, top)
    local_ip = node.local_ip if node is not None else None
    monitors = _monitors(ctx, top, local_ip)
    pools = _pools(ctx, top, node, monitors)
    control_socket = top.get("control_socket", _socket_path(ctx), DEFAULT_CONTROL_SOCKET)
    control_max = top.get("control_max_connections", _int(1, 4096),
                          Config.control_max_connections)
    state_dir = top.get("state_dir", _path(ctx), DEFAULT_STATE_DIR)
    logging_cfg = ctx.section(LoggingConfig(), _logging, ctx, top)
    alerting = ctx.section(AlertingConfig(), _alerting, ctx, top)
    journal = ctx.section(JournalConfig(), _journal, ctx, top)
    if node is None and not top.has("node"):
        ctx.add("node", "required (node: {name: ..., local_ip: ...})")
    if ctx.errors or node is None:
        raise _Skip
    return Config(node=node, monitors=tuple(m for _, m in monitors), pools=pools,
                  control_socket=control_socket, state_dir=state_dir, logging=logging_cfg,
                  alerting=alerting, journal=journal, control_max_connections=control_max,
                  source=source_path)


def _node(ctx: _Ctx, top: _Map) -> NodeConfig | None:
    if not top.has("node"):
        return None
    m = _Map(ctx, "node", top.data["node"], _NODE_KEYS)
    name = m.req("name", _name)
    local_ip = m.req("local_ip", _ip)
    release = m.get("release_on_stop", _bool, True)
    m.check()
    if name is None or local_ip is None:
        raise _Skip
    if local_ip.is_unspecified or local_ip.is_multicast:
        ctx.fail("node.local_ip", f"{local_ip} cannot be this node's address")
    return NodeConfig(name=name, local_ip=local_ip, release_on_stop=release)


def _logging(ctx: _Ctx, top: _Map) -> LoggingConfig:
    m = _Map(ctx, "logging", top.data.get("logging"), _LOGGING_KEYS)
    d = LoggingConfig()
    cfg = LoggingConfig(
        level=m.get("level", _choice(LOG_LEVELS, {"warn": "warning"}), d.level),
        syslog=m.get("syslog", _bool, d.syslog),
        syslog_socket=m.get("syslog_socket", _path(ctx), d.syslog_socket),
        syslog_facility=m.get("syslog_facility", _choice(SYSLOG_FACILITIES),
                              d.syslog_facility),
    )
    m.check()
    return cfg


MIN_JOURNAL_BYTES = 1 << 20
MAX_JOURNAL_AGE = 366 * 86400.0
_SIZE_RE = re.compile(r"(\d+)\s*([KMG]i?B?|B)?", re.ASCII | re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(path: str, value: Any) -> int:
    """Bytes from 268435456, "256MiB", "256M" or "1G" (binary units)."""
    m = _SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif m:
        size = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "")[:1].lower()]
    else:
        raise ValueError(f"expected a size such as 256MiB, 1GiB or a number of bytes, got "
                         f"{_got(value, path)}")
    if size < MIN_JOURNAL_BYTES:
        raise ValueError(f"must be at least 1MiB, got {size} bytes")
    return size


def _journal(ctx: _Ctx, top: _Map) -> JournalConfig:
    m = _Map(ctx, "journal", top.data.get("journal"), _JOURNAL_KEYS)
    d = JournalConfig()

    def age(path: str, value: Any) -> float:
        seconds = parse_duration(value)
        if not 3600 <= seconds <= MAX_JOURNAL_AGE:
            raise ValueError(f"must be between 1h and 366d, got {_got(value, path)}")
        return seconds

    cfg = JournalConfig(max_bytes=m.get("max_bytes", _size, d.max_bytes),
                        max_age=m.get("max_age", age, d.max_age))
    m.check()
    return cfg


# ====================================================================== entry points


def _base_dir(source: str) -> Path:
    if source.startswith("<"):
        return Path.cwd()
    return Path(source).resolve().parent


def collect_errors(text: str, source: str = "<string>", *, base_dir: Path | None = None,
                   secrets: bool = True) -> list[ConfigError]:
    """Every problem in `text`, in file order; empty when the config is valid."""
    try:
        parse_config(text, source, base_dir=base_dir, secrets=secrets)
    except ConfigError as exc:
        return list(exc.errors)
    return []


def parse_config(text: str, source: str = "<string>", *, base_dir: Path | None = None,
                 secrets: bool = True) -> Config:
    """Validate YAML text. Relative paths are resolved against `base_dir`, by default the
    directory of `source` (or the working directory when `source` is not a file name).

    `secrets=False` is for tools that need only the layout (a CLI command run by a user
    who cannot read the root-only key files): secret files and environment variables are
    then neither read nor checked, and the fields they fill stay None/empty.
    """
    data, lines = _compose(text, source)
    ctx = _Ctx(source, lines, base_dir or _base_dir(source), secrets)
    source_path = None if source.startswith("<") else Path(source)
    try:
        config = _build(data, ctx, source_path)
    except ConfigError as exc:
        ctx.record(exc)
    except _Skip:
        pass
    else:
        if not ctx.errors:
            return config
    errors = sorted(ctx.errors, key=lambda e: e.line or 0)  # stable: same line keeps order
    first = errors[0] if errors else ConfigError("", "invalid configuration", source=source)
    first.errors = errors or [first]
    raise first


def load_config(path: str | Path, *, secrets: bool = True) -> Config:
    """Read and validate a config file; ConfigError names the problem, key and line.

    `secrets=False`: see `parse_config`."""
    p = Path(path)
    source = str(p)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("", "no such file", source=source) from None
    except IsADirectoryError:
        raise ConfigError("", "is a directory, not a config file", source=source) from None
    except PermissionError:
        raise ConfigError("", "permission denied (the config may hold secrets: it is meant "
                          "to be readable by root only)", source=source) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read: {exc.strerror or exc}", source=source) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config file",
                          source=source)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("", "not UTF-8 text", line=line, source=source) from None
    return parse_config(text, source, base_dir=p.resolve().parent, secrets=secrets)
