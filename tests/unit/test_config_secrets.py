"""A config error about a value where a secret can stand names the key, the line and the
expected shape, and never quotes the value: not in check-config, not in a reload's
config_rejected event, not in the journal, not in the log."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from minisft.config.loader import ConfigError, parse_config

PW = "Hunter2SecretPW"
BASE = """\
node: {name: a, local_ip: 192.0.2.1}
state_dir: %(state)s
control_socket: %(state)s/ctl.sock
monitors:
  - {name: web, monitor_ip: 192.0.2.10, monitor_subnet: 24, role: backup,
     peer_ip: 192.0.2.2}
"""

# each: a YAML tail with PW misplaced, the key the error must name
BAD = [
    (f"alerting:\n  apprise: 'mailto://ops:{PW}@host'\n", "alerting.apprise"),
    (f"alerting:\n  apprise: {{urls: [{{url: 'mailto://ops:{PW}@host', kinds: 5}}]}}\n",
     "alerting.apprise.urls[0].kinds"),
    (f"alerting:\n  snmp: {{targets: [{{host: h, version: '{PW}'}}]}}\n",
     "alerting.snmp.targets[0].version"),
    (f"alerting:\n  snmp: {{targets: [{{host: h, timeout: '{PW}'}}]}}\n",
     "alerting.snmp.targets[0].timeout"),
    (f"alerting:\n  snmp: {{targets: [{{host: 'a:{PW}', version: 2c, community: x}}]}}\n",
     "alerting.snmp.targets[0].host"),
    (f"alerting:\n  prometheus: {{listen: '{PW}'}}\n", "alerting.prometheus.listen"),
    (f"alerting:\n  snmp: '{PW}'\n", "alerting.snmp"),
    ("pools:\n  - name: p\n    members: [{name: a, ip: 192.0.2.1}, {name: b, ip: 192.0.2.2}]\n"
     "    addresses: [192.0.2.50/24]\n    key_file: /nonexistent\n"
     "    coordination: {backend: etcd, endpoints: ['http://u:" + PW + "@192.0.2.9:2379']}\n",
     "pools[0].coordination.endpoints[0]"),
]


@pytest.mark.parametrize(("tail", "key"), BAD, ids=[k for _, k in BAD])
def test_errors_name_the_key_and_line_never_the_value(tmp_path: Path, tail: str,
                                                      key: str) -> None:
    text = BASE % {"state": tmp_path} + tail
    with pytest.raises(ConfigError) as info:
        parse_config(text, str(tmp_path / "m.yaml"))
    report = info.value.report()
    assert PW not in report
    mine = [e for e in info.value.errors if e.key == key]
    assert mine, report
    assert mine[0].line is not None and mine[0].line > 6
    assert "expected" in mine[0].message or "not shown" in mine[0].message


def test_values_outside_secret_sections_are_still_shown(tmp_path: Path) -> None:
    text = (BASE % {"state": tmp_path}).replace("role: backup", "role: bakup")
    with pytest.raises(ConfigError, match="bakup"):
        parse_config(text)


def test_check_config_and_reload_never_show_the_apprise_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from minisft.runtime.daemon import Daemon
    from minisft.runtime.journal import EventJournal

    cfg_file = tmp_path / "m.yaml"
    cfg_file.write_text(BASE % {"state": tmp_path})
    daemon = Daemon(parse_config(cfg_file.read_text(), str(cfg_file)), config_path=cfg_file)
    cfg_file.write_text(BASE % {"state": tmp_path} + BAD[0][0])

    out = subprocess.run([sys.executable, "-m", "minisft", "check-config", "--config",
                          str(cfg_file)], capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "alerting.apprise" in out.stdout + out.stderr
    assert PW not in out.stdout + out.stderr

    daemon.journal = EventJournal(tmp_path / "journal")
    daemon.journal.open()
    caplog.set_level(logging.DEBUG)
    ok, message = asyncio.run(daemon.reload())
    daemon.journal.sync()
    assert not ok and "alerting.apprise" in message and PW not in message
    journal_bytes = b"".join(p.read_bytes() for p in (tmp_path / "journal").rglob("*")
                             if p.is_file())
    assert b"config_rejected" in journal_bytes
    assert PW.encode() not in journal_bytes
    assert PW not in caplog.text
