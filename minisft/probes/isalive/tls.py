"""The tls check, and the TLS pieces the https check shares with it.

The certificate's validity is read from its DER encoding with a few lines of ASN.1 walking:
`getpeercert()` only decodes verified certificates, and `verify: false` must still report an
expired one; `cryptography` would do it too, but is not a dependency and is slow to import.
"""

from __future__ import annotations

import asyncio
import calendar
import ssl
import time
from typing import Any

from minisft.probes.isalive.common import (
    CheckFailed,
    Progress,
    TimedCheck,
    Verdict,
    close_quietly,
    ms,
)

DAY = 86400.0


class ContextCache:
    """One SSLContext per check, built on first use (loading CAs costs a few ms).

    Built lazily so that a missing ca_file shows as a failing check, not a daemon that
    refuses to start, and is retried on the next run.
    """

    def __init__(self, verify: bool, ca_file: str | None) -> None:
        self.verify = verify
        self.ca_file = ca_file
        self._ctx: ssl.SSLContext | None = None

    def get(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = make_context(self.verify, self.ca_file)
        return self._ctx


def make_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        # a ca_file replaces the system store: a private CA should not trust the world
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
        raise CheckFailed(f"cannot load ca_file {ca_file}: {reason}") from None


async def connect(host: str, port: int, progress: Progress, ctx: ssl.SSLContext | None = None,
                  server_hostname: str | None = None,
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP connect, then the TLS handshake as its own step so a timeout names the step."""
    progress.stage = "connecting"
    reader, writer = await asyncio.open_connection(host, port)
    if ctx is None:
        return reader, writer
    progress.stage = "TLS handshake"
    try:
        await writer.start_tls(ctx, server_hostname=server_hostname)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


def certificate_verdict(writer: asyncio.StreamWriter, warn_days: int,
                        now: float | None = None) -> Verdict:
    """Fail an expired or not yet valid certificate; warn when it expires within warn_days."""
    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    if not der:
        return Verdict(False, "the server sent no certificate")
    try:
        not_before, not_after = cert_validity(der)
    except (ValueError, IndexError):
        return Verdict(False, "cannot read the validity of the server certificate")
    now = time.time() if now is None else now
    left = not_after - now
    if left <= 0:
        return Verdict(False, f"certificate expired {span(-left)} ago ({date(not_after)})")
    if now < not_before:
        return Verdict(False, f"certificate not valid before {date(not_before)}")
    text = f"certificate expires in {span(left)} ({date(not_after)})"
    return Verdict(True, text, text if left < warn_days * DAY else None)


def span(secs: float) -> str:
    if secs >= 2 * DAY:
        return f"{round(secs / DAY)} days"
    if secs >= DAY:
        return "1 day"
    if secs >= 7200:
        return f"{int(secs // 3600)} hours"
    return f"{max(1, int(secs // 60))} minutes"


def date(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


# ------------------------------------------------------------------ DER


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at pos."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def cert_validity(der: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) as epoch seconds, from an X.509 certificate (RFC 5280 4.1)."""
    _, pos, _ = _tlv(der, 0)  # Certificate
    _, pos, _ = _tlv(der, pos)  # TBSCertificate
    tag, _, end = _tlv(der, pos)
    if tag == 0xA0:  # [0] version, absent in v1 certificates
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, pos = _tlv(der, pos)
    tag, pos, _ = _tlv(der, pos)  # Validity
    if tag != 0x30:
        raise ValueError("no validity")
    t1, s1, e1 = _tlv(der, pos)
    t2, s2, e2 = _tlv(der, e1)
    return _time(t1, der[s1:e1]), _time(t2, der[s2:e2])


def _time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii")
    if not text.endswith("Z"):
        raise ValueError("certificate time is not UTC")
    if tag == 0x17:  # UTCTime YYMMDDHHMM[SS]Z; RFC 5280: YY >= 50 is 19YY
        yy = int(text[:2])
        text = ("19" if yy >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("bad certificate time")
    digits = text[:-1].ljust(14, "0")
    fields = [int(digits[i:j]) for i, j in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14))]
    return float(calendar.timegm((*fields, 0, 0, 0)))


# ------------------------------------------------------------------ the check


class TlsCheck(TimedCheck):
    def __init__(self, params: dict[str, Any], timeout: float) -> None:
        super().__init__(timeout)
        self.port: int = params["port"]
        self.server_name: str | None = params["server_name"]
        self.warn_days: int = params["warn_days"]
        self.verify: bool = params["verify"]
        self.contexts = ContextCache(self.verify, params["ca_file"])

    async def probe(self, address: str, progress: Progress) -> Verdict:
        start = time.monotonic()
        ctx = self.contexts.get()
        # SNI and the name verified; without a server_name the address must be in the cert
        sni = self.server_name or (address if self.verify else None)
        _, writer = await connect(address, self.port, progress, ctx, sni)
        try:
            obj = writer.get_extra_info("ssl_object")
            version = obj.version() if obj is not None else None
            cert = certificate_verdict(writer, self.warn_days)
        finally:
            await close_quietly(writer)
        return Verdict(cert.ok, f"{version or 'TLS'} in {ms(start)}, {cert.detail}", cert.warning)
