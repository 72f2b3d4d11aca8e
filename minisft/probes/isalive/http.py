"""The http and https checks: one HTTP/1.1 request over asyncio streams, parsed by h11.

h11 is sans-IO: it turns bytes into HTTP events (status, headers, chunked or sized body)
and back, and does no I/O itself, so the asyncio transport and the check's time limit stay
ours; the parsing of responses, with its corner cases, is no longer.

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

import h11

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
MAX_HEAD = 64 << 10  # status line and headers of one response
MAX_INTERIM = 5  # 1xx responses before the real one
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
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
            writer.write(self._request(conn, parts, address))
            await writer.drain()
            progress.stage = "waiting for the response"
            status, reason, body = await _read_response(conn, reader, progress,
                                                        want_body=self.body_re is not None)
            if status not in self.expect:
                text = f"HTTP {status}{reason} (expected {self.expect_text}) in {ms(start)}"
                return Verdict(False, text, cert_warning)
            if self.body_re is None:
                return Verdict(True, f"HTTP {status} in {ms(start)}", cert_warning)
            if not self.body_re.search(body.decode("utf-8", "replace")):
                text = (f"HTTP {status} in {ms(start)} but the body does not match "
                        f"{self.body_re.pattern!r}")
                return Verdict(False, text, cert_warning)
            return Verdict(True, f"HTTP {status} in {ms(start)}, body matches", cert_warning)
        finally:
            await close_quietly(writer)

    def _request(self, conn: h11.Connection, parts: SplitResult, address: str) -> bytes:
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
        try:
            return conn.send(h11.Request(method=self.method, target=target,
                                         headers=[(n.encode("utf-8"), v.encode("utf-8"))
                                                  for n, v in headers.items()])) \
                + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:  # e.g. a space in the URL's path
            raise CheckFailed(f"cannot send this request: {exc}") from None


async def _read_response(conn: h11.Connection, reader: asyncio.StreamReader,
                         progress: Progress, *, want_body: bool) -> tuple[int, str, bytes]:
    """Status, reason (with a leading space, or empty) and, if want_body, the first MAX_BODY
    bytes of the body: h11 parses (status line, headers, chunked or sized or read-to-close
    bodies, 1xx interim responses); this only moves bytes from the stream into it."""
    received = bytearray()  # the start of the response, to quote it when it is not HTTP
    status, reason, interim = 0, "", 0
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if not received:
                raise CheckFailed("connection closed before the response") from None
            if not received.startswith(b"HTTP/"):
                first_line = bytes(received).splitlines()[0]
                raise CheckFailed(f"not an HTTP response: {preview(first_line)}") from None
            raise CheckFailed(f"bad HTTP response: {exc}") from None
        if event is h11.NEED_DATA:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                if not received:
                    raise
                data = b""  # a reset after a partial answer: judge what came (below)
            if len(received) < 200:
                received += data[:200 - len(received)]
            conn.receive_data(data)  # b"": the server closed the connection
        elif isinstance(event, h11.InformationalResponse):  # 103 Early Hints and such
            interim += 1
            if interim > MAX_INTERIM:
                raise CheckFailed("too many interim responses")
        elif isinstance(event, h11.Response):
            status = event.status_code
            reason = f" {event.reason.decode('latin-1')}" if event.reason else ""
            if not want_body:
                return status, reason, b""
            progress.stage = "reading the body"
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) >= MAX_BODY:
                return status, reason, bytes(body[:MAX_BODY])
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if not status:
                raise CheckFailed("connection closed before the response")
            return status, reason, bytes(body)


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
