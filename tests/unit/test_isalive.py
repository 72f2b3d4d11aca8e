"""IsAlive checks against real servers on loopback: what an operator would see in `detail`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from minisft.probes.isalive import (
    CHECK_TYPES,
    CheckParamError,
    CheckResult,
    build_check,
    validate_check,
)

LOCAL = "127.0.0.1"
cryptography = pytest.importorskip("cryptography")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_V6 = _has_ipv6_loopback()


def run_check(type_: str, params: dict[str, Any], address: str = LOCAL,
              timeout: float = 5.0) -> CheckResult:
    check = build_check(type_, validate_check(type_, params), timeout)
    return asyncio.run(check.run(address))


def free_port() -> int:
    """A port nobody listens on (bound and released)."""
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        port: int = s.getsockname()[1]
    return port


async def _with_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                         Awaitable[None]],
                       body: Callable[[int], Awaitable[Any]],
                       tls: ssl.SSLContext | None = None, host: str = LOCAL) -> Any:
    server = await asyncio.start_server(handler, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await body(port)


# ------------------------------------------------------------------ certificates


def make_cert(directory: Path, name: str, days: float, *, start_days_ago: float = 1.0,
              sans: tuple[str, ...] = ("127.0.0.1", "::1", "svc.test")) -> tuple[Path, Path]:
    """A self-signed EC certificate valid from `start_days_ago` to `days` from now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = []
    for san in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            alt.append(x509.DNSName(san))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=start_days_ago))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("certs")
    return {
        "good": make_cert(d, "good", 90),
        "soon": make_cert(d, "soon", 3),
        "expired": make_cert(d, "expired", -1, start_days_ago=30),
    }


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


