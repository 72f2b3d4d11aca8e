"""Converters for typed scalars (names, numbers, durations, addresses, paths...).

A converter takes (path, value) and returns the value or raises ValueError(message)
(the path is added by _Map) or a ConfigError when it knows a more precise path.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from minisft.config.durations import format_duration, parse_duration
from minisft.config.errors import ConfigError
from minisft.config.model import (
    HOOK_PATH,
    IPAddress,
    IPInterface,
)
from minisft.config.redact import _got
from minisft.config.validation import Converter, _Ctx, _hint
from minisft.core.events import EventKind, Severity

MAX_DURATION = 86_400.0  # one day: anything longer is a typo (and overflows some timers)
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)


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


def _host(path: str, value: Any) -> str:
    text = _str(path, value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        if len(text) > 253 or not _HOST_RE.fullmatch(text):
            raise ValueError("expected a host name or IP address, got "
                             f"{_got(value, path)}") from None
        return text


def _existing_file(ctx: _Ctx) -> Converter[Path]:
    def convert(path: str, value: Any) -> Path:
        p = ctx.resolve(_str(path, value))
        if not p.is_file():
            raise ValueError(f"no such file: {p}")
        return p

    return convert


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


def _is_url(text: str) -> bool:
    scheme, sep, rest = text.partition("://")
    return bool(sep and rest and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme))
