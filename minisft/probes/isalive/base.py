"""The types every IsAlive check shares. Standard library only, so importing is cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    latency: float  # seconds the check took
    detail: str  # short human text: "HTTP 200 in 12 ms", "connection refused"
    warning: str | None = None  # ok, but someone should look (certificate expiring soon)


class CheckParamError(ValueError):
    """A bad check parameter; `key` names it so the config loader can point at the line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class Check(Protocol):
    async def run(self, address: str) -> CheckResult:
        """Check the service at `address`. Never raises, except CancelledError."""
        ...
