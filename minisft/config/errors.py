"""The loader's exceptions: `ConfigError` (public) and the internal `_Skip`."""

from __future__ import annotations


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
