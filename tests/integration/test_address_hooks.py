"""Address hooks (`monitors[].hooks`) on REAL daemons in the namespace lab, with the two
shipped examples from contrib/hooks/ unmodified: restart a service on takeover (mode
after) and move the address through a cloud CLI (mode instead).

alpha (192.0.2.1) is primary for web (192.0.2.10/24); beta, its backup, has the hooks.
systemctl and aws are fakes: beta's daemon runs in its own mount namespace with a test
directory bound over /usr/local/sbin, the first directory of the hooks' clean PATH. Each
fake logs its argv and whether 192.0.2.10 is on beta's interface at that moment (the
hooks run in the daemon's network namespace), so the order against bind/release shows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Cluster, monitor_cfg, wait_until

pytestmark = pytest.mark.netns

VIP = "192.0.2.10/24"
HOOKS = Path(__file__).resolve().parents[2] / "contrib" / "hooks"
BOUND = "$(ip -o addr show | grep -c ' 192.0.2.10/')"

FAKE_SYSTEMCTL = f"""#!/bin/sh
printf 'systemctl %s bound=%s\\n' "$*" "{BOUND}" >> "{{log}}"
if [ -e "{{fail}}" ]; then
    echo "Failed to restart $4: Unit $4 not found." >&2
    exit 5
fi
"""
FAKE_AWS = f"""#!/bin/sh
printf 'aws %s bound=%s\\n' "$*" "{BOUND}" >> "{{log}}"
echo "{{{{ \\"AssignedPrivateIpAddresses\\": [] }}}}"
"""
RECORD = f"""#!/bin/sh
printf '%s %s bound=%s\\n' "$MINISFT_HOOK" "$*" "{BOUND}" >> "{{log}}"
"""


class Fakes:
    """/usr/local/sbin for beta's daemon: fake systemctl and aws, and a recorder hook."""

    def __init__(self, tmp: Path) -> None:
        self.bin = tmp / "fake-sbin"
        self.bin.mkdir()
        self.log = tmp / "calls.log"
        self.fail = tmp / "systemctl-fails"
        for name, text in (("systemctl", FAKE_SYSTEMCTL), ("aws", FAKE_AWS)):
            self._script(self.bin / name, text)
        self.record = self._script(tmp / "record", RECORD)

    def _script(self, path: Path, text: str) -> Path:
        path.write_text(text.format(log=self.log, fail=self.fail))
        path.chmod(0o755)
        return path

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    @property
    def wrap(self) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /usr/local/sbin && exec "$@"', str(self.bin)]


def pair(tmp: Path, fakes: Fakes, hooks: dict[str, Any]) -> Cluster:
    """alpha holds VIP; beta (its backup, with `hooks`) watches it; both started."""
    c = Cluster(tmp, ["alpha", "beta"], ipv6=False)
    try:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.configure([monitor_cfg("web", VIP, "primary", peer=beta.host.ip)])
        beta.configure([monitor_cfg("web", VIP, "backup", peer=alpha.host.ip, hooks=hooks)])
        alpha.start()
        wait_until("alpha to claim the address", lambda: alpha.holds(VIP))
        beta.start(wrap=fakes.wrap)
        beta.wait_event("looksalive_up", "web")
    except BaseException:
        c.__exit__(*sys.exc_info())
        raise
    return c


def restart_hooks(fakes: Fakes) -> dict[str, Any]:
    return {"up": [str(HOOKS / "restart-service"), "minisft-test-{monitor}.service"],
            "down": [str(fakes.record), "{address}", "{prefixlen}", "{interface}",
                     "{monitor}"],
            "timeout": "10s"}


def test_up_runs_after_bind_down_after_release_with_the_substitutions(
        tmp_path: Path) -> None:
    fakes = Fakes(tmp_path)
    with pair(tmp_path, fakes, restart_hooks(fakes)) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        assert fakes.calls() == [], "no hook while beta only watches"
        alpha.host.link_down()
        beta.wait_event("takeover", "web", timeout=10)
        wait_until("the up hook to restart the unit", fakes.calls, timeout=10)
        assert fakes.calls() == [
            "systemctl --no-ask-password restart -- minisft-test-web.service bound=1"]
        after_up = beta.last_seq()
        assert beta.cli("release", "web").returncode == 0
        wait_until("the down hook", lambda: len(fakes.calls()) == 2, timeout=10)
        assert fakes.calls()[1] == f"down 192.0.2.10 24 {beta.host.ifname} web bound=0"
        assert not beta.holds(VIP)
        assert beta.events("released", "web")[-1].seq > after_up
        assert not beta.events("hook_failed")


