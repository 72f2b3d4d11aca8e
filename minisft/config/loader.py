"""YAML text into the validated dataclasses of `minisft.config.model`.

Every error names the dotted key and the line it is on::

    /etc/minisft/minisft.yaml:12: monitors[0].looksalive.interval: expected a duration
    such as 0.5, 100ms, 3s or 1m, got 'fast'

The YAML is composed (not loaded) so that each key keeps its line; the loader then walks
the node tree itself. All errors are collected: the raised `ConfigError` is the first in
the file and its `errors` lists every one (`ConfigError.report()` prints them all).

Secrets (SNMP keys and communities, apprise URLs, pool keys) can come from files or the
environment; they are read here but never put into an error message, and the dataclasses
leave them out of their repr. Secret files must not be readable by group or others.

Deliberately light (stdlib, yaml, minisft.config/core and the IsAlive parameter schemas):
the CLI and the Nagios plugin import it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import shutil
import stat
from collections.abc import Callable, Collection, Iterable
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from minisft.config.durations import format_duration, parse_duration
from minisft.config.model import (
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_STATE_DIR,
    HOOK_PATH,
    HOOK_PLACEHOLDERS,
    AddressHooksConfig,
    AlertingConfig,
    AnnounceConfig,
    AppriseConfig,
    CheckConfig,
    Config,
    CoordinationBackend,
    CoordinationConfig,
    EtcdTLSConfig,
    ExecHookConfig,
    FallbackConfig,
    FallbackMode,
    HookMode,
    Icinga2Config,
    IPAddress,
    IPInterface,
    IsAliveConfig,
    JournalConfig,
    LoggingConfig,
    LooksAliveConfig,
    MonitorConfig,
    NagiosConfig,
    NodeConfig,
    NscaConfig,
    PoolConfig,
    PoolMemberConfig,
    ProbeConfig,
    Role,
    SnmpTargetConfig,
)
from minisft.core.events import EventKind, Severity

__all__ = ["MAX_CONFIG_BYTES", "YAML_LOADER", "ConfigError", "collect_errors", "load_config",
           "parse_config"]

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; more is a mistake or an attack
# libyaml when PyYAML has it (Debian's python3-yaml does): a 1 MiB file composes in about
# 1 s instead of 7, and it refuses deep flow nesting itself instead of recursing
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_NODES = 50_000  # values after alias expansion: stops "billion laughs" documents
MAX_DEPTH = 40
MAX_SECRET_BYTES = 64 << 10
MAX_DURATION = 86_400.0  # one day: anything longer is a typo (and overflows some timers)
# Lower bounds of the timing keys: below these a value cannot work, it only burns CPU or
# floods the LAN (`looksalive.interval: 1us` pinged 825 times a second and starved IsAlive).
# contrib/examples/full-reference.yaml lists them next to each key.
MIN_PING_INTERVAL = 0.010  # looksalive.interval: a LAN ping round trip is well under 1 ms
MIN_PING_TIMEOUT = 0.001  # looksalive.timeout: shorter than any real answer
MIN_CHECK_INTERVAL = 0.1  # isalive.interval: a service check is a connection, not a ping
MIN_CHECK_TIMEOUT = 0.010  # isalive.check.timeout: a TCP connect and an answer
MIN_HOLD_DOWN = 1.0  # fallback.hold_down: "passed continuously" needs more than one check
MIN_PROBE_INTERVAL = 0.001  # probe.interval: an ARP/NDP answer takes this long at least
MIN_ANNOUNCE_INTERVAL = 0.001  # announce.interval: frames a switch can still tell apart
MIN_ANNOUNCE_REFRESH = 1.0  # announce.refresh (unless 0, off): caches keep entries minutes
MIN_SNMP_TIMEOUT = 0.1  # alerting.snmp.targets[].timeout: an inform's round trip
MIN_POOL_KEY = 16
MIN_SNMP_KEY = 8  # RFC 3414: USM passphrases are at least 8 octets
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_PATH_TAIL = re.compile(r'(\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])$')

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
                     "uucp", "cron", "authpriv", "ftp", *(f"local{i}" for i in range(8)))
SNMP_AUTH = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
SNMP_PRIV = ("des", "3des", "aes128", "aes192", "aes256")


# ====================================================================== errors


class ConfigError(Exception):
    """A config problem: `key` is the dotted path, `line` its 1-based line in `source`.

    The exception raised by the loader is the first problem in the file; `errors` holds
    all of them (itself first), in file order.
    """

    def __init__(self, key: str, message: str, *, line: int | None = None,
                 source: str | None = None) -> None:
        self.key = key
        self.message = message
        self.line = line
        self.source = source
        self.errors: list[ConfigError] = [self]
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [p for p in (where, self.key, self.message) if p]
        return ": ".join(parts)

    def __str__(self) -> str:
        return self._format()

    def report(self) -> str:
        """Every error, one per line, for `minisft check-config`."""
        more = len(self.errors) - 1
        lines = [str(e) for e in self.errors]
        if more:
            lines.append(f"({len(self.errors)} errors)")
        return "\n".join(lines)


class _Skip(Exception):
    """Abandon one object whose errors are already recorded; its siblings carry on."""


# ====================================================================== YAML -> tree


def _join(path: str, key: str) -> str:
    if not _SIMPLE_KEY.fullmatch(key):
        escaped = key.replace("\\", "\\\\").replace('"', '\\"')
        return f'{path}["{escaped}"]'
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str | None:
    m = _PATH_TAIL.search(path)
    if m is None:
        return "" if path else None
    return path[: m.start()]


class _Tree:
    """Builds plain Python values from composed YAML nodes, noting each path's line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {"": 1}
        self.count = 0
        self._open: set[int] = set()  # collection nodes being built: catches "&a [*a]"
        self._scalars = SafeConstructor()

    def error(self, path: str, message: str, node: Node) -> ConfigError:
        return ConfigError(path, message, line=node.start_mark.line + 1, source=self.source)

    def build(self, node: Node, path: str, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(path, f"the document expands to more than {MAX_NODES} values "
                             "(too many YAML aliases?)", node)
        if depth > MAX_DEPTH:
            raise self.error(path, f"nested more than {MAX_DEPTH} levels deep", node)
        if isinstance(node, ScalarNode):
            try:
                return self._scalars.construct_object(node)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or "cannot read this value"
                raise self.error(path, f"{problem} (tag {node.tag})", node) from None
        if id(node) in self._open:
            raise self.error(path, "a YAML alias refers to a node that contains it", node)
        self._open.add(id(node))
        try:
            return self._collection(node, path, depth)
        finally:
            self._open.discard(id(node))

    def _collection(self, node: Node, path: str, depth: int) -> Any:
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.error(path, f"unsupported YAML tag {node.tag}", node)
            out: list[Any] = []
            for i, item in enumerate(node.value):
                sub = f"{path}[{i}]"
                self.lines.setdefault(sub, item.start_mark.line + 1)
                out.append(self.build(item, sub, depth + 1))
            return out
        if isinstance(node, MappingNode):
            if node.tag != _MAP_TAG:
                raise self.error(path, f"unsupported YAML tag {node.tag}", node)
            return self._mapping(node, path, depth)
        raise self.error(path, "unsupported YAML node", node)  # pragma: no cover

    def _mapping(self, node: MappingNode, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, int] = {}
        # "<<: *defaults" first, so that keys given here win (their values and their lines)
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [
                value_node]
            for source_node in sources:
                if not isinstance(source_node, MappingNode):
                    raise self.error(path, "'<<' merges only mappings", source_node)
                self.count += 1
                if self.count > MAX_NODES:
                    raise self.error(path, f"the document expands to more than {MAX_NODES} "
                                     "values (too many YAML aliases?)", source_node)
                if id(source_node) in self._open:
                    raise self.error(path, "a YAML alias refers to a node that contains it",
                                     source_node)
                self._open.add(id(source_node))
                try:
                    for key, value in self._mapping(source_node, path, depth).items():
                        out.setdefault(key, value)
                finally:
                    self._open.discard(id(source_node))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error(path, "a key must be a plain name, not a list or mapping",
                                 key_node)
            # the key as written: YAML 1.1 would read "on:" or "no:" as booleans
            key = str(key_node.value)
            sub = _join(path, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(sub, f"duplicate key (first given on line {seen[key]})",
                                  line=line, source=self.source)
            seen[key] = line
            self.lines[sub] = line
            out[key] = self.build(value_node, sub, depth + 1)
        return out


def _compose(text: str, source: str) -> tuple[Any, dict[str, int]]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config file",
                          source=source)
    try:
        root = yaml.compose(text, Loader=YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        # never quote the snippet PyYAML attaches: the bad line may hold a secret
        problem = exc.problem or "syntax error"
        mark = exc.problem_mark or exc.context_mark
        if "nesting depth" in problem:  # libyaml's own cap on flow nesting
            problem = f"nested too deeply (more than {MAX_DEPTH} levels)"
        elif "'\\t'" in problem or (mark is not None and text[mark.index:mark.index + 1]
                                     == "\t"):
            problem += " (indent with spaces, not tabs)"
        line = mark.line + 1 if mark is not None else None
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError("", f"not valid YAML: {problem}{context}", line=line,
                          source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {type(exc).__name__}", source=source) from None
    except RecursionError:
        raise ConfigError("", f"not valid YAML: nested too deeply (more than {MAX_DEPTH} "
                          "levels)", source=source) from None
    if root is None:
        raise ConfigError("", "the file is empty (it needs at least a node: section)",
                          line=1, source=source)
    tree = _Tree(source)
    data = tree.build(root, "")
    return data, tree.lines


# ====================================================================== validation context


# Sections where any value may be a secret (an apprise URL with a password, an SNMP
# community, an etcd password, a key file name) and key names that say so anywhere: an
# error there describes the value's shape and never quotes it.
_SECRET_SECTIONS = ("alerting", "pools")
_SECRET_WORDS = ("key", "password", "community", "secret", "token", "auth", "url", "header")


def _may_be_secret(path: str) -> bool:
    if path.endswith("_file"):  # a file name (key_file, urls_file): shown, to be fixed
        return False
    section = re.split(r"[.\[]", path, maxsplit=1)[0]
    return section in _SECRET_SECTIONS or any(w in path.lower() for w in _SECRET_WORDS)


def _got(value: Any, path: str = "") -> str:
    """What was found, for an error message: the value itself only where it cannot be a
    secret (see `_may_be_secret`), its shape otherwise."""
    if path and _may_be_secret(path) and isinstance(value, str | int | float) \
            and not isinstance(value, bool):
        shape = "a string" if isinstance(value, str) else "a number"
        return f"{shape} (not shown: a value here may be a secret)"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _closest(word: str, options: Iterable[str]) -> str | None:
    import difflib  # only on the error path

    # case-blind, so the original script's MONITORIP finds monitor_ip
    lowered = {o.lower(): o for o in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _hint(word: str, options: Iterable[str]) -> str:
    close = _closest(word, options)
    return f" (did you mean {close!r}?)" if close else ""


class _Ctx:
    def __init__(self, source: str, lines: dict[str, int], base_dir: Path,
                 secrets: bool = True) -> None:
        self.source = source
        self.secrets = secrets  # False: leave secret files and variables alone
        self.lines = lines
        self.base_dir = base_dir
        self.errors: list[ConfigError] = []

    def line(self, path: str) -> int | None:
        p: str | None = path
        while p is not None:
            if p in self.lines:
                return self.lines[p]
            p = _parent(p)
        return None

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(path, message, line=self.line(path), source=self.source)

    def record(self, error: ConfigError) -> None:
        self.errors.append(error)

    def add(self, path: str, message: str) -> None:
        self.record(self.error(path, message))

    def fail(self, path: str, message: str) -> NoReturn:
        raise self.error(path, message)

    def section(self, fallback: T, build: Callable[..., T], *args: Any) -> T:
        """Run one object's builder; on error record it and carry on with `fallback`."""
        try:
            return build(*args)
        except ConfigError as exc:
            self.record(exc)
        except _Skip:
            pass
        return fallback

    def resolve(self, raw: str) -> Path:
        path = Path(raw).expanduser()
        return path if path.is_absolute() else self.base_dir / path


Converter = Callable[[str, Any], T]


def _scrub(message: str, value: Any, path: str) -> str:
    """The last guard for messages from shared parsers (durations...) that quote what they
    were given: where a secret may stand, a message holding the value is replaced."""
    text = value.strip() if isinstance(value, str) else None
    # quoted, as repr() shows it, maybe cut short: not a name that merely contains it
    if text and _may_be_secret(path) and repr(text)[:12].rstrip("'") in message:
        return "not a valid value here (not shown: a value here may be a secret)"
    return message


class _Map:
    """One YAML mapping under `path`: unknown keys are recorded as errors at once."""

    def __init__(self, ctx: _Ctx, path: str, value: Any, allowed: Collection[str] | None,
                 *, what: str = "") -> None:
        self.ctx = ctx
        self.path = path
        self.failed = False
        if value is None:
            value = {}  # "looksalive:" with nothing under it: all defaults
        if not isinstance(value, dict):
            if not path:
                ctx.fail(path, f"the file must be a mapping of keys (node:, monitors:, ...), "
                               f"got {_got(value, path)}")
            ctx.fail(path, f"expected {what or 'a mapping of keys'} here, got {_got(value, path)}")
        self.data: dict[str, Any] = value
        self.misspelt: set[str] = set()  # keys an unknown key probably meant
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.failed = True
                    close = _closest(key, allowed)
                    if close:
                        self.misspelt.add(close)
                    hint = f" (did you mean {close!r}?)" if close else \
                        f" (known: {', '.join(sorted(allowed))})"
                    ctx.add(self.key(key), f"unknown key{hint}")

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def _convert(self, name: str, convert: Converter[T]) -> T | None:
        path = self.key(name)
        try:
            return convert(path, self.data[name])
        except ConfigError as exc:
            # converters name the precise key (a list item, say); the line is found here
            located = exc.source is not None or exc.line is not None
            self.ctx.record(exc if located else self.ctx.error(exc.key, exc.message))
        except _Skip:
            pass
        except ValueError as exc:
            self.ctx.add(path, _scrub(str(exc), self.data[name], path))
        self.failed = True
        return None

    def get(self, name: str, convert: Converter[T], default: T) -> T:
        if not self.has(name):
            return default
        value = self._convert(name, convert)
        return default if value is None else value

    def opt(self, name: str, convert: Converter[T]) -> T | None:
        return self._convert(name, convert) if self.has(name) else None

    def req(self, name: str, convert: Converter[T], what: str = "") -> T | None:
        if not self.has(name):
            self.failed = True
            if name not in self.misspelt:  # "did you mean" already points here
                self.ctx.add(self.key(name), f"required{what}")
            return None
        return self._convert(name, convert)

    def check(self) -> None:
        """Stop building this object if any of its keys was bad (errors already noted)."""
        if self.failed:
            raise _Skip


# ====================================================================== converters
# A converter takes (path, value) and returns the value or raises ValueError(message)
# (the path is added by _Map) or a ConfigError when it knows a more precise path.


def _str(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {_got(value, path)}")
    return value.strip()


def _text(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_got(value, path)}")
    return value


def _name(path: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError("expected a name of letters, digits, '.', '_' and '-' (at most 63, "
                         f"starting with a letter or digit), got {_got(value, path)}")
    return value


def _bool(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise ValueError(f"expected true or false, got {_got(value, path)}")


def _int(lo: int, hi: int | None = None) -> Converter[int]:
    def convert(path: str, value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        # bool is an int in Python, but "retry: yes" is not 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {_got(value, path)}")
        if value < lo or (hi is not None and value > hi):
            bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise ValueError(f"must be {bound}, got {_got(value, path)}")
        return value

    return convert


def _duration(*, least: float = 0.0, zero: bool = False) -> Converter[float]:
    """A duration of at least `least` seconds (0 is allowed on its own when `zero`: "off")."""

    def convert(path: str, value: Any) -> float:
        seconds = parse_duration(value)  # ValueError names the problem
        if seconds == 0 and zero:
            return seconds
        if seconds < least:
            raise ValueError(f"must be at least {format_duration(least)} (lower bound), "
                             f"got {_got(value, path)}")
        if seconds == 0:
            raise ValueError(f"must be more than 0, got {_got(value, path)}")
        if seconds > MAX_DURATION:
            raise ValueError(f"must be at most 24h, got {_got(value, path)}")
        return seconds

    return convert


def _choice(options: Iterable[str], aliases: dict[str, str] | None = None) -> Converter[str]:
    options = tuple(options)
    aliases = aliases or {}

    def convert(path: str, value: Any) -> str:
        text = str(value).strip().lower() if isinstance(value, str | int) and not isinstance(
            value, bool) else None
        if text is not None:
            text = aliases.get(text, text)
            if text in options:
                return text
        shown = _hint(str(value), options) if isinstance(value, str) else ""
        raise ValueError(f"expected one of {', '.join(options)}, got {_got(value, path)}{shown}")

    return convert


E = TypeVar("E", bound=Enum)


def _enum(cls: type[E]) -> Converter[E]:
    choose = _choice(str(m.value) for m in cls)
    return lambda path, value: cls(choose(path, value))


def _ip(path: str, value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv4 or IPv6 address, got {_got(value, path)}")
    if "%" in value:
        raise ValueError("IPv6 zone indexes (%eth0) are not supported: the interface is the "
                         "one that holds node.local_ip")
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"expected an IPv4 or IPv6 address, got {_got(value, path)}") from None


def _service_ip(path: str, value: Any) -> IPAddress:
    ip = _ip(path, value)
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        raise ValueError(f"{ip} cannot be a service address (unspecified, multicast or "
                         "loopback)")
    return ip


def _mask(path: str, value: Any) -> tuple[int, bool]:
    """(prefix length, written as a dotted mask) from 24, "24", "/24" or "255.255.255.0"."""
    hint = "expected a prefix length such as 24 or /24, or a mask such as 255.255.255.0"
    if isinstance(value, bool):
        raise ValueError(f"{hint}, got {_got(value, path)}")
    if isinstance(value, int):
        return value, False
    if not isinstance(value, str):
        raise ValueError(f"{hint}, got {_got(value, path)}")
    text = value.strip().removeprefix("/")
    if text.isdigit():
        return int(text), False
    try:
        mask = ipaddress.IPv4Address(text)
    except ValueError:
        if ":" in text:
            raise ValueError("IPv6 takes a prefix length (such as 64), not a mask") from None
        raise ValueError(f"{hint}, got {_got(value, path)}") from None
    bits = int(mask)
    inverted = ~bits & 0xFFFFFFFF
    if inverted & (inverted + 1):  # ones then zeros means ~mask is 2**k - 1
        raise ValueError(f"{text} is not a valid netmask: its one bits must be contiguous "
                         "(such as 255.255.255.0)")
    return 32 - inverted.bit_length(), True


def _interface(path: str, value: Any) -> IPInterface:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"expected an address with its prefix such as 192.0.2.101/24 or "
                         f"2001:db8::101/64, got {_got(value, path)}")
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError:
        raise ValueError(f"expected an address with its prefix such as 192.0.2.101/24, got "
                         f"{_got(value, path)}") from None
    _service_ip(path, str(iface.ip))
    _not_network_or_broadcast(iface)
    return iface


def _not_network_or_broadcast(iface: IPInterface) -> None:
    net = iface.network
    if iface.version == 4 and net.prefixlen <= 30:
        if iface.ip == net.network_address:
            raise ValueError(f"{iface.ip} is the network address of {net}")
        if iface.ip == net.broadcast_address:
            raise ValueError(f"{iface.ip} is the broadcast address of {net}")


def _path(ctx: _Ctx) -> Converter[Path]:
    def convert(path: str, value: Any) -> Path:
        return ctx.resolve(_str(path, value))

    return convert


def _socket_path(ctx: _Ctx) -> Converter[Path]:
    def convert(path: str, value: Any) -> Path:
        p = ctx.resolve(_str(path, value))
        if len(os.fsencode(p)) > UNIX_PATH_MAX:
            raise ValueError(f"{p} is too long for a unix socket (at most {UNIX_PATH_MAX} "
                             "bytes)")
        return p

    return convert


def _kinds(path: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"expected a list of event kinds, got {_got(value, path)}")
    known = [k.value for k in EventKind]
    out: list[str] = []
    for i, item in enumerate(items):
        sub = f"{path}[{i}]" if isinstance(value, list) else path
        name = item.strip().lower() if isinstance(item, str) else None
        if name not in known:
            hint = _hint(item, known) if isinstance(item, str) else ""
            raise ConfigError(sub, f"not a known event kind, got {_got(item, sub)}"
                              f"{hint or ' (one of: ' + ', '.join(known) + ')'}")
        if name not in out:
            out.append(name)
    return tuple(out)


def _severity(path: str, value: Any) -> str:
    labels = [s.label for s in Severity]
    return _choice(labels, {"warn": "warning", "err": "error", "crit": "critical",
                            "emerg": "emergency"})(path, value)


# ====================================================================== secrets


def _read_secret_file(ctx: _Ctx, path: str, raw: Any) -> bytes:
    """Read a secret file: it must exist, be a regular file and be private to its owner."""
    p = ctx.resolve(_str(path, raw))
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ValueError(f"no such file: {p}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{p} is not a regular file")
    if st.st_mode & 0o077:
        raise ValueError(f"{p} is accessible to group or others (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}) and holds a secret: run "
                         f"`chmod 600 {p}`")
    if st.st_size > MAX_SECRET_BYTES:
        raise ValueError(f"{p} is larger than {MAX_SECRET_BYTES // 1024} KiB: not a key file")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except PermissionError:
        raise ValueError(f"cannot read {p}: permission denied (run as a user that can "
                         "read it, normally root)") from None
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from None
    # `echo secret > file` adds a newline that is not part of the secret
    return data.rstrip(b"\r\n")


def _decode_secret(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text") from None


def _secret(m: _Map, name: str, *, min_len: int = 1) -> str | None:
    """`name`, `name_file` or `name_env` (at most one) as text; None if none is given."""
    given = [k for k in (name, f"{name}_file", f"{name}_env") if m.has(k)]
    if len(given) > 1:
        m.failed = True
        m.ctx.add(m.key(given[1]), f"give only one of {', '.join(given)}")
        return None
    if not given:
        return None
    key = given[0]
    if key != name and not m.ctx.secrets:
        return None

    def inline(path: str, value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # a numeric community such as 12345
        if not isinstance(value, str) or not value:
            # the value may be the secret: describe it, never show it
            raise ValueError(f"expected a non-empty string (a {type(value).__name__} was "
                             "given; the value is not shown)")
        return value

    def from_file(path: str, value: Any) -> str:
        return _decode_secret(_read_secret_file(m.ctx, path, value), "the file")

    def from_env(path: str, value: Any) -> str:
        if not isinstance(value, str) or not _ENV_RE.fullmatch(value.strip()):
            raise ValueError(f"expected an environment variable name, got {_got(value, path)}")
        var = value.strip()
        if var not in os.environ:
            raise ValueError(f"environment variable {var} is not set")
        return os.environ[var]

    convert = {name: inline, f"{name}_file": from_file, f"{name}_env": from_env}[key]
    secret = m.opt(key, convert)
    if secret is None:
        return None
    if len(secret.encode("utf-8")) < min_len:
        m.failed = True
        m.ctx.add(m.key(key), f"too short: at least {min_len} bytes are needed (the value "
                              "is not shown)")
        return None
    return secret


# ====================================================================== sections

_TOP_KEYS = ("node", "control_socket", "control_max_connections", "state_dir", "logging",
             "monitors", "alerting", "pools", "journal")
_JOURNAL_KEYS = ("max_bytes", "max_age")
_NODE_KEYS = ("name", "local_ip", "release_on_stop")
_LOGGING_KEYS = ("level", "syslog", "syslog_socket", "syslog_facility")
_MONITOR_KEYS = ("name", "monitor_ip", "monitor_subnet", "role", "peer_ip", "looksalive",
                 "isalive", "fallback", "probe", "announce", "startup_grace", "hooks")
_HOOKS_KEYS = ("up", "down", "timeout", "mode")
_LOOKSALIVE_KEYS = ("interval", "retry", "timeout")
_ISALIVE_KEYS = ("interval", "retry", "on_holder", "check")
_FALLBACK_KEYS = ("mode", "hold_down")
_PROBE_KEYS = ("count", "interval")
_ANNOUNCE_KEYS = ("count", "interval", "refresh")
_ALERTING_KEYS = ("snmp", "apprise", "exec", "nagios", "icinga2", "nsca", "prometheus",
                  "queue_size", "max_backlog")
_NAGIOS_KEYS = ("command_file", "host", "service_prefix")
_NSCA_KEYS = ("server", "port", "config_file", "host", "service_prefix", "timeout")
_ICINGA2_KEYS = ("url", "user", "password", "password_file", "password_env", "ca_file", "host",
                 "service_prefix", "timeout")
_EXEC_KEYS = ("name", "command", "events", "min_severity", "timeout")
_SNMP_KEYS = ("targets",)
_SNMP_TARGET_KEYS = ("host", "port", "version", "type", "community", "community_file",
                     "community_env", "user", "auth_protocol", "auth_key", "auth_key_file",
                     "auth_key_env", "priv_protocol", "priv_key", "priv_key_file",
                     "priv_key_env", "kinds", "min_severity", "timeout", "retries")
_APPRISE_KEYS = ("urls", "urls_file", "config", "kinds", "min_severity", "title", "body")
_APPRISE_URL_KEYS = ("url", "tag", "tags", "kinds", "min_severity")
_PROMETHEUS_KEYS = ("listen", "max_connections")
_POOL_KEYS = ("name", "members", "addresses", "key_file", "looksalive", "watch", "preferred",
              "fallback", "witness", "port", "coordination", "hooks")
_COORDINATION_KEYS = ("backend", "endpoints", "ttl", "prefix", "tls", "username",
                      "password_file")
_ETCD_TLS_KEYS = ("ca_file", "cert_file", "key_file")
# only the embedded mode's UDP heartbeats use these: refused with etcd, not silently ignored
_EMBEDDED_ONLY = ("looksalive", "watch", "witness", "port")
ETCD_MIN_TTL = 2  # etcd raises shorter leases to 1.5 x its election timeout (1 s default)
ETCD_MAX_TTL = 600
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9_.\-]+)+", re.ASCII)
_MEMBER_KEYS = ("name", "ip", "weight")


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


def _list(ctx: _Ctx, parent: _Map, key: str, what: str) -> list[Any]:
    value = parent.data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        parent.failed = True
        ctx.add(parent.key(key), f"expected a list of {what} (lines starting with '- '), got "
                                 f"{_got(value, parent.key(key))}")
        return []
    return value


# ---------------------------------------------------------------- monitors


def _monitors(ctx: _Ctx, top: _Map, local_ip: IPAddress | None
              ) -> list[tuple[str, MonitorConfig]]:
    out: list[tuple[str, MonitorConfig]] = []
    for i, item in enumerate(_list(ctx, top, "monitors", "monitors")):
        path = f"monitors[{i}]"
        monitor = ctx.section(None, _monitor, ctx, path, item, local_ip)
        if monitor is not None:
            out.append((path, monitor))
    names: dict[str, str] = {}
    ips: dict[IPAddress, str] = {}
    for path, mon in out:
        if mon.name in names:
            first = names[mon.name]
            ctx.add(f"{path}.name", f"monitor name {mon.name!r} is already used by {first} "
                                    f"(line {ctx.line(first)})")
        names.setdefault(mon.name, path)
        if mon.ip in ips:
            first = ips[mon.ip]
            ctx.add(f"{path}.monitor_ip", f"{mon.ip} is already watched by {first} (line "
                                          f"{ctx.line(first)})")
        ips.setdefault(mon.ip, path)
    return out


def _monitor(ctx: _Ctx, path: str, value: Any, local_ip: IPAddress | None) -> MonitorConfig:
    m = _Map(ctx, path, value, _MONITOR_KEYS, what="a monitor (name, monitor_ip, ...)")
    name = m.req("name", _name)
    ip = m.req("monitor_ip", _service_ip)
    mask = m.req("monitor_subnet", _mask, " (MONITORSUBNET: a prefix length such as 24, or "
                 "a mask such as 255.255.255.0)")
    role = m.req("role", _enum(Role), " (primary or backup)")
    peer = m.opt("peer_ip", _ip)
    looksalive = m.get("looksalive", lambda p, v: _looksalive(ctx, p, v), LooksAliveConfig())
    isalive = m.get("isalive", lambda p, v: _isalive(ctx, p, v), IsAliveConfig())
    fallback = m.get("fallback", lambda p, v: _fallback(ctx, p, v), FallbackConfig())
    probe = m.get("probe", lambda p, v: _probe(ctx, p, v, looksalive),
                  _probe(ctx, f"{path}.probe", {}, looksalive))
    announce = m.get("announce", lambda p, v: _announce(ctx, p, v), AnnounceConfig())
    startup_grace = m.opt("startup_grace", _duration(zero=True))
    hooks = m.get("hooks", lambda p, v: _address_hooks(ctx, p, v), AddressHooksConfig())
    if startup_grace is not None and role is Role.PRIMARY:
        m.failed = True
        ctx.add(m.key("startup_grace"), "only applies to role backup (the grace a starting "
                                        "backup gives its primary before taking over)")
    address: IPInterface | None = None
    if ip is not None and local_ip is not None and ip == local_ip:
        m.failed = True
        ctx.add(m.key("monitor_ip"), f"{ip} is node.local_ip (LOCALIP, line "
                                     f"{ctx.line('node.local_ip')}): the failover address "
                                     "must be a separate address")
    if ip is not None and mask is not None:
        address = _address(m, ip, mask)
    if peer is not None and ip is not None:
        if peer.version != ip.version:
            m.failed = True
            ctx.add(m.key("peer_ip"), f"{peer} is IPv{peer.version} but monitor_ip {ip} is "
                                      f"IPv{ip.version}")
        elif peer == ip:
            m.failed = True
            ctx.add(m.key("peer_ip"), "must be the other host's own address, not monitor_ip")
    if peer is not None and local_ip is not None and peer == local_ip:
        m.failed = True
        ctx.add(m.key("peer_ip"), f"{peer} is this node's own local_ip: peer_ip is the "
                                  "other host's address")
    if m.has("fallback") and fallback.mode is FallbackMode.AUTO:
        mode_key = f"{m.key('fallback')}.mode"
        if role is Role.PRIMARY:
            m.failed = True
            ctx.add(mode_key, "fallback.mode auto only applies to role backup (the backup "
                              "hands the address back to the primary)")
        elif role is Role.BACKUP and peer is None and not m.has("peer_ip"):
            m.failed = True
            ctx.add(mode_key, "fallback.mode auto needs peer_ip (the primary host's own "
                              "address, watched to decide when to fall back)")
    m.check()
    if name is None or address is None or role is None:
        raise _Skip
    return MonitorConfig(name=name, address=address, role=role, peer_ip=peer,
                         looksalive=looksalive, isalive=isalive, fallback=fallback,
                         probe=probe, announce=announce, startup_grace=startup_grace,
                         hooks=hooks)


def _address(m: _Map, ip: IPAddress, mask: tuple[int, bool]) -> IPInterface | None:
    prefix, dotted = mask
    key = m.key("monitor_subnet")
    if ip.version == 6 and dotted:
        m.ctx.add(key, "IPv6 takes a prefix length (such as 64), not a dotted mask")
    elif not 1 <= prefix <= ip.max_prefixlen:
        m.ctx.add(key, f"prefix length must be 1-{ip.max_prefixlen} for an IPv{ip.version} "
                       f"monitor_ip, got {prefix}")
    else:
        iface = ipaddress.ip_interface(f"{ip}/{prefix}")
        try:
            _not_network_or_broadcast(iface)
        except ValueError as exc:
            m.ctx.add(m.key("monitor_ip"), str(exc))
        else:
            return iface
    m.failed = True
    return None


def _looksalive(ctx: _Ctx, path: str, value: Any) -> LooksAliveConfig:
    m = _Map(ctx, path, value, _LOOKSALIVE_KEYS)
    d = LooksAliveConfig()
    interval = m.get("interval", _duration(least=MIN_PING_INTERVAL), d.interval)
    # an unset timeout follows the interval, so `{interval: 100ms}` alone is valid
    cfg = LooksAliveConfig(interval=interval,
                           retry=m.get("retry", _int(1, 1000), d.retry),
                           timeout=m.get("timeout", _duration(least=MIN_PING_TIMEOUT),
                                         LooksAliveConfig.default_timeout(interval)))
    m.check()
    if cfg.timeout > cfg.interval:  # only an explicit timeout can be longer
        ctx.fail(m.key("timeout"), f"timeout ({cfg.timeout:g}s) must not be longer than "
                                   f"interval ({cfg.interval:g}s)")
    return cfg


def _isalive(ctx: _Ctx, path: str, value: Any) -> IsAliveConfig:
    m = _Map(ctx, path, value, _ISALIVE_KEYS)
    d = IsAliveConfig()
    interval = m.get("interval", _duration(least=MIN_CHECK_INTERVAL), d.interval)
    retry = m.get("retry", _int(1, 1000), d.retry)
    on_holder = m.get("on_holder", _bool, d.on_holder)
    check = m.get("check", lambda p, v: _check(ctx, p, v), d.check)
    m.check()
    if check.timeout > interval:
        which = "check.timeout" if m.has("check") and "timeout" in m.data["check"] else \
            "interval"
        ctx.fail(f"{path}.{which}", f"the check timeout ({check.timeout:g}s) must not be "
                                    f"longer than the isalive interval ({interval:g}s)")
    return IsAliveConfig(interval=interval, retry=retry, check=check, on_holder=on_holder)


def _check(ctx: _Ctx, path: str, value: Any) -> CheckConfig:
    # the check's own keys are validated by its schema: no key list here
    m = _Map(ctx, path, value, None, what="a check (type: http, url: ..., ...)")
    from minisft.probes.isalive import CheckParamError, validate_check

    type_ = m.req("type", _str, " (always, http, https, tcp, tls, command or python)")
    timeout = m.get("timeout", _duration(least=MIN_CHECK_TIMEOUT), CheckConfig().timeout)
    m.check()
    assert type_ is not None
    params = {k: v for k, v in m.data.items() if k not in ("type", "timeout")}
    try:
        validated = validate_check(type_.lower(), params)
    except CheckParamError as exc:
        key = m.path if exc.key == "params" else m.key(exc.key)
        message = exc.message
        if exc.key not in ("type", "params") and exc.key in params and "unknown" in message:
            from minisft.probes.isalive.schema import SCHEMAS

            hint = _hint(exc.key, SCHEMAS.get(type_.lower(), {}))
            message = f"unknown key for a {type_.lower()} check{hint}" if hint else message
        ctx.fail(key, message)
    return CheckConfig(type=type_.lower(), timeout=timeout, params=validated)


def _address_hooks(ctx: _Ctx, path: str, value: Any) -> AddressHooksConfig:
    m = _Map(ctx, path, value, _HOOKS_KEYS, what="address hooks {up, down, timeout, mode}")
    d = AddressHooksConfig()
    argv = lambda p, v: _hook_argv(ctx, p, v)  # noqa: E731
    cfg = AddressHooksConfig(up=m.get("up", argv, d.up), down=m.get("down", argv, d.down),
                             timeout=m.get("timeout", _duration(), d.timeout),
                             mode=m.get("mode", _enum(HookMode), d.mode))
    m.check()
    if not cfg.up and not cfg.down:
        ctx.fail(path, "names no command: give up, down or both (argv lists)")
    if cfg.mode is HookMode.INSTEAD and not cfg.up:
        ctx.fail(m.key("up"), "mode instead needs an up command: it is what moves the "
                              "address to this node (nothing is bound locally)")
    return cfg


def _hook_argv(ctx: _Ctx, path: str, value: Any) -> tuple[str, ...]:
    """An event command's argv whose items may hold {address}, {prefixlen}, {interface},
    {monitor}; any other brace is an error now, not a failed hook at the first takeover."""
    import string

    argv = _command(ctx, path, value)
    allowed = ", ".join("{" + p + "}" for p in HOOK_PLACEHOLDERS)
    for i, item in enumerate(argv):
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(item)
                      if f is not None]
        except ValueError as exc:
            raise ConfigError(f"{path}[{i}]", f"not a valid template ({exc}; write {{{{ "
                                              "and }}}} for a literal brace)") from None
        for field_name, spec, conv in fields:
            if field_name not in HOOK_PLACEHOLDERS or spec or conv:
                raise ConfigError(f"{path}[{i}]", f"unknown placeholder "
                                                  f"{{{field_name}{'!' + conv if conv else ''}"
                                                  f"{':' + spec if spec else ''}}} (one of: "
                                                  f"{allowed}; write {{{{ and }}}} for a "
                                                  "literal brace)")
    return argv


def _fallback(ctx: _Ctx, path: str, value: Any) -> FallbackConfig:
    m = _Map(ctx, path, value, _FALLBACK_KEYS)
    d = FallbackConfig()
    cfg = FallbackConfig(mode=m.get("mode", _enum(FallbackMode), d.mode),
                         hold_down=m.get("hold_down", _duration(least=MIN_HOLD_DOWN),
                                         d.hold_down))
    m.check()
    return cfg


def _probe(ctx: _Ctx, path: str, value: Any, looksalive: LooksAliveConfig) -> ProbeConfig:
    m = _Map(ctx, path, value, _PROBE_KEYS)
    count = m.get("count", _int(1, 100), ProbeConfig().count)
    interval = m.get("interval", _duration(least=MIN_PROBE_INTERVAL),
                     ProbeConfig.interval_for(looksalive, count))
    cfg = ProbeConfig(count=count, interval=interval)
    m.check()
    return cfg


def _announce(ctx: _Ctx, path: str, value: Any) -> AnnounceConfig:
    m = _Map(ctx, path, value, _ANNOUNCE_KEYS)
    d = AnnounceConfig()
    cfg = AnnounceConfig(count=m.get("count", _int(1, 100), d.count),
                         interval=m.get("interval", _duration(least=MIN_ANNOUNCE_INTERVAL),
                                        d.interval),
                         refresh=m.get("refresh",
                                       _duration(least=MIN_ANNOUNCE_REFRESH, zero=True),
                                       d.refresh))
    m.check()
    return cfg


# ---------------------------------------------------------------- alerting


def _alerting(ctx: _Ctx, top: _Map) -> AlertingConfig:
    m = _Map(ctx, "alerting", top.data.get("alerting"), _ALERTING_KEYS)
    d = AlertingConfig()
    targets: tuple[SnmpTargetConfig, ...] = ()
    if m.has("snmp"):
        snmp = _Map(ctx, "alerting.snmp", m.data["snmp"], _SNMP_KEYS)
        targets = tuple(t for t in (
            ctx.section(None, _snmp_target, ctx, f"alerting.snmp.targets[{i}]", item)
            for i, item in enumerate(_list(ctx, snmp, "targets", "SNMP targets"))
        ) if t is not None)
        m.failed = m.failed or snmp.failed
    apprise = m.opt("apprise", lambda p, v: _apprise(ctx, p, v))
    exec_hooks = _exec_hooks(ctx, m)
    nagios = m.opt("nagios", lambda p, v: _nagios(ctx, p, v))
    icinga2 = m.opt("icinga2", lambda p, v: _icinga2(ctx, p, v))
    nsca = m.opt("nsca", lambda p, v: _nsca(ctx, p, v))
    listen = None
    prom_max = d.prometheus_max_connections
    if m.has("prometheus"):
        prom = _Map(ctx, "alerting.prometheus", m.data["prometheus"], _PROMETHEUS_KEYS)
        listen = prom.req("listen", _listen, " (host:port, such as 127.0.0.1:9523)")
        prom_max = prom.get("max_connections", _int(1, 512), prom_max)
        m.failed = m.failed or prom.failed
    cfg = AlertingConfig(snmp_targets=targets, apprise=apprise, exec_hooks=exec_hooks,
                         nagios=nagios, icinga2=icinga2, nsca=nsca,
                         prometheus_listen=listen,
                         prometheus_max_connections=prom_max,
                         queue_size=m.get("queue_size", _int(1, 1_000_000), d.queue_size),
                         max_backlog=m.get("max_backlog", _int(1), d.max_backlog))
    m.check()
    return cfg


def _listen(path: str, value: Any) -> str:
    """host:port, [v6]:port or :port, as minisft.monitoring.prometheus.parse_listen takes."""
    text = _str(path, value)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        ok = bool(sep)
        if ok:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                ok = False
    else:
        host, sep, port = text.rpartition(":")
        ok = bool(sep) and ":" not in host and (not host or _HOST_RE.fullmatch(host) is not None)
    if not ok or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, [IPv6]:port or :port (port 1-65535), got "
                         f"{_got(value, path)}")
    return text


def _snmp_version(path: str, value: Any) -> str:
    text = str(value).strip().lower().removeprefix("v") if isinstance(
        value, str | int) and not isinstance(value, bool) else ""
    if text in ("2c", "2"):
        return "2c"
    if text == "3":
        return "3"
    if text == "1":
        raise ValueError("SNMP version 1 is not supported: use 2c or 3")
    raise ValueError(f"expected 2c or 3, got {_got(value, path)}")


def _host(path: str, value: Any) -> str:
    text = _str(path, value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        if len(text) > 253 or not _HOST_RE.fullmatch(text):
            raise ValueError("expected a host name or IP address, got "
                             f"{_got(value, path)}") from None
        return text


def _snmp_target(ctx: _Ctx, path: str, value: Any) -> SnmpTargetConfig:
    m = _Map(ctx, path, value, _SNMP_TARGET_KEYS, what="an SNMP target (host, version, ...)")
    d = SnmpTargetConfig(host="-")
    host = m.req("host", _host)
    before = m.failed
    version = m.get("version", _snmp_version, d.version)
    if m.failed and not before:
        m.check()  # which keys apply depends on the version: stop here
    only = {"2c": ("community", "community_file", "community_env"),
            "3": ("user", "auth_key", "auth_key_file", "auth_key_env", "priv_key",
                  "priv_key_file", "priv_key_env", "auth_protocol", "priv_protocol")}
    other = "3" if version == "2c" else "2c"
    for key in only[other]:
        if m.has(key):
            m.failed = True
            ctx.add(m.key(key), f"only applies to SNMP version {other} (this target is "
                                f"version {version})")
    community = user = auth_key = priv_key = None
    if version == "2c":
        community = _secret(m, "community")
        if not m.failed and not any(m.has(k) for k in only["2c"]):
            m.failed = True
            ctx.add(m.key("community"), "required for SNMP version 2c (or community_file / "
                                        "community_env)")
    else:
        user = m.req("user", _str, " for SNMP version 3")
        auth_key = _secret(m, "auth_key", min_len=MIN_SNMP_KEY)
        priv_key = _secret(m, "priv_key", min_len=MIN_SNMP_KEY)
        has_auth = any(m.has(k) for k in ("auth_key", "auth_key_file", "auth_key_env"))
        has_priv = any(m.has(k) for k in ("priv_key", "priv_key_file", "priv_key_env"))
        if has_priv and not has_auth:
            m.failed = True
            ctx.add(m.key("auth_key"), "required when a priv key is set (SNMPv3 privacy needs "
                                       "authentication): give auth_key_file or auth_key_env")
    cfg = SnmpTargetConfig(
        host=host or d.host,
        port=m.get("port", _int(1, 65535), d.port),
        version=version,
        type=m.get("type", _choice(("trap", "inform")), d.type),
        community=community,
        user=user,
        auth_protocol=m.get("auth_protocol", _choice(SNMP_AUTH, {"sha1": "sha"}),
                            d.auth_protocol),
        priv_protocol=m.get("priv_protocol", _choice(SNMP_PRIV, {"aes": "aes128"}),
                            d.priv_protocol),
        auth_key=auth_key,
        priv_key=priv_key,
        kinds=m.get("kinds", _kinds, d.kinds),
        min_severity=m.get("min_severity", _severity, d.min_severity),
        timeout=m.get("timeout", _duration(least=MIN_SNMP_TIMEOUT), d.timeout),
        retries=m.get("retries", _int(0, 10), d.retries),
    )
    m.check()
    return cfg


def _apprise(ctx: _Ctx, path: str, value: Any) -> AppriseConfig:
    m = _Map(ctx, path, value, _APPRISE_KEYS)
    d = AppriseConfig()
    no_urls: tuple[str | dict[str, Any], ...] = ()
    urls = list(m.get("urls", lambda p, v: _apprise_urls(ctx, p, v), no_urls))
    urls += m.get("urls_file", lambda p, v: _urls_file(ctx, p, v), list[str]())
    config_file = m.opt("config", lambda p, v: _private_file(ctx, p, v))
    cfg = AppriseConfig(
        urls=tuple(urls),
        config_file=config_file,
        kinds=m.get("kinds", _kinds, d.kinds),
        min_severity=m.get("min_severity", _severity, d.min_severity),
        title=m.get("title", _template, d.title),
        body=m.get("body", _template, d.body),
    )
    if not m.failed and not any(m.has(k) for k in ("urls", "urls_file", "config")):
        ctx.fail(path, "needs urls, urls_file or config (where to send the alerts)")
    m.check()
    return cfg


def _nagios(ctx: _Ctx, path: str, value: Any) -> NagiosConfig:
    m = _Map(ctx, path, value, _NAGIOS_KEYS)
    d = NagiosConfig()
    cfg = NagiosConfig(command_file=m.get("command_file", _path(ctx), d.command_file),
                       host=m.opt("host", _nagios_text(_str)),
                       service_prefix=m.get("service_prefix", _nagios_text(_text),
                                            d.service_prefix))
    m.check()
    return cfg


def _icinga2(ctx: _Ctx, path: str, value: Any) -> Icinga2Config:
    m = _Map(ctx, path, value, _ICINGA2_KEYS, what="the Icinga 2 API (url, user, ...)")
    d = Icinga2Config(url="-", user="-")
    url = m.req("url", _icinga2_url, " (https://HOST:5665)")
    user = m.req("user", _str, " (an ApiUser allowed actions/process-check-result)")
    password = _secret(m, "password")
    if password is None and not m.failed and ctx.secrets:
        m.failed = True
        ctx.add(m.key("password_file"), "required (a file, mode 0600, holding the ApiUser's "
                                        "password; or password_env)")
    cfg = Icinga2Config(
        url=url or d.url, user=user or d.user, password=password or "",
        ca_file=m.opt("ca_file", _existing_file(ctx)),
        host=m.opt("host", _str),
        service_prefix=m.get("service_prefix", _text, d.service_prefix),
        timeout=m.get("timeout", _duration(), d.timeout),
    )
    m.check()
    return cfg


def _icinga2_url(path: str, value: Any) -> str:
    text = _str(path, value).rstrip("/")
    scheme, sep, rest = text.partition("://")
    if scheme.lower() != "https" or not sep or not rest or "@" in rest:
        raise ValueError(f"expected https://HOST[:PORT] (TLS, no credentials: use user and "
                         f"password_file), got {_got(value, path) if '@' not in text else 'a URL'}")
    return text


def _existing_file(ctx: _Ctx) -> Converter[Path]:
    def convert(path: str, value: Any) -> Path:
        p = ctx.resolve(_str(path, value))
        if not p.is_file():
            raise ValueError(f"no such file: {p}")
        return p

    return convert


def _nsca(ctx: _Ctx, path: str, value: Any) -> NscaConfig:
    m = _Map(ctx, path, value, _NSCA_KEYS, what="an NSCA server (server, config_file, ...)")
    send_nsca = shutil.which("send_nsca", path=HOOK_PATH)
    if send_nsca is None:
        ctx.fail(path, "send_nsca is not installed (Debian: apt install nsca-client)")
    d = NscaConfig(server="-", config_file=Path("-"))
    server = m.req("server", _host, " (the NSCA daemon's host name or address)")
    config_file = m.req("config_file", lambda p, v: _private_file(ctx, p, v),
                        " (send_nsca.cfg with password and encryption_method, chmod 600)")
    cfg = NscaConfig(
        server=server or d.server, config_file=config_file or d.config_file,
        port=m.get("port", _int(1, 65535), d.port),
        host=m.opt("host", _nagios_text(_str)),
        service_prefix=m.get("service_prefix", _nagios_text(_text), d.service_prefix),
        timeout=m.get("timeout", _duration(), d.timeout), send_nsca=send_nsca)
    m.check()
    return cfg


def _nagios_text(convert: Converter[str]) -> Converter[str]:
    """A host or service name part: ';' and line breaks separate external commands."""
    def checked(path: str, value: Any) -> str:
        text = convert(path, value)
        if any(c in text for c in ";\n\r"):
            raise ValueError(f"must not contain ';' or a line break, got {_got(value, path)}")
        return text

    return checked


def _exec_hooks(ctx: _Ctx, m: _Map) -> tuple[ExecHookConfig, ...]:
    hooks: list[ExecHookConfig] = []
    for i, item in enumerate(_list(ctx, m, "exec", "event commands")):
        path = f"alerting.exec[{i}]"
        hook = ctx.section(None, _exec_hook, ctx, path, item)
        if hook is None:
            m.failed = True
        elif any(h.name == hook.name for h in hooks):
            m.failed = True
            ctx.add(f"{path}.name", f"another event command is already named {hook.name!r} "
                                    "(the name keys its delivery cursor)")
        else:
            hooks.append(hook)
    return tuple(hooks)


def _exec_hook(ctx: _Ctx, path: str, value: Any) -> ExecHookConfig:
    m = _Map(ctx, path, value, _EXEC_KEYS, what="an event command {name, command, events}")
    d = ExecHookConfig(name="-", command=())
    name = m.req("name", _name)
    command = m.req("command", lambda p, v: _command(ctx, p, v),
                    " (the program and its arguments, such as [/usr/local/bin/notify, "
                    "--quiet])")
    cfg = ExecHookConfig(
        name=name or d.name,
        command=command or d.command,
        kinds=m.get("events", _kinds, d.kinds),
        min_severity=m.get("min_severity", _severity, d.min_severity),
        timeout=m.get("timeout", _duration(), d.timeout),
    )
    m.check()
    return cfg


def _command(ctx: _Ctx, path: str, value: Any) -> tuple[str, ...]:
    """An argv list; the program must exist and be executable now. A bare name is looked
    up in the hooks' PATH (the daemon's own PATH is not used: hooks get a clean
    environment), a relative path is relative to the config file."""
    if isinstance(value, str):
        # the string itself is not quoted back: a command line may carry a password
        raise ValueError("expected a list: the program and its arguments, one item each "
                         "(no shell parsing), such as [/usr/local/bin/notify, --to, ops]"
                         if value.split() else "expected a non-empty list")
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty list (the program and its arguments), got "
                         f"{_got(value, path)}")
    argv: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or "\0" in item or (i == 0 and not item.strip()):
            raise ConfigError(f"{path}[{i}]", f"expected a string, got {_got(item)}")
        argv.append(item)
    program = argv[0].strip()
    if "/" in program:
        found: str | None = str(ctx.resolve(program))
    else:
        found = shutil.which(program, path=HOOK_PATH)
    if found is None or not os.path.isfile(found):
        where = "" if "/" in program else f" (searched {HOOK_PATH})"
        raise ConfigError(f"{path}[0]", f"no such program: {program}{where}")
    if not os.access(found, os.X_OK):
        raise ConfigError(f"{path}[0]", f"{found} is not executable (chmod +x it)")
    return (found, *argv[1:])


def _template(path: str, value: Any) -> str:
    import string

    text = _text(path, value)
    try:
        list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}; write {{{{ and }}}} for a literal "
                         "brace)") from None
    return text


def _is_url(text: str) -> bool:
    scheme, sep, rest = text.partition("://")
    return bool(sep and rest and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme))


_URL_HINT = "expected an apprise URL such as mailto://... (the value is not shown: it may " \
            "hold a password)"


def _apprise_urls(ctx: _Ctx, path: str, value: Any) -> tuple[str | dict[str, Any], ...]:
    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list):
        raise ValueError(f"expected a list of apprise URLs, got {_got(value, path)}")
    out: list[str | dict[str, Any]] = []
    for i, item in enumerate(items):
        sub = f"{path}[{i}]" if isinstance(value, list) else path
        if isinstance(item, str):
            if not _is_url(item.strip()):
                raise ConfigError(sub, _URL_HINT, line=ctx.line(sub), source=ctx.source)
            out.append(item.strip())
            continue
        if not isinstance(item, dict):
            raise ConfigError(sub, f"expected a URL or a mapping {{url, kinds, min_severity, "
                                   f"tag}}, got {_got(item, sub)}", line=ctx.line(sub),
                              source=ctx.source)
        e = _Map(ctx, sub, item, _APPRISE_URL_KEYS)
        url = e.req("url", lambda p, v: _secret_url(p, v))
        entry: dict[str, Any] = {"url": url}
        for tag_key in ("tag", "tags"):
            if e.has(tag_key):
                entry["tag"] = e.get(tag_key, _tags, list[str]())
        if e.has("kinds"):
            entry["kinds"] = list(e.get("kinds", _kinds, tuple[str, ...]()))
        if e.has("min_severity"):
            entry["min_severity"] = e.get("min_severity", _severity, "debug")
        e.check()
        out.append(entry)
    return tuple(out)


def _secret_url(path: str, value: Any) -> str:
    if not isinstance(value, str) or not _is_url(value.strip()):
        raise ValueError(_URL_HINT)
    return value.strip()


def _tags(path: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) and t for t in items):
        raise ValueError(f"expected a tag or a list of tags, got {_got(value, path)}")
    return [str(t) for t in items]


