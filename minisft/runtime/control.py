"""The control socket: how the CLI talks to a running daemon.

A Unix stream socket, mode 0600 and checked with SO_PEERCRED, so only root (or the daemon's
own user) can release, claim or pause addresses. One JSON object per line each way:
request ``{"cmd": "release", "monitor": "web"}``, answer ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from minisft.runtime.connlimit import ConnectionLimit

log = logging.getLogger("minisft.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 256  # control_max_connections: one fd each


class ControlError(Exception):
    """The daemon could not be reached, or refused the request."""


class ControlServer:
    def __init__(self, path: Path, handler: Handler, *,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.path = path
        self._handler = handler
        self.limit = ConnectionLimit(f"control socket {path}", max_connections)
        self._server: asyncio.AbstractServer | None = None
        # (st_dev, st_ino) of the socket file this server created: close() removes that
        # file only, never one a refused start found in place (another daemon's live socket)
        self._created: tuple[int, int] | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists() or self.path.is_symlink():
            if not _socket_stale(self.path):
                raise ControlError(f"another daemon already listens on {self.path}")
            self.path.unlink()
        # umask so the socket is never world-accessible, even for an instant
        old = os.umask(0o177)
        try:
            # a deep backlog: 200 CLI clients at once all connect (at 100, 49 failed);
            # the kernel caps it at net.core.somaxconn
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_REQUEST, backlog=1024)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        st = self.path.stat()
        self._created = (st.st_dev, st.st_ino)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self._created is None:
            return
        with contextlib.suppress(FileNotFoundError):
            st = self.path.stat()
            if (st.st_dev, st.st_ino) == self._created:
                self.path.unlink()
        self._created = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.limit.enter():
            writer.close()  # no answer: writing could block on a client that never reads
            return
        try:
            await self._serve_one(reader, writer)
        finally:
            self.limit.leave()

    async def _serve_one(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = _peer_uid(sock) if sock is not None else -1
            if uid not in (0, os.geteuid()):
                await _send(writer, {"ok": False, "error": "permission denied: the control "
                                     "socket is root-only"})
                return
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    await _send(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    await _send(writer, {"ok": False, "error": f"bad request: {exc}"})
                    continue
                except RecursionError:  # "[[[[...": a request is one flat object
                    await _send(writer, {"ok": False, "error": "bad request: nested too "
                                         "deeply"})
                    continue
                try:
                    answer = await self._handler(request)
                except Exception as exc:  # a bug must not kill the daemon, but must show
                    log.exception("control request %r failed", request.get("cmd"))
                    answer = {"ok": False, "error": f"internal error: {exc}"}
                await _send(writer, answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj, default=str).encode() + b"\n")
    await writer.drain()


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _socket_stale(path: Path) -> bool:
    """True only when nothing can be listening on ``path``: connect is refused.

    A busy daemon (full listen backlog: EAGAIN or a timeout) or any other doubt counts as
    alive, so a second daemon never steals a live socket.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False
        return False


def request(path: Path, payload: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Send one request and return the answer (blocking; for the CLI)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            # a refused peer gets its answer at connect and the socket closed: read it
            with contextlib.suppress(BrokenPipeError):
                s.sendall(json.dumps(payload).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except FileNotFoundError:
        raise ControlError(f"no daemon: control socket {path} does not exist "
                           "(is `minisft run` running with this config?)") from None
    except ConnectionRefusedError:
        raise ControlError(f"no daemon listens on {path} (stale socket?)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: the control socket is "
                           "root-only") from None
    except OSError as exc:
        raise ControlError(f"cannot talk to the daemon on {path}: {exc}") from None
    try:
        answer = json.loads(buf)
    except (ValueError, RecursionError):
        raise ControlError("the daemon sent a malformed answer") from None
    if not isinstance(answer, dict):
        raise ControlError("the daemon sent a malformed answer")
    return answer
