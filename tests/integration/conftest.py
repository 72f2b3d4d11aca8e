"""Fixtures for the integration tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, monitor_cfg, wait_until

POOL_ADDRESSES = ("192.0.2.101/24", "192.0.2.102/24")


@pytest.fixture
def service_tmp() -> Iterator[Path]:
    """A temporary directory (0755) that the Debian service users (nagios, prometheus)
    can reach: pytest's tmp_path lives under a root-only (0700) directory."""
    path = Path(tempfile.mkdtemp(prefix="minisft-svc-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node_with_web_and_pool(service_tmp: Path) -> Iterator[Cluster]:
    """A one-node lab: alpha (primary) holds monitor web's address, and both addresses of
    pool front, whose other member (beta) is down: the witness (the client host) lets
    alpha act alone, and both addresses prefer alpha. Its config and state_dir are readable
    by the monitoring users (the daemon runs as root, as its unit does). The lab is removed
    afterwards."""
    with Cluster(service_tmp, ["alpha"]) as cluster:
        alpha = cluster.nodes["alpha"]
        key = alpha.root / "front.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        front = {"name": "front", "addresses": list(POOL_ADDRESSES), "key_file": str(key),
                 "members": [{"name": "alpha", "ip": alpha.host.ip},
                             {"name": "beta", "ip": "192.0.2.2"}],
                 "preferred": dict.fromkeys(POOL_ADDRESSES, "alpha"),
                 "witness": cluster.client.ip,
                 "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"}}
        alpha.configure([monitor_cfg("web", "192.0.2.10/24", "primary")], pools=[front])
        alpha.root.chmod(0o755)
        alpha.start()
        alpha.wait_event("claimed", "web")
        wait_until("alpha to hold both pool addresses", lambda: all(
            alpha.holds(a) for a in POOL_ADDRESSES), timeout=30)
        yield cluster