def test_a_failing_hook_raises_hook_failed_and_the_address_stays(tmp_path: Path) -> None:
    fakes = Fakes(tmp_path)
    fakes.fail.touch()
    with pair(tmp_path, fakes, restart_hooks(fakes)) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.host.link_down()
        takeover = beta.wait_event("takeover", "web", timeout=10)
        failed = beta.wait_event("hook_failed", "web", timeout=10)
        assert failed.seq > takeover.seq and failed.severity.label == "warning"
        assert failed.reason == (
            "up hook exited with code 5: restart-service: systemctl restart "
            "minisft-test-web.service failed (exit 5): Failed to restart "
            "minisft-test-web.service: Unit minisft-test-web.service not found.")
        assert failed.details["exit_code"] == 5 and failed.details["hook"] == "up"
        time.sleep(1.5)  # a link poll and an address poll later: nothing undone
        assert beta.holds(VIP) and beta.monitor("web")["state"] == "holding"
        assert not beta.events("released", "web")
        assert c.client.ping("192.0.2.10", timeout=1.0)


def test_mode_instead_moves_by_api_only_and_the_probe_still_refuses_a_live_holder(
        tmp_path: Path) -> None:
    fakes = Fakes(tmp_path)
    move = str(HOOKS / "aws-move-address")
    hooks = {"mode": "instead", "timeout": "10s",
             "up": [move, "up", "eni-0123456789abcdef0", "{address}"],
             "down": [move, "down", "eni-0123456789abcdef0", "{address}"]}
    with pair(tmp_path, fakes, hooks) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        # alpha answers for the address: an admin's claim on beta is refused by the probe
        beta.cli("claim", "web")
        refused = beta.wait_event("address_in_use", "web", timeout=10)
        assert "claim refused" in refused.reason
        time.sleep(0.5)
        assert fakes.calls() == [], "the cloud API must not be called for a live holder"

        alpha.host.link_down()
        takeover = beta.wait_event("takeover", "web", timeout=10)
        assert "moved here by the up hook" in takeover.reason
        wait_until("the API call", fakes.calls, timeout=10)
        assert fakes.calls() == [
            "aws --output text ec2 assign-private-ip-addresses --network-interface-id "
            "eni-0123456789abcdef0 --private-ip-addresses 192.0.2.10 --allow-reassignment "
            "bound=0"]
        time.sleep(1.5)  # an address poll later: not "removed", never bound here
        assert not beta.holds(VIP) and beta.monitor("web")["state"] == "holding"
        assert not beta.events("address_removed") and not beta.events("hook_failed")

        assert beta.cli("release", "web").returncode == 0
        wait_until("the API call for down", lambda: len(fakes.calls()) == 2, timeout=10)
        assert fakes.calls()[1] == (
            "aws --output text ec2 unassign-private-ip-addresses --network-interface-id "
            "eni-0123456789abcdef0 --private-ip-addresses 192.0.2.10 bound=0")
        assert not beta.holds(VIP)


POOL_ADDRESSES = [f"192.0.2.{n}/24" for n in range(101, 107)]
RECORD_POOL = """#!/bin/sh
# argv: NODE ADDRESS PREFIXLEN INTERFACE POOL
printf '%s %s %s %s %s %s bound=%s\\n' "$1" "$MINISFT_HOOK" "$2" "$3" "$4" "$5" \\
    "$(ip -o addr show | grep -c " $2/")" >> "{log}"
"""


