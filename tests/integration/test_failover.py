"""Two and three real daemons in network namespaces: takeover, refusal, fallback, restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.cluster import Cluster, longest_gap, monitor_cfg, wait_until

pytestmark = pytest.mark.netns

VIP = "192.0.2.10/24"
VIP6 = "2001:db8::10/64"


def pair(tmp_path: Path, address: str = VIP, **backup_extra: object) -> Cluster:
    """alpha is primary and holds `address`; beta is its backup."""
    c = Cluster(tmp_path, ["alpha", "beta"])
    try:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        v6 = ":" in address  # peer_ip is the other host's address of the same family
        peer_of = {n: (n.host.ipv6 or "").split("/")[0] if v6 else n.host.ip
                   for n in (alpha, beta)}
        alpha.configure([monitor_cfg("web", address, "primary", peer=peer_of[beta])])
        beta.configure([monitor_cfg("web", address, "backup", peer=peer_of[alpha],
                                    **backup_extra)])
        alpha.start()
        wait_until("alpha to claim the address", lambda: alpha.holds(address))
        beta.start()
        beta.wait_event("looksalive_up", "web")
    except BaseException:
        c.__exit__(*sys.exc_info())
        raise
    return c


def test_takeover_when_the_holder_link_goes_down(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        assert alpha.events("claimed", "web"), "primary should claim a free address at start"
        pings = c.client_pings("192.0.2.10")
        time.sleep(0.5)
        alpha.host.link_down()
        takeover = beta.wait_event("takeover", "web", timeout=10)
        assert beta.holds(VIP)
        wait_until("client reaches the service address again", lambda: c.client.ping(
            "192.0.2.10", timeout=0.5))
        gap = longest_gap(pings)
        assert gap < 3.0, f"outage of {gap:.2f}s for a 200ms x 3 setting"
        assert "bound with /24" in takeover.reason
        assert beta.events("looksalive_down", "web"), "takeover must follow LooksAlive down"
        assert alpha.wait_event("link_down", timeout=5)
        st = beta.monitor("web")
        assert st["state"] == "holding" and st["holder"] == "self"
        assert st["counters"]["takeovers"] == 1


def test_a_single_lost_ping_never_takes_over(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        beta = c.nodes["beta"]
        # Drop exactly the next echo request to the service address (numgen inc starts at
        # 0), and all ARP for a while, so ARP cannot rescue the miss either.
        beta.host.run("nft", "-f", "-", input="""
