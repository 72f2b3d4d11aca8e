"""The http and https checks: one HTTP/1.1 request over asyncio streams.

Not `requests` in a thread, on purpose: a thread cannot be cancelled, so the check's time
limit would only bound the wait, not the work, and hung requests would pile up in the
default executor (6 workers on a 2-core box, shared with the rest of the daemon) once
hundreds of monitors check a dead service; `requests` also takes its timeout per socket
operation (a server trickling a byte a second never times out), honours HTTP(S)_PROXY from
the daemon's environment (the check must reach the address itself), and costs ~80 ms to
import. A health check needs little of HTTP: no redirects (list 301/302 in expect_status if
they mean healthy), no cookies, no compression (we do not ask for it), `Connection: close`.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from minisft import __version__
from minisft.probes.isalive.common import (
    CheckFailed,
    Progress,
    TimedCheck,
    Verdict,
    close_quietly,
    ms,
    preview,
    url_host,
)
from minisft.probes.isalive.tls import ContextCache, certificate_verdict, connect

MAX_BODY = 1 << 20  # body_match looks at the first MiB
MAX_HEADERS = 200
_STATUS_RE = re.compile(rb"HTTP/\d(?:\.\d)? +(\d{3})(?: +([^\r\n]*))?")
_USER_AGENT = f"MiniSFT-IsAlive/{__version__}"


class HttpCheck(TimedCheck):
    def __init__(self, scheme: str, params: dict[str, Any], timeout: float) -> None:
        super().__init__(timeout)
        self.scheme = scheme
        self.url: str = params["url"]
        self.method: str = params["method"]
        self.expect = frozenset(params["expect_status"])
        self.expect_text = describe_statuses(params["expect_status"])
        pattern = params["body_match"]
        self.body_re = None if pattern is None else re.compile(pattern)
        self.headers: dict[str, str] = dict(params["headers"])
        self.host_header: str | None = params["host_header"]
        self.tls: ContextCache | None = None
        self.warn_days = 0
        if scheme == "https":
            self.tls = ContextCache(params["verify_tls"], params["ca_file"])
            self.warn_days = params["warn_days"]

    async def probe(self, address: str, progress: Progress) -> Verdict:
        start = time.monotonic()
        parts = urlsplit(self.url.replace("{address}", url_host(address)))
        host = parts.hostname or address
        port = parts.port or (443 if self.tls else 80)
        ctx = self.tls.get() if self.tls else None
        # with a host_header the certificate must be the vhost's, and SNI must ask for it
        sni = _strip_port(self.host_header) if self.host_header else host
        reader, writer = await connect(host, port, progress, ctx, sni if ctx else None)
        try:
            cert_warning = None
            if ctx is not None and self.warn_days:
                cert = certificate_verdict(writer, self.warn_days)
                # an expired certificate with verify_tls off: the user chose not to care
                cert_warning = cert.warning if cert.ok else cert.detail
            progress.stage = "sending the request"
            writer.write(self._request(parts, address))
            await writer.drain()
            progress.stage = "waiting for the response"
            status, reason, headers = await _read_head(reader)
            if status not in self.expect:
                text = f"HTTP {status}{reason} (expected {self.expect_text}) in {ms(start)}"
                return Verdict(False, text, cert_warning)
            if self.body_re is None:
                return Verdict(True, f"HTTP {status} in {ms(start)}", cert_warning)
            progress.stage = "reading the body"
            body = b"" if status in (204, 304) else await _read_body(reader, headers)
            if not self.body_re.search(body.decode("utf-8", "replace")):
                text = (f"HTTP {status} in {ms(start)} but the body does not match "
                        f"{self.body_re.pattern!r}")
                return Verdict(False, text, cert_warning)
            return Verdict(True, f"HTTP {status} in {ms(start)}, body matches", cert_warning)
        finally:
            await close_quietly(writer)

    def _request(self, parts: SplitResult, address: str) -> bytes:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Host": self.host_header or parts.netloc.rpartition("@")[2],
            "User-Agent": _USER_AGENT,
            "Accept": "*/*",
        }
        if parts.username is not None:
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        for name, value in self.headers.items():
            for have in [h for h in headers if h.lower() == name.lower()]:
                del headers[have]  # configured headers win over ours
            headers[name] = value.replace("{address}", address)
        headers["Connection"] = "close"
        lines = [f"{self.method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # longer than the stream limit (64 KiB)
        raise CheckFailed("response line too long") from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Status, reason (with a leading space, or empty) and lower-cased headers."""
    for _ in range(5):  # skip interim 1xx responses (103 Early Hints)
        line = await _readline(reader)
        if not line:
            raise CheckFailed("connection closed before the response")
        m = _STATUS_RE.match(line)
        if m is None:
            raise CheckFailed(f"not an HTTP response: {preview(line)}")
        status = int(m.group(1))
        reason = m.group(2).decode("latin-1").strip() if m.group(2) else ""
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = await _readline(reader)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise CheckFailed("too many response headers")
        if not 100 <= status < 200 or status == 101:
            return status, f" {reason}" if reason else "", headers
    raise CheckFailed("too many interim responses")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while len(body) < MAX_BODY:
            size_line = await _readline(reader)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise CheckFailed("bad chunked encoding in the response") from None
            if size == 0:
                break
            body += await reader.readexactly(min(size, MAX_BODY - len(body)))
            if len(body) >= MAX_BODY:
                break
            await reader.readexactly(2)  # CRLF after the chunk
        return bytes(body)
    length = headers.get("content-length", "")
    if length.isdigit():
        return await reader.readexactly(min(int(length), MAX_BODY))
    body = bytearray()
    while len(body) < MAX_BODY:  # no length: the body ends with the connection
        chunk = await reader.read(65536)
        if not chunk:
            break
        body += chunk
    return bytes(body[:MAX_BODY])


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def describe_statuses(statuses: list[int]) -> str:
    """[200] -> "200", 200..299 + 301 -> "2xx or 301"."""
    wanted = set(statuses)
    parts: list[str] = []
    for cls in range(100, 600, 100):
        block = set(range(cls, cls + 100))
        if block <= wanted:
            parts.append(f"{cls // 100}xx")
            wanted -= block
    parts += [str(s) for s in sorted(wanted)]
    parts.sort()
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