def _urls_file(ctx: _Ctx, path: str, value: Any) -> list[str]:
    if not ctx.secrets:
        return []
    data = _decode_secret(_read_secret_file(ctx, path, value), "the file")
    urls = []
    for number, line in enumerate(data.splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not _is_url(text):
            raise ValueError(f"line {number} of {ctx.resolve(str(value))} is not an apprise "
                             "URL (the line is not shown: it may hold a password)")
        urls.append(text)
    if not urls:
        raise ValueError(f"{ctx.resolve(str(value))} holds no URL")
    return urls


def _private_file(ctx: _Ctx, path: str, value: Any) -> Path:
    if not ctx.secrets:
        return ctx.resolve(_str(path, value))
    _read_secret_file(ctx, path, value)  # the same rules: it holds URLs with passwords
    return ctx.resolve(_str(path, value))


# ---------------------------------------------------------------- pools


def _pools(ctx: _Ctx, top: _Map, node: NodeConfig | None,
           monitors: list[tuple[str, MonitorConfig]]) -> tuple[PoolConfig, ...]:
    taken: dict[IPAddress, str] = {m.ip: f"{p}.monitor_ip" for p, m in monitors}
    if node is not None:
        taken[node.local_ip] = "node.local_ip"
    out: list[PoolConfig] = []
    names: dict[str, str] = {}
    for i, item in enumerate(_list(ctx, top, "pools", "pools")):
        path = f"pools[{i}]"
        pool = ctx.section(None, _pool, ctx, path, item, node)
        if pool is None:
            continue
        if pool.name in names:
            ctx.add(f"{path}.name", f"pool name {pool.name!r} is already used by "
                                    f"{names[pool.name]} (line {ctx.line(names[pool.name])})")
        names.setdefault(pool.name, path)
        for j, iface in enumerate(pool.addresses):
            sub = f"{path}.addresses[{j}]"
            if iface.ip in taken:
                ctx.add(sub, f"{iface.ip} is already used by {taken[iface.ip]} (line "
                             f"{ctx.line(taken[iface.ip])})")
            taken.setdefault(iface.ip, sub)
        out.append(pool)
    return tuple(out)


def _pool(ctx: _Ctx, path: str, value: Any, node: NodeConfig | None) -> PoolConfig:
    m = _Map(ctx, path, value, _POOL_KEYS, what="a pool (name, members, addresses, ...)")
    name = m.req("name", _name)
    members = m.req("members", lambda p, v: _members(ctx, p, v),
                    " (the nodes sharing the addresses)")
    addresses = m.req("addresses", lambda p, v: _pool_addresses(ctx, p, v))
    coordination = m.get("coordination", lambda p, v: _coordination(ctx, p, v),
                         CoordinationConfig())
    raw = m.data.get("coordination")
    # a broken coordination block that asks for etcd must not add a key_file error
    says_etcd = isinstance(raw, dict) and str(raw.get("backend", "")).strip().lower() == "etcd"
    key: bytes | None = None
    if coordination.etcd or says_etcd:
        # heartbeats are gone; the key, when given, authenticates the pool definition
        # stored in etcd (an HMAC), so etcd write access alone cannot add addresses
        for extra in _EMBEDDED_ONLY:
            if m.has(extra):
                m.failed = True
                ctx.add(m.key(extra), "not used with coordination.backend etcd (liveness is "
                                      "the etcd lease, quorum is etcd's): remove it")
        if m.has("key_file") and ctx.secrets:
            key = m.opt("key_file", lambda p, v: _pool_key(ctx, p, v))
    elif not m.has("key_file"):
        m.failed = True
        ctx.add(m.key("key_file"), "required (a file of at least 16 random bytes, the same "
                                   "on every member: head -c 32 /dev/urandom > FILE)")
    else:
        key = m.opt("key_file", lambda p, v: _pool_key(ctx, p, v)) if ctx.secrets else None
    d = PoolConfig(name="-", members=(), addresses=())
    looksalive = m.get("looksalive", lambda p, v: _looksalive(ctx, p, v), d.looksalive)
    watch = m.get("watch", _choice(("neighbour", "all"), {"neighbor": "neighbour"}), d.watch)
    fallback = m.get("fallback", lambda p, v: _fallback(ctx, p, v), d.fallback)
    witness = m.opt("witness", _ip)
    port = m.get("port", _int(1, 65535), d.port)
    hooks = m.get("hooks", lambda p, v: _address_hooks(ctx, p, v), AddressHooksConfig())
    if m.has("hooks") and hooks.mode is HookMode.INSTEAD:
        m.failed = True
        ctx.add(f"{m.key('hooks')}.mode", "a pool's hooks take mode after only: its members "
                                          "move the addresses among themselves by ARP/NDP")
    if m.has("hooks") and (coordination.etcd or says_etcd):
        m.failed = True
        ctx.add(m.key("hooks"), "address hooks are not supported on an etcd pool yet (only "
                                "on monitors and embedded pools)")
    preferred: dict[str, str] = {}
    if members is not None and node is not None and node.name not in {
            mb.name for mb in members}:
        m.failed = True
        ctx.add(m.key("members"), f"this node ({node.name}, node.name) is not one of the "
                                  "members")
    if members is not None and not (coordination.etcd or says_etcd) and len(
            {mb.ip.version for mb in members}) > 1:
        # each member's heartbeat sockets are bound to its ip and connected to the others'
        m.failed = True
        ctx.add(m.key("members"), "the members' ip addresses mix IPv4 and IPv6: heartbeats "
                                  "go from each member's ip to the others', use one family")
    if members is not None and addresses is not None:
        preferred = m.get("preferred", lambda p, v: _preferred(ctx, p, v, members, addresses),
                          {})
    elif m.has("preferred"):
        m.failed = True
    m.check()
    if name is None or members is None or addresses is None:
        raise _Skip
    return PoolConfig(name=name, members=members, addresses=addresses, key=key,
                      looksalive=looksalive, watch=watch, preferred=preferred,
                      fallback=fallback, witness=witness, port=port,
                      coordination=coordination, hooks=hooks)


def _coordination(ctx: _Ctx, path: str, value: Any) -> CoordinationConfig:
    m = _Map(ctx, path, value, _COORDINATION_KEYS,
             what="a coordination mapping (backend, endpoints, ttl, ...)")
    backend = m.get("backend", _enum(CoordinationBackend), CoordinationBackend.EMBEDDED)
    if backend is CoordinationBackend.EMBEDDED:
        for extra in _COORDINATION_KEYS[1:]:
            if m.has(extra):
                m.failed = True
                ctx.add(m.key(extra), "only used with backend: etcd")
        m.check()
        return CoordinationConfig()
    if ctx.secrets and importlib.util.find_spec("aetcd") is None:
        # a full load (run, check-config, reload): say it before anything starts
        m.failed = True
        ctx.add(m.key("backend"), "etcd needs the aetcd package, which is not installed "
                                  "(pip install 'minisft[etcd]')")
    d = CoordinationConfig()
    endpoints = m.req("endpoints", _etcd_endpoints,
                      " (the etcd client URLs, e.g. [\"http://192.0.2.250:2379\"])")
    ttl = m.get("ttl", _etcd_ttl, d.ttl)
    prefix = m.get("prefix", _etcd_prefix, d.prefix)
    tls = m.opt("tls", lambda p, v: _etcd_tls(ctx, p, v))
    username = m.opt("username", _str)
    password: str | None = None
    if m.has("password_file") and ctx.secrets:
        password = m.opt("password_file", lambda p, v: _decode_secret(
            _read_secret_file(ctx, p, v), "the password file"))
    if m.has("username") != m.has("password_file"):
        m.failed = True
        ctx.add(m.key("password_file" if m.has("username") else "username"),
                "username and password_file go together")
    if endpoints is not None:
        https = {e.startswith("https://") for e in endpoints}
        if len(https) > 1:
            m.failed = True
            ctx.add(m.key("endpoints"), "mixes http:// and https:// endpoints: use one scheme")
        elif tls is not None and https == {False}:
            m.failed = True
            ctx.add(m.key("tls"), "TLS needs https:// endpoints")
    m.check()
    if endpoints is None:
        raise _Skip
    return CoordinationConfig(backend=backend, endpoints=endpoints, ttl=ttl, prefix=prefix,
                              tls=tls, username=username, password=password)


def _etcd_endpoints(path: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected a list of URLs such as http://192.0.2.250:2379, got "
                         f"{_got(value, path)}")
    out: list[str] = []
    for i, item in enumerate(items):
        sub = f"{path}[{i}]" if isinstance(value, list) else path
        try:
            url = _etcd_url(sub, item)
        except ValueError as exc:
            raise ConfigError(sub, str(exc)) from None
        if url in out:
            raise ConfigError(sub, f"{url} is listed twice")
        out.append(url)
    return tuple(out)


def _etcd_url(path: str, value: Any) -> str:
    from urllib.parse import urlsplit

    hint = "expected a URL such as http://192.0.2.250:2379 or https://etcd1.example:2379"
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(f"{hint}, got {_got(value, path)}")
    try:
        url = urlsplit(value.strip())
        port = url.port or 2379
    except ValueError:
        raise ValueError(f"{hint}, got {_got(value, path)}") from None
    host = url.hostname
    if url.scheme not in ("http", "https"):
        raise ValueError(f"the scheme must be http or https, got {url.scheme!r}")
    if not host or url.username or url.password or url.query or url.fragment or \
            url.path not in ("", "/"):
        raise ValueError(f"{hint} (no path, user or query), got {_got(value, path)}")
    try:
        ip = ipaddress.ip_address(host)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return f"{url.scheme}://{host}:{port}"


def _etcd_ttl(path: str, value: Any) -> int:
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise ValueError(f"etcd leases are whole seconds, got {_got(value, path)}")
    if not ETCD_MIN_TTL <= seconds <= ETCD_MAX_TTL:
        raise ValueError(f"must be between {ETCD_MIN_TTL}s and {ETCD_MAX_TTL}s (etcd raises "
                         "shorter leases to 1.5 election timeouts), got "
                         f"{_got(value, path)}")
    return int(seconds)


def _etcd_prefix(path: str, value: Any) -> str:
    text = value.strip().rstrip("/") if isinstance(value, str) else None
    if text is None or not _PREFIX_RE.fullmatch(text):
        raise ValueError("expected a key prefix such as /minisft (a '/' then letters, digits, "
                         "'.', '_', '-', more '/'-separated parts allowed), got "
                         f"{_got(value, path)}")
    return text


def _etcd_tls(ctx: _Ctx, path: str, value: Any) -> EtcdTLSConfig:
    m = _Map(ctx, path, value, _ETCD_TLS_KEYS, what="a mapping (ca_file, cert_file, key_file)")

    def readable(p: str, v: Any) -> Path:
        f = ctx.resolve(_str(p, v))
        if ctx.secrets and not f.is_file():
            raise ValueError(f"no such file: {f}")
        return f

    def secret(p: str, v: Any) -> Path:
        if ctx.secrets:
            _read_secret_file(ctx, p, v)  # a private key: the secret-file rules apply
        return ctx.resolve(_str(p, v))

    ca = m.opt("ca_file", readable)
    cert = m.opt("cert_file", readable)
    key = m.opt("key_file", secret)
    if m.has("cert_file") != m.has("key_file"):
        m.failed = True
        ctx.add(m.key("key_file" if m.has("cert_file") else "cert_file"),
                "cert_file and key_file go together (the client certificate and its key)")
    m.check()
    return EtcdTLSConfig(ca_file=ca, cert_file=cert, key_file=key)


def _members(ctx: _Ctx, path: str, value: Any) -> tuple[PoolMemberConfig, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise ValueError(f"expected a list of at least two members ({{name, ip, weight}}), "
                         f"got {_got(value, path) if not isinstance(value, list) else len(value)}")
    out: list[PoolMemberConfig] = []
    failed = False
    for i, item in enumerate(value):
        sub = f"{path}[{i}]"
        e = _Map(ctx, sub, item, _MEMBER_KEYS, what="a member {name, ip, weight}")
        name = e.req("name", _name)
        ip = e.req("ip", _ip)
        weight = e.get("weight", _int(1, 1000), 1)
        if name is not None and name in {mb.name for mb in out}:
            e.failed = True
            ctx.add(e.key("name"), f"member {name!r} is listed twice")
        if ip is not None and ip in {mb.ip for mb in out}:
            e.failed = True
            ctx.add(e.key("ip"), f"{ip} is listed twice")
        if e.failed or name is None or ip is None:
            failed = True
            continue
        out.append(PoolMemberConfig(name=name, ip=ip, weight=weight))
    if failed:
        raise _Skip
    return tuple(out)


def _pool_addresses(ctx: _Ctx, path: str, value: Any) -> tuple[IPInterface, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a list of addresses with prefix such as 192.0.2.101/24, "
                         f"got {_got(value, path)}")
    out: list[IPInterface] = []
    for i, item in enumerate(value):
        sub = f"{path}[{i}]"
        try:
            iface = _interface(sub, item)
        except ValueError as exc:
            raise ConfigError(sub, str(exc), line=ctx.line(sub), source=ctx.source) from None
        if iface.ip in {a.ip for a in out}:
            raise ConfigError(sub, f"{iface.ip} is listed twice", line=ctx.line(sub),
                              source=ctx.source)
        out.append(iface)
    return tuple(out)


def _pool_key(ctx: _Ctx, path: str, value: Any) -> bytes:
    key = _read_secret_file(ctx, path, value)
    if len(key) < MIN_POOL_KEY:
        raise ValueError(f"the key in {ctx.resolve(str(value))} is too short: at least "
                         f"{MIN_POOL_KEY} bytes (head -c 32 /dev/urandom > FILE)")
    return key


def _preferred(ctx: _Ctx, path: str, value: Any, members: tuple[PoolMemberConfig, ...],
               addresses: tuple[IPInterface, ...]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of address: member, got {_got(value, path)}")
    by_ip = {a.ip: a for a in addresses}
    member_names = [mb.name for mb in members]
    out: dict[str, str] = {}
    for raw, member in value.items():
        sub = _join(path, raw)
        try:
            ip = ipaddress.ip_interface(raw).ip
        except ValueError:
            ip = None
        if ip is None or ip not in by_ip:
            ctx.fail(sub, "this key is not one of this pool's addresses")
        if not isinstance(member, str) or member not in member_names:
            hint = _hint(member, member_names) if isinstance(member, str) else ""
            ctx.fail(sub, f"expected a member of this pool, got {_got(member, sub)}{hint}")
        out[str(ip)] = member
    return out


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
