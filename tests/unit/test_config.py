"""The YAML config loader: good files give the expected dataclasses, and every bad one is
reported with the dotted key and the line it is on (what `minisft check-config` prints)."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minisft.config import alerting, loader, monitors, pools
from minisft.config.durations import format_duration, parse_duration
from minisft.config.loader import ConfigError, collect_errors, load_config, parse_config
from minisft.config.model import (
    AnnounceConfig,
    CheckConfig,
    Config,
    FallbackConfig,
    FallbackMode,
    IsAliveConfig,
    LooksAliveConfig,
    MonitorConfig,
    NodeConfig,
    ProbeConfig,
    Role,
)
from minisft.core.events import EventKind

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "contrib" / "examples"

NODE = """\
node:
  name: alpha
  local_ip: 192.0.2.1
"""

MONITOR = """\
monitors:
  - name: web
    monitor_ip: 192.0.2.10
    monitor_subnet: 24
    role: backup
    peer_ip: 192.0.2.2
"""


def cfg(*parts: str) -> str:
    """NODE followed by the given YAML fragments."""
    return NODE + "".join(parts)


dd = textwrap.dedent


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in the test config"
    return hits[nth - 1]


def error(text: str, source: str = "<string>", **kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source, **kw)  # type: ignore[arg-type]
    return info.value


def assert_error(text: str, key: str, needle: str, message: str, nth: int = 1) -> ConfigError:
    """Some reported error is for `key`, on the line holding `needle`, matching `message`."""
    errors = error(text).errors
    for e in errors:
        if e.key == key:
            assert e.line == line_of(text, needle, nth), (e.line, str(e))
            assert re.search(message, e.message), str(e)
            assert str(e).startswith(f"<string>:{e.line}: {key}: ")
            return e
    pytest.fail(f"no error for {key}; got: {[str(e) for e in errors]}")


def private(path: Path, data: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    path.chmod(mode)
    return path


# ====================================================================== good configs


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = parse_config(cfg(MONITOR))
    mon = config.monitor("web")
    assert config.node == NodeConfig("alpha", ipaddress.ip_address("192.0.2.1"), True)
    assert mon.address == ipaddress.ip_interface("192.0.2.10/24")
    assert mon.looksalive == LooksAliveConfig(3.0, 3, 1.0)
    assert mon.isalive.interval == 10.0 and not mon.isalive.enabled
    assert mon.fallback == FallbackConfig(FallbackMode.MANUAL, 60.0)
    assert config.control_socket == Path("/run/minisft/minisft.sock")
    assert config.state_dir == Path("/var/lib/minisft")
    assert config.source is None


def test_primary_backup_example() -> None:
    beta = load_config(EXAMPLES / "primary-backup" / "beta.yaml")
    check = CheckConfig("http", 3.0, {
        "url": "http://{address}/health", "method": "GET", "expect_status": [200],
        "body_match": None, "headers": {}, "host_header": None})
    assert beta.monitors == (MonitorConfig(
        name="web", address=ipaddress.ip_interface("192.0.2.10/24"), role=Role.BACKUP,
        peer_ip=ipaddress.ip_address("192.0.2.1"),
        looksalive=LooksAliveConfig(1.0, 3, 0.3),
        isalive=IsAliveConfig(interval=10.0, check=check),
        fallback=FallbackConfig(FallbackMode.MANUAL, 60.0),
        probe=ProbeConfig(), announce=AnnounceConfig()),)
    assert beta.node.name == "beta"
    assert beta.source == EXAMPLES / "primary-backup" / "beta.yaml"
    alpha = load_config(EXAMPLES / "primary-backup" / "alpha.yaml")
    assert alpha.monitors[0].role is Role.PRIMARY
    assert alpha.monitors[0].address == beta.monitors[0].address
    assert alpha.node.local_ip == beta.monitors[0].peer_ip


def test_active_active_example_mirrors() -> None:
    alpha = load_config(EXAMPLES / "active-active" / "alpha.yaml")
    beta = load_config(EXAMPLES / "active-active" / "beta.yaml")
    assert [(m.name, m.role) for m in alpha.monitors] == [("web", Role.PRIMARY),
                                                        ("db", Role.BACKUP)]
    assert [(m.name, m.role) for m in beta.monitors] == [("web", Role.BACKUP),
                                                       ("db", Role.PRIMARY)]
    for a, b in zip(alpha.monitors, beta.monitors, strict=True):
        assert a.address == b.address
    assert alpha.monitor("db").peer_ip == beta.node.local_ip
    assert beta.monitor("web").peer_ip == alpha.node.local_ip
    assert alpha.monitor("db").isalive.check.params["port"] == 5432
    assert alpha.monitor("db").fallback == FallbackConfig(FallbackMode.AUTO, 120.0)
    target = alpha.alerting.snmp_targets[0]
    assert (target.version, target.community, target.min_severity) == ("2c", "public",
                                                                       "warning")


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    """full-reference.yaml with its /etc/minisft files created under tmp_path."""
    private(tmp_path / "snmp-auth.key", "auth-passphrase\n")
    private(tmp_path / "snmp-priv.key", "priv-passphrase\n")
    private(tmp_path / "pool.key", bytes(range(32)))
    private(tmp_path / "apprise-urls.txt", "# team\nmailto://u:mailpw@example.com\n")
    private(tmp_path / "apprise.yml", "urls:\n  - json://localhost/x\n")
    private(tmp_path / "icinga2-password", "icinga-pw\n")
    private(tmp_path / "icinga2-ca.crt", "-----BEGIN CERTIFICATE-----\n", 0o644)
    private(tmp_path / "send_nsca.cfg", "password=x\nencryption_method=14\n")
    text = (EXAMPLES / "full-reference.yaml").read_text()
    return private(tmp_path / "minisft.yaml",
                   text.replace("/etc/minisft/", f"{tmp_path}/"), 0o644)


def test_full_reference_parses(reference: Path) -> None:
    config = load_config(reference)
    web, mail6 = config.monitors
    assert web.fallback == FallbackConfig(FallbackMode.AUTO, 60.0)
    assert web.isalive.check.params["headers"] == {"Accept": "text/plain"}
    assert web.probe == ProbeConfig(3, 0.05) and web.announce.refresh == 10.0
    assert mail6.address == ipaddress.ip_interface("2001:db8::25/64")
    assert mail6.isalive.check.params["quit"] == "QUIT\r\n"
    v2, v3 = config.alerting.snmp_targets
    assert v2.community == "public" and v2.kinds == ()
    assert (v3.version, v3.type, v3.user) == ("3", "inform", "minisft")
    assert (v3.auth_key, v3.priv_key) == ("auth-passphrase", "priv-passphrase")
    assert v3.kinds == ("takeover", "takeover_failed", "address_conflict", "service_dead")
    apprise = config.alerting.apprise
    assert apprise is not None
    assert apprise.urls == (
        "json://alerts.example.com/minisft",
        {"url": "ntfy://ntfy.example.com/minisft-critical", "kinds": ["service_dead"],
         "min_severity": "critical", "tag": ["pager"]},
        "mailto://u:mailpw@example.com")
    assert apprise.config_file == reference.parent / "apprise.yml"
    assert config.alerting.prometheus_listen == "127.0.0.1:9523"
    (pool,) = config.pools
    assert pool.key == bytes(range(32))
    assert [m.name for m in pool.members] == ["alpha", "beta"]
    assert pool.preferred == {"192.0.2.101": "alpha", "192.0.2.102": "beta"}
    assert pool.witness == ipaddress.ip_address("192.0.2.254")


def test_full_reference_mentions_every_key() -> None:
    text = (EXAMPLES / "full-reference.yaml").read_text()
    # the key lists live in the section modules the loader was split into
    key_sets = [v for module in (loader, monitors, alerting, pools)
                for k, v in vars(module).items() if re.fullmatch(r"_[A-Z_]+_KEYS", k)]
    assert len(key_sets) > 10
    missing = {k for keys in key_sets for k in keys if not re.search(rf"\b{k}:", text)}
    assert not missing


def test_examples_are_all_valid() -> None:
    files = sorted(EXAMPLES.glob("*/*.yaml"))
    assert len(files) == 4
    for f in files:
        assert collect_errors(f.read_text(), str(f)) == []


# ====================================================================== durations

GOOD_DURATIONS = [
    (0.1, 0.1), (3, 3.0), (0, 0.0), ("0", 0.0), ("2.5", 2.5), ("100ms", 0.1),
    ("3s", 3.0), ("1m", 60.0), ("1h", 3600.0), ("1.5s", 1.5), (" 3 s ", 3.0),
    ("1m30s", 90.0), ("1h1m1s", 3661.0), (".5s", 0.5), ("50ms", 0.05), ("1e3ms", 1.0),
]
BAD_DURATIONS = [
    "fast", "", " ", "-1", "-1s", "3x", "s", "3sec", "1.2.3s", "1 m 2", "nan", "inf",
    "1e999", "3s-", "--3", True, False, None, -0.5, float("nan"), float("inf"), [3], {},
    10**400,
]


@pytest.mark.parametrize(("text", "seconds"), GOOD_DURATIONS)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative|finite"):
        parse_duration(value)


def test_parse_duration_message_names_the_value() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("fast")
    assert str(info.value) == "expected a duration such as 0.5, 100ms, 3s or 1m, got 'fast'"


@given(st.text())
def test_parse_duration_only_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0 and math.isfinite(seconds)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(),
                 st.lists(st.integers()), st.dictionaries(st.text(), st.text())))
def test_parse_duration_any_object(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert seconds >= 0 and math.isfinite(seconds)


@given(st.integers(min_value=0, max_value=10**12))
def test_milliseconds_round_trip(n: int) -> None:
    assert parse_duration(f"{n}ms") == n / 1000


@given(st.integers(min_value=1, max_value=86_400_000))
def test_format_duration_round_trips(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-5)


# ====================================================================== error format


def test_error_format_is_file_line_key_message(tmp_path: Path) -> None:
    text = cfg(MONITOR, "    looksalive: {interval: fast}\n")
    path = private(tmp_path / "minisft.yaml", text, 0o644)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    e = info.value
    assert e.key == "monitors[0].looksalive.interval"
    assert e.line == line_of(text, "interval: fast") == 10
    assert e.source == str(path)
    assert str(e) == (f"{path}:10: monitors[0].looksalive.interval: expected a duration "
                      "such as 0.5, 100ms, 3s or 1m, got 'fast'")


def test_constructor_signature() -> None:
    e = ConfigError("node.local_ip", "bad", line=3, source="/x.yaml")
    assert (e.key, e.message, e.line, e.source) == ("node.local_ip", "bad", 3, "/x.yaml")
    assert str(e) == "/x.yaml:3: node.local_ip: bad"
    assert str(ConfigError("node", "bad")) == "node: bad"
    assert str(ConfigError("", "no such file", source="/x")) == "/x: no such file"


def test_all_errors_are_collected_in_file_order() -> None:
    text = cfg(dd("""\
        logging: {level: loud}
        monitors:
          - name: web
            monitor_ip: 192.0.2.300
            monitor_subnet: 24
            role: backup
            looksalive: {retry: 0}
          - name: db
            monitor_ip: 192.0.2.20
            monitor_subnet: 24
            rol: primary
    """))
    e = error(text)
    assert [(x.key, x.line) for x in e.errors] == [
        ("logging.level", line_of(text, "loud")),
        ("monitors[0].monitor_ip", line_of(text, "192.0.2.300")),
        ("monitors[0].looksalive.retry", line_of(text, "retry: 0")),
        ("monitors[1].rol", line_of(text, "rol:")),
    ]
    assert e is e.errors[0]
    assert "(4 errors)" in e.report()
    assert [(x.key, x.line) for x in collect_errors(text)] == [(x.key, x.line)
                                                              for x in e.errors]


def test_valid_config_has_no_errors() -> None:
    assert collect_errors(cfg(MONITOR)) == []


# ====================================================================== unknown / required


def test_unknown_key_with_did_you_mean() -> None:
    text = cfg(MONITOR, "    looksalive: {intervall: 3s}\n")
    assert_error(text, "monitors[0].looksalive.intervall", "intervall",
                 r"unknown key \(did you mean 'interval'\?\)")


def test_original_script_names_find_the_new_keys() -> None:
    text = NODE + "  LOCALIP: 192.0.2.1\n"
    assert_error(text, "node.LOCALIP", "LOCALIP", "did you mean 'local_ip'")


def test_unknown_top_level_key_lists_the_known_ones() -> None:
    text = cfg("zzz: 1\n")
    assert_error(text, "zzz", "zzz",
                 r"unknown key \(known: alerting, control_max_connections, control_socket")


def test_misspelt_required_key_is_reported_once() -> None:
    text = cfg(MONITOR.replace("role:", "rolle:"))
    errors = error(text).errors
    assert [e.key for e in errors] == ["monitors[0].rolle"]


def test_x_keys_hold_anchors_for_merging() -> None:
    text = cfg(dd("""\
        x-fast: &fast {interval: 1s, timeout: 200ms}
        monitors:
          - name: web
            monitor_ip: 192.0.2.10
            monitor_subnet: 24
            role: primary
            looksalive: {<<: *fast, retry: 5}
    """))
    assert parse_config(text).monitors[0].looksalive == LooksAliveConfig(1.0, 5, 0.2)


def test_merged_keys_are_overridden_and_keep_their_lines() -> None:
    text = cfg(dd("""\
        x-la: &la
          interval: 3s
          timeout: 1s
        monitors:
          - name: web
            monitor_ip: 192.0.2.10
            monitor_subnet: 24
            role: primary
            looksalive:
              <<: *la
              timeout: 5s
    """))
    assert_error(text, "monitors[0].looksalive.timeout", "timeout: 5s",
                 r"timeout \(5s\) must not be longer than interval \(3s\)")


@pytest.mark.parametrize(("drop", "key", "where"), [
    ("  name: alpha\n", "node.name", "node:"),
    ("  local_ip: 192.0.2.1\n", "node.local_ip", "node:"),
    ("    monitor_ip: 192.0.2.10\n", "monitors[0].monitor_ip", "- name: web"),
    ("    monitor_subnet: 24\n", "monitors[0].monitor_subnet", "- name: web"),
    ("    role: backup\n", "monitors[0].role", "- name: web"),
])
def test_required_keys(drop: str, key: str, where: str) -> None:
    text = cfg(MONITOR).replace(drop, "", 1)
    assert_error(text, key, where, "^required")


def test_node_section_is_required() -> None:
    e = error(MONITOR)
    assert (e.key, e.line) == ("node", 1)
    assert "required" in e.message


def test_monitors_must_be_a_list() -> None:
    text = cfg("monitors: {name: web}\n")
    assert_error(text, "monitors", "monitors:", "expected a list of monitors")


# ====================================================================== types


@pytest.mark.parametrize(("fragment", "key", "message"), [
    ("looksalive: {retry: three}", "looksalive.retry", "expected a whole number, got 'three'"),
    ("looksalive: {retry: yes}", "looksalive.retry", "expected a whole number, got true"),
    ("looksalive: {retry: 0}", "looksalive.retry", "must be between 1 and 1000, got 0"),
    ("isalive: {retry: 0}", "isalive.retry", "must be between 1 and 1000"),
    ("probe: {count: 0}", "probe.count", "must be between 1 and 100, got 0"),
    ("announce: {count: 0}", "announce.count", "must be between 1 and 100"),
    ("looksalive: {interval: 0}", "looksalive.interval", "must be at least 10ms"),
    ("looksalive: {timeout: -1s}", "looksalive.timeout", "cannot be negative"),
    ("isalive: {interval: 0s}", "isalive.interval", "must be at least 100ms"),
    ("probe: {interval: 0ms}", "probe.interval", "must be at least 1ms"),
    ("announce: {interval: 0}", "announce.interval", "must be at least 1ms"),
    ("fallback: {hold_down: 2d}", "fallback.hold_down", "must be at most 24h"),
    ("fallback: {hold_down: 25h}", "fallback.hold_down", "at most 24h"),
    ("fallback: {mode: sometimes}", "fallback.mode", "expected one of manual, auto"),
    ("isalive: {on_holder: maybe}", "isalive.on_holder", "expected true or false"),
    ("looksalive: [3s]", "looksalive", "expected a mapping"),
    ("looksalive: {timeout: 4s}", "looksalive.timeout",
     r"timeout \(4s\) must not be longer than interval \(3s\)"),
])
def test_monitor_value_rules(fragment: str, key: str, message: str) -> None:
    text = cfg(MONITOR, f"    {fragment}\n")
    assert_error(text, f"monitors[0].{key}", fragment, message)


# Every timing key has a lower bound below which it cannot work (a 1 us ping interval
# pinged 825 times a second and starved IsAlive): a value just below is refused naming the
# key, the bound and the line; the bound itself is accepted.
LOWER_BOUNDS = [
    ("looksalive: {interval: 9ms, timeout: 1ms}", "looksalive.interval", "10ms",
     "looksalive: {interval: 10ms, timeout: 1ms}"),
    ("looksalive: {interval: 0.000001, timeout: 0.000001}", "looksalive.interval", "10ms",
     None),
    ("looksalive: {interval: 1s, timeout: 0.5ms}", "looksalive.timeout", "1ms",
     "looksalive: {interval: 1s, timeout: 1ms}"),
    ("isalive: {interval: 99ms, check: {type: tcp, port: 80, timeout: 50ms}}",
     "isalive.interval", "100ms",
     "isalive: {interval: 100ms, check: {type: tcp, port: 80, timeout: 50ms}}"),
    ("isalive: {check: {type: tcp, port: 80, timeout: 9ms}}", "isalive.check.timeout", "10ms",
     "isalive: {check: {type: tcp, port: 80, timeout: 10ms}}"),
    ("fallback: {mode: auto, hold_down: 999ms}", "fallback.hold_down", "1s",
     "fallback: {mode: auto, hold_down: 1s}"),
    ("probe: {interval: 0.5ms}", "probe.interval", "1ms", "probe: {interval: 1ms}"),
    ("announce: {interval: 0.5ms}", "announce.interval", "1ms", "announce: {interval: 1ms}"),
    ("announce: {refresh: 500ms}", "announce.refresh", "1s", "announce: {refresh: 1s}"),
]


@pytest.mark.parametrize(("fragment", "key", "bound", "at_bound"), LOWER_BOUNDS)
def test_timing_keys_have_a_lower_bound(fragment: str, key: str, bound: str,
                                        at_bound: str | None) -> None:
    text = cfg(MONITOR, f"    {fragment}\n")
    e = assert_error(text, f"monitors[0].{key}", fragment, rf"must be at least {bound}\b")
    assert "lower bound" in e.message
    if at_bound is not None:
        parse_config(cfg(MONITOR, f"    {at_bound}\n"))  # the bound itself works


def test_snmp_timeout_has_a_lower_bound() -> None:
    text = snmp("{host: 192.0.2.9, community: c, timeout: 1ms}")
    assert_error(text, "alerting.snmp.targets[0].timeout", "host", "must be at least 100ms")


def test_pool_looksalive_has_the_same_lower_bound() -> None:
    text = cfg("pools:\n  - name: front\n    members: [{name: alpha, ip: 192.0.2.1}]\n"
               "    addresses: [192.0.2.50/24]\n    key_file: /nonexistent\n"
               "    looksalive: {interval: 1ms, timeout: 1ms}\n")
    assert_error(text, "pools[0].looksalive.interval", "interval: 1ms", "at least 10ms")


def test_check_config_refuses_a_spinning_interval(tmp_path: Path) -> None:
    """What an admin sees: exit 2 and one line naming file, line, key and bound."""
    path = tmp_path / "minisft.yaml"
    path.write_text(cfg(MONITOR, "    looksalive: {interval: 0.000001, timeout: 0.000001}\n"))
    out = subprocess.run([sys.executable, "-m", "minisft", "check-config", "--config",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    line = line_of(path.read_text(), "interval: 0.000001")
    assert f"{path}:{line}: monitors[0].looksalive.interval: must be at least 10ms" \
        in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_startup_grace_is_derived_from_the_timing_unless_set() -> None:
    fast = "    looksalive: {interval: 100ms, retry: 3, timeout: 50ms}\n"
    derived = parse_config(cfg(MONITOR, fast)).monitors[0]
    # 2s start-up skew + probe round (3 x 33ms) + detection (100ms + 3 x 50ms)
    assert derived.startup_grace is None
    assert derived.backup_grace == pytest.approx(2.0 + 3 * 0.0333 + 0.25, abs=1e-3)
    assert parse_config(cfg(MONITOR, "    startup_grace: 5s\n")).monitors[0].backup_grace == 5
    assert parse_config(cfg(MONITOR, "    startup_grace: 0\n")).monitors[0].backup_grace == 0


@pytest.mark.parametrize(("monitor", "fragment", "message"), [
    (MONITOR.replace("backup", "primary"), "startup_grace: 5s", "only applies to role backup"),
    (MONITOR, "startup_grace: -1s", "cannot be negative"),
    (MONITOR, "startup_grace: soon", "expected a duration"),
])
def test_startup_grace_rules(monitor: str, fragment: str, message: str) -> None:
    assert_error(cfg(monitor, f"    {fragment}\n"), "monitors[0].startup_grace", fragment,
                 message)


def test_announce_refresh_zero_turns_it_off() -> None:
    text = cfg(MONITOR, "    announce: {refresh: 0}\n")
    assert parse_config(text).monitors[0].announce.refresh == 0.0


@pytest.mark.parametrize(("interval", "timeout"), [
    ("50ms", 0.05 / 3), ("100ms", 0.1 / 3), ("500ms", 0.5 / 3), ("1s", 1 / 3), ("3s", 1.0),
    ("10s", 1.0),
])
def test_interval_alone_is_valid_and_the_timeout_follows_it(interval: str,
                                                            timeout: float) -> None:
    # issue 14: `{interval: 100ms}` alone was refused (the 1 s default timeout was longer)
    config = parse_config(cfg(MONITOR, f"    looksalive: {{interval: {interval}}}\n"))
    assert config.monitors[0].looksalive.timeout == pytest.approx(timeout, abs=1e-6)


def test_explicit_timeout_longer_than_a_short_interval_is_refused() -> None:
    text = cfg(MONITOR, "    looksalive: {interval: 100ms, timeout: 1s}\n")
    assert_error(text, "monitors[0].looksalive.timeout", "timeout: 1s",
                 r"timeout \(1s\) must not be longer than interval \(0.1s\)")


def test_role_typo_gets_a_hint() -> None:
    text = cfg(MONITOR.replace("role: backup", "role: bakup"))
    assert_error(text, "monitors[0].role", "bakup",
                 r"expected one of primary, backup, got 'bakup' \(did you mean 'backup'\?\)")


def test_node_name_must_be_a_name() -> None:
    text = NODE.replace("name: alpha", "name: al pha")
    assert_error(text, "node.name", "al pha", "expected a name of letters")


def test_release_on_stop_must_be_bool() -> None:
    text = NODE + "  release_on_stop: 2\n"
    assert_error(text, "node.release_on_stop", "release_on_stop", "expected true or false")


def test_yaml_11_booleans_as_keys_stay_keys() -> None:
    # "on:" would be the boolean true in YAML 1.1; it must show up as the key "on"
    text = NODE + "  on: 1\n"
    assert_error(text, "node.on", "on: 1", "unknown key")


# ====================================================================== addresses


@pytest.mark.parametrize(("old", "new", "key", "message"), [
    ("monitor_ip: 192.0.2.10", "monitor_ip: 192.0.2.300", "monitor_ip",
     "expected an IPv4 or IPv6 address, got '192.0.2.300'"),
    ("monitor_ip: 192.0.2.10", "monitor_ip: 0.0.0.0", "monitor_ip", "cannot be a service"),
    ("monitor_ip: 192.0.2.10", "monitor_ip: 224.0.0.5", "monitor_ip", "multicast"),
    ("monitor_ip: 192.0.2.10", "monitor_ip: 'fe80::1%eth0'", "monitor_ip", "zone"),
    ("monitor_ip: 192.0.2.10", "monitor_ip: 192.0.2.0", "monitor_ip",
     r"192.0.2.0 is the network address of 192.0.2.0/24"),
    ("monitor_ip: 192.0.2.10", "monitor_ip: 192.0.2.255", "monitor_ip", "broadcast address"),
    ("monitor_subnet: 24", "monitor_subnet: 33", "monitor_subnet",
     "prefix length must be 1-32 for an IPv4 monitor_ip, got 33"),
    ("monitor_subnet: 24", "monitor_subnet: 0", "monitor_subnet", "must be 1-32"),
    ("monitor_subnet: 24", "monitor_subnet: 255.0.255.0", "monitor_subnet",
     "not a valid netmask: its one bits must be contiguous"),
    ("monitor_subnet: 24", "monitor_subnet: 255.255.255.1", "monitor_subnet", "contiguous"),
    ("monitor_subnet: 24", "monitor_subnet: 'ffff:ffff::'", "monitor_subnet",
     "IPv6 takes a prefix length"),
    ("monitor_subnet: 24", "monitor_subnet: big", "monitor_subnet", "expected a prefix length"),
    ("peer_ip: 192.0.2.2", "peer_ip: 2001:db8::2", "peer_ip",
     "2001:db8::2 is IPv6 but monitor_ip 192.0.2.10 is IPv4"),
    ("peer_ip: 192.0.2.2", "peer_ip: 192.0.2.1", "peer_ip", "this node's own local_ip"),
    ("peer_ip: 192.0.2.2", "peer_ip: 192.0.2.10", "peer_ip", "not monitor_ip"),
    ("peer_ip: 192.0.2.2", "peer_ip: nope", "peer_ip", "expected an IPv4 or IPv6 address"),
])
def test_address_rules(old: str, new: str, key: str, message: str) -> None:
    text = cfg(MONITOR.replace(old, new))
    assert_error(text, f"monitors[0].{key}", new, message)


@pytest.mark.parametrize(("subnet", "prefix"), [
    ("24", 24), ("'/24'", 24), ("/24", 24), ("255.255.255.0", 24), ("255.255.254.0", 23),
    ("255.255.255.255", 32), ("'30'", 30),
])
def test_monitor_subnet_forms(subnet: str, prefix: int) -> None:
    text = cfg(MONITOR.replace("monitor_subnet: 24", f"monitor_subnet: {subnet}"))
    assert parse_config(text).monitors[0].address.network.prefixlen == prefix


def test_ipv6_monitor() -> None:
    text = cfg(MONITOR.replace("192.0.2.10", "2001:db8::10").replace("192.0.2.2",
                                                                     "2001:db8::2")
               .replace("monitor_subnet: 24", "monitor_subnet: /64"))
    mon = parse_config(text).monitors[0]
    assert mon.address == ipaddress.ip_interface("2001:db8::10/64")
    assert mon.peer_ip == ipaddress.ip_address("2001:db8::2")


def test_ipv6_rejects_dotted_mask() -> None:
    text = cfg(MONITOR.replace("192.0.2.10", "2001:db8::10").replace("192.0.2.2", "2001:db8::2")
               .replace("monitor_subnet: 24", "monitor_subnet: 255.255.255.0"))
    assert_error(text, "monitors[0].monitor_subnet", "255.255.255.0",
                 "IPv6 takes a prefix length")


def test_monitor_ip_may_not_be_local_ip() -> None:
    text = cfg(MONITOR.replace("monitor_ip: 192.0.2.10", "monitor_ip: 192.0.2.1"))
    assert_error(text, "monitors[0].monitor_ip", "monitor_ip: 192.0.2.1",
                 r"192.0.2.1 is node.local_ip \(LOCALIP, line 3\)")


def test_local_ip_must_be_an_address() -> None:
    text = NODE.replace("192.0.2.1", "localhost")
    assert_error(text, "node.local_ip", "localhost", "expected an IPv4 or IPv6 address")


SECOND = """\
  - name: db
    monitor_ip: 192.0.2.20
    monitor_subnet: 24
    role: primary
