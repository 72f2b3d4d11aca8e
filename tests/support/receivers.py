"""Alert receivers for the end-to-end tests, run as separate processes (in a lab namespace).

As a script (stdlib only, plus aiosmtpd for `smtp`):

    python tests/support/receivers.py smtp --host 192.0.2.100 --port 2525 --out FILE \
        [--user minisft --password PW]
    python tests/support/receivers.py http --host 192.0.2.100 --port 8080 --out FILE

Each appends JSON lines to FILE (opened in append mode, so a restarted receiver keeps the
earlier lines): `{"type": "ready", "pid": N}` once it listens, then one line per message:

    {"type": "mail", "subject": ..., "from": ..., "to": [...], "body": ..., "auth": ...}
    {"type": "post", "path": "hook", "body": {...the JSON document posted...}}

It runs until SIGTERM/SIGINT. `LineReceiver` starts one inside a lab `Host` and reads FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minisft.lab.netns import Host

SCRIPT = Path(__file__).resolve()

_write_lock = threading.Lock()


def _append(out: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    with _write_lock, open(out, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass


# ---------------------------------------------------------------------- the servers


def serve_smtp(host: str, port: int, out: Path, user: str | None,
               password: str | None) -> None:
    import email
    import email.policy

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            part = msg.get_body(preferencelist=("plain", "html")) if msg.is_multipart() \
                else msg
            body = part.get_content() if part is not None else ""
            login = session.auth_data if session.authenticated else None
            _append(out, {"type": "mail", "subject": str(msg["Subject"]),
                          "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                          "body": body,
                          "auth": login.decode() if isinstance(login, bytes) else login})
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and user is not None
              and data.login == user.encode() and data.password == (password or "").encode())
        return AuthResult(success=ok, auth_data=data.login if ok else None)

    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs = {"authenticator": authenticate, "auth_require_tls": False,
                  "auth_required": True}
    controller = Controller(Handler(), hostname=host, port=port, **kwargs)
    controller.start()  # returns once the server answers on host:port
    try:
        _append(out, {"type": "ready", "pid": os.getpid()})
        _wait_for_signal()
    finally:
        controller.stop()


def serve_http(host: str, port: int, out: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            _append(out, {"type": "post", "path": self.path.strip("/"), "body": body})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _append(out, {"type": "ready", "pid": os.getpid()})
        _wait_for_signal()
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["smtp", "http"])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args(argv)
    if args.kind == "smtp":
        serve_smtp(args.host, args.port, args.out, args.user, args.password)
    else:
        serve_http(args.host, args.port, args.out)
    return 0


# ---------------------------------------------------------------------- test side


class LineReceiver:
    """One receiver process inside a lab host; its records come from the JSON lines file.

    stop() and start() again keep the file: records from every run accumulate."""

    def __init__(self, host: Host, kind: str, ip: str, port: int, out: Path, *,
                 user: str | None = None, password: str | None = None) -> None:
        self.host = host
        self.kind = kind
        self.ip = ip
        self.port = port
        self.out = out
        self.user = user
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = out.with_suffix(".stderr")

    def start(self, timeout: float = 30.0) -> LineReceiver:
        assert self.proc is None, "already running"
        ready_before = len(self.records("ready"))
        argv = [sys.executable, str(SCRIPT), self.kind, "--host", self.ip,
                "--port", str(self.port), "--out", str(self.out)]
        if self.user is not None:
            argv += ["--user", self.user, "--password", self.password or ""]
        with open(self.log, "ab") as err:
            self.proc = self.host.popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while len(self.records("ready")) <= ready_before:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} receiver exited ({self.proc.returncode}):\n"
                                   + self.log.read_text(errors="replace"))
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.kind} receiver not ready after {timeout}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self.host.stop_process(proc)

    def __enter__(self) -> LineReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def records(self, type_: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.out.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line being written right now
                rec = json.loads(line)
                if type_ is None or rec.get("type") == type_:
                    out.append(rec)
        return out

    def messages(self) -> list[dict[str, Any]]:
        """Mails or posts, in arrival order."""
        return [r for r in self.records() if r.get("type") in ("mail", "post")]

    def wait_for(self, match: Callable[[dict[str, Any]], bool], *, count: int = 1,
                 timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages() if match(m)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind} receiver: {len(found)} of {count} matching "
                                     f"message(s) after {timeout:g}s; got:\n"
                                     + "\n".join(json.dumps(m) for m in self.messages()))
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
