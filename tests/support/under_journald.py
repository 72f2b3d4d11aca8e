"""Run a command the way systemd runs a service, with a real systemd-journald.

Usage (in a private mount namespace, e.g. under `unshare --mount --propagation private`):
    python under_journald.py JOURNAL_DIR -- COMMAND...

Mounts a tmpfs on /run/systemd and JOURNAL_DIR on /run/log (journald's volatile storage,
so the test reads the journal files there), starts /lib/systemd/systemd-journald, connects
stdout and stderr to its stream socket with the header systemd's service manager sends
(level prefixes on), sets JOURNAL_STREAM to that socket's device:inode as systemd does,
and execs COMMAND. journald is in the caller's process group, so stopping the group stops
it, and it gets SIGTERM when COMMAND ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

JOURNALD = "/lib/systemd/systemd-journald"
RUN = Path("/run/systemd/journal")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """journald gets SIGTERM when the command (this process, after exec) ends, even if
    the command exits on its own and nobody signals the process group."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def main() -> None:
    journal_dir, sep, *command = sys.argv[1:]
    assert sep == "--" and command, __doc__
    Path("/run/systemd").mkdir(exist_ok=True)
    Path("/run/log").mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "minisft-test", "/run/systemd"],
                   check=True)
    subprocess.run(["mount", "--bind", journal_dir, "/run/log"], check=True)
    # `ip netns exec` remounts /sys without the cgroup tree, and journald will not start
    # without it
    if not os.path.ismount("/sys/fs/cgroup"):
        subprocess.run(["mount", "-t", "cgroup2", "none", "/sys/fs/cgroup"], check=True)
    subprocess.Popen([JOURNALD], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 10
    while True:  # the socket files appear before journald listens on them
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            stream.connect(str(RUN / "stdout"))
            break
        except OSError:
            stream.close()
            if time.monotonic() > deadline:
                raise SystemExit("systemd-journald does not listen on its stream socket") from None
            time.sleep(0.02)
    # identifier, unit, default priority, level_prefix, forward to syslog/kmsg/console
    stream.sendall(b"minisft\n\n6\n1\n0\n0\n0\n")
    stream.shutdown(socket.SHUT_RD)
    st = os.fstat(stream.fileno())
    os.dup2(stream.fileno(), 1)
    os.dup2(stream.fileno(), 2)
    stream.close()
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
