"""A real pool as the monitoring shows it: `minisft status`, check_minisft (as an
unprivileged user, like nagios under NRPE), the Prometheus endpoint and snmpd.

Three daemons of pool `front` start together, as a rack does. Each address is first on
its preferred member (the formula's home); then c's link goes down, its addresses move to
the survivors, and every tool must name the member that really has the address bound
(`ip addr` on the hosts is the truth) and the member it belongs on; when c is back, the
automatic fallback brings them home and check_minisft says OK again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from minisft.pools.formula import home
from tests.integration.cluster import Cluster, Node, wait_until
from tests.integration.test_monitoring_e2e import as_nobody, unprivileged_python

pytestmark = pytest.mark.netns

NAMES = ["a", "b", "c"]
ADDRESSES = [f"192.0.2.{n}/24" for n in range(101, 107)]
HOME = home(ADDRESSES, dict.fromkeys(NAMES, 1), pool="front")


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory uid 65534 can traverse (pytest's tmp_path is root-only), as /var/lib."""
    path = Path(tempfile.mkdtemp(prefix="sft-poolmon-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pool_cluster(base: Path) -> Cluster:
    key = base / "front.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    c = Cluster(base, NAMES, ipv6=False)
    front = {
        "name": "front",
        "members": [{"name": m, "ip": f"192.0.2.{i}"} for i, m in enumerate(NAMES, 1)],
        "addresses": ADDRESSES, "key_file": str(key),
        "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"},
        "fallback": {"mode": "auto", "hold_down": "2s"},
    }
    for n in NAMES:
        c.nodes[n].configure([], pools=[front])
    for n in NAMES:  # together, as a rack powers up
        c.nodes[n].start(wait=False)
    for n in NAMES:
        wait_until(f"{n}'s daemon to listen", c.nodes[n]._ready, timeout=20)
    return c


def pool_table(node: Node) -> dict[str, tuple[str, str, str, str]]:
    """`minisft status`'s pool table: address -> (owner, preferred, state, moves)."""
    text = node.cli("status", check=True).stdout
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ADDRESS", "OWNER"])
    rows = {}
    for line in lines[head + 1:]:
        m = re.match(r"^  (\S+)\s+(\S+)\s+(\S+)\s+(.+?)\s+(\d+)$", line)
        if not m:
            break
        rows[m.group(1)] = (m.group(2), m.group(3), m.group(4), m.group(5))
    return rows


def check_pool(node: Node, python: str) -> subprocess.CompletedProcess[str]:
    return node.host.run(*as_nobody(python, "--status", str(node.state_dir / "status.json"),
                                    "--pool", "front", "--no-sinks"), check=False)


def test_the_monitoring_names_the_real_holder_and_the_preferred_member(base: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    python = unprivileged_python()
    with pool_cluster(base) as c:
        a = c.nodes["a"]
        wait_until("every address held once, on its preferred member", lambda: all(
            c.holders(addr) == [HOME[addr]] for addr in ADDRESSES), timeout=30)
        wait_until("a's table to show them all at home", lambda: pool_table(a) == {
            addr: (HOME[addr], HOME[addr], "held", "0") for addr in ADDRESSES}, timeout=10)
        ok = check_pool(a, python)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("MINISFT OK - a: pool front: 6 addresses on their "
                                    "preferred members |"), ok.stdout

        c.nodes["c"].host.link_down()
        moved = [addr for addr in ADDRESSES if HOME[addr] == "c"]
        assert moved, "the formula gives c a share of six addresses"
        wait_until("c's addresses to be on a survivor", lambda: all(
            len(c.live_holders(addr)) == 1 for addr in moved), timeout=20)
        truth = {addr: c.live_holders(addr)[0] for addr in ADDRESSES}
        assert {truth[addr] for addr in moved} <= {"a", "b"}
        wait_until("a's table to show where they went", lambda: all(
            pool_table(a)[addr][:2] == (truth[addr], "c") for addr in moved), timeout=10)
        table = pool_table(a)
        for addr in ADDRESSES:
            if addr in moved:
                assert table[addr] == (truth[addr], "c", "held, not preferred", "1"), table
            else:
                assert table[addr] == (HOME[addr], HOME[addr], "held", "0"), table
        warning = check_pool(a, python)
        assert warning.returncode == 1, warning.stdout + warning.stderr
        first = warning.stdout.splitlines()[0]
        assert first.startswith("MINISFT WARNING - a: pool front: "), first
        for addr in moved:
            assert f"{addr} is on {truth[addr]}, not on its preferred member c " \
                   "(no fallback yet)" in first

        c.nodes["c"].host.link_up()
        seen: list[str] = []

        def back_home() -> bool:
            proc = check_pool(a, python)
            seen.append(proc.stdout)
            return proc.returncode == 0
        try:
            wait_until("the fallback to bring c's addresses home", back_home, timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last check_minisft: {seen[-1]}") from None
        assert all(c.live_holders(addr) == [HOME[addr]] for addr in ADDRESSES)