table inet one_loss {
  chain out { type filter hook output priority 0;
    ip daddr 192.0.2.10 icmp type echo-request numgen inc mod 100000 == 0 counter drop
  }
}
table arp no_arp {
  chain in { type filter hook input priority 0; counter drop; }
}
""")
        wait_until("the one ping to be dropped", lambda: "packets 1" in beta.host.run(
            "nft", "list", "table", "inet", "one_loss").stdout, timeout=5)
        time.sleep(1.5)
        beta.host.run("nft", "delete", "table", "arp", "no_arp")
        time.sleep(1.0)
        assert not beta.events("takeover"), "one lost ping caused a takeover"
        assert not beta.events("looksalive_down"), "one lost ping declared the address down"
        assert c.holders(VIP) == ["alpha"]
        assert beta.monitor("web")["looksalive"]["lost"] >= 1


def test_service_dead_behind_a_live_host_raises_an_alarm_and_does_not_take_over(
        tmp_path: Path) -> None:
    c = Cluster(tmp_path, ["alpha", "beta"])
    with c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        web = alpha.host.popen([sys.executable, "-m", "http.server", "8080", "--bind",
                                "0.0.0.0", "--directory", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        check = {"interval": "300ms", "retry": 2,
                 "check": {"type": "http", "url": "http://{address}:8080/", "timeout": "300ms"}}
        alpha.configure([monitor_cfg("web", VIP, "primary")])
        beta.configure([monitor_cfg("web", VIP, "backup", isalive=check)])
        alpha.start()
        wait_until("alpha holds", lambda: alpha.holds(VIP))
        wait_until("the web server to answer", lambda: c.client.run(
            "python3", "-c", "import urllib.request;urllib.request.urlopen("
            "'http://192.0.2.10:8080/', timeout=1)", check=False).returncode == 0)
        beta.start()
        wait_until("beta's IsAlive to pass", lambda: beta.monitor("web")["isalive"]["ok"])
        web.terminate()
        web.wait(5)
        dead = beta.wait_event("service_dead", "web", timeout=10)
        assert "no takeover" in dead.reason
        assert dead.severity.label == "critical"
        time.sleep(1.5)
        assert not beta.events("takeover"), "a dead service behind a live host was taken over"
        assert c.holders(VIP) == ["alpha"]
        assert len(beta.events("service_dead")) == 1, "the alarm must be raised once"
        alpha.host.popen([sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0",
                          "--directory", str(tmp_path)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        beta.wait_event("service_recovered", "web", timeout=10)


def test_returning_primary_finds_the_address_in_use_and_yields(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.host.link_down()
        beta.wait_event("takeover", "web", timeout=10)
        alpha.host.link_up()
        yielded = alpha.wait_event("yielded", "web", timeout=10)
        assert beta.host.mac in yielded.reason
        wait_until("alpha to drop the address", lambda: not alpha.holds(VIP))
        time.sleep(1.0)
        assert c.holders(VIP) == ["beta"]
        st = alpha.monitor("web")
        assert st["state"] == "watching" and st["holder"] == "other"


def test_primary_starting_while_its_address_is_held_elsewhere_does_not_bind(
        tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.stop()  # release_on_stop: the backup takes over
        beta.wait_event("takeover", "web", timeout=10)
        alpha.start()
        in_use = alpha.wait_event("address_in_use", "web", timeout=10)
        assert "not binding" in in_use.reason and "minisft claim web" in in_use.reason
        time.sleep(1.0)
        assert c.holders(VIP) == ["beta"]


def test_manual_fallback_with_the_cli(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.stop()
        beta.wait_event("takeover", "web", timeout=10)
        alpha.start()
        alpha.wait_event("address_in_use", "web", timeout=10)
        refused = alpha.cli("claim", "web")
        assert refused.returncode == 1 and "refused" in refused.stderr
        assert c.holders(VIP) == ["beta"]

        out = beta.cli("release", "web")
        assert out.returncode == 0, out.stderr
        assert "paused" in out.stdout
        wait_until("beta drops the address", lambda: not beta.holds(VIP))
        out = alpha.cli("claim", "web")
        assert out.returncode == 0, out.stderr
        assert alpha.holds(VIP)
        time.sleep(1.5)  # beta is paused: it must not take the address back meanwhile
        assert c.holders(VIP) == ["alpha"]
        out = beta.cli("resume", "web")
        assert out.returncode == 0, out.stderr
        wait_until("beta watches again", lambda: beta.monitor("web")["looksalive"]["health"]
                   == "up")
        assert [e.kind.value for e in beta.events(monitor="web")
                if e.kind.value in ("released", "resumed")] == ["released", "resumed"]
        assert beta.cli("release", "web").returncode == 1  # not holding any more


def test_automatic_fallback_waits_out_a_flapping_primary(tmp_path: Path) -> None:
    with pair(tmp_path, fallback={"mode": "auto", "hold_down": "3s"}) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.host.link_down()
        beta.wait_event("takeover", "web", timeout=10)
        # flap: up 1 s, down 1 s, for 8 s: never up for the 3 s hold-down
        for _ in range(4):
            alpha.host.link_up()
            time.sleep(1.0)
            alpha.host.link_down()
            time.sleep(1.0)
        assert not beta.events("fallback"), "a flapping primary got the address back"
        assert c.holders(VIP) == ["beta"]
        alpha.host.link_up()
        fallback = beta.wait_event("fallback", "web", timeout=15)
        assert "hold-down 3s" in fallback.reason
        wait_until("alpha to hold the address again", lambda: c.holders(VIP) == ["alpha"],
                   timeout=15)
        time.sleep(2.0)
        assert c.holders(VIP) == ["alpha"], "the address moved again after the fallback"
        assert len(beta.events("takeover")) == 1


def test_active_active_each_node_holds_its_own_and_covers_the_other(tmp_path: Path) -> None:
    c = Cluster(tmp_path, ["alpha", "beta"])
    with c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        a, b = "192.0.2.10/24", "192.0.2.11/24"
        # Active/active hands each address back to its primary: whichever node starts
        # first covers the other's address until the other has been up for the hold-down.
        auto = {"mode": "auto", "hold_down": "1s"}
        alpha.configure([monitor_cfg("web-a", a, "primary"),
                         monitor_cfg("web-b", b, "backup", peer=beta.host.ip, fallback=auto)])
        beta.configure([monitor_cfg("web-a", a, "backup", peer=alpha.host.ip, fallback=auto),
                        monitor_cfg("web-b", b, "primary")])
        alpha.start()
        beta.start()
        wait_until("each node holds its own", lambda: c.holders(a) == ["alpha"]
                   and c.holders(b) == ["beta"], timeout=30)
        mark = alpha.last_seq()
        beta.host.link_down()
        alpha.wait_event("takeover", "web-b", timeout=10, after=mark)
        assert alpha.holds(a) and alpha.holds(b)
        assert c.client.ping("192.0.2.11") and c.client.ping("192.0.2.10")


def test_ipv6_takeover(tmp_path: Path) -> None:
    with pair(tmp_path, VIP6) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        assert c.client.ping("2001:db8::10")
        alpha.host.link_down()
        beta.wait_event("takeover", "web", timeout=10)
        assert beta.holds(VIP6)
        wait_until("client reaches the IPv6 service address via beta", lambda: c.client.ping(
            "2001:db8::10", timeout=0.5))
        neigh = c.client.run("ip", "-6", "neigh", "show", "2001:db8::10").stdout
        assert beta.host.mac in neigh, f"client still points at the old MAC: {neigh}"


def test_restart_adopts_the_address_without_an_outage(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        pings = c.client_pings("192.0.2.10")
        time.sleep(0.3)
        alpha.stop(signal.SIGKILL)
        assert alpha.holds(VIP), "SIGKILL must leave the address in place"
        alpha.start()
        alpha.wait_event("adopted", "web", timeout=10)
        time.sleep(1.0)
        gap = longest_gap(pings)
        assert gap < 0.5, f"restart caused an outage of {gap:.2f}s"
        assert not beta.events("takeover")
        assert c.holders(VIP) == ["alpha"]


def test_sigterm_releases_and_the_backup_takes_over(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        assert alpha.stop(signal.SIGTERM) == 0
        assert not alpha.holds(VIP)
        assert alpha.events("daemon_stopping")
        assert "daemon stopping" in alpha.events("released", "web")[-1].reason
        beta.wait_event("takeover", "web", timeout=10)
        assert c.holders(VIP) == ["beta"]


def test_control_socket_is_root_only(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        st = c.nodes["alpha"].socket.stat()
        assert st.st_mode & 0o777 == 0o600 and st.st_uid == 0


def test_bad_config_names_the_key_and_line_and_changes_nothing(tmp_path: Path) -> None:
    c = Cluster(tmp_path, ["alpha"])
    with c:
        alpha = c.nodes["alpha"]
        alpha.configure([monitor_cfg("web", VIP, "primary")])
        text = alpha.config_path.read_text().replace("retry: 3", "retry: lots")
        alpha.write_config(text)
        line = next(i for i, t in enumerate(text.splitlines(), 1) if "retry: lots" in t)
        check = alpha.cli("check-config")
        assert check.returncode == 2
        assert f"minisft.yaml:{line}: monitors[0].looksalive.retry" in check.stderr
        before = alpha.host.addresses()
        run = alpha.host.run(sys.executable, "-m", "minisft", "run", "--config",
                             str(alpha.config_path), check=False, timeout=30)
        assert run.returncode == 2 and "monitors[0].looksalive.retry" in run.stderr
        assert alpha.host.addresses() == before, "a refused start must not touch the host"
        assert not alpha.socket.exists() and not alpha.state_dir.exists()


def test_a_bad_reload_is_refused_and_the_old_config_keeps_running(tmp_path: Path) -> None:
    with pair(tmp_path) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        good = beta.config_path.read_text()
        beta.write_config(good.replace("role: backup", "role: sidekick"))
        out = beta.cli("reload")
        assert out.returncode == 2 and "monitors[0].role" in out.stderr
        beta.send_signal(signal.SIGHUP)
        # one rejection for the CLI reload, one for SIGHUP
        wait_until("the SIGHUP reload to be refused too",
                   lambda: len(beta.events("config_rejected")) == 2, timeout=10)
        assert all("the running config stays" in e.reason
                   for e in beta.events("config_rejected"))
        assert beta.monitor("web")["role"] == "backup"
        alpha.host.link_down()  # the old config still fails over
        beta.wait_event("takeover", "web", timeout=10)
        # a good reload adds a monitor without disturbing the first one
        data = yaml.safe_load(good)
        data["monitors"].append(monitor_cfg("mail", "192.0.2.20/24", "primary"))
        beta.write_config(data)
        out = beta.cli("reload")
        assert out.returncode == 0 and "added mail" in out.stdout, out.stderr
        wait_until("beta claims the new address", lambda: beta.holds("192.0.2.20/24"))
        assert beta.holds(VIP)
