"""One daemon per state_dir, even when an admin deletes the pid file."""

from __future__ import annotations

from pathlib import Path

import pytest

from minisft.config.loader import parse_config
from minisft.runtime.daemon import Daemon, StartupError

CONFIG = """
node: {name: a, local_ip: 192.0.2.1}
state_dir: %s
control_socket: %s/ctl.sock
monitors: []
"""


def _daemon(state: Path) -> Daemon:
    return Daemon(parse_config(CONFIG % (state, state)))


def test_deleting_the_pid_file_does_not_let_a_second_daemon_in(tmp_path: Path) -> None:
    first, second = _daemon(tmp_path), _daemon(tmp_path)
    first._take_lock(tmp_path / "minisft.pid")
    try:
        (tmp_path / "minisft.pid").unlink()
        with pytest.raises(StartupError, match="another minisft daemon"):
            second._take_lock(tmp_path / "minisft.pid")
    finally:
        assert first._lock_fd is not None
        import os
        os.close(first._lock_fd)
    second._take_lock(tmp_path / "minisft.pid")  # free once the first is gone
    assert (tmp_path / "minisft.pid").read_text().strip().isdigit()
