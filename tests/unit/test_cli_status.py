"""`minisft status` as an admin reads it: the monitor table, and a table per pool."""

from __future__ import annotations

from dataclasses import replace

from minisft.cli.main import format_status
from minisft.status import EtcdSessionStatus, PoolMemberStatus
from tests.support.status_docs import ok_status, pool

NOW = 1_700_003_600.0


def test_a_pool_table_shows_owner_preferred_and_state_of_every_address() -> None:
    front = pool("front", "alpha", {"192.0.2.50": ("alpha", "alpha", "held"),
                                    "192.0.2.51": ("alpha", "beta", "held"),
                                    "192.0.2.52": (None, "beta", "probing")},
                 members=(PoolMemberStatus(name="alpha", is_self=True, alive=True),
                          PoolMemberStatus(name="beta", alive=False)),
                 held=("192.0.2.50", "192.0.2.51"))
    text = format_status(replace(ok_status(now=NOW), pools=(front,)), now=NOW)
    lines = text.splitlines()
    at = lines.index("pool front as alpha: active, members alive: alpha; holding here: "
                     "192.0.2.50, 192.0.2.51")
    assert lines[at + 2:at + 6] == [
        "  ADDRESS     OWNER   PREFERRED  STATE                MOVES",
        "  192.0.2.50  alpha   alpha      held                 0",
        "  192.0.2.51  alpha   beta       held, not preferred  0",
        "  192.0.2.52  NOBODY  beta       probing              0"]


def test_an_etcd_pool_shows_its_session() -> None:
    etcd = EtcdSessionStatus(endpoint="http://192.0.2.9:2379", connected=False, lease=None,
                             ttl=5, last_error="connection refused")
    front = pool("front", "alpha", {"192.0.2.50": ("beta", "beta", "held")}, backend="etcd",
                 etcd=etcd, config_drift="members differ")
    text = format_status(replace(ok_status(now=NOW), pools=(front,)), now=NOW)
    assert "  etcd http://192.0.2.9:2379: NOT CONNECTED, lease none (ttl 5s), last error: " \
           "connection refused" in text
    assert "  CONFIG DRIFT: members differ" in text
    assert "  192.0.2.50  beta   beta       held   0" in text
