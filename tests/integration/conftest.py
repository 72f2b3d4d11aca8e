"""Fixtures for the integration tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, monitor_cfg


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
def node_holding_web(service_tmp: Path) -> Iterator[Cluster]:
    """A one-node lab: alpha (primary) holds monitor web's address, its config and
    state_dir readable by the monitoring users (the daemon runs as root, as its unit
    does). The lab is removed afterwards."""
    with Cluster(service_tmp, ["alpha"]) as cluster:
        alpha = cluster.nodes["alpha"]
        alpha.configure([monitor_cfg("web", "192.0.2.10/24", "primary")])
        alpha.root.chmod(0o755)
        alpha.start()
        alpha.wait_event("claimed", "web")
        yield cluster
