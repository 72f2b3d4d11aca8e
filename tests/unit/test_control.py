"""The control socket answers root only, even if its file mode were opened up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from minisft.runtime.control import ControlError, ControlServer, request


async def _echo(req: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "echo": req}


def _serve(path: Path, client: Any) -> Any:
    async def main() -> Any:
        server = ControlServer(path, _echo)
        await server.start()
        try:
            return await asyncio.to_thread(client)
        finally:
            await server.close()

    return asyncio.run(main())


def test_root_gets_answers_and_the_socket_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ctl.sock"
    answer = _serve(path, lambda: (request(path, {"cmd": "status"}), path.stat().st_mode))
    assert answer[0] == {"ok": True, "echo": {"cmd": "status"}}
    assert answer[1] & 0o777 == 0o600
    assert not path.exists(), "the socket file is removed on close"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_other_users_are_refused_even_through_an_opened_socket_file() -> None:
    base = Path(tempfile.mkdtemp(prefix="minisft-ctl-"))
    base.chmod(0o755)
    path = base / "ctl.sock"
    # The daemon refuses at connect time and closes. The client sends its request only
    # after that (the sleep), so it meets a closed socket (EPIPE), as a slow client on a
    # loaded host does: the refusal already sent must still be readable.
    client_code = ("import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\n"
                   "s.connect(sys.argv[1]);time.sleep(0.5)\n"
                   "try:\n s.sendall(b'{\"cmd\":\"release\",\"monitor\":\"web\"}\\n')\n"
                   "except OSError:\n pass\n"
                   "print(s.makefile().readline())")

    def as_nobody() -> str:
        path.chmod(0o666)  # the file mode is one lock; SO_PEERCRED is the other
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-c", client_code, str(path)],
                             capture_output=True, text=True, timeout=20)
        assert out.stdout.strip(), f"no answer; client stderr: {out.stderr[-500:]}"
        return out.stdout

    try:
        answer = json.loads(_serve(path, as_nobody))
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    assert answer["ok"] is False and "root-only" in answer["error"]


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="does not exist"):
        request(tmp_path / "missing.sock", {"cmd": "status"})


def test_malformed_requests_get_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"

    def client() -> list[str]:
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b"not json\n[1,2]\n{\"cmd\": \"x\"}\n")
            f = s.makefile()
            return [f.readline() for _ in range(3)]

    lines = _serve(path, client)
    assert [json.loads(x)["ok"] for x in lines] == [False, False, True]


def test_deeply_nested_json_is_a_bad_request_and_the_connection_still_serves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ctl.sock"
    deep = b"[" * 30_000 + b"]" * 30_000 + b"\n"

    def client() -> list[dict[str, Any]]:
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(deep + b'{"cmd": "x"}\n')
            f = s.makefile()
            return [json.loads(f.readline() or "null") for _ in range(2)]

    first, second = _serve(path, client)
    assert first == {"ok": False, "error": "bad request: nested too deeply"}
    assert second == {"ok": True, "echo": {"cmd": "x"}}
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_a_refused_second_server_leaves_the_live_socket_alone(tmp_path: Path) -> None:
    # a second `minisft run` (own state_dir, same control_socket) is refused: its teardown
    # must not delete the live daemon's socket, or status/release/claim say "no daemon"
    path = tmp_path / "ctl.sock"

    async def main() -> Any:
        live = ControlServer(path, _echo)
        await live.start()
        try:
            second = ControlServer(path, _echo)
            with pytest.raises(ControlError, match="already listens"):
                await second.start()
            await second.close()
            return await asyncio.to_thread(request, path, {"cmd": "status"})
        finally:
            await live.close()

    assert asyncio.run(main()) == {"ok": True, "echo": {"cmd": "status"}}
    assert not path.exists()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listening: refused
        dead.bind(str(path))
    assert _serve(path, lambda: request(path, {"cmd": "x"})) == {"ok": True,
                                                                  "echo": {"cmd": "x"}}


def test_200_cli_clients_at_once_all_get_answers(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "ctl.sock"

    stalled: list[bool] = []

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        if not stalled:  # the loop busy for a moment (a reload, a big status): no accept
            stalled.append(True)
            time.sleep(1.0)
        await asyncio.sleep(0.1)
        return {"ok": True}

    async def main() -> list[Any]:
        server = ControlServer(path, slow)
        await server.start()

        def one(_: int) -> Any:
            try:
                return request(path, {"cmd": "status"})
            except ControlError as exc:
                return str(exc)

        try:
            with ThreadPoolExecutor(200) as pool:
                return await asyncio.to_thread(lambda: list(pool.map(one, range(200))))
        finally:
            await server.close()

    answers = asyncio.run(main())
    failed = [a for a in answers if a != {"ok": True}]
    assert not failed, f"{len(failed)} of 200 failed: {failed[:2]}"


def test_connections_beyond_the_limit_are_closed_logged_once_and_serving_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    path = tmp_path / "ctl.sock"

    def client() -> tuple[list[bytes], Any]:
        idle = []
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            idle.append(s)
        time.sleep(0.2)
        refused = []
        for _ in range(3):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(path))
                refused.append(s.recv(100))  # closed at once: EOF, no answer
        for s in idle:
            s.close()
        time.sleep(0.2)
        return refused, request(path, {"cmd": "after"})

    async def main() -> Any:
        server = ControlServer(path, _echo, max_connections=5)
        await server.start()
        try:
            return await asyncio.to_thread(client)
        finally:
            await server.close()

    caplog.set_level(logging.WARNING)
    refused, after = asyncio.run(main())
    assert refused == [b"", b"", b""]
    assert after == {"ok": True, "echo": {"cmd": "after"}}
    warnings = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(warnings) == 1 and "5 already open" in warnings[0], warnings
