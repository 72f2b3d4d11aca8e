"""Passive check results through the Icinga 2 REST API (`alerting.icinga2`).

For every event, the same results as the Nagios push (minisft.sinks.nagios_cmd, which
holds the shared `check_results`): check_minisft's state, text and perfdata for the
event's monitor (or every monitor) and for the daemon, each POSTed to
`/v1/actions/process-check-result` for the service `<service_prefix><monitor>` /
`<service_prefix>daemon` of `host`, matched with filter variables (never a filter string
built from names). The state pushed is the state now; late deliveries push it again.

`requests` runs in a worker thread (`asyncio.to_thread`), one delivery at a time, over one
kept-alive TLS session verified against `ca_file` (the Icinga CA) or the system's CAs, with
HTTP basic auth as an ApiUser that needs only `actions/process-check-result`. Any failure
(connection, TLS, timeout, a status other than 200 for a result) is a DeliveryError: the
runtime retries with backoff. Errors name the URL without credentials and never the
password.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from minisft.config.model import Icinga2Config
from minisft.core.events import Event
from minisft.nagios.plugin import State
from minisft.sinks.base import DeliveryError
from minisft.sinks.nagios_cmd import CheckResultSink, StatusSource

ENDPOINT = "/v1/actions/process-check-result"


def result_body(host: str, service: str, state: State, output: str,
                source: str) -> dict[str, Any]:
    first, *long_lines = output.split("\n")
    text, _, perf = first.partition(" | ")
    return {
        "type": "Service",
        "filter": "host.name == minisft_host && service.name == minisft_service",
        "filter_vars": {"minisft_host": host, "minisft_service": service},
        "exit_status": state.code,
        "plugin_output": "\n".join([text, *long_lines]),
        "performance_data": perf.split(),
        "check_source": source,
    }


class Icinga2Sink(CheckResultSink[Icinga2Config]):
    name = "icinga2"

    def __init__(self, config: Icinga2Config, *, node: str, status: StatusSource) -> None:
        super().__init__(config, node=node, status=status)
        self._session: Any = None  # requests.Session, made in the worker thread
        self._lock = asyncio.Lock()

    async def deliver(self, event: Event) -> None:
        bodies = [result_body(self.host, service, state, text, self.node)
                  for service, state, text in await self.results(event, time.time())]
        async with self._lock:
            await asyncio.to_thread(self._post_all, bodies)
        self.stats["results"] += len(bodies)

    def _post_all(self, bodies: list[dict[str, Any]]) -> None:
        import requests

        if self._session is None:
            session = requests.Session()
            session.auth = (self.config.user, self.config.password)
            session.verify = str(self.config.ca_file) if self.config.ca_file else True
            session.trust_env = False  # no proxy from the daemon's environment
            session.headers["Accept"] = "application/json"
            self._session = session
        url = self.config.url + ENDPOINT
        for body in bodies:
            service = body["filter_vars"]["minisft_service"]
            try:
                reply = self._session.post(url, json=body, timeout=self.config.timeout)
            except requests.RequestException as exc:
                self._session.close()
                self._session = None
                raise DeliveryError(f"icinga2: {self.config.url}: "
                                    f"{type(exc).__name__}") from None
            if reply.status_code != 200:
                raise DeliveryError(f"icinga2: {self.host}!{service}: HTTP "
                                    f"{reply.status_code} {_status_text(reply)}")

    async def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _status_text(reply: Any) -> str:
    """The API's own words ("No objects found."), short; never the request."""
    try:
        data = reply.json()
        text = str(data["results"][0]["status"]) if data.get("results") else \
            str(data.get("status", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = reply.reason or ""
    return " ".join(text.split())[:200]
