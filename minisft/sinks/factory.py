"""Building the configured sinks: one place that maps the config's `logging` and `alerting`
sections to sink objects, used by the daemon (start and reload) and by the CLI (to bound
how long a test alert may take)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from minisft.config.model import Config
from minisft.runtime.journald import is_journal_syslog_socket
from minisft.sinks.base import Sink
from minisft.status import StatusDocument

log = logging.getLogger("minisft")


def build_sinks(cfg: Config, status: Callable[[], StatusDocument] | None = None, *,
                logs_to_journal: bool = False) -> list[Sink]:
    """One sink per destination; heavy libraries load only for configured sinks. `status`
    gives the live status document to the sinks that push check results."""
    sinks: list[Sink] = []
    if cfg.logging.syslog and logs_to_journal and \
            is_journal_syslog_socket(cfg.logging.syslog_socket):
        log.info("syslog sink off: %s is journald's own socket and every event is already "
                 "in the journal (journald forwards it to syslog)", cfg.logging.syslog_socket)
    elif cfg.logging.syslog:
        from minisft.sinks.syslog import SyslogSink

        sinks.append(SyslogSink(cfg.logging))
    for target in cfg.alerting.snmp_targets:
        from minisft.sinks.snmp import SnmpSink

        sinks.append(SnmpSink(target, state_dir=cfg.state_dir, node=cfg.node.name))
    if cfg.alerting.apprise is not None:
        from minisft.sinks.apprise_sink import AppriseSink

        sinks.append(AppriseSink(cfg.alerting.apprise))
    for hook in cfg.alerting.exec_hooks:
        from minisft.sinks.exec_sink import ExecSink

        sinks.append(ExecSink(hook))
    if cfg.alerting.nagios is not None and status is not None:
        from minisft.sinks.nagios_cmd import NagiosCommandSink

        sinks.append(NagiosCommandSink(cfg.alerting.nagios, node=cfg.node.name, status=status))
    if cfg.alerting.icinga2 is not None and status is not None:
        from minisft.sinks.icinga2 import Icinga2Sink

        sinks.append(Icinga2Sink(cfg.alerting.icinga2, node=cfg.node.name, status=status))
    if cfg.alerting.nsca is not None and status is not None:
        from minisft.sinks.nsca import NscaSink

        sinks.append(NscaSink(cfg.alerting.nsca, node=cfg.node.name, status=status))
    # each sink's name keys its spool cursor: two targets must never share one
    seen: dict[str, int] = {}
    for sink in sinks:
        n = seen.get(sink.name, 0)
        seen[sink.name] = n + 1
        if n:
            sink.name = f"{sink.name}-{n + 1}"
    return sinks
