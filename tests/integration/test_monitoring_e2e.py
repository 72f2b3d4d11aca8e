"""The monitoring bridge end to end: REAL daemons in a namespace lab, a real takeover, and
the real receivers an admin would run, inside the lab's client namespace (192.0.2.100):

* net-snmp snmptrapd with MINISFT-MIB loaded (tests/support/snmptrapd.py): v2c trap and
  inform, v3 authPriv (SHA-2 + AES) trap and inform, keys read from 0600 files;
* an SMTP server (aiosmtpd) for apprise's mailto:// and an HTTP server for json://
  (tests/support/receivers.py, each a separate process writing JSON lines);
* Prometheus /metrics scraped over the lab network and checked with `promtool`;
* check_minisft run as nobody (uid 65534) on the live status.json;
* net-snmp snmpd with our pass_persist helper on the live status.json (snmptable);
* a syslog socket bound by the test (logging.syslog_socket);
* and a prompt SIGTERM while the SNMP receivers are down (ICMP errors racing shutdown).

alpha (192.0.2.1) is primary for web (192.0.2.10/24), beta (192.0.2.2) its backup; every
alert comes from beta when alpha's link goes down and beta takes the address over.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minisft.core.events import Event
from minisft.sinks.snmp import admin_string
from tests.integration.cluster import Cluster, Node, monitor_cfg, wait_until
from tests.support.receivers import LineReceiver
from tests.support.snmpd import SnmpAgent
from tests.support.snmptrapd import Notification, TrapReceiver, V3User

pytestmark = [pytest.mark.netns, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

VIP = "192.0.2.10/24"
VIP_IP = "192.0.2.10"
CLIENT_IP = "192.0.2.100"
BETA_IP = "192.0.2.2"
TRAP_PORT = 16162
SMTP_PORT = 2525
HTTP_PORT = 8080
PROM_PORT = 9523

# SNMP credentials: one community or user per target kind, so every notification says
# which target sent it.
V2C_TRAP = "e2e-v2c-trap"
V2C_INFORM = "e2e-v2c-inform"
V3_TRAP = "e2e-v3-trap"
V3_INFORM = "e2e-v3-inform"
AUTH_TRAP, PRIV_TRAP = "auth-trap-S3cret", "priv-trap-S3cret"
AUTH_INFORM, PRIV_INFORM = "auth-inform-S3cret", "priv-inform-S3cret"
# The daemon's SNMP engine ID, chosen here and written to state_dir/snmp-engine-id before
# the daemon starts: RFC 3411 enterprise format (32473, format 5 = octets), 12 octets.
ENGINE_ID = bytes.fromhex("80007ed905") + b"minisft-e2e!"

MAIL_USER = "minisft"
MAIL_PASSWORD = "mail-S3cret-pw"
MAIL_URL = (f"mailto://{MAIL_USER}:{MAIL_PASSWORD}@{CLIENT_IP}:{SMTP_PORT}"
            "?to=ops@example.org&from=minisft@example.org&mode=insecure")
JSON_URL = f"json://{CLIENT_IP}:{HTTP_PORT}/hook"
SEQ_TITLE = "[MiniSFT {severity}] {node}: {kind} {monitor} seq={seq}"

needs_snmp = pytest.mark.skipif(
    not (shutil.which("snmptrapd") or Path("/usr/sbin/snmptrapd").exists()),
    reason="net-snmp snmptrapd not installed")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemons inherit our environment: apprise's json:// must not go through a proxy.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


# ---------------------------------------------------------------------- the lab


@contextlib.contextmanager
def lab(tmp: Path, **beta_extra: Any) -> Iterator[Cluster]:
    """alpha primary for web, beta its backup configured with `beta_extra` (alerting,
    logging, ...). The daemons are NOT started: receivers come first."""
    with Cluster(tmp, ["alpha", "beta"], ipv6=False) as c:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.configure([monitor_cfg("web", VIP, "primary", peer=beta.host.ip)])
        beta.configure([monitor_cfg("web", VIP, "backup", peer=alpha.host.ip)], **beta_extra)
        try:
            yield c
        finally:  # the daemons first: they may still be talking to the receivers
            for node in c.nodes.values():
                if node.proc is not None and node.proc.poll() is None:
                    with contextlib.suppress(Exception):
                        node.stop()


def start_pair(c: Cluster) -> None:
    alpha, beta = c.nodes["alpha"], c.nodes["beta"]
    alpha.start()
    wait_until("alpha to claim the address", lambda: alpha.holds(VIP))
    beta.start()
    beta.wait_event("looksalive_up", "web")


def stop_daemons(c: Cluster) -> None:
    """Stop the daemons while the receivers still listen (their last events get through)."""
    for node in c.nodes.values():
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def take_over(c: Cluster) -> Event:
    """alpha dies (link down); beta takes web over. Returns beta's takeover event."""
    beta = c.nodes["beta"]
    after = beta.last_seq()
    c.nodes["alpha"].host.link_down()
    event = beta.wait_event("takeover", "web", timeout=20, after=after)
    wait_until("beta to hold the address", lambda: beta.holds(VIP), timeout=10)
    return event


