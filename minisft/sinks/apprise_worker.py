"""The apprise side of the apprise sink: a short-lived child process of the daemon.

apprise 2.x imports all of its ~190 notification plugins (about 600 modules, +39 MiB
resident) the first time a URL is parsed, and runs third-party network code. Both stay out
of the failover daemon: `AppriseSink` starts this module on demand as

    sys.executable -P -m minisft.sinks.apprise_worker

and talks to it in JSON lines, one request then one reply, over stdin/stdout:

* `{"op": "init", "urls": [{"url": U, "tags": [..]}, ..], "config_file": PATH|null}`
  builds the targets (one per apprise service: a URL entry or a service of the apprise
  config file) and answers `{"ok": true, "targets": [{"label": "url#2 (mailto)",
  "tags": [..], "source": "url"|"file", "entry": N}, ..]}` (`entry`: 0-based index of the
  URL entry; for a config file, its service number) or `{"ok": false, "error": TEXT}`.
  Labels and errors never contain a URL.
* `{"op": "notify", "targets": [i, ..], "title": T, "body": B, "type": "info"|"success"|
  "warning"|"failure"}` notifies those targets concurrently (one thread each) and answers
  `{"ok": true, "results": [bool, ..]}`, in the order asked.
* EOF on stdin: exit 0. The daemon closes stdin when it has been idle for a while.

URLs arrive only through stdin. Nothing here prints a URL or a secret: logging is
disabled entirely (apprise's own logs can hold addresses and tokens), a plugin exception
is reported as a plain failure, and file descriptor 1 is pointed at stderr (which the
daemon sends to /dev/null) once the protocol channel is set aside, so a stray print from
a plugin cannot corrupt the protocol either.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

_TYPES = ("info", "success", "warning", "failure")


class _Error(Exception):
    """An error whose text is safe to send back (it never holds a URL)."""


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep and head.isascii() and len(head) < 20 else "?"


class Worker:
    def __init__(self) -> None:
        self.apprise: Any = None
        self.services: list[Any] = []

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise _Error("apprise worker: a request must be a JSON object")
        op = request.get("op")
        if op == "init":
            return {"ok": True, "targets": self.init(request.get("urls") or [],
                                                     request.get("config_file"))}
        if op == "notify":
            return {"ok": True, "results": self.notify(request)}
        raise _Error("apprise worker: unknown request")

    def init(self, urls: list[Any], config_file: str | None) -> list[dict[str, Any]]:
        try:
            import apprise
        except ImportError as exc:
            raise _Error("apprise: the apprise package is not installed") from exc
        self.apprise = apprise
        services: list[Any] = []
        targets: list[dict[str, Any]] = []
        for i, entry in enumerate(urls):
            url = str(entry.get("url", "")) if isinstance(entry, dict) else ""
            tags = [str(t) for t in entry.get("tags") or ()] if isinstance(entry, dict) else []
            label = f"url#{i + 1} ({_scheme(url)})"
            ap = apprise.Apprise()
            if not ap.add(url, tag=tags or None):
                raise _Error(f"apprise {label}: not a valid apprise URL")
            for svc in ap.find():
                services.append(svc)
                targets.append({"label": label, "tags": [], "source": "url", "entry": i})
        if config_file is not None:
            path = Path(config_file)
            conf = apprise.AppriseConfig()
            if not conf.add(str(path)):
                raise _Error(f"apprise config file {path}: cannot be loaded")
            ap = apprise.Apprise()
            ap.add(conf)
            found = list(ap.find())
            if not found:
                raise _Error(f"apprise config file {path}: no valid URL in it")
            for j, svc in enumerate(found, 1):
                kind = getattr(svc, "service_name", None) or type(svc).__name__
                services.append(svc)
                targets.append({"label": f"{path.name}#{j} ({kind})",
                                "tags": sorted(str(t) for t in (svc.tags or ())),
                                "source": "file", "entry": j})
        if not targets:
            raise _Error("apprise: no URL configured")
        self.services = services
        return targets

    def notify(self, request: dict[str, Any]) -> list[bool]:
        if self.apprise is None:
            raise _Error("apprise worker: notify before init")
        indexes = request.get("targets")
        if not isinstance(indexes, list) or not all(
                isinstance(i, int) and 0 <= i < len(self.services) for i in indexes):
            raise _Error("apprise worker: bad target numbers")
        ntype = request.get("type")
        if ntype not in _TYPES:
            raise _Error("apprise worker: bad notification type")
        title, body = str(request.get("title", "")), str(request.get("body", ""))
        apprise = self.apprise
        notify_type = apprise.NotifyType(ntype)

        def one(i: int) -> bool:
            try:
                return bool(self.services[i].notify(
                    body=body, title=title, notify_type=notify_type,
                    body_format=apprise.NotifyFormat.TEXT))
            except Exception:  # a plugin bug: the text may hold URLs, say nothing
                return False

        if not indexes:
            return []
        with ThreadPoolExecutor(max_workers=len(indexes)) as pool:
            return list(pool.map(one, indexes))


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    worker = Worker()
    for line in inp:
        if not line.strip():
            continue
        try:
            reply = worker.handle(json.loads(line))
        except _Error as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:
            reply = {"ok": False, "error": f"apprise worker: {type(exc).__name__}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


def main() -> int:
    logging.disable(logging.CRITICAL)  # apprise's logs may name URLs, addresses, tokens
    # Keep the protocol channel to ourselves: fd 1 becomes stderr (the daemon's /dev/null)
    # so nothing a plugin prints can reach the daemon as a reply.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        serve(sys.stdin.buffer, out)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
