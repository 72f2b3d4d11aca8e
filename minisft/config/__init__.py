"""Configuration: the validated model, the YAML loader and the duration parser.

`minisft.config.model` is imported by everything, so this package does not import the
loader (and with it PyYAML) eagerly: `load_config`, `parse_config` and `ConfigError` are
looked up on first use.
"""

from __future__ import annotations

from typing import Any

from minisft.config.durations import parse_duration

__all__ = ["ConfigError", "collect_errors", "load_config", "parse_config", "parse_duration"]

_LAZY = {"ConfigError", "collect_errors", "load_config", "parse_config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from minisft.config import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
