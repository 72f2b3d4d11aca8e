"""Session-wide fixtures."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from tests.support.package import InstalledPackage, PackageError, installed_package


@pytest.fixture(scope="session")
def installed_minisft() -> Iterator[InstalledPackage]:
    """The .deb of this tree (scripts/build-deb), installed with dpkg for the session and
    purged at its end (tests/support/package.py)."""
    try:
        yield from installed_package()
    except PackageError as exc:
        pytest.fail(str(exc))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of the installed package run after all others, so that the package sits on
    the host (/usr/bin/minisft, the MIB in /usr/share/snmp/mibs) only while they run and
    no other test picks up its files by accident; those marked package_purge take it away,
    so they run last of all."""
    def order(item: pytest.Item) -> tuple[bool, bool]:
        uses_package = "installed_minisft" in getattr(item, "fixturenames", ())
        return uses_package, item.get_closest_marker("package_purge") is not None
    items.sort(key=order)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped by SIGTERM (`timeout`, CI cancelling a job) unwinds like Ctrl-C, so
    fixture teardowns and the labs' atexit handlers still stop the daemons and delete the
    network namespaces; with the default action they were left on the host for good."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _interrupt)