def private_file(path: Path, text: str) -> str:
    """A secret file as the loader wants it: mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    return str(path)


def preset_engine_id(node: Node) -> None:
    """Give the node's daemon a known SNMP engine ID (the sink reads an existing file)."""
    node.state_dir.mkdir(parents=True, exist_ok=True)
    private_file(node.state_dir / "snmp-engine-id", ENGINE_ID.hex())


def snmp_target(version: str, type_: str, secrets: Path) -> dict[str, Any]:
    target: dict[str, Any] = {"host": CLIENT_IP, "port": TRAP_PORT, "version": version,
                              "type": type_, "timeout": "1s", "retries": 1}
    if version == "2c":
        community = V2C_TRAP if type_ == "trap" else V2C_INFORM
        target["community_file"] = private_file(secrets / f"community-{type_}", community)
    elif type_ == "trap":
        target.update(user=V3_TRAP, auth_protocol="sha256", priv_protocol="aes",
                      auth_key_file=private_file(secrets / "auth-trap", AUTH_TRAP),
                      priv_key_file=private_file(secrets / "priv-trap", PRIV_TRAP))
    else:
        target.update(user=V3_INFORM, auth_protocol="sha512", priv_protocol="aes256",
                      auth_key_file=private_file(secrets / "auth-inform", AUTH_INFORM),
                      priv_key_file=private_file(secrets / "priv-inform", PRIV_INFORM))
    return target


def trap_receiver(c: Cluster, workdir: Path) -> TrapReceiver:
    """snmptrapd in the client namespace, knowing every community and user above."""
    users = [V3User(V3_TRAP, "SHA-256", AUTH_TRAP, "AES", PRIV_TRAP, engine_id=ENGINE_ID),
             V3User(V3_INFORM, "SHA-512", AUTH_INFORM, "AES-256", PRIV_INFORM)]
    return TrapReceiver(workdir, host=CLIENT_IP, port=TRAP_PORT,
                        communities=[V2C_TRAP, V2C_INFORM], users=users,
                        prefix=c.client.cmd())


def sink_name(version: str, type_: str) -> str:
    return f"snmp-{CLIENT_IP}-{TRAP_PORT}-v{version}-{type_}"


# (SNMP version as snmptrapd reports it, security name) per target kind
TARGET_KINDS = {
    ("2c", "trap"): ("1", V2C_TRAP),
    ("2c", "inform"): ("1", V2C_INFORM),
    ("3", "trap"): ("3", V3_TRAP),
    ("3", "inform"): ("3", V3_INFORM),
}


def sent_by(security: str, name: str) -> Callable[[Notification], bool]:
    """Matches notification `name` from the target using community or user `security`."""
    return lambda n: n.security == security and n.name == name


def seq_of(text: str) -> int:
    m = re.search(r"seq=(\d+)", text)
    assert m, f"no seq= in {text!r}"
    return int(m.group(1))


# ---------------------------------------------------------------------- 1. SNMP traps


