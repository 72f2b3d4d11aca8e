"""The tcp check: connect, optionally send, optionally match what the server says."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from minisft.probes.isalive.common import (
    Progress,
    TimedCheck,
    Verdict,
    close_quietly,
    ms,
    preview,
)
from minisft.probes.isalive.tls import connect

MAX_READ = 64 * 1024  # a banner or a short reply; more is not worth waiting for
QUIET = 1.0  # seconds without more data after a reply that does not match yet


def _payload(value: str | bytes | None, address: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return value.replace("{address}", address).encode("utf-8")


class TcpCheck(TimedCheck):
    def __init__(self, params: dict[str, Any], timeout: float) -> None:
        super().__init__(timeout)
        self.port: int = params["port"]
        self.send: str | bytes | None = params["send"]
        self.quit: str | bytes | None = params["quit"]
        pattern = params["expect"]
        self.expect = None if pattern is None else re.compile(pattern)

    async def probe(self, address: str, progress: Progress) -> Verdict:
        start = time.monotonic()
        reader, writer = await connect(address, self.port, progress)
        try:
            connected = ms(start)
            send = _payload(self.send, address)
            if send:
                progress.stage = "sending"
                writer.write(send)
                await writer.drain()
            if self.expect is None:
                return Verdict(True, f"connected to port {self.port} in {connected}")
            progress.stage = f"waiting for a reply matching {self.expect.pattern!r}"
            data = b""
            while len(data) < MAX_READ:
                try:
                    # once something came, a pause means the server said all it will say
                    async with asyncio.timeout(QUIET if data else None):
                        chunk = await reader.read(MAX_READ - len(data))
                except TimeoutError:
                    break
                if not chunk:
                    break
                data += chunk
                progress.stage = f"got {preview(data)}, no match for {self.expect.pattern!r}"
                m = self.expect.search(data.decode("utf-8", "replace"))
                if m is not None:
                    quit_ = _payload(self.quit, address)
                    if quit_:  # polite goodbye, e.g. SMTP QUIT, so the server logs no error
                        writer.write(quit_)
                        await writer.drain()
                    return Verdict(True, f"reply {preview(data)} in {ms(start)}")
            if not data:
                return Verdict(False, f"connection closed without a reply "
                                      f"(expected {self.expect.pattern!r})")
            return Verdict(False, f"reply {preview(data)} does not match {self.expect.pattern!r}")
        finally:
            await close_quietly(writer)
