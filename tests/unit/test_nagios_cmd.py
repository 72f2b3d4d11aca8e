"""The Nagios push sink's wire format and its failures, on a real named pipe."""

from __future__ import annotations

import asyncio
import os
import select
from dataclasses import replace
from pathlib import Path

import pytest

from minisft.config.model import NagiosConfig
from minisft.core.events import Event, EventKind, Notice
from minisft.nagios.plugin import State
from minisft.sinks.base import DeliveryError
from minisft.sinks.nagios_cmd import NagiosCommandSink, command_line
from minisft.status import StatusDocument
from tests.support.status_docs import document, monitor


def test_a_long_multi_line_output_stays_one_atomic_line() -> None:
    line = command_line("h", "MiniSFT web", State.WARNING, "x" * 9000 + "\nsecond", 1.0)
    assert line.startswith(b"[1] PROCESS_SERVICE_CHECK_RESULT;h;MiniSFT web;1;xxx")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(line) <= select.PIPE_BUF
    short = command_line("h", "s", State.OK, "a\nb", 1.0)
    assert short == b"[1] PROCESS_SERVICE_CHECK_RESULT;h;s;0;a\\nb\n"


def status() -> StatusDocument:
    doc = document([monitor("web", "backup", "holding", "self", changed_at=1e9)], now=1e9,
                   sinks=[{"name": "nagios", "state": "retrying", "last_error": "x"},
                          {"name": "snmp", "state": "ok"}])
    return replace(doc, node="beta")


def event() -> Event:
    return Event.stamp(Notice(EventKind.TAKEOVER, "x", monitor="web"), seq=3, time=1.0,
                       node="beta")


def test_the_results_go_into_the_pipe_for_the_monitor_and_the_daemon(tmp_path: Path) -> None:
    fifo = tmp_path / "nagios.cmd"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    sink = NagiosCommandSink(NagiosConfig(command_file=fifo), node="beta", status=status)
    asyncio.run(sink.deliver(event()))
    lines = os.read(reader, 65536).decode().splitlines()
    os.close(reader)
    assert [ln.split("] ", 1)[1].split(";")[:4] for ln in lines] == [
        ["PROCESS_SERVICE_CHECK_RESULT", "beta", "MiniSFT web", "1"],
        # the sink's own "retrying" does not count: this push just worked
        ["PROCESS_SERVICE_CHECK_RESULT", "beta", "MiniSFT daemon", "0"]]
    assert "runs on this backup node" in lines[0]


def test_no_reader_and_not_a_pipe_are_delivery_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "nagios.cmd"
    os.mkfifo(fifo)
    sink = NagiosCommandSink(NagiosConfig(command_file=fifo), node="beta", status=status)
    with pytest.raises(DeliveryError, match=r"nobody reads .* \(is Nagios running\?\)"):
        asyncio.run(sink.deliver(event()))
    plain = tmp_path / "plain"
    plain.write_text("")
    sink = NagiosCommandSink(NagiosConfig(command_file=plain), node="beta", status=status)
    with pytest.raises(DeliveryError, match="is not a named pipe"):
        asyncio.run(sink.deliver(event()))
    assert plain.read_text() == ""


def test_the_icinga2_body_matches_by_filter_variables_not_by_string() -> None:
    from minisft.sinks.icinga2 import result_body

    body = result_body('lb "x"', "minisft-web", State.WARNING,
                       "MINISFT WARNING - beta: web moved | web_rtt=1ms;5 web_lost=0c", "beta")
    assert body["filter_vars"] == {"minisft_host": 'lb "x"', "minisft_service": "minisft-web"}
    assert '"x"' not in body["filter"]
    assert body["exit_status"] == 1 and body["plugin_output"] == "MINISFT WARNING - beta: " \
                                                                  "web moved"
    assert body["performance_data"] == ["web_rtt=1ms;5", "web_lost=0c"]
