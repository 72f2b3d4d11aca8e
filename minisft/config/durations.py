"""Durations as the config writes them: 0.5, 3, "100ms", "3s", "1m", "1h", "7d", "1m30s".

A bare number means seconds (the original script's settings were in seconds). Standard
library only: the Nagios plugin and the CLI import this without paying for anything else.
"""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_HINT", "format_duration", "parse_duration"]

DURATION_HINT = "a duration such as 0.5, 100ms, 3s or 1m"

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_BARE = re.compile(rf"\s*({_NUMBER})\s*", re.ASCII)
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)", re.ASCII)
_WHOLE = re.compile(rf"\s*(?:{_NUMBER}\s*(?:ms|s|m|h|d)\s*)+", re.ASCII)
# multipliers; milliseconds divide so that "Nms" == N / 1000 exactly
_SCALE = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds as a float from a number or a duration string; ValueError otherwise.

    Zero is accepted (the caller decides whether 0 means "off" or is an error); negative,
    infinite and NaN values, booleans and anything that is not a duration are not.
    """
    if isinstance(value, bool):
        # YAML reads "on"/"yes" as true; true is not one second
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"expected {DURATION_HINT}, got a number too large") from None
        return _checked(seconds, value)
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HINT}, got {type(value).__name__}")
    text = value.strip()
    bare = _BARE.fullmatch(value)
    if bare:
        return _checked(float(bare.group(1)), value)
    if text.startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {_show(value)}")
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"expected {DURATION_HINT}, got {_show(value)}")
    total = 0.0
    for number, unit in _PART.findall(value):
        n = float(number)
        total += n / 1000.0 if unit == "ms" else n * _SCALE[unit]
    return _checked(total, value)


def format_duration(seconds: float) -> str:
    """The shortest of "250ms", "3s", "1.5s", "2m" that reads back as the same value."""
    if seconds and seconds < 1 and parse_duration(f"{seconds * 1000:g}ms") == seconds:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _checked(seconds: float, original: object) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"expected a finite duration, got {_show(original)}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {_show(original)}")
    return seconds


def _show(value: object) -> str:
    # keep error messages one short line even for a pasted paragraph
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
