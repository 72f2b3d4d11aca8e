"""The cold-start window of an etcd pool (StartupWindow): who gets one, who counts."""

from __future__ import annotations

from minisft.pools.etcd_backend import FenceTiming, Owner, StartupWindow


def test_a_pool_nobody_owns_yet_waits_one_ttl_and_counts_who_registers_meanwhile() -> None:
    ttl = FenceTiming.for_ttl(3).startup_window
    window = StartupWindow.at_first_read(100.0, ttl, "c", owners=[], resumed=False)
    assert window.is_open(100.0) and window.is_open(102.9) and not window.is_open(103.0)
    assert window.present_from_start(102.9)  # a registered 65 ms later: counted from start
    assert not window.present_from_start(103.1)  # a late member: the fallback rules apply


def test_this_members_own_keys_of_a_previous_boot_still_make_a_cold_start() -> None:
    window = StartupWindow.at_first_read(0.0, 3.0, "c", owners=[Owner("c", 7, 12)],
                                         resumed=False)
    assert window.is_open(1.0)


def test_joining_a_running_pool_or_a_reload_takes_no_window() -> None:
    running = StartupWindow.at_first_read(0.0, 3.0, "c", owners=[Owner("a", 5, 9)],
                                          resumed=False)
    reload = StartupWindow.at_first_read(0.0, 3.0, "c", owners=[], resumed=True)
    for window in (running, reload, StartupWindow.none()):
        assert not window.is_open(0.0)
        assert not window.present_from_start(0.0)
