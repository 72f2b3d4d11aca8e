"""The python check: call a user function `fn(address, **kwargs)`.

The function may return a bool, a (bool, str) pair or a CheckResult, or be async (or return
an awaitable of these). A plain function runs in a worker thread so a blocking one cannot
stall the daemon's event loop; a thread cannot be cancelled though, so on timeout it runs on
in the background: make blocking functions honour their own timeouts.

The function is imported on first use, not when the config is loaded, and a failed import
is retried on the next run (the module may be installed later).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from minisft.probes.isalive.base import CheckResult
from minisft.probes.isalive.common import CheckFailed, Progress, TimedCheck, Verdict, clip

ENTRY_POINT_GROUP = "minisft.checks"


def resolve(entry: str) -> Callable[..., Any]:
    """'package.module:function' (attribute path allowed) or a minisft.checks entry point."""
    try:
        if ":" in entry:
            module_name, _, qualname = entry.partition(":")
            obj: Any = importlib.import_module(module_name)
            for attr in qualname.split("."):
                obj = getattr(obj, attr)
        else:
            found = entry_points(group=ENTRY_POINT_GROUP, name=entry)
            if not found:
                raise CheckFailed(f"no {ENTRY_POINT_GROUP} entry point named {entry!r}")
            obj = next(iter(found)).load()
    except CheckFailed:
        raise
    except Exception as e:
        raise CheckFailed(f"cannot load {entry}: {type(e).__name__}: {e}") from None
    if not callable(obj):
        raise CheckFailed(f"{entry} is not callable")
    return obj  # type: ignore[no-any-return]


def interpret(entry: str, value: Any) -> Verdict | CheckResult:
    if isinstance(value, CheckResult):
        return value
    if isinstance(value, bool):
        return Verdict(value, f"{entry} returned {value}")
    if (isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], bool)
            and isinstance(value[1], str)):
        return Verdict(value[0], value[1] or f"{entry} returned {value[0]}")
    raise CheckFailed(f"{entry} returned {clip(repr(value), 60)}; "
                      "expected a bool, a (bool, str) pair or a CheckResult")


class PythonCheck(TimedCheck):
    def __init__(self, params: dict[str, Any], timeout: float) -> None:
        super().__init__(timeout)
        self.entry: str = params["entry"]
        self.kwargs: dict[str, Any] = dict(params["kwargs"])
        self._fn: Callable[..., Any] | None = None

    async def probe(self, address: str, progress: Progress) -> Verdict | CheckResult:
        if self._fn is None:
            progress.stage = f"importing {self.entry}"
            self._fn = resolve(self.entry)
        fn = self._fn
        progress.stage = f"waiting for {self.entry}"
        try:
            if inspect.iscoroutinefunction(fn):
                value = await fn(address, **self.kwargs)
            else:
                value = await asyncio.to_thread(fn, address, **self.kwargs)
                if inspect.isawaitable(value):
                    value = await value
        except Exception as e:
            text = str(e)
            raise CheckFailed(f"{type(e).__name__}: {text}" if text else type(e).__name__) \
                from None
        return interpret(self.entry, value)