# ------------------------------------------------------------------ HTTP server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def _respond(self, with_body: bool) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"status: ", b"healthy\n"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        code, body = {
            "/ok": (200, b"all good\n"),
            "/down": (503, b"maintenance\n"),
            "/moved": (302, b""),
            "/echo": (200, f"host={self.headers['Host']} x={self.headers['X-Test']}".encode()),
        }.get(self.path, (404, b"not found\n"))
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def http_server(host: str = LOCAL, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    server = (V6Server if ":" in host else ThreadingHTTPServer)((host, 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    with http_server() as port:
        yield port


# ------------------------------------------------------------------ http


def test_http_200_is_ok_with_latency(http_port: int) -> None:
    r = run_check("http", {"url": f"http://{{address}}:{http_port}/ok"})
    assert r.ok, r
    assert r.detail.startswith("HTTP 200 in ") and r.detail.endswith("ms")
    assert 0 < r.latency < 5 and r.warning is None


def test_http_default_url_is_the_address_itself(http_port: int) -> None:
    # default url http://{address}/ goes to port 80: nothing listens there on loopback
    with socket.socket() as s:
        if s.connect_ex((LOCAL, 80)) == 0:
            pytest.skip("something listens on port 80")
    r = run_check("http", {})
    assert not r.ok and r.detail == "connection refused"


def test_http_body_match_and_mismatch(http_port: int) -> None:
    url = f"http://{{address}}:{http_port}/ok"
    good = run_check("http", {"url": url, "body_match": r"all\s+good"})
    assert good.ok and good.detail.endswith("body matches"), good
    bad = run_check("http", {"url": url, "body_match": "^healthy"})
    assert not bad.ok
    assert "HTTP 200" in bad.detail and "does not match '^healthy'" in bad.detail


def test_http_chunked_body_is_decoded(http_port: int) -> None:
    r = run_check("http", {"url": f"http://{{address}}:{http_port}/chunked",
                           "body_match": "status: healthy"})
    assert r.ok, r


def test_http_wrong_status_names_both(http_port: int) -> None:
    r = run_check("http", {"url": f"http://{{address}}:{http_port}/down"})
    assert not r.ok
    assert r.detail.startswith("HTTP 503 Service Unavailable (expected 200) in ")
    assert run_check("http", {"url": f"http://{{address}}:{http_port}/down",
                              "expect_status": "5xx"}).ok
    moved = run_check("http", {"url": f"http://{{address}}:{http_port}/moved",
                               "expect_status": [200, 204]})
    assert not moved.ok and "(expected 200 or 204)" in moved.detail


def test_http_head_request(http_port: int) -> None:
    r = run_check("http", {"url": f"http://{{address}}:{http_port}/ok", "method": "head"})
    assert r.ok and r.detail.startswith("HTTP 200"), r


def test_http_host_header_and_configured_headers(http_port: int) -> None:
    r = run_check("http", {"url": f"http://{{address}}:{http_port}/echo",
                           "host_header": "svc.test", "headers": {"X-Test": "for {address}"},
                           "body_match": r"^host=svc\.test x=for 127\.0\.0\.1$"})
    assert r.ok, r


def test_http_server_that_never_answers_times_out() -> None:
    with socket.create_server((LOCAL, 0)) as silent:  # listens, never accepts or answers
        port = silent.getsockname()[1]
        start = time.monotonic()
        r = run_check("http", {"url": f"http://{{address}}:{port}/"}, timeout=1.0)
        took = time.monotonic() - start
    assert not r.ok
    assert r.detail == "timed out after 1s (waiting for the response)"
    assert 0.9 < r.latency < 3 and took < 4


def test_http_refused_port() -> None:
    r = run_check("http", {"url": f"http://{{address}}:{free_port()}/"})
    assert not r.ok and r.detail == "connection refused"


@pytest.mark.skipif(not HAS_V6, reason="no IPv6 loopback")
def test_http_ipv6_address_is_bracketed_in_the_url() -> None:
    with http_server("::1") as port:
        r = run_check("http", {"url": f"http://{{address}}:{port}/echo"}, address="::1",
                      timeout=5.0)
        assert r.ok, r
        echoed = run_check("http", {"url": f"http://{{address}}:{port}/echo",
                                    "body_match": rf"host=\[::1\]:{port} "}, address="::1")
        assert echoed.ok, echoed


def test_http_raw_servers_eof_body_and_not_http() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nServer: tiny\r\n\r\nstate=healthy\n")
        await writer.drain()
        writer.close()  # the body ends with the connection

    async def ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        writer.close()

    def body(params: dict[str, Any]) -> Callable[[int], Awaitable[CheckResult]]:
        async def run(port: int) -> CheckResult:
            url = f"http://{{address}}:{port}/"
            check = build_check("http", validate_check("http", {"url": url, **params}), 5)
            return await check.run(LOCAL)
        return run

    ok = asyncio.run(_with_server(http10, body({"body_match": "^state=healthy$"})))
    assert ok.ok, ok
    wrong = asyncio.run(_with_server(ssh, body({})))
    assert not wrong.ok and wrong.detail == "not an HTTP response: 'SSH-2.0-OpenSSH_9.6'"


def test_http_response_in_pieces_after_early_hints() -> None:
    """A 103 interim response, then a chunked 200 written a few bytes at a time, and a
    malformed chunk size: the check reads the real answer and names a broken one."""
    answer = (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"6\r\nstate=\r\n7\r\nhealthy\r\n0\r\n\r\n")

    def server(reply: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                         Awaitable[None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            for i in range(0, len(reply), 5):
                writer.write(reply[i:i + 5])
                await writer.drain()
                await asyncio.sleep(0.002)
            writer.close()
        return serve

    async def check(port: int) -> CheckResult:
        params = {"url": f"http://{{address}}:{port}/", "body_match": "^state=healthy$"}
        return await build_check("http", validate_check("http", params), 5).run(LOCAL)

    ok = asyncio.run(_with_server(server(answer), check))
    assert ok.ok and ok.detail.startswith("HTTP 200 in "), ok
    broken = answer.replace(b"7\r\nhealthy", b"zz\r\nhealthy")
    bad = asyncio.run(_with_server(server(broken), check))
    assert not bad.ok and bad.detail.startswith("bad HTTP response"), bad


# ------------------------------------------------------------------ https


def test_https_verified_with_ca_file(certs: dict[str, tuple[Path, Path]]) -> None:
    with http_server(tls=server_context(certs["good"])) as port:
        r = run_check("https", {"url": f"https://{{address}}:{port}/ok",
                                "ca_file": str(certs["good"][0]), "body_match": "all good"})
    assert r.ok and r.detail.startswith("HTTP 200 in "), r
    assert r.warning is None


def test_https_untrusted_certificate_fails_unless_verify_is_off(
        certs: dict[str, tuple[Path, Path]]) -> None:
    with http_server(tls=server_context(certs["good"])) as port:
        url = f"https://{{address}}:{port}/ok"
        untrusted = run_check("https", {"url": url})
        insecure = run_check("https", {"url": url, "verify_tls": False})
    assert not untrusted.ok
    assert untrusted.detail.startswith("certificate verify failed: self")  # self-signed ...
    assert insecure.ok, insecure


def test_https_host_header_is_the_name_verified(certs: dict[str, tuple[Path, Path]]) -> None:
    with http_server(tls=server_context(certs["good"])) as port:
        base = {"url": f"https://{{address}}:{port}/echo", "ca_file": str(certs["good"][0])}
        vhost = run_check("https", {**base, "host_header": "svc.test",
                                    "body_match": "host=svc.test "})
        other = run_check("https", {**base, "host_header": "other.test"})
    assert vhost.ok, vhost
    assert not other.ok and "other.test" in other.detail  # hostname mismatch


def test_https_warns_of_a_certificate_about_to_expire(
        certs: dict[str, tuple[Path, Path]]) -> None:
    with http_server(tls=server_context(certs["soon"])) as port:
        r = run_check("https", {"url": f"https://{{address}}:{port}/ok",
                                "ca_file": str(certs["soon"][0])})
    assert r.ok, r
    assert r.warning is not None and r.warning.startswith("certificate expires in 3 days")


def test_https_missing_ca_file_is_a_failed_check(tmp_path: Path, http_port: int) -> None:
    r = run_check("https", {"url": f"https://{{address}}:{http_port}/",
                            "ca_file": str(tmp_path / "nope.pem")})
    assert not r.ok and r.detail.startswith(f"cannot load ca_file {tmp_path / 'nope.pem'}")


# ------------------------------------------------------------------ tcp


def test_tcp_banner_match_like_smtp() -> None:
    received: list[bytes] = []

    async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mail ready\r\n")
        await writer.drain()
        with contextlib.suppress(TimeoutError, OSError):
            received.append(await asyncio.wait_for(reader.read(100), 5))
        writer.close()

    async def body(port: int) -> tuple[CheckResult, CheckResult]:
        good = build_check("tcp", validate_check(
            "tcp", {"port": port, "expect": "^220", "quit": "QUIT\r\n"}), 5)
        bad = build_check("tcp", validate_check("tcp", {"port": port, "expect": "^554"}), 5)
        return await good.run(LOCAL), await bad.run(LOCAL)

    good, bad = asyncio.run(_with_server(smtp, body))
    assert good.ok and good.detail.startswith("reply '220 mail ready' in "), good
    assert not bad.ok and bad.detail == "reply '220 mail ready' does not match '^554'"
    assert b"QUIT\r\n" in received, "the server was told goodbye after the match"


def test_tcp_send_then_expect_reply() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"PONG " + line.split(b" ", 1)[1])
        await writer.drain()
        writer.close()

    async def body(port: int) -> CheckResult:
        check = build_check("tcp", validate_check(
            "tcp", {"port": port, "send": "PING {address}\r\n", "expect": r"PONG 127\.0\.0\.1"}),
            5)
        return await check.run(LOCAL)

    r = asyncio.run(_with_server(echo, body))
    assert r.ok, r


def test_tcp_connect_only_and_refused() -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def body(port: int) -> CheckResult:
        return await build_check("tcp", {"port": port}, 5).run(LOCAL)

    r = asyncio.run(_with_server(idle, body))
    assert r.ok and r.detail.startswith("connected to port "), r
    refused = run_check("tcp", {"port": free_port()})
    assert not refused.ok and refused.detail == "connection refused"


def test_tcp_silent_server_times_out_saying_what_it_waited_for() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read()
        writer.close()

    async def body(port: int) -> CheckResult:
        return await build_check("tcp", validate_check(
            "tcp", {"port": port, "expect": "^220"}), 1.0).run(LOCAL)

    r = asyncio.run(_with_server(silent, body))
    assert not r.ok
    assert r.detail == "timed out after 1s (waiting for a reply matching '^220')"


# ------------------------------------------------------------------ tls


def _tls_check(cert: tuple[Path, Path], params: dict[str, Any],
               address: str = LOCAL) -> CheckResult:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()

    async def body(port: int) -> CheckResult:
        check = build_check("tls", validate_check("tls", {"port": port, **params}), 5)
        return await check.run(address)

    result: CheckResult = asyncio.run(
        _with_server(hold, body, tls=server_context(cert), host=address))
    return result


def test_tls_valid_certificate(certs: dict[str, tuple[Path, Path]]) -> None:
    r = _tls_check(certs["good"], {"ca_file": str(certs["good"][0])})
    assert r.ok and r.warning is None, r
    assert r.detail.startswith("TLSv1.3 in ") and "certificate expires in 90 days" in r.detail


def test_tls_certificate_expiring_in_3_days_warns(certs: dict[str, tuple[Path, Path]]) -> None:
    r = _tls_check(certs["soon"], {"ca_file": str(certs["soon"][0])})
    assert r.ok, r
    assert r.warning is not None and r.warning.startswith("certificate expires in 3 days (")
    quiet = _tls_check(certs["soon"], {"ca_file": str(certs["soon"][0]), "warn_days": 2})
    assert quiet.ok and quiet.warning is None


def test_tls_expired_certificate_fails_verified_or_not(
        certs: dict[str, tuple[Path, Path]]) -> None:
    verified = _tls_check(certs["expired"], {"ca_file": str(certs["expired"][0])})
    assert not verified.ok
    assert verified.detail == "certificate verify failed: certificate has expired"
    unverified = _tls_check(certs["expired"], {"verify": False})
    assert not unverified.ok and "certificate expired 1 day ago" in unverified.detail


def test_tls_untrusted_or_wrong_name_fails(certs: dict[str, tuple[Path, Path]]) -> None:
    untrusted = _tls_check(certs["good"], {})
    assert not untrusted.ok and untrusted.detail.startswith("certificate verify failed:")
    wrong = _tls_check(certs["good"], {"ca_file": str(certs["good"][0]),
                                       "server_name": "other.test"})
    assert not wrong.ok and "other.test" in wrong.detail
    named = _tls_check(certs["good"], {"ca_file": str(certs["good"][0]),
                                       "server_name": "svc.test"})
    assert named.ok, named


@pytest.mark.skipif(not HAS_V6, reason="no IPv6 loopback")
def test_tls_over_ipv6(certs: dict[str, tuple[Path, Path]]) -> None:
    r = _tls_check(certs["good"], {"ca_file": str(certs["good"][0])}, address="::1")
    assert r.ok, r


def test_tls_refused() -> None:
    r = run_check("tls", {"port": free_port()})
    assert not r.ok and r.detail == "connection refused"


# ------------------------------------------------------------------ command


def test_command_exit_codes() -> None:
    assert run_check("command", {"argv": ["true"]}).ok
    r = run_check("command", {"argv": ["false"]})
    assert not r.ok and r.detail.startswith("exit 1 in ")
    assert run_check("command", {"command": "sh -c 'exit 3'", "ok_codes": [0, 3]}).ok


def test_command_substitutes_address_and_shows_first_line() -> None:
    r = run_check("command", {"argv": ["sh", "-c", "echo; echo checking {address} $X; "
                                                   "echo second line"], "env": {"X": "now"}})
    assert r.ok and r.detail.endswith(": checking 127.0.0.1 now"), r
    env = run_check("command", {"command": "sh -c 'echo on $MINISFT_ADDRESS >&2; exit 2'"},
                    address="::1")
    assert not env.ok and env.detail.endswith(": on ::1") and env.detail.startswith("exit 2")


def test_command_does_not_inherit_the_daemons_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # a community given as community_env: MINISFT_COMMUNITY lives in the daemon's environment
    monkeypatch.setenv("MINISFT_COMMUNITY", "s3cr3t-community")
    r = run_check("command", {"argv": ["sh", "-c", "echo got:${MINISFT_COMMUNITY:-none}:$X"],
                              "env": {"X": "set"}})
    assert r.ok and r.detail.endswith(": got:none:set"), r


def test_apprise_worker_does_not_inherit_the_daemons_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from minisft.sinks.apprise_sink import worker_env

    monkeypatch.setenv("MINISFT_AUTH_KEY", "s3cr3t-key")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    env = worker_env()
    assert "MINISFT_AUTH_KEY" not in env and "s3cr3t-key" not in env.values()
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128" and env["PATH"]


def test_command_nagios_warning_code_is_ok_with_warning() -> None:
    r = run_check("command", {"argv": ["sh", "-c", "echo 'WARNING - disk 91%'; exit 1"],
                              "warn_codes": [1]})
    assert r.ok and r.warning is not None and r.warning.endswith("WARNING - disk 91%")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie waiting for a reaper is dead too


def _wait_gone(pid: int, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    r = run_check("command", {"argv": ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]},
                  timeout=1.0)
    assert time.monotonic() - start < 5
    assert not r.ok and r.detail == "timed out after 1s (running sh)"
    assert _wait_gone(int(pidfile.read_text())), "the background sleep was killed too"


def test_command_leftover_child_holding_output_does_not_hang_the_check(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    r = run_check("command", {"argv": ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo up"]},
                  timeout=10.0)
    assert time.monotonic() - start < 5
    assert r.ok and r.detail.endswith(": up"), r
    assert _wait_gone(int(pidfile.read_text()))


def test_command_cancelled_by_daemon_stop_kills_the_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "leader.pid"

    async def main() -> None:
        check = build_check("command", validate_check(
            "command", {"argv": ["sh", "-c", f"echo $$ > {pidfile}; sleep 60; true"]}), 30)
        task = asyncio.create_task(check.run(LOCAL))
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _wait_gone(int(pidfile.read_text()))


def test_command_not_found() -> None:
    r = run_check("command", {"argv": ["/nonexistent/check_thing", "{address}"]})
    assert not r.ok and r.detail == "command not found: /nonexistent/check_thing"


# ------------------------------------------------------------------ python


CHECK_MODULE = '''
import asyncio
from minisft.probes.isalive import CheckResult

def yes(address):
    return True

def no(address):
    return False

def pair(address):
    return (False, f"replication lag 30 s on {address}")

def result(address):
    return CheckResult(True, 0.25, "custom result", warning="almost full")

async def coro(address, greeting="hi"):
    await asyncio.sleep(0)
    return True, f"{greeting} {address}"

def boom(address):
    raise RuntimeError("database locked")

def nothing(address):
    return None

async def slow(address):
    await asyncio.sleep(30)
    return True

not_callable = 42
'''


@pytest.fixture
def check_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"mychecks_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(CHECK_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_python_check_return_shapes(check_module: str) -> None:
    def py(fn: str, **kw: Any) -> CheckResult:
        return run_check("python", {"entry": f"{check_module}:{fn}", **kw})

    assert py("yes").ok
    assert not py("no").ok and py("no").detail == f"{check_module}:no returned False"
    pair = py("pair")
    assert not pair.ok and pair.detail == "replication lag 30 s on 127.0.0.1"
    assert py("result") == CheckResult(True, 0.25, "custom result", warning="almost full")
    coro = py("coro", kwargs={"greeting": "hello"})
    assert coro.ok and coro.detail == "hello 127.0.0.1"


def test_python_check_failures_are_results(check_module: str) -> None:
    def py(fn: str, timeout: float = 5.0) -> CheckResult:
        return run_check("python", {"entry": f"{check_module}:{fn}"}, timeout=timeout)

    boom = py("boom")
    assert not boom.ok and boom.detail == "RuntimeError: database locked"
    nothing = py("nothing")
    assert not nothing.ok and "returned None; expected a bool" in nothing.detail
    slow = py("slow", timeout=1.0)
    assert not slow.ok and slow.detail.startswith("timed out after 1s")
    missing = py("absent")
    assert not missing.ok and missing.detail.startswith(f"cannot load {check_module}:absent")
    assert py("not_callable").detail.endswith("is not callable")
    nomod = run_check("python", {"entry": "no_such_module_xyz:check"})
    assert not nomod.ok and "ModuleNotFoundError" in nomod.detail
    noep = run_check("python", {"entry": "no_such_entry_point_xyz"})
    assert not noep.ok and "no minisft.checks entry point" in noep.detail


# ------------------------------------------------------------------ always / validation


def test_always_is_ok() -> None:
    r = run_check("always", {})
    assert r.ok and r.latency == 0.0


@pytest.mark.parametrize(("type_", "params", "key", "text"), [
    ("http", {"expect_status": "abc"}, "expect_status", "must be an integer 100-599"),
    ("http", {"expect_status": [200, 700]}, "expect_status", "100-599"),
    ("http", {"colour": "red"}, "colour", "unknown parameter for an http check"),
    ("http", {"url": "https://{address}/"}, "url", "use type https"),
    ("http", {"url": "http:///x"}, "url", "has no host"),
    ("http", {"method": "POST"}, "method", "GET, HEAD"),
    ("http", {"method": "HEAD", "body_match": "x"}, "body_match", "HEAD"),
    ("http", {"body_match": "(unclosed"}, "body_match", "invalid regular expression"),
    ("http", {"headers": {"Host": "x"}}, "headers", "use host_header"),
    ("https", {"verify_tls": "maybe"}, "verify_tls", "true or false"),
    ("http", {"verify_tls": False}, "verify_tls", "unknown parameter for an http check"),
    ("tcp", {}, "port", "required for a tcp check"),
    ("tcp", {"port": 70000}, "port", "1-65535"),
    ("tcp", {"port": True}, "port", "integer"),
    ("tcp", {"port": 25, "expect": "["}, "expect", "invalid regular expression"),
    ("tls", {"warn_days": -1}, "warn_days", "0-3650"),
    ("command", {}, "argv", "required"),
    ("command", {"argv": []}, "argv", "non-empty list"),
    ("command", {"argv": ["a"], "command": "b"}, "command", "not both"),
    ("command", {"command": "sh -c 'unclosed"}, "command", "cannot split"),
    ("command", {"argv": ["x"], "warn_codes": [0]}, "warn_codes", "ok_codes"),
    ("python", {}, "entry", "required for a python check"),
    ("python", {"entry": "not a module!"}, "entry", "package.module:function"),
    ("always", {"url": "x"}, "url", "unknown parameter for an always check"),
])
def test_validate_check_errors_name_the_key(type_: str, params: dict[str, Any], key: str,
                                            text: str) -> None:
    with pytest.raises(CheckParamError) as info:
        validate_check(type_, params)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ") and text in str(info.value)
    assert isinstance(info.value, ValueError)


def test_validate_check_unknown_type_lists_the_types() -> None:
    with pytest.raises(CheckParamError) as info:
        validate_check("smtp", {})
    assert str(info.value) == ("type: unknown check type 'smtp' "
                               "(one of: always, command, http, https, python, tcp, tls)")
    assert CHECK_TYPES == ("always", "command", "http", "https", "python", "tcp", "tls")


def test_validate_check_fills_defaults_and_converts() -> None:
    assert validate_check("https", {}) == {
        "url": "https://{address}/", "method": "GET", "expect_status": [200],
        "body_match": None, "headers": {}, "host_header": None, "verify_tls": True,
        "ca_file": None, "warn_days": 14}
    tls = validate_check("tls", {"port": "8443", "verify": "no"})
    assert tls["port"] == 8443 and tls["verify"] is False and tls["warn_days"] == 14
    http = validate_check("http", {"expect_status": ["2xx", 301], "method": "head"})
    assert http["expect_status"] == [*range(200, 300), 301] and http["method"] == "HEAD"
    cmd = validate_check("command", {"command": "check_http -H {address} -p 8080"})
    assert cmd == {"argv": ["check_http", "-H", "{address}", "-p", "8080"], "ok_codes": [0],
                   "warn_codes": [], "env": {}}
    for type_, params in [("https", {}), ("tls", {"port": "8443"}), ("command", cmd),
                          ("tcp", {"port": 25, "send": "EHLO x\r\n"})]:
        once = validate_check(type_, params)
        assert validate_check(type_, once) == once, "validating twice changes nothing"


def test_importing_the_module_stays_light() -> None:
    code = ("import sys; import minisft.probes.isalive as m; "
            "m.validate_check('https', {}); "
            "print(sorted(x for x in ('ssl', 'asyncio', 'requests', 'socket') "
            "if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
