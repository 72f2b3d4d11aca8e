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
