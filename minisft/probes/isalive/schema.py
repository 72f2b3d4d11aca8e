"""Parameter schemas of the check types: validate, convert and fill defaults.

Normalised params hold plain YAML/JSON types only (regexes stay strings, lists stay lists),
so the loader can dump them back, and validating normalised params again changes nothing.
Nothing here touches the network or the file system: a config is validated the same way on
the monitoring host (Nagios plugin) as on the node that runs the checks.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from minisft.probes.isalive.base import CheckParamError

CHECK_TYPES = ("always", "command", "http", "https", "python", "tcp", "tls")

_REQUIRED = object()  # marks a parameter without default
_HTTP_METHODS = ("GET", "HEAD")
_ENTRY_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
_STATUS_CLASS_RE = re.compile(r"^[1-5]xx$", re.IGNORECASE)
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}

Converter = Callable[[str, Any], Any]


# ------------------------------------------------------------------ converters


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    # bool is an int in Python; "port: yes" is a mistake, not port 1
    if isinstance(value, bool):
        raise CheckParamError(key, f"must be an integer {lo}-{hi}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not lo <= value <= hi:
        raise CheckParamError(key, f"must be an integer {lo}-{hi}")
    return value


def _port(key: str, value: Any) -> int:
    return _int(key, value, 1, 65535)


def _days(key: str, value: Any) -> int:
    return _int(key, value, 0, 3650)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise CheckParamError(key, "must be true or false")


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise CheckParamError(key, "must be a non-empty string")
    return value


def _optional(conv: Converter) -> Converter:
    def convert(key: str, value: Any) -> Any:
        return None if value is None else conv(key, value)

    return convert


def _regex(key: str, value: Any) -> str:
    pattern = _str(key, value)
    try:
        re.compile(pattern)
    except re.error as e:
        raise CheckParamError(key, f"invalid regular expression: {e}") from None
    return pattern


def _payload(key: str, value: Any) -> str | bytes:
    # text is sent UTF-8 encoded; bytes (YAML !!binary) as they are
    if isinstance(value, bytes | bytearray) and value:
        return bytes(value)
    return _str(key, value)


def _str_map(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise CheckParamError(key, "must be a mapping of names to strings")
    out: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise CheckParamError(key, f"name {name!r} must be a non-empty string")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise CheckParamError(key, f"value of {name!r} must be a string")
        out[name] = str(item)
    return out


def _headers(key: str, value: Any) -> dict[str, str]:
    headers = _str_map(key, value)
    for name, item in headers.items():
        if not _HEADER_NAME_RE.match(name):
            raise CheckParamError(key, f"{name!r} is not a valid header name")
        if "\r" in item or "\n" in item:
            raise CheckParamError(key, f"value of {name!r} must not contain line breaks")
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            hint = " (use host_header)" if name.lower() == "host" else ""
            raise CheckParamError(key, f"{name!r} is set by the check itself{hint}")
    return headers


def _codes(key: str, value: Any) -> list[int]:
    items = value if isinstance(value, list | tuple) else [value]
    return sorted({_int(key, v, 0, 255) for v in items})


def _statuses(key: str, value: Any) -> list[int]:
    """200, [200, 204], "2xx" or ["2xx", 301]: a sorted list of status codes."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise CheckParamError(key, "must list at least one status")
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and _STATUS_CLASS_RE.match(item.strip()):
            first = int(item.strip()[0]) * 100
            out.update(range(first, first + 100))
        else:
            try:
                out.add(_int(key, item, 100, 599))
            except CheckParamError:
                raise CheckParamError(
                    key, "must be an integer 100-599, a class like '2xx', or a list of these"
                ) from None
    return sorted(out)


def _method(key: str, value: Any) -> str:
    method = _str(key, value).upper()
    if method not in _HTTP_METHODS:
        raise CheckParamError(key, f"must be one of {', '.join(_HTTP_METHODS)}")
    return method


def _hostname(key: str, value: Any) -> str:
    name = _str(key, value).strip()
    if any(c.isspace() for c in name) or "/" in name:
        raise CheckParamError(key, "must be a host name")
    return name


def _url(scheme: str) -> Converter:
    def convert(key: str, value: Any) -> str:
        url = _str(key, value).strip()
        # any address will do to check the shape of the URL
        parts = urlsplit(url.replace("{address}", "192.0.2.1"))
        if parts.scheme.lower() != scheme:
            other = "https" if scheme == "http" else "http"
            raise CheckParamError(
                key, f"an {scheme} check needs an {scheme}:// URL (use type {other})")
        if not parts.hostname:
            raise CheckParamError(key, "has no host (use {address} for the address under test)")
        try:
            _ = parts.port
        except ValueError:
            raise CheckParamError(key, "has an invalid port") from None
        if any(c.isspace() for c in url):
            raise CheckParamError(key, "must not contain white space (encode it as %20)")
        return url

    return convert


