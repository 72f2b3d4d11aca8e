"""What a reload changes, decided from the two configs (minisft.runtime.reload): the
messages an admin reads after `minisft reload` come from these decisions."""

from __future__ import annotations

from pathlib import Path

from minisft.config.loader import parse_config
from minisft.config.model import Config
from minisft.runtime.reload import Change, ReloadDiff, needs_restart

NODE = "node: {name: alpha, local_ip: 192.0.2.1}\n"
POOL = """\
pools:
  - name: front
    members: [{name: alpha, ip: 192.0.2.1}, {name: beta, ip: 192.0.2.2}]
    addresses: [192.0.2.101/24]
"""


def monitor(name: str, ip: str, extra: str = "") -> str:
    return (f"  - name: {name}\n    monitor_ip: {ip}\n    monitor_subnet: 24\n"
            f"    role: backup\n{extra}")


def config(*monitors: str, pools: str = "", node: str = NODE) -> Config:
    return parse_config(node + "monitors:\n" + "".join(monitors) + pools)


def test_each_monitor_change_is_named_in_the_order_it_is_applied() -> None:
    old = config(monitor("web", "192.0.2.10"), monitor("db", "192.0.2.11"),
                 monitor("mail", "192.0.2.12"))
    new = config(monitor("web", "192.0.2.20"),  # moved: released, then bound anew
                 monitor("db", "192.0.2.11", "    looksalive: {interval: 5s}\n"),
                 monitor("dns", "192.0.2.13"))
    diff = ReloadDiff.between(old, new)
    assert [(c.change, c.config.name) for c in diff.monitors] == [
        (Change.REPLACED, "web"), (Change.REMOVED, "mail"),
        (Change.ADDED, "web"), (Change.UPDATED, "db"), (Change.ADDED, "dns")]
    # the replaced monitor leaves with its old address and comes back with the new one
    assert str(diff.monitors[0].config.ip) == "192.0.2.10"
    assert str(diff.monitors[2].config.ip) == "192.0.2.20"
    assert [m.name for m in diff.monitors_needing_checks] == ["web", "db", "dns"]


def test_an_unchanged_file_changes_nothing(tmp_path: Path) -> None:
    text = (monitor("web", "192.0.2.10"),)
    diff = ReloadDiff.between(config(*text, pools=pool(tmp_path)),
                              config(*text, pools=pool(tmp_path)))
    assert diff.monitors == () and diff.pools_started == () and diff.pools_removed == ()
    assert not diff.journal_changed and not diff.sinks_changed


def pool(tmp_path: Path, addresses: str = "192.0.2.101/24") -> str:
    key = tmp_path / "pool.key"
    key.write_bytes(bytes(range(32)))
    key.chmod(0o600)
    return POOL.replace("192.0.2.101/24", addresses) + f"    key_file: {key}\n"


def test_a_changed_pool_restarts_and_a_dropped_one_is_removed(tmp_path: Path) -> None:
    web = monitor("web", "192.0.2.10")
    with_pool = config(web, pools=pool(tmp_path))
    changed = config(web, pools=pool(tmp_path, "192.0.2.101/24, 192.0.2.102/24"))
    diff = ReloadDiff.between(with_pool, changed)
    assert [p.name for p in diff.pools_started] == ["front"]
    assert diff.pools_restarted == {"front"}
    assert [p.name for p in diff.pools_needing_sockets] == ["front"]  # embedded: a socket
    assert ReloadDiff.between(with_pool, config(web)).pools_removed == ("front",)
    added = ReloadDiff.between(config(web), with_pool)
    assert [p.name for p in added.pools_started] == ["front"] and not added.pools_restarted


def test_keys_only_a_restart_can_change_are_named() -> None:
    web = monitor("web", "192.0.2.10")
    renamed = config(web, node="node: {name: gamma, local_ip: 192.0.2.1}\n")
    assert needs_restart(config(web), renamed) == \
        "node.name changed (alpha -> gamma); that needs a restart"
    assert needs_restart(config(web), config(web)) is None
