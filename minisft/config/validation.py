"""The validation context: where errors are collected (`_Ctx`) and how one mapping's keys
are checked and converted (`_Map`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from minisft.config.errors import ConfigError, _Skip
from minisft.config.redact import _got, _scrub
from minisft.config.yamlfile import _join, _parent

T = TypeVar("T")


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