def _argv(key: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not value:
        raise CheckParamError(key, "must be a non-empty list of strings")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise CheckParamError(key, f"{item!r} is not a string")
        out.append(str(item))
    if not out[0]:
        raise CheckParamError(key, "the program name is empty")
    return out


def _command(key: str, value: Any) -> list[str]:
    try:
        argv = shlex.split(_str(key, value))
    except ValueError as e:
        raise CheckParamError(key, f"cannot split into arguments: {e}") from None
    if not argv:
        raise CheckParamError(key, "must name a program")
    return argv


def _entry(key: str, value: Any) -> str:
    entry = _str(key, value).strip()
    if not _ENTRY_RE.match(entry):
        raise CheckParamError(
            key, "must be 'package.module:function' or the name of a minisft.checks entry point")
    return entry


def _kwargs(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and k.isidentifier() for k in value):
        raise CheckParamError(key, "must be a mapping with keyword-argument names")
    return dict(value)


# ------------------------------------------------------------------ schemas

_HTTP: dict[str, tuple[Converter, Any]] = {
    "url": (_url("http"), "http://{address}/"),
    "method": (_method, "GET"),
    "expect_status": (_statuses, [200]),
    "body_match": (_optional(_regex), None),
    "headers": (_headers, {}),
    "host_header": (_optional(_hostname), None),
}

SCHEMAS: dict[str, dict[str, tuple[Converter, Any]]] = {
    "always": {},
    "http": _HTTP,
    "https": {
        **_HTTP,
        "url": (_url("https"), "https://{address}/"),
        "verify_tls": (_bool, True),
        "ca_file": (_optional(_str), None),
        "warn_days": (_days, 14),
    },
    "tcp": {
        "port": (_port, _REQUIRED),
        "send": (_optional(_payload), None),
        "expect": (_optional(_regex), None),
        "quit": (_optional(_payload), None),
    },
    "tls": {
        "port": (_port, 443),
        "server_name": (_optional(_hostname), None),
        "verify": (_bool, True),
        "ca_file": (_optional(_str), None),
        "warn_days": (_days, 14),
    },
    "command": {
        # exactly one of argv / command; normalised to argv
        "argv": (_optional(_argv), None),
        "command": (_optional(_command), None),
        "ok_codes": (_codes, [0]),
        "warn_codes": (_codes, []),
        "env": (_str_map, {}),
    },
    "python": {
        "entry": (_entry, _REQUIRED),
        "kwargs": (_kwargs, {}),
    },
}


def normalise_type(type_: Any) -> str:
    name = type_.strip().lower() if isinstance(type_, str) else type_
    if name not in SCHEMAS:
        raise CheckParamError(
            "type", f"unknown check type {type_!r} (one of: {', '.join(CHECK_TYPES)})")
    return str(name)


def validate_check(type: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise the params of one check type; raises CheckParamError."""
    name = normalise_type(type)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CheckParamError("params", "must be a mapping")
    schema = SCHEMAS[name]
    for key in params:
        if key not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise CheckParamError(
                str(key), f"unknown parameter for {_a(name)} check (known: {known})")
    out: dict[str, Any] = {}
    for key, (convert, default) in schema.items():
        if key in params:
            out[key] = convert(key, params[key])
        elif default is _REQUIRED:
            raise CheckParamError(key, f"required for {_a(name)} check")
        else:
            # copy mutable defaults so callers cannot change the schema
            out[key] = default.copy() if isinstance(default, list | dict) else default
    if name == "command":
        _one_command(out)
    if name in ("http", "https") and out["method"] == "HEAD" and out["body_match"] is not None:
        raise CheckParamError("body_match", "a HEAD request has no body to match (use GET)")
    return out


def _a(name: str) -> str:
    return f"an {name}" if name in ("always", "http", "https") else f"a {name}"


def _one_command(out: dict[str, Any]) -> None:
    if out["argv"] is not None and out["command"] is not None:
        raise CheckParamError("command", "give either argv or command, not both")
    argv = out.pop("command") or out["argv"]
    if argv is None:
        raise CheckParamError("argv", "required for a command check (or give command)")
    out["argv"] = argv
    overlap = set(out["ok_codes"]) & set(out["warn_codes"])
    if overlap:
        raise CheckParamError("warn_codes", f"{sorted(overlap)} also listed in ok_codes")
