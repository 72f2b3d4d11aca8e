"""Secrets read from files or the environment: checked, never quoted in an error."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from minisft.config.redact import _got
from minisft.config.scalars import _is_url, _str
from minisft.config.validation import _Ctx, _Map

MAX_SECRET_BYTES = 64 << 10
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


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
