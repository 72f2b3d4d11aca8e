"""Keeping secrets out of error messages: what a value may show of itself, and where."""

from __future__ import annotations

import re
from typing import Any

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


def _scrub(message: str, value: Any, path: str) -> str:
    """The last guard for messages from shared parsers (durations...) that quote what they
    were given: where a secret may stand, a message holding the value is replaced."""
    text = value.strip() if isinstance(value, str) else None
    # quoted, as repr() shows it, maybe cut short: not a name that merely contains it
    if text and _may_be_secret(path) and repr(text)[:12].rstrip("'") in message:
        return "not a valid value here (not shown: a value here may be a secret)"
    return message