@needs_snmp
def test_takeover_reaches_every_snmp_target_kind(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    targets = [snmp_target(v, t, secrets) for v, t in TARGET_KINDS]
    with lab(tmp_path, alerting={"snmp": {"targets": targets}}) as c, \
            trap_receiver(c, tmp_path / "snmptrapd") as rx:
        beta = c.nodes["beta"]
        preset_engine_id(beta)
        start_pair(c)
        takeover = take_over(c)

        got: dict[tuple[str, str], Notification] = {}
        for kind, (_version, security) in TARGET_KINDS.items():
            got[kind] = rx.wait_for(sent_by(security, "minisftTakeover"), timeout=60)
        time.sleep(1.0)  # anything duplicated would have arrived by now
        sinks = {s["name"]: s for s in beta.status()["sinks"]}
        stop_daemons(c)

    assert f"engine id {ENGINE_ID.hex()}" in beta.log(), "the preset engine ID was not used"
    for kind, (version, security) in TARGET_KINDS.items():
        n = got[kind]
        where = f"v{kind[0]} {kind[1]}"
        assert n.version == version, where
        assert n.trap_oid == "MINISFT-MIB::minisftTakeover", where
        assert n["minisftEventSeq"] == str(takeover.seq), where
        assert n["minisftEventKind"] == "takeover", where
        assert n["minisftEventSeverity"] == "warning(4)", where
        assert n["minisftEventNode"] == "beta", where
        assert n["minisftEventMonitor"] == "web", where
        assert n["minisftEventAddressType"] == "ipv4(1)", where
        assert n["minisftEventAddress"] == VIP_IP, where
        assert n["minisftEventNewState"] == "holding(5)", where
        assert n["minisftEventReason"] == admin_string(takeover.reason).decode(), where
        same = [m for m in rx.notifications() if m.security == security
                and m.name == "minisftTakeover"]
        assert len(same) == 1, f"{where}: {len(same)} takeover notifications"
        sink = sinks[sink_name(*kind)]
        # an inform is acknowledged (delivered); a trap only sent, never "delivered"
        counted = "delivered" if kind[1] == "inform" else "sent_unconfirmed"
        assert sink["state"] == "ok" and sink[counted] >= 1, sink
        assert kind[1] == "inform" or sink["delivered"] == 0, sink
    assert "bound with /24" in takeover.reason


# ---------------------------------------------------------------------- 2. apprise


def test_takeover_arrives_by_mail_and_json(tmp_path: Path) -> None:
    apprise = {"urls": [{"url": MAIL_URL, "kinds": ["takeover"]}, JSON_URL]}
    with lab(tmp_path, alerting={"apprise": apprise}) as c, \
            LineReceiver(c.client, "smtp", CLIENT_IP, SMTP_PORT, tmp_path / "smtp.jsonl",
                         user=MAIL_USER, password=MAIL_PASSWORD) as smtp, \
            LineReceiver(c.client, "http", CLIENT_IP, HTTP_PORT, tmp_path / "http.jsonl") as http:
        alpha, beta = c.nodes["alpha"], c.nodes["beta"]
        alpha.start()
        wait_until("alpha to claim the address", lambda: alpha.holds(VIP))
        # -X importtime: beta's log lists every module its daemon process imports
        os.environ["PYTHONPROFILEIMPORTTIME"] = "1"
        try:
            beta.start()
        finally:
            del os.environ["PYTHONPROFILEIMPORTTIME"]
        beta.wait_event("looksalive_up", "web")
        takeover = take_over(c)
        subject = "[MiniSFT warning] beta: takeover web"
        (mail,) = smtp.wait_for(lambda m: "takeover" in m["subject"], timeout=60)
        (post,) = http.wait_for(lambda m: m["body"].get("title") == subject, timeout=60)
        assert beta.proc is not None
        workers = [cmd for cmd in children(beta.proc.pid)
                   if "minisft.sinks.apprise_worker" in cmd]
        assert len(workers) == 1, f"apprise runs in one child of the daemon: {workers}"
        time.sleep(1.0)
        mails = smtp.messages()
        stop_daemons(c)
        imported = {line.rsplit("|", 1)[1].strip()
                    for line in beta.log().splitlines() if line.startswith("import time:")}
        assert "minisft.sinks.apprise_sink" in imported  # the report covers the sink
        assert not {m for m in imported if m.split(".")[0] == "apprise"}, \
            "the daemon process imported apprise"
        assert MAIL_PASSWORD not in beta.log()

    assert mail["subject"] == subject
    assert mail["from"] == "minisft@example.org" and mail["to"] == ["ops@example.org"]
    assert mail["auth"] == MAIL_USER, "apprise did not authenticate"
    assert takeover.reason in mail["body"]
    assert "node=beta monitor=web address=192.0.2.10 state=holding" in mail["body"]
    assert len(mails) == 1, f"the mail URL is filtered to takeovers: {mails}"

    assert post["path"] == "hook"
    body = post["body"]
    assert body["type"] == "warning"
    assert takeover.reason in body["message"]
    assert "node=beta monitor=web address=192.0.2.10 state=holding" in body["message"]


def children(pid: int) -> list[str]:
    """Command lines of the processes whose parent is `pid`."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                           .decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue
    return out


# ---------------------------------------------------------------------- 3. restart


@needs_snmp
def test_nothing_lost_while_receivers_are_down_across_a_daemon_restart(
        tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    alerting = {
        "snmp": {"targets": [snmp_target("2c", "inform", secrets),
                             snmp_target("3", "inform", secrets)]},
        "apprise": {"urls": [{"url": MAIL_URL, "kinds": ["takeover", "released"]}, JSON_URL],
                    "title": SEQ_TITLE},
    }
    receivers: list[TrapReceiver] = []
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(lab(tmp_path, alerting=alerting))
        beta = c.nodes["beta"]
        smtp = stack.enter_context(LineReceiver(c.client, "smtp", CLIENT_IP, SMTP_PORT,
                                                tmp_path / "smtp.jsonl", user=MAIL_USER,
                                                password=MAIL_PASSWORD))
        http = stack.enter_context(LineReceiver(c.client, "http", CLIENT_IP, HTTP_PORT,
                                                tmp_path / "http.jsonl"))

        def new_trap_receiver() -> TrapReceiver:
            rx = trap_receiver(c, tmp_path / f"snmptrapd-{len(receivers) + 1}")
            receivers.append(rx)
            stack.callback(rx.stop)
            return rx.start()

        def trap_seqs(security: str) -> list[int]:
            return [int(n["minisftEventSeq"]) for rx in receivers for n in rx.notifications()
                    if n.security == security]

        def post_seqs() -> list[int]:
            return [seq_of(m["body"]["title"]) for m in http.messages()]

        def mail_seqs() -> list[int]:
            return [seq_of(m["subject"]) for m in smtp.messages()]

        rx = new_trap_receiver()
        start_pair(c)

        # Everything so far delivered, and quiet: then the receivers go away.
        def settled() -> int | None:
            last = beta.last_seq()
            done = (last in post_seqs() and last in trap_seqs(V2C_INFORM)
                    and last in trap_seqs(V3_INFORM))
            return last if done and beta.last_seq() == last else None

        before: int = wait_until("beta's events delivered", settled, timeout=60)
        smtp.stop()
        http.stop()
        rx.stop()

        # While they are down: a takeover, a SIGTERM (release), a restart, a takeover.
        first = take_over(c)
        assert beta.stop(signal.SIGTERM) == 0
        released = beta.wait_event("released", "web", after=first.seq, timeout=5)
        beta.start()
        second = beta.wait_event("takeover", "web", after=released.seq, timeout=30)
        assert second.seq > released.seq > first.seq > before

        smtp.start()
        http.start()
        new_trap_receiver()
        expected = [e for e in beta.events() if e.seq > before]
        seqs = [e.seq for e in expected]
        last = seqs[-1]
        kinds = {e.kind.value for e in expected}
        assert {"takeover", "daemon_stopping", "released", "daemon_started"} <= kinds
        mail_expected = [e.seq for e in expected if e.kind.value in ("takeover", "released")]

        def arrived(got: list[int], want: list[int]) -> bool:
            return set(want) <= set(got)

        wait_until("every event as a JSON post", lambda: arrived(post_seqs(), seqs), 120)
        wait_until("every v2c inform", lambda: arrived(trap_seqs(V2C_INFORM), seqs), 120)
        wait_until("every v3 inform", lambda: arrived(trap_seqs(V3_INFORM), seqs), 120)
        wait_until("every mail", lambda: arrived(mail_seqs(), mail_expected), 120)
        time.sleep(2.0)  # a duplicate would show up now

        def window(got: list[int]) -> list[int]:
            return [s for s in got if before < s <= last]

        assert window(post_seqs()) == seqs, "JSON posts: lost, duplicated or out of order"
        assert window(trap_seqs(V2C_INFORM)) == seqs, "v2c informs: lost/duplicated/reordered"
        assert window(trap_seqs(V3_INFORM)) == seqs, "v3 informs: lost/duplicated/reordered"
        assert window(mail_seqs()) == mail_expected, "mails: lost/duplicated/reordered"
        assert mail_expected == [first.seq, released.seq, second.seq]
        stop_daemons(c)


# ---------------------------------------------------------------------- 4. test-alert


def bind_syslog(directory: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "log.sock"))
    sock.settimeout(0.2)
    return sock


def syslog_lines(sock: socket.socket, into: list[str]) -> list[str]:
    """Drain the datagrams waiting on `sock` into `into`; return `into`."""
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return into
        into.append(data.decode("utf-8", "replace"))


@needs_snmp
def test_test_alert_reports_every_sink_and_a_dead_one(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    short = Path(tempfile.mkdtemp(prefix="sft-log-"))  # unix socket paths are short
    syslog = bind_syslog(short)
    alerting = {
        "snmp": {"targets": [snmp_target(v, t, secrets) for v, t in TARGET_KINDS]},
        # the mail URL is filtered to takeovers: a test alert must reach it all the same
        "apprise": {"urls": [{"url": MAIL_URL, "kinds": ["takeover"]}, JSON_URL]},
    }
    logging = {"level": "info", "syslog": True, "syslog_socket": str(short / "log.sock")}
    try:
        with lab(tmp_path, alerting=alerting, logging=logging) as c, \
                trap_receiver(c, tmp_path / "snmptrapd") as rx, \
                LineReceiver(c.client, "smtp", CLIENT_IP, SMTP_PORT, tmp_path / "smtp.jsonl",
                             user=MAIL_USER, password=MAIL_PASSWORD) as smtp, \
                LineReceiver(c.client, "http", CLIENT_IP, HTTP_PORT,
                             tmp_path / "http.jsonl") as http:
            beta = c.nodes["beta"]
            preset_engine_id(beta)
            start_pair(c)
            sinks = ["syslog", *(sink_name(v, t) for v, t in TARGET_KINDS), "apprise"]

            ok = beta.cli("test-alert")
            results = parse_test_alert(ok.stdout)
            assert results == dict.fromkeys(sinks, "delivered"), ok.stdout + ok.stderr
            assert ok.returncode == 0, ok.stdout + ok.stderr

            # ... and it really arrived everywhere
            for _version, security in TARGET_KINDS.values():
                rx.wait_for(sent_by(security, "minisftTestAlert"), timeout=30)
            http.wait_for(lambda m: "test_alert" in m["body"].get("title", ""), timeout=30)
            smtp.wait_for(lambda m: "test_alert" in m["subject"], timeout=30)
            lines: list[str] = []
            wait_until("the test alert in syslog", lambda: any(
                "test alert" in line for line in syslog_lines(syslog, lines)), timeout=10)

            http.stop()
            bad = beta.cli("test-alert")
            results = parse_test_alert(bad.stdout)
            assert bad.returncode == 1, bad.stdout + bad.stderr
            assert results.pop("apprise").startswith("FAILED"), bad.stdout
            assert results == dict.fromkeys(sinks[:-1], "delivered"), bad.stdout
            assert "json" in bad.stdout and MAIL_PASSWORD not in bad.stdout + bad.stderr
            stop_daemons(c)
    finally:
        syslog.close()
        shutil.rmtree(short, ignore_errors=True)


def parse_test_alert(stdout: str) -> dict[str, str]:
    """`  NAME: delivered` / `  NAME: FAILED: why` lines -> {NAME: "delivered" | "FAILED..."}"""
    out = {}
    for line in stdout.splitlines():
        name, sep, rest = line.strip().partition(": ")
        if sep:
            out[name] = rest
    return out


# ---------------------------------------------------------------------- 5. Prometheus


def scrape(c: Cluster, url: str) -> str:
    code = ("import sys, urllib.request\n"
            "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
            "sys.stdout.write(opener.open(sys.argv[1], timeout=10).read().decode())\n")
    return c.client.run(sys.executable, "-c", code, url, timeout=30).stdout


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels`."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_prometheus_metrics_from_the_client_namespace(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    url = f"http://{BETA_IP}:{PROM_PORT}/metrics"
    with lab(tmp_path, alerting={"prometheus": {"listen": f"{BETA_IP}:{PROM_PORT}"}}) as c:
        start_pair(c)
        before = scrape(c, url)
        take_over(c)

        def holding() -> str | None:
            text = scrape(c, url)
            held = sample(text, "minisft_monitor_state", monitor="web", state="holding")
            return text if held == 1 else None

        after: str = wait_until("the scrape to show the takeover", holding, timeout=10)

    assert sample(before, "minisft_monitor_state", monitor="web", state="watching") == 1
    assert sample(before, "minisft_monitor_state", monitor="web", state="holding") == 0
    assert sample(after, "minisft_monitor_state", monitor="web", state="watching") == 0
    assert sample(after, "minisft_monitor_failed_over", monitor="web") == 1
    assert sample(after, "minisft_monitor_holder", monitor="web", holder="self") == 1
    for text in (before, after):
        check = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                               capture_output=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr


# ---------------------------------------------------------------------- 6. check_minisft


def as_nobody(python: str, *args: str) -> list[str]:
    """check_minisft as uid/gid 65534 with no supplementary groups and a clean env."""
    repo = Path(__file__).resolve().parents[2]
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "env", "-i",
            f"PYTHONPATH={repo}", python, "-m", "minisft.nagios.plugin", *args]


def unprivileged_python() -> str:
    """A Python interpreter uid 65534 may execute (ours may live under /root, mode 0700)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(as_nobody(candidate, "--version"), capture_output=True,
                               text=True, timeout=30)
        if probe.returncode == 0 and "check_minisft" in probe.stdout:
            return candidate
    pytest.skip("no Python interpreter that uid 65534 can run")


def check_as_nobody(node: Node, python: str) -> subprocess.CompletedProcess[str]:
    return node.host.run(*as_nobody(python, "--status", str(node.state_dir / "status.json")),
                         check=False)


def test_check_minisft_as_nobody_against_the_live_daemons() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    python = unprivileged_python()
    # pytest's tmp_path is root-only: a directory nobody can traverse, as in /var/lib.
    base = Path(tempfile.mkdtemp(prefix="sft-nagios-"))
    try:
        base.chmod(0o755)
        with lab(base) as c:
            alpha, beta = c.nodes["alpha"], c.nodes["beta"]
            start_pair(c)
            ok = {n.name: check_as_nobody(n, python) for n in (alpha, beta)}
            take_over(c)

            seen: list[str] = []

            def warning() -> subprocess.CompletedProcess[str] | None:
                proc = check_as_nobody(beta, python)
                seen.append(f"{proc.returncode}: {proc.stdout}{proc.stderr}")
                return proc if proc.returncode == 1 else None

            try:
                failed_over = wait_until("check_minisft to see the failover", warning,
                                         timeout=10)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last check_minisft: {seen[-1]}") from None
        for name, proc in ok.items():
            assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
            assert proc.stdout.startswith(f"MINISFT OK - {name}: 1 monitor as configured"), \
                proc.stdout
        assert "(web holding)" in ok["alpha"].stdout and "(web watching)" in ok["beta"].stdout
        assert failed_over.stdout.startswith("MINISFT WARNING - beta: web: 192.0.2.10 runs on "
                                             "this backup node"), failed_over.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------- 7. snmpd


def monitor_rows(table: str) -> list[dict[str, str]]:
    """snmptable -Cf '|' output -> one {column: value} per row."""
    lines = [line for line in table.splitlines() if "|" in line]
    assert lines, table
    header = [h.split("::")[-1] for h in lines[0].split("|")]
    return [dict(zip(header, row.split("|"), strict=False)) for row in lines[1:]]


@pytest.mark.skipif(shutil.which("snmptable") is None
                    or not (shutil.which("snmpd") or Path("/usr/sbin/snmpd").exists()),
                    reason="net-snmp snmpd/snmptable not installed")
def test_snmptable_shows_the_takeover_through_pass_persist(tmp_path: Path) -> None:
    with lab(tmp_path) as c:
        beta = c.nodes["beta"]
        start_pair(c)
        status = beta.state_dir / "status.json"
        with SnmpAgent(tmp_path / "snmpd", status, prefix=beta.host.cmd()) as agent:
            before = monitor_rows(agent.table("MINISFT-MIB::minisftMonitorTable", "-Cf", "|"))
            take_over(c)

            def holding() -> list[dict[str, str]] | None:
                rows = monitor_rows(agent.table("MINISFT-MIB::minisftMonitorTable", "-Cf",
                                                "|"))
                return rows if rows and rows[0].get("minisftMonitorState") == "holding" \
                    else None

            after = wait_until("snmptable to show web holding", holding, timeout=15)

    assert [r["minisftMonitorName"] for r in before] == ["web"]
    assert before[0]["minisftMonitorState"] == "watching"
    (row,) = after
    assert row["minisftMonitorName"] == "web"
    assert row["minisftMonitorRole"] == "backup"
    assert row["minisftMonitorHolder"] == "self"
    assert row["minisftMonitorTakeovers"] == "1"


# ---------------------------------------------------------------------- 8. syslog


def test_takeover_line_reaches_the_syslog_socket() -> None:
    short = Path(tempfile.mkdtemp(prefix="sft-log-"))  # unix socket paths are short
    sock = bind_syslog(short)
    logging = {"level": "info", "syslog": True, "syslog_socket": str(short / "log.sock"),
               "syslog_facility": "daemon"}
    try:
        with lab(short, logging=logging) as c:
            beta = c.nodes["beta"]
            start_pair(c)
            takeover = take_over(c)
            pid = beta.status()["pid"]
            lines: list[str] = []
            wait_until("the takeover in syslog", lambda: any(
                f"seq={takeover.seq} " in line for line in syslog_lines(sock, lines)),
                timeout=10)
            assert beta.proc is not None and pid == beta.proc.pid
    finally:
        sock.close()
        shutil.rmtree(short, ignore_errors=True)

    (line,) = [line for line in lines if f"seq={takeover.seq} " in line]
    m = re.fullmatch(r"<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+): (.*)", line, re.DOTALL)
    assert m, line
    assert m.group(1) == "28", "daemon facility (3) * 8 + warning (4)"
    assert m.group(3) == f"minisft[{pid}]"
    message = m.group(4)
    assert "takeover" in message and "web" in message and VIP_IP in message
    assert "node=beta" in message and "severity=warning" in message
    assert "\n" not in message


# ---------------------------------------------------------------------- 9. shutdown


@needs_snmp
def test_sigterm_is_prompt_while_snmp_receivers_are_down(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    targets = [snmp_target(v, t, secrets) for v, t in TARGET_KINDS]
    with lab(tmp_path, alerting={"snmp": {"targets": targets}}) as c, \
            trap_receiver(c, tmp_path / "snmptrapd") as rx:
        beta = c.nodes["beta"]
        preset_engine_id(beta)
        start_pair(c)
        time.sleep(1.0)
        rx.stop()  # the receiver host now answers port unreachable, as a dead one does
        started = time.monotonic()
        try:
            code = beta.stop(signal.SIGTERM, timeout=10)
        except subprocess.TimeoutExpired:
            beta.send_signal(signal.SIGKILL)
            assert beta.proc is not None
            beta.proc.wait(10)
            pytest.fail("beta did not exit within 10 s of SIGTERM")
        assert code == 0
        assert time.monotonic() - started < 10
        events = [e.kind.value for e in beta.events()]
        assert events[-1] == "daemon_stopping"
