"""An HTTP endpoint for apprise's json:// that records every POST, runnable in a namespace.

The fault tests need a receiver they can stop and start again inside the lab's client
namespace, so it is a separate process (this file, run as a script) appending one JSON
line per POST to a file that survives its restarts:

    rx = JsonReceiver(tmp_path / "json", port=8099)
    rx.start(cluster.client)     # python3 json_receiver.py --port 8099 --out FILE
    ... daemons send to json://192.0.2.100:8099/hook ...
    rx.stop(); rx.start(cluster.client)
    rx.posts()                   # every POST body, in arrival order, across restarts

The record is written (and flushed) before the 200 answer, so a message the sender saw
accepted is always in the file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from minisft.lab.netns import stop_process_group


class JsonReceiver:
    """The test-side handle: starts/stops the script in a lab host, reads what it got."""

    def __init__(self, workdir: Path, *, port: int = 8099) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.out = self.workdir / "posts.jsonl"
        self.ready = self.workdir / "ready"
        self.proc: subprocess.Popen[bytes] | None = None
        self._host: Any = None

    def start(self, host: Any, timeout: float = 20.0) -> JsonReceiver:
        """Run the receiver in `host` (a minisft.lab.netns.Host); wait until it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.ready.unlink()
        log = open(self.workdir / "receiver.log", "ab")  # noqa: SIM115 - handed to the child
        self._host = host
        self.proc = host.popen([sys.executable, str(Path(__file__).resolve()), "--port",
                                str(self.port), "--out", str(self.out), "--ready",
                                str(self.ready)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"json receiver exited ({self.proc.returncode}): "
                                   + (self.workdir / "receiver.log").read_text())
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"json receiver not listening after {timeout}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if self._host is not None:
            self._host.stop_process(proc)
        else:
            stop_process_group(proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def posts(self) -> list[dict[str, Any]]:
        """Every POST body received so far (complete lines only), in arrival order."""
        try:
            data = self.out.read_text()
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for line in data.splitlines(keepends=True):
            if line.endswith("\n") and line.strip():
                out.append(json.loads(line))
        return out


# ---------------------------------------------------------------------- the server


def _serve(port: int, out: Path, ready: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    fh = open(out, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the server

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                self.send_response(400)
                self.end_headers()
                return
            body["_path"] = self.path
            body["_received"] = time.time()
            fh.write(json.dumps(body, sort_keys=True) + "\n")
            fh.flush()
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ready.write_text(f"{os.getpid()}\n")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        fh.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args()
    _serve(args.port, args.out, args.ready)


if __name__ == "__main__":
    main()