"""


def test_monitor_names_are_unique() -> None:
    text = cfg(MONITOR, SECOND.replace("name: db", "name: web"))
    assert_error(text, "monitors[1].name", "name: web", r"'web' is already used by "
                 r"monitors\[0\] \(line 5\)", nth=2)


def test_monitor_ip_appears_once() -> None:
    text = cfg(MONITOR, SECOND.replace("192.0.2.20", "192.0.2.10"))
    assert_error(text, "monitors[1].monitor_ip", "monitor_ip: 192.0.2.10",
                 r"192.0.2.10 is already watched by monitors\[0\]", nth=2)


# ====================================================================== fallback


def test_auto_fallback_needs_peer_ip() -> None:
    text = cfg(MONITOR.replace("    peer_ip: 192.0.2.2\n", ""),
               "    fallback: {mode: auto}\n")
    assert_error(text, "monitors[0].fallback.mode", "mode: auto",
                 "fallback.mode auto needs peer_ip")


def test_auto_fallback_only_for_backup() -> None:
    text = cfg(MONITOR.replace("role: backup", "role: primary"),
               "    fallback:\n      mode: auto\n")
    assert_error(text, "monitors[0].fallback.mode", "mode: auto",
                 "fallback.mode auto only applies to role backup")


def test_auto_fallback_on_backup_with_peer() -> None:
    text = cfg(MONITOR, "    fallback: {mode: auto, hold_down: 90s}\n")
    assert parse_config(text).monitors[0].fallback == FallbackConfig(FallbackMode.AUTO, 90.0)


# ====================================================================== isalive checks


def test_check_params_are_validated_by_the_check_schema() -> None:
    text = cfg(MONITOR, "    isalive:\n      check:\n        type: tcp\n        timeout: 2s\n")
    assert_error(text, "monitors[0].isalive.check.port", "check:", "required for a tcp check")


def test_check_param_error_points_at_its_line() -> None:
    text = cfg(MONITOR, "    isalive:\n      check:\n        type: http\n"
                        "        expect_status: 999\n")
    assert_error(text, "monitors[0].isalive.check.expect_status", "999",
                 "must be an integer 100-599")


def test_unknown_check_param_gets_a_hint() -> None:
    text = cfg(MONITOR, "    isalive:\n      check: {type: http, ulr: 'http://x/'}\n")
    assert_error(text, "monitors[0].isalive.check.ulr", "ulr",
                 r"unknown key for a http check \(did you mean 'url'\?\)")


def test_unknown_check_type() -> None:
    text = cfg(MONITOR, "    isalive:\n      check:\n        type: smtp\n")
    assert_error(text, "monitors[0].isalive.check.type", "type: smtp", "unknown check type")


def test_check_needs_a_type() -> None:
    text = cfg(MONITOR, "    isalive:\n      check:\n        port: 80\n")
    assert_error(text, "monitors[0].isalive.check.type", "check:", "required")


def test_check_timeout_within_isalive_interval() -> None:
    text = cfg(MONITOR, "    isalive:\n      interval: 5s\n      check:\n"
                        "        type: tcp\n        port: 80\n        timeout: 6s\n")
    assert_error(text, "monitors[0].isalive.check.timeout", "timeout: 6s",
                 r"check timeout \(6s\) must not be longer than the isalive interval \(5s\)")


def test_check_config_is_built() -> None:
    text = cfg(MONITOR, "    isalive:\n      retry: 4\n      on_holder: true\n"
                        "      check: {type: command, command: 'check-web --quick',"
                        " timeout: 1500ms}\n")
    isalive = parse_config(text).monitors[0].isalive
    assert (isalive.retry, isalive.on_holder, isalive.enabled) == (4, True, True)
    assert isalive.check.type == "command" and isalive.check.timeout == 1.5
    assert isalive.check.params["argv"] == ["check-web", "--quick"]


# ====================================================================== alerting


def snmp(target: str) -> str:
    return cfg(f"alerting:\n  snmp:\n    targets:\n      - {target}\n")


@pytest.mark.parametrize(("target", "key", "needle", "message"), [
    ("{host: 192.0.2.9, version: 2c}", "community", "host", "required for SNMP version 2c"),
    ("{host: 192.0.2.9, version: 3}", "user", "host", "required for SNMP version 3"),
    ("{host: 192.0.2.9, version: 3, user: u, priv_key: privpassword}", "auth_key", "host",
     "required when a priv key is set"),
    ("{host: 192.0.2.9, version: 2c, community: c, user: u}", "user", "host",
     "only applies to SNMP version 3"),
    ("{host: 192.0.2.9, version: 3, user: u, community: c}", "community", "host",
     "only applies to SNMP version 2c"),
    ("{host: 192.0.2.9, version: 1, community: c}", "version", "host", "version 1 is not"),
    ("{host: 192.0.2.9, version: 4}", "version", "host",
     "expected 2c or 3, got a number \\(not shown"),
    ("{host: 192.0.2.9, community: c, type: poke}", "type", "host", "trap, inform"),
    ("{host: 192.0.2.9, community: c, port: 70000}", "port", "host", "between 1 and 65535"),
    ("{host: 'bad host', community: c}", "host", "host", "expected a host name"),
    ("{version: 2c, community: c}", "host", "version", "required"),
    ("{host: h, version: 3, user: u, auth_key: short}", "auth_key", "host",
     "too short: at least 8 bytes"),
    ("{host: h, version: 3, user: u, auth_key: abcdefgh, auth_key_env: X}", "auth_key_env",
     "host", "give only one of auth_key, auth_key_env"),
    ("{host: h, version: 3, user: u, auth_protocol: sha3, auth_key: abcdefgh}",
     "auth_protocol", "host", "md5, sha, sha224"),
    ("{host: h, community: c, kinds: [takeovr]}", "kinds[0]", "host",
     r"not a known event kind, got a string \(not shown.*\(did you mean 'takeover'\?\)"),
    ("{host: h, community: c, min_severity: loud}", "min_severity", "host",
     "expected one of emergency, alert"),
    ("{host: h, community: c, colour: red}", "colour", "host", "unknown key"),
])
def test_snmp_rules(target: str, key: str, needle: str, message: str) -> None:
    assert_error(snmp(target), f"alerting.snmp.targets[0].{key}", f"- {{{needle}", message)


def test_snmp_v3_levels() -> None:
    config = parse_config(snmp("{host: h, version: v3, user: u}"))
    t = config.alerting.snmp_targets[0]
    assert (t.version, t.user, t.auth_key, t.priv_key) == ("3", "u", None, None)
    t = parse_config(snmp("{host: h, version: '3', user: u, auth_key: abcdefgh, "
                          "auth_protocol: SHA1, priv_key: 12345678, priv_protocol: aes}")
                     ).alerting.snmp_targets[0]
    assert (t.auth_key, t.priv_key, t.auth_protocol, t.priv_protocol) == (
        "abcdefgh", "12345678", "sha", "aes128")


def test_snmp_target_lines_in_block_style() -> None:
    text = cfg(dd("""\
        alerting:
          snmp:
            targets:
              - host: 192.0.2.9
                community: public
              - host: 192.0.2.9
                version: 3
                user: minisft
                priv_key_file: /nonexistent/priv.key
    """))
    assert_error(text, "alerting.snmp.targets[1].auth_key", "- host: 192.0.2.9",
                 "required when a priv key is set", nth=2)


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINISFT_TEST_COMMUNITY", "c0mmunity")
    t = parse_config(snmp("{host: h, community_env: MINISFT_TEST_COMMUNITY}")
                     ).alerting.snmp_targets[0]
    assert t.community == "c0mmunity"
    monkeypatch.delenv("MINISFT_TEST_COMMUNITY")
    assert_error(snmp("{host: h, community_env: MINISFT_TEST_COMMUNITY}"),
                 "alerting.snmp.targets[0].community_env", "host",
                 "environment variable MINISFT_TEST_COMMUNITY is not set")


def test_prometheus_listen() -> None:
    ok = parse_config(cfg("alerting:\n  prometheus: {listen: '[::1]:9523'}\n"))
    assert ok.alerting.prometheus_listen == "[::1]:9523"
    text = cfg("alerting:\n  prometheus:\n    listen: 127.0.0.1\n")
    assert_error(text, "alerting.prometheus.listen", "listen:", "expected host:port")


def test_alerting_numbers() -> None:
    text = cfg("alerting:\n  queue_size: 0\n")
    assert_error(text, "alerting.queue_size", "queue_size", "between 1 and 1000000")


def test_logging_rules() -> None:
    text = cfg("logging:\n  level: verbose\n  syslog_facility: local9\n")
    assert_error(text, "logging.level", "verbose", "expected one of debug, info")
    assert_error(text, "logging.syslog_facility", "local9", r"did you mean 'local\d'")
    ok = parse_config(cfg("logging: {level: WARN, syslog: false}\n")).logging
    assert (ok.level, ok.syslog) == ("warning", False)


def test_apprise_needs_a_destination() -> None:
    text = cfg("alerting:\n  apprise:\n    min_severity: notice\n")
    assert_error(text, "alerting.apprise", "apprise:", "needs urls, urls_file or config")


def test_apprise_bad_url_is_not_echoed() -> None:
    text = cfg("alerting:\n  apprise:\n    urls:\n      - json://ok/x\n"
               "      - 'user:hunter2@mail.example.com'\n")
    e = assert_error(text, "alerting.apprise.urls[1]", "hunter2", "expected an apprise URL")
    assert "hunter2" not in e.report()


def test_apprise_templates_are_checked() -> None:
    text = cfg("alerting:\n  apprise:\n    urls: [json://x/y]\n    title: '{node'\n")
    assert_error(text, "alerting.apprise.title", "title", "not a valid template")


def test_apprise_url_mapping_keys() -> None:
    text = cfg("alerting:\n  apprise:\n    urls:\n      - {url: json://x/y, kind: [takeover]}\n")
    assert_error(text, "alerting.apprise.urls[0].kind", "kind:", "did you mean 'kinds'")


def test_apprise_urls_file(tmp_path: Path) -> None:
    urls = private(tmp_path / "urls.txt", "\n# comment\nmailto://me:pw@example.com\n")
    config = parse_config(cfg(f"alerting:\n  apprise:\n    urls_file: {urls}\n"))
    assert config.alerting.apprise is not None
    assert config.alerting.apprise.urls == ("mailto://me:pw@example.com",)
    private(urls, "mailto://me:pw@example.com\nme:topsecret\n")
    text = cfg(f"alerting:\n  apprise:\n    urls_file: {urls}\n")
    e = assert_error(text, "alerting.apprise.urls_file", "urls_file",
                     f"line 2 of {urls} is not an apprise URL")
    assert "topsecret" not in e.report()


# ====================================================================== secret files


@pytest.fixture
def key_target(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "auth.key"
    return key, snmp(f"{{host: h, version: 3, user: u, auth_key_file: {key}}}")


def test_key_file_is_read_and_newline_stripped(key_target: tuple[Path, str]) -> None:
    key, text = key_target
    private(key, "passphrase-1\n")
    assert parse_config(text).alerting.snmp_targets[0].auth_key == "passphrase-1"


def test_key_file_must_exist(key_target: tuple[Path, str]) -> None:
    key, text = key_target
    assert_error(text, "alerting.snmp.targets[0].auth_key_file", "host",
                 f"no such file: {key}")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_key_file_must_not_be_group_or_world_accessible(key_target: tuple[Path, str],
                                                        mode: int) -> None:
    key, text = key_target
    private(key, "passphrase-1\n", mode)
    e = assert_error(text, "alerting.snmp.targets[0].auth_key_file", "host",
                     f"mode {mode:04o}")
    assert f"chmod 600 {key}" in str(e)
    assert "passphrase-1" not in e.report()


def test_key_file_must_be_a_file(key_target: tuple[Path, str]) -> None:
    key, text = key_target
    key.mkdir(mode=0o700)
    assert_error(text, "alerting.snmp.targets[0].auth_key_file", "host",
                 "not a regular file")


def test_key_file_must_be_readable(key_target: tuple[Path, str]) -> None:
    """check-config names the key of a file it may not read. Root reads any file, so as
    root the check runs without the capabilities that bypass file permissions."""
    key, text = key_target
    private(key, "passphrase-1\n", 0o000)
    config = private(key.with_name("minisft.yaml"), text)
    argv = [sys.executable, "-m", "minisft", "check-config", "--config", str(config)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    line = line_of(text, "host")
    assert re.search(rf"minisft.yaml:{line}: alerting\.snmp\.targets\[0\]\.auth_key_file: "
                     r".*permission denied", done.stderr + done.stdout), done


def test_relative_key_file_is_resolved_against_the_config(tmp_path: Path) -> None:
    private(tmp_path / "auth.key", "passphrase-2")
    path = private(tmp_path / "minisft.yaml",
                   snmp("{host: h, version: 3, user: u, auth_key_file: auth.key}"), 0o644)
    assert load_config(path).alerting.snmp_targets[0].auth_key == "passphrase-2"


# ====================================================================== pools


def pool(body: str, key: Path | None = None) -> str:
    head = ("pools:\n  - name: front\n    members:\n"
            "      - {name: alpha, ip: 192.0.2.1}\n      - {name: beta, ip: 192.0.2.2}\n"
            "    addresses: [192.0.2.101/24, 2001:db8::101/64]\n")
    if key is not None:
        head += f"    key_file: {key}\n"
    return cfg(head + textwrap.indent(textwrap.dedent(body), "    "))


@pytest.fixture
def pool_key(tmp_path: Path) -> Path:
    return private(tmp_path / "pool.key", os.urandom(32))


def test_pool_parses(pool_key: Path) -> None:
    config = parse_config(pool("watch: neighbor\npreferred: {192.0.2.101/24: beta}\n"
                               "port: 7500\n", pool_key))
    (p,) = config.pools
    assert p.key == pool_key.read_bytes().rstrip(b"\r\n")
    assert (p.watch, p.preferred, p.port) == ("neighbour", {"192.0.2.101": "beta"}, 7500)
    assert p.addresses[1] == ipaddress.ip_interface("2001:db8::101/64")


def test_pool_key_file_is_required() -> None:
    assert_error(pool(""), "pools[0].key_file", "- name: front", "required")


def test_pool_key_is_long_enough(pool_key: Path) -> None:
    private(pool_key, b"0123456789abcde\n")
    assert_error(pool("", pool_key), "pools[0].key_file", "key_file",
                 "too short: at least 16 bytes")


def test_pool_key_file_mode(pool_key: Path) -> None:
    pool_key.chmod(0o644)
    e = assert_error(pool("", pool_key), "pools[0].key_file", "key_file", "chmod 600")
    assert str(pool_key) in e.message


def test_pool_must_include_this_node(pool_key: Path) -> None:
    text = pool("", pool_key).replace("name: alpha, ip", "name: gamma, ip")
    assert_error(text, "pools[0].members", "members:", r"this node \(alpha")


@pytest.mark.parametrize(("body", "key", "needle", "message"), [
    ("preferred: {192.0.2.199: alpha}\n", "preferred[\"192.0.2.199\"]", "192.0.2.199",
     "not one of this pool's addresses"),
    ("preferred: {192.0.2.101: alfa}\n", "preferred[\"192.0.2.101\"]", "alfa",
     r"expected a member of this pool, got a string \(not shown.*\(did you mean 'alpha'\?\)"),
    ("watch: ring\n", "watch", "watch: ring", "expected one of neighbour, all"),
    ("witness: 300.1.1.1\n", "witness", "witness: 300", "expected an IPv4 or IPv6"),
    ("port: 0\n", "port", "port: 0", "between 1 and 65535"),
    ("looksalive: {retry: 0}\n", "looksalive.retry", "retry: 0", "between 1 and 1000"),
])
def test_pool_rules(pool_key: Path, body: str, key: str, needle: str, message: str) -> None:
    assert_error(pool(body, pool_key), f"pools[0].{key}", needle, message)


def test_pool_addresses_rules(pool_key: Path) -> None:
    base = pool("", pool_key)
    text = base.replace("[192.0.2.101/24, 2001:db8::101/64]", "[192.0.2.101]")
    assert_error(text, "pools[0].addresses[0]", "addresses", "with its prefix")
    text = base.replace("2001:db8::101/64", "192.0.2.101/25")
    assert_error(text, "pools[0].addresses[1]", "addresses", "192.0.2.101 is listed twice")
    text = cfg(MONITOR) + base[len(NODE):].replace("192.0.2.101/24", "192.0.2.10/24")
    assert_error(text, "pools[0].addresses[0]", "addresses",
                 r"192.0.2.10 is already used by monitors\[0\].monitor_ip \(line 6\)")


def test_pool_members_rules(pool_key: Path) -> None:
    text = pool("", pool_key).replace("name: beta, ip: 192.0.2.2", "name: beta, ip: 192.0.2.1")
    assert_error(text, "pools[0].members[1].ip", "name: beta", "listed twice")
    text = pool("", pool_key).replace("      - {name: beta, ip: 192.0.2.2}\n", "")
    assert_error(text, "pools[0].members", "members:", "at least two members")
    text = pool("", pool_key).replace("ip: 192.0.2.2}", "ip: 192.0.2.2, weight: 0}")
    assert_error(text, "pools[0].members[1].weight", "weight", "between 1 and 1000")
    text = pool("", pool_key).replace("ip: 192.0.2.2}", "ip: '2001:db8::2'}")
    assert_error(text, "pools[0].members", "members:", "mix IPv4 and IPv6")


# ====================================================================== paths


def test_relative_paths_resolve_against_the_config_dir(tmp_path: Path) -> None:
    path = private(tmp_path / "minisft.yaml",
                   cfg("state_dir: state\ncontrol_socket: run/minisft.sock\n"), 0o644)
    config = load_config(path)
    assert config.state_dir == tmp_path / "state"
    assert config.control_socket == tmp_path / "run" / "minisft.sock"
    assert config.source == path


def test_parse_config_base_dir(tmp_path: Path) -> None:
    config = parse_config(cfg("state_dir: s\n"), base_dir=tmp_path)
    assert config.state_dir == tmp_path / "s"


def test_control_socket_path_length() -> None:
    text = cfg(f"control_socket: /{'x' * 120}.sock\n")
    assert_error(text, "control_socket", "control_socket", "too long for a unix socket")


# ====================================================================== YAML and files


def test_duplicate_keys_are_errors() -> None:
    text = cfg(MONITOR, "    role: primary\n")
    assert_error(text, "monitors[0].role", "role: primary",
                 r"duplicate key \(first given on line 8\)")


@pytest.mark.parametrize(("text", "message", "line"), [
    ("", "the file is empty", 1),
    ("- a\n- b\n", "the file must be a mapping of keys", 1),
    ("node:\n\tname: a\n", "indent with spaces, not tabs", 2),
    ("node: {name: a\nmonitors: []\n", "not valid YAML", 2),
    ("a: 1\n---\nb: 2\n", "expected a single document", 2),
    ("node: !!python/object:os.system {}\n", "unsupported YAML tag", 1),
    ("node: {name: !vault abc}\n", "could not determine a constructor", 1),
    ("x-a: &a [*a]\n", "alias refers to a node that contains it", 1),
    ("x-a: &a {<<: *a}\n", "alias refers to a node that contains it", 1),
])
def test_bad_yaml(text: str, message: str, line: int) -> None:
    e = error(text)
    assert message in str(e)
    assert e.line == line


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["x-0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    lines += [f"x-{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    e = error("\n".join(lines) + "\n")
    assert "expands to more than" in str(e)


def test_deep_nesting_is_refused() -> None:
    assert "nested" in str(error("node: " + "[" * 3000 + "]" * 3000 + "\n"))
    assert "nested" in str(error("node: " + "[" * 60 + "]" * 60 + "\n"))


def test_yaml_error_does_not_quote_the_secret_line() -> None:
    text = snmp('{host: h, version: 3, user: u, auth_key: "s3cret-value-xyz}')
    assert "s3cret-value-xyz" not in error(text).report()


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such file") as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: no such file"
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text(NODE + "#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_config(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(NODE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_config(latin)
    assert info.value.line == 4


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + cfg(MONITOR).encode())
    assert load_config(path).node.name == "alpha"


# ====================================================================== secrets stay secret

SECRETS = ("Comm-S3cret", "Auth-S3cret-123", "Priv-S3cret-456", "Url-S3cret-pw",
           "Pool-S3cret-key-0123456789")


def secret_config(tmp_path: Path, extra: str = "") -> str:
    key = private(tmp_path / "pool.key", SECRETS[4])
    return cfg(MONITOR, dd(f"""\
        alerting:
          snmp:
            targets:
              - {{host: h1, community: {SECRETS[0]}}}
              - {{host: h2, version: 3, user: u, auth_key: {SECRETS[1]},
                  priv_key: {SECRETS[2]}}}
          apprise:
            urls: ["mailto://me:{SECRETS[3]}@example.com",
                   {{url: "json://u:{SECRETS[3]}@x/y", kinds: [takeover]}}]
        pools:
          - name: front
            members: [{{name: alpha, ip: 192.0.2.1}}, {{name: beta, ip: 192.0.2.2}}]
            addresses: [192.0.2.101/24]
            key_file: {key}
    """), extra)


def test_secrets_are_loaded_but_not_in_repr(tmp_path: Path) -> None:
    config = parse_config(secret_config(tmp_path))
    t1, t2 = config.alerting.snmp_targets
    assert (t1.community, t2.auth_key, t2.priv_key) == SECRETS[:3]
    assert config.pools[0].key == SECRETS[4].encode()
    assert config.alerting.apprise is not None
    assert SECRETS[3] in str(config.alerting.apprise.urls)
    text = repr(config) + str(config)
    for secret in SECRETS:
        assert secret not in text


def test_secrets_are_not_in_errors(tmp_path: Path) -> None:
    text = secret_config(tmp_path, "bogus: 1\n").replace("user: u,", "user: u, port: x,")
    text = text.replace("kinds: [takeover]", "kinds: [takeovr]")
    e = error(text)
    assert len(e.errors) == 3
    report = e.report() + repr(e.errors) + " ".join(e.message for e in e.errors)
    for secret in SECRETS:
        assert secret not in report


def test_bad_secret_values_are_described_not_shown() -> None:
    e = error(snmp("{host: h, version: 3, user: u, auth_key: [Hidden-Val-1]}"))
    assert "Hidden-Val-1" not in e.report() and "not shown" in e.message
    e = error(snmp("{host: h, version: 3, user: u, auth_key: Short7}"))
    assert "Short7" not in e.report() and "too short" in e.message


def test_check_config_imports_are_light() -> None:
    import subprocess
    import sys

    code = ("import sys; import minisft.config.loader; "
            "bad = {'asyncio', 'ssl', 'pysnmp', 'apprise', 'pyroute2', 'requests'} & "
            "set(sys.modules); print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_package_exports() -> None:
    import minisft.config as pkg

    assert pkg.load_config is load_config and pkg.ConfigError is ConfigError
    assert pkg.parse_duration is parse_duration
    assert isinstance(parse_config(cfg(MONITOR)), Config)
    assert {k.value for k in EventKind} >= {"takeover"}


def test_secrets_false_reads_no_secret_files(tmp_path: Path) -> None:
    """A non-root CLI user gets the layout without the root-only key files."""
    text = dd(f"""\
        node: {{name: alpha, local_ip: 192.0.2.1}}
        alerting:
          snmp:
            targets:
              - {{host: h, community_file: {tmp_path}/missing}}
              - {{host: h, version: 3, user: u, auth_key_env: MINISFT_UNSET_VARIABLE}}
          apprise: {{urls_file: {tmp_path}/missing-urls}}
        pools:
          - name: front
            members: [{{name: alpha, ip: 192.0.2.1}}, {{name: beta, ip: 192.0.2.2}}]
            addresses: [192.0.2.101/24]
            key_file: {tmp_path}/missing-key
    """)
    assert len(collect_errors(text)) == 4
    config = parse_config(text, secrets=False)
    assert config.alerting.snmp_targets[0].community is None
    assert config.alerting.snmp_targets[1].auth_key is None
    assert config.pools[0].key is None
    # the rules that do not need the secret still apply
    assert_error(text.replace("community_file", "user"), "alerting.snmp.targets[0].user",
                 "user:", "only applies to SNMP version 3")


@pytest.mark.parametrize(("looksalive", "probe", "expected"), [
    # the round (count x interval) must end by the last retry, or it delays the takeover
    ("{interval: 100ms, retry: 3, timeout: 33ms}", "", ProbeConfig(3, 0.022)),
    ("{interval: 100ms, retry: 3, timeout: 33ms}", "probe: {count: 2}", ProbeConfig(2, 0.033)),
    ("{interval: 1s, retry: 3, timeout: 1s}", "", ProbeConfig(3, 0.05)),  # capped at 50 ms
    ("{interval: 1s, retry: 1, timeout: 1s}", "", ProbeConfig(3, 0.01)),  # floor 10 ms
    ("{interval: 100ms, retry: 3, timeout: 33ms}", "probe: {interval: 80ms}",
     ProbeConfig(3, 0.08)),  # an explicit interval wins
])
def test_probe_spacing_defaults_to_fit_inside_the_retries(looksalive: str, probe: str,
                                                          expected: ProbeConfig) -> None:
    text = cfg(MONITOR, f"    looksalive: {looksalive}\n", f"    {probe}\n" if probe else "")
    (web,) = parse_config(text, "<string>").monitors
    assert web.probe == expected
    la = web.looksalive
    if "interval" not in probe:
        assert web.probe.duration <= max(0.03, (la.retry - 1) * la.timeout) + 1e-9
