"""IsAlive: is the service behind an address working? http, https, tcp, tls, command, python.

An IsAlive check runs rarely (every 10 s by default) against the service address, or the
peer's own address when deciding an automatic fallback. `validate_check` checks a config's
params; `build_check` turns validated params into a `Check` whose `run(address)` never
raises (a timeout or any error is a failed `CheckResult`).

Importing this package is cheap on purpose (the config loader and the Nagios plugin import
it): only the standard library's light modules; asyncio, ssl and the check implementations
are imported by `build_check`.

Params per type (`= default`; `{address}` is replaced by the address under test, in
brackets inside URLs when IPv6):

  always   none
  http     url = "http://{address}/", method = GET (or HEAD), expect_status = 200 (an int,
           a class like "2xx", or a list of these), body_match (regex, first MiB of the
           body), headers (map), host_header (Host, and the TLS name for https)
  https    as http, with url = "https://{address}/", verify_tls = true, ca_file (replaces
           the system CAs), warn_days = 14 (0: no expiry warning)
  tcp      port (required), send (text), expect (regex on the reply, or the banner when
           nothing is sent), quit (text sent after a match, e.g. "QUIT\\r\\n")
  tls      port = 443, server_name (SNI and the name verified; else the address must be in
           the certificate), verify = true, ca_file, warn_days = 14
  command  argv (list) or command (string split like a shell would; no shell runs),
           ok_codes = [0], warn_codes = [] (ok with a warning), env (map);
           MINISFT_ADDRESS is set in its environment
  python   entry ("package.module:function" or a minisft.checks entry point name),
           kwargs (map) passed to the function after the address
"""

from __future__ import annotations

from typing import Any

from minisft.probes.isalive.base import Check, CheckParamError, CheckResult
from minisft.probes.isalive.schema import CHECK_TYPES, normalise_type, validate_check

__all__ = [
    "CHECK_TYPES",
    "AlwaysCheck",
    "Check",
    "CheckParamError",
    "CheckResult",
    "build_check",
    "validate_check",
]


class AlwaysCheck:
    """The original script's default: no service check, the service is taken as working."""

    async def run(self, address: str) -> CheckResult:
        return CheckResult(True, 0.0, "no service check configured")


def build_check(type: str, params: dict[str, Any], timeout: float) -> Check:
    """A runnable check from params validated by `validate_check` (validated again: cheap)."""
    name = normalise_type(type)
    params = validate_check(name, params)
    if not timeout > 0:
        raise CheckParamError("timeout", "must be a positive number of seconds")
    # imported here: asyncio and ssl cost tens of ms that config tools should not pay
    if name in ("http", "https"):
        from minisft.probes.isalive.http import HttpCheck

        return HttpCheck(name, params, timeout)
    if name == "tcp":
        from minisft.probes.isalive.tcp import TcpCheck

        return TcpCheck(params, timeout)
    if name == "tls":
        from minisft.probes.isalive.tls import TlsCheck

        return TlsCheck(params, timeout)
    if name == "command":
        from minisft.probes.isalive.command import CommandCheck

        return CommandCheck(params, timeout)
    if name == "python":
        from minisft.probes.isalive.pycheck import PythonCheck

        return PythonCheck(params, timeout)
    return AlwaysCheck()
