"""Fixtures for the integration tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
