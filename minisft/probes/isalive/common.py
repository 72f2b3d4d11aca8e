"""What every check implementation shares: the time limit, latency and error wording."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import time
from abc import ABC, abstractmethod
from typing import NamedTuple

from minisft.probes.isalive.base import CheckResult

MAX_DETAIL = 300  # detail ends up in events, SNMP traps and Nagios output: keep it short


class Verdict(NamedTuple):
    ok: bool
    detail: str
    warning: str | None = None


class CheckFailed(Exception):
    """Raised by a probe for a failure whose message is already the detail to show."""


class Progress:
    """What a probe is waiting for, so a timeout can say where it got stuck."""

    __slots__ = ("stage",)

    def __init__(self, stage: str = "connecting") -> None:
        self.stage = stage


class TimedCheck(ABC):
    """Runs `probe` under the time limit and turns every outcome into a CheckResult."""

    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout

    @abstractmethod
    async def probe(self, address: str, progress: Progress) -> Verdict | CheckResult:
        """Check once; may raise, the caller words the exception."""

    async def run(self, address: str) -> CheckResult:
        progress = Progress()  # one per run: the runtime checks service and peer concurrently
        start = time.monotonic()
        scope = asyncio.timeout(self.timeout)
        try:
            async with scope:
                outcome = await self.probe(address, progress)
        except TimeoutError as e:
            if not scope.expired():  # a timeout of the OS (ETIMEDOUT), not ours
                return _failed(start, describe_error(e))
            stage = f" ({progress.stage})" if progress.stage else ""
            return _failed(start, f"timed out after {seconds(self.timeout)}{stage}")
        except Exception as e:
            return _failed(start, describe_error(e))
        if isinstance(outcome, CheckResult):  # from a python check: its own latency stands
            return dataclasses.replace(outcome, detail=clip(outcome.detail))
        return CheckResult(outcome.ok, time.monotonic() - start, clip(outcome.detail),
                           None if outcome.warning is None else clip(outcome.warning))


def _failed(start: float, detail: str) -> CheckResult:
    return CheckResult(False, time.monotonic() - start, clip(detail))


def describe_error(e: BaseException) -> str:
    """Short lowercase text for the usual network failures, the exception otherwise."""
    if isinstance(e, CheckFailed):
        return str(e)
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(e, asyncio.IncompleteReadError):
        return "connection closed by the server"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message or e.reason}"
    if isinstance(e, ssl.SSLError):
        return f"TLS handshake failed: {e.reason or e}"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host: {e.strerror}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(text.split())  # one line: detail goes into single-line outputs
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ms(start: float) -> str:
    elapsed = (time.monotonic() - start) * 1000
    return f"{elapsed:.1f} ms" if elapsed < 10 else f"{elapsed:.0f} ms"


def seconds(value: float) -> str:
    return f"{value:g}s"


def url_host(address: str) -> str:
    """The address as it goes into a URL: IPv6 in brackets."""
    if ":" in address and not address.startswith("["):
        return f"[{address}]"
    return address


def preview(data: bytes, limit: int = 60) -> str:
    """A short printable rendering of what a server sent, for the detail."""
    text = data.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # bounded: a TLS peer that never answers close_notify must not hold the check
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
