"""Every CLI entry point answers a file that is no config (not UTF-8, nested thousands of
levels deep, megabytes long) with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD_FILES = {
    "not-utf8": b"node: {name: a}\nstate_dir: %(state)s\ncontrol_socket: %(state)s/c.sock\n"
                b"\xff\xfe oops\n",
    "deep-flow": b"state_dir: %(state)s\ncontrol_socket: %(state)s/c.sock\na: "
                 + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep-block": b"state_dir: %(state)s\ncontrol_socket: %(state)s/c.sock\na:\n"
                  + b"".join(b" " * (i + 1) + b"b:\n" for i in range(900)),
    "10MB": b"node: {name: a}\nstate_dir: %(state)s\nmonitors:\n"
            + b"  - {name: m, monitor_ip: 192.0.2.10}\n" * 280_000,
}


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minisft", *argv], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("command", ["status", "events", "reload", "check-config"])
@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_bad_config_files_get_one_line_not_a_traceback(tmp_path: Path, command: str,
                                                       bad: str) -> None:
    cfg = tmp_path / "m.yaml"
    cfg.write_bytes(BAD_FILES[bad] % {b"state": str(tmp_path).encode()})
    out = _cli(command, "--config", str(cfg))
    assert "Traceback" not in out.stderr and "Error:" not in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) <= 1, out.stderr
    if command != "events":  # events reads the journal: state_dir is found in all of them
        assert out.returncode != 0 and out.stderr.strip()
    elif bad == "10MB":
        assert out.returncode == 2 and "not a config file" in out.stderr