def test_pool_hooks_follow_each_address_as_it_moves(tmp_path: Path) -> None:
    """An embedded pool's hooks: up on the member that bound an address (after the bind),
    down on the one that released it (after the release), per address, as the members
    start together and one of them stops."""
    log = tmp_path / "pool-hooks.log"
    record = tmp_path / "record-pool"
    record.write_text(RECORD_POOL.format(log=log))
    record.chmod(0o755)
    key = tmp_path / "front.key"
    key.write_bytes(bytes(range(32)))
    key.chmod(0o600)
    names = ["a", "b", "c"]  # three: the two left after a stop keep their quorum

    def pool(node: str) -> dict[str, Any]:
        argv = [str(record), node, "{address}", "{prefixlen}", "{interface}", "{monitor}"]
        return {"name": "front", "key_file": str(key), "addresses": POOL_ADDRESSES,
                "members": [{"name": m, "ip": f"192.0.2.{i}"} for i, m in enumerate(names, 1)],
                "looksalive": {"interval": "200ms", "retry": 3, "timeout": "100ms"},
                "fallback": {"mode": "auto", "hold_down": "1s"},
                "hooks": {"up": argv, "down": argv, "timeout": "5s"}}

    def lines() -> list[list[str]]:
        return [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []

    def last_hook(address: str) -> list[str] | None:
        mine = [ln for ln in lines() if ln[2] == address.split("/")[0]]
        return mine[-1] if mine else None

    with Cluster(tmp_path, names, ipv6=False) as c:
        for n in names:
            c.nodes[n].configure([], pools=[pool(n)])
            c.nodes[n].start()

        def settled() -> bool:
            held = {a: c.holders(a) for a in POOL_ADDRESSES}
            two_each = sorted(h[0] for h in held.values() if len(h) == 1) == [
                "a", "a", "b", "b", "c", "c"]
            return two_each and all(last_hook(a) is not None and last_hook(a)[:2] == [
                held[a][0], "up"] for a in POOL_ADDRESSES)

        wait_until("two addresses each, each one's last hook an up on its holder", settled,
                   timeout=30)
        ifname = {n: c.nodes[n].host.ifname for n in names}
        for ln in lines():
            node, hook, _, prefixlen, iface, pool_name, bound = ln
            assert (prefixlen, iface, pool_name) == ("24", ifname[node], "front"), ln
            assert bound == ("bound=1" if hook == "up" else "bound=0"), ln

        c_held = [a for a in POOL_ADDRESSES if c.holders(a) == ["c"]]
        c.nodes["c"].stop()  # SIGTERM: release_on_stop
        wait_until("c's down hooks, then an up on a survivor, for c's addresses", lambda: all(
            last_hook(a) is not None and last_hook(a)[:2] in (["a", "up"], ["b", "up"])
            for a in c_held), timeout=20)
        for a in c_held:
            ip = a.split("/")[0]
            mine = [ln[:2] for ln in lines() if ln[2] == ip]
            assert mine[-2] == ["c", "down"] and c.holders(a) == [mine[-1][0]], mine
        assert not c.nodes["a"].events("hook_failed") and not c.nodes["b"].events(
            "hook_failed")


def test_a_reload_that_changes_the_mode_releases_the_old_way_first(tmp_path: Path) -> None:
    """Holding a bound address, the admin switches to mode instead: the reload removes the
    local address (and runs the old down hook) before the API's hooks take over, so no
    stale copy stays bound on the interface."""
    fakes = Fakes(tmp_path)
    with pair(tmp_path, fakes, restart_hooks(fakes)) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.host.link_down()
        beta.wait_event("takeover", "web", timeout=10)
        wait_until("the up hook", fakes.calls, timeout=10)
        mark = beta.last_seq()
        record = str(fakes.record)
        beta.config["monitors"][0]["hooks"] = {
            "mode": "instead", "up": [record, "api-up"], "down": [record, "api-down"]}
        beta.write_config(beta.config)
        assert beta.cli("reload").returncode == 0
        wait_until("the old down hook, then the API's up", lambda: len(fakes.calls()) >= 3,
                   timeout=15)
        assert fakes.calls()[1:3] == [
            f"down 192.0.2.10 24 {beta.host.ifname} web bound=0", "up api-up bound=0"]
        assert not beta.holds(VIP)
        assert beta.wait_event("takeover", "web", after=mark, timeout=10)
        assert beta.monitor("web")["state"] == "holding"
