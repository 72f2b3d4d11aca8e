"""Session-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

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
    """Tests marked package_purge take the installed package away: they run last."""
    items.sort(key=lambda item: item.get_closest_marker("package_purge") is not None)
