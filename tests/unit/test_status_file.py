"""status.json that cannot be written must not keep telling monitoring an old state."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from minisft.config.loader import parse_config
from minisft.runtime.daemon import Daemon

CONFIG = """
node: {name: a, local_ip: 192.0.2.1}
state_dir: %s
control_socket: %s/ctl.sock
monitors: []
"""


def test_a_failed_status_write_is_an_error_and_check_minisft_stops_saying_ok(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    daemon = Daemon(parse_config(CONFIG % (tmp_path, tmp_path)))
    status = tmp_path / "status.json"
    daemon.write_status()
    assert json.loads(status.read_text())["node"] == "a"
    plugin = [sys.executable, "-m", "minisft.nagios.plugin", "--status", str(status)]
    assert subprocess.run(plugin, capture_output=True, text=True,
                          check=False).returncode == 0

    (tmp_path / "status.json.tmp").mkdir()  # every write now fails (as on a full disk)
    caplog.set_level(logging.DEBUG, logger="minisft")
    daemon.write_status()
    daemon.write_status()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot write" in errors[0].getMessage()
    out = subprocess.run(plugin, capture_output=True, text=True, check=False)
    assert out.returncode == 3 and out.stdout.startswith("MINISFT UNKNOWN"), out.stdout
