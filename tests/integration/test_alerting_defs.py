"""The shipped alerting definitions, validated by the real tools.

icinga2, nagios4, promtool, snmptrapd/snmptrap and apprise must be installed: a missing
tool FAILS these tests (CI installs them: icinga2-bin icinga2-common nagios4-core
monitoring-plugins-basic prometheus snmptrapd snmp).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from minisft.monitoring.prometheus import render_metrics
from minisft.nagios.plugin import build_parser
from minisft.status import StatusDocument

ROOT = Path(__file__).resolve().parents[2]
ALERTING = ROOT / "alerting"


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install -y --no-install-recommends "
                    "icinga2-bin icinga2-common nagios4-core monitoring-plugins-basic "
                    "prometheus snmptrapd snmp")
    return path


def sh(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, **kw)


def plugin_options() -> set[str]:
    return {opt for action in build_parser()._actions for opt in action.option_strings}


# ------------------------------------------------------------------------------ status data


def _monitor(name: str, role: str, state: str, holder: str, **over: Any) -> dict[str, Any]:
    mon: dict[str, Any] = {
        "name": name, "address": "192.0.2.10", "prefixlen": 24, "role": role,
        "state": state, "purpose": None, "paused": False, "holder": holder,
        "holder_mac": None, "reason": "test", "link_up": True, "conflict_open": False,
        "seconds_since_change": 5.0,
        "looksalive": {"health": "up", "misses": 0, "icmp_misses": 0, "rtt_ms": 0.3,
                       "sent": 10, "lost": 0},
        "isalive": {"enabled": True, "check": "tcp", "ok": True, "dead": False,
                    "latency_ms": 2.0, "detail": ""},
        "peer": {"ip": "192.0.2.1", "health": "up", "rtt_ms": 0.2, "up_for": 3.0,
                 "fallback": "auto", "hold_down": 60.0, "auto_fallback_suspended": False},
        "counters": {"takeovers": 1, "claims": 0, "releases": 0, "fallbacks": 0,
                     "yields": 0, "conflicts": 0, "service_alarms": 0},
        "last_change_time": 1_700_000_000.0,
    }
    mon.update(over)
    return mon


def alarm_status(dropped: int = 0, yields: int = 0) -> StatusDocument:
    """One monitor per alert condition, and a sink that drops."""
    return StatusDocument.from_dict({
        "version": 1, "node": "alpha", "pid": 1, "started_at": 1_700_000_000.0,
        "updated_at": 1_700_000_100.0, "software_version": "0.1.0", "last_event_seq": 7,
        "monitors": [
            _monitor("fine", "primary", "holding", "self"),
            _monitor("nobody", "backup", "watching", "none",
                     looksalive={"health": "down", "misses": 3, "icmp_misses": 3,
                                 "rtt_ms": None, "sent": 10, "lost": 3}),
            _monitor("clash", "primary", "holding", "self", conflict_open=True),
            _monitor("dead", "backup", "watching", "other",
                     isalive={"enabled": True, "check": "http", "ok": False, "dead": True,
                              "latency_ms": None, "detail": "refused"}),
            _monitor("moved", "backup", "holding", "self"),
            _monitor("split", "backup", "watching", "other",
                     counters={"takeovers": 1, "claims": 0, "releases": 0, "fallbacks": 0,
                               "yields": yields, "conflicts": 0, "service_alarms": 0}),
        ],
        "sinks": [{"name": "snmp-192.0.2.9-162-v2c-trap", "delivered": 10, "pending": 3,
                   "dropped": dropped, "failures": 4, "last_error": "timeout",
                   "state": "retrying"}],
        "pools": [{"name": "front", "member": "alpha", "phase": "active", "placement": [
            {"address": "192.0.2.50/24", "owner": "alpha", "preferred": "alpha",
             "state": "held", "holders": ["alpha"], "moves": 0},
            {"address": "192.0.2.51/24", "owner": "alpha", "preferred": "beta",
             "state": "held", "holders": ["alpha"], "moves": 1},
            {"address": "192.0.2.52/24", "owner": None, "preferred": "beta",
             "state": "free", "holders": [], "moves": 1},
            {"address": "192.0.2.53/24", "owner": "alpha", "preferred": "alpha",
             "state": "duplicate", "holders": ["alpha", "beta"], "moves": 0}]}],
    })


# ------------------------------------------------------------------------------ Prometheus


@pytest.mark.parametrize("status", [alarm_status(), StatusDocument(),
                                    StatusDocument.from_dict({"monitors": [], "sinks": []})],
                         ids=["alarms", "empty", "no-monitors"])
def test_promtool_check_metrics(status: StatusDocument) -> None:
    proc = sh(tool("promtool"), "check", "metrics", input=render_metrics(status).decode())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == ""  # no lint findings


def test_promtool_check_rules() -> None:
    proc = sh(tool("promtool"), "check", "rules",
              str(ALERTING / "prometheus" / "minisft-rules.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 12 rules found" in proc.stdout


def _series(before: bytes, after: bytes, steps: int) -> list[dict[str, str]]:
    """promtool input series going linearly from one rendering to the next."""
    pattern = re.compile(r"^(\w+(?:\{.*\})?) (\S+)$")

    def parse(body: bytes) -> dict[str, float]:
        out = {}
        for line in body.decode().splitlines():
            if line.startswith("#"):
                continue
            m = pattern.match(line)
            assert m, line
            out[m.group(1)] = float(m.group(2))
        return out

    a, b = parse(before), parse(after)
    assert a.keys() == b.keys()
    return [{"series": key, "values": f"{a[key]:g}+{(b[key] - a[key]) / steps:g}x{steps}"}
            for key in a]


def test_alert_rules_fire_on_rendered_metrics(tmp_path: Path) -> None:
    """The rule expressions against what render_metrics really exposes, via promtool test.

    Annotations are stripped from the copy under test (promtool would compare their text;
    `check rules` above already parses their templates)."""
    rules = yaml.safe_load((ALERTING / "prometheus" / "minisft-rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))

    series = _series(render_metrics(alarm_status(0)),
                     render_metrics(alarm_status(30, yields=1)), 30)
    series.append({"series": 'up{job="minisft",instance="beta:9523"}', "values": "0x30"})
    sev = {"severity": "critical"}
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "MiniSFTAddressHeldByNobody",
                 "exp_alerts": [{"exp_labels": {**sev, "monitor": "nobody",
                                                "holder": "none"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTAddressConflict",
                 "exp_alerts": [{"exp_labels": {**sev, "monitor": "clash"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTAddressYielded",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "monitor": "split"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTServiceDead",
                 "exp_alerts": [{"exp_labels": {**sev, "monitor": "dead"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTFailoverActive",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "monitor": "moved"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTSinkDroppingEvents",
                 "exp_alerts": [{"exp_labels": {"severity": "warning",
                                                "sink": "snmp-192.0.2.9-162-v2c-trap"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTSinkFailing",
                 "exp_alerts": [{"exp_labels": {"severity": "warning",
                                                "sink": "snmp-192.0.2.9-162-v2c-trap"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTPoolAddressHeldByNobody",
                 "exp_alerts": [{"exp_labels": {**sev, "pool": "front", "state": "free",
                                                "address": "192.0.2.52/24"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTPoolAddressHeldTwice",
                 "exp_alerts": [{"exp_labels": {**sev, "pool": "front", "state": "duplicate",
                                                "address": "192.0.2.53/24"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTPoolAddressNotOnPreferred",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "pool": "front",
                                                "address": "192.0.2.51/24"}}]},
                {"eval_time": "10m", "alertname": "MiniSFTDown",
                 "exp_alerts": [{"exp_labels": {**sev, "job": "minisft",
                                                "instance": "beta:9523"}}]},
            ],
        }],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    proc = sh(tool("promtool"), "test", "rules", "tests.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_shipped_rule_unit_tests_pass() -> None:
    """The rule unit tests an admin runs: `promtool test rules` on the shipped file."""
    proc = sh(tool("promtool"), "test", "rules", "minisft-rules.test.yml",
              cwd=ALERTING / "prometheus")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_shipped_rule_unit_tests_use_exported_series() -> None:
    """Every series in the shipped rule tests is one the daemon exports (or Prometheus'
    own `up`), with the daemon's label names plus `job`/`instance`: a test written
    against a made-up metric would pass while the rule never fires."""
    exported: dict[str, set[str]] = {}
    sample = re.compile(r"^(\w+)(?:\{(.*)\})? ")
    for line in render_metrics(alarm_status(3)).decode().splitlines():
        m = sample.match(line)
        if m:
            exported[m.group(1)] = set(re.findall(r'(\w+)="', m.group(2) or ""))
    exported["up"] = set()
    tests = yaml.safe_load((ALERTING / "prometheus" / "minisft-rules.test.yml").read_text())
    seen = set()
    for case in tests["tests"]:
        for item in case["input_series"]:
            m = re.match(r"^(\w+)\{(.*)\}$", item["series"])
            assert m, item["series"]
            name, labels = m.group(1), set(re.findall(r'(\w+)="', m.group(2)))
            assert name in exported, f"{name} is not exported by the daemon"
            assert labels == exported[name] | {"job", "instance"}, (name, labels)
            seen.add(name)
    rules = yaml.safe_load((ALERTING / "prometheus" / "minisft-rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tested = {t["alertname"] for c in tests["tests"] for t in c["alert_rule_test"]}
    assert tested == alerts


def test_failover_alert_fires_at_the_first_evaluation_that_sees_it(tmp_path: Path) -> None:
    """The issue's measurement: MiniSFTFailoverActive fired 65 s after the takeover. A
    failover is a decided fact, not a flap: with the metric at 1 from one scrape on, the
    alert fires at that very evaluation (a `for:` would keep it pending), and it is not
    firing a scrape earlier."""
    rules = yaml.safe_load((ALERTING / "prometheus" / "minisft-rules.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "MiniSFTFailoverActive")
    rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [
        {"name": "minisft", "rules": [rule]}]}))
    series = [{"series": 'minisft_monitor_failed_over{monitor="web",instance="beta:9523"}',
               "values": "0 0 0 1 1 1 1"}]
    firing = [{"exp_labels": {"severity": "warning", "monitor": "web",
                              "instance": "beta:9523"}}]
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s", "input_series": series,
        "alert_rule_test": [
            {"eval_time": "30s", "alertname": "MiniSFTFailoverActive", "exp_alerts": []},
            {"eval_time": "45s", "alertname": "MiniSFTFailoverActive", "exp_alerts": firing},
        ]}]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    proc = sh(tool("promtool"), "test", "rules", "tests.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------ Icinga 2

ICINGA_PLUGIN_DIRS = """\
const PluginDir = "/usr/lib/nagios/plugins"
const ManubulonPluginDir = "/usr/lib/nagios/plugins"
const PluginContribDir = "/usr/lib/nagios/plugins"
"""
ICINGA_CONSTANTS = ICINGA_PLUGIN_DIRS + """\
const NodeName = "{node}"
const ZoneName = "{node}"
include "zones.conf"
include <itl>
include <plugins>
"""
# the zone layout the header of minisft.conf tells the admin to write
ICINGA_ZONES = """\
object Endpoint "master.example.org" { }
object Zone "master" { endpoints = [ "master.example.org" ] }
object Endpoint "lb-alpha" { host = "192.0.2.21" }
object Zone "lb-alpha" { endpoints = [ "lb-alpha" ]; parent = "master" }
object Zone "global-templates" { global = true }
"""
ICINGA_HOSTS = """\
object Host "lb-alpha" {
  check_command = "dummy"
  address = "192.0.2.21"
  vars.minisft_monitors = [ "web", "db" ]
  vars.minisft_pools = [ "front" ]
  vars.minisft_warning = "5"
  vars.minisft_agent_endpoint = "lb-alpha"
}
object Host "pool-only" {
  check_command = "dummy"
  vars.minisft_pools = [ "front" ]
}
object Host "unrelated" {
  check_command = "dummy"
}
"""


def _icinga2(tree: Path, node: str,
             extra: str = "") -> tuple[subprocess.CompletedProcess[str], Path]:
    """`icinga2 daemon -C` as node `node` on a throw-away tree under `tree`: etc/ holds
    icinga2.conf, zones.conf and zones.d/; the directory constants point into `tree`, so
    nothing under /etc, /var/lib, /var/cache, /var/log or /run is touched."""
    etc = tree / "etc"
    for sub in ("data", "log", "cache", "spool", "run"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    (etc / "icinga2.conf").write_text(ICINGA_CONSTANTS.format(node=node) + extra)
    (etc / "zones.conf").write_text(ICINGA_ZONES)
    d = tree
    proc = sh(tool("icinga2"), "daemon", "-C", "-c", str(etc / "icinga2.conf"),
              f"-DConfigDir={etc}", f"-DZonesDir={etc}/zones.d",
              f"-DDataDir={d}/data", f"-DLogDir={d}/log", f"-DCacheDir={d}/cache",
              f"-DSpoolDir={d}/spool", f"-DInitRunDir={d}/run",
              "-DRunAsUser=root", "-DRunAsGroup=root")
    return proc, d / "cache" / "icinga2.debug"


def _icinga_master(tree: Path, rules: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The master, with the files where the header says: zones.d/master/minisft.conf,
    zones.d/global-templates/minisft-command.conf, and the header's host example."""
    master = tree / "etc" / "zones.d" / "master"
    templates = tree / "etc" / "zones.d" / "global-templates"
    master.mkdir(parents=True)
    templates.mkdir(parents=True)
    shutil.copy(rules, master / "minisft.conf")
    shutil.copy(ALERTING / "icinga2" / "minisft-command.conf", templates)
    (master / "hosts.conf").write_text(ICINGA_HOSTS)
    return _icinga2(tree, "master.example.org")


def _icinga_objects(path: Path) -> list[dict[str, Any]]:
    """The objects file icinga2 -C writes: netstrings, one JSON object each."""
    data, i, out = path.read_bytes(), 0, []
    while i < len(data):
        colon = data.index(b":", i)
        n = int(data[i:colon])
        out.append(json.loads(data[colon + 1:colon + 1 + n]))
        i = colon + 1 + n + 1
    return out


def test_icinga2_master_and_agent_zones_validate_and_apply(tmp_path: Path) -> None:
    proc, objects_path = _icinga_master(tmp_path, ALERTING / "icinga2" / "minisft.conf")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Finished validating the configuration file(s)" in out
    assert not re.search(r"(warning|critical)/config", out), out

    objects = _icinga_objects(objects_path)
    services = {f'{o["properties"]["host_name"]}!{o["name"]}': o["properties"]
                for o in objects if o["type"] == "Service"}
    assert set(services) == {"lb-alpha!minisft-web", "lb-alpha!minisft-db",
                             "lb-alpha!minisft-pool-front", "lb-alpha!minisft-daemon",
                             # a node with pools and no monitors still gets its daemon
                             "pool-only!minisft-pool-front", "pool-only!minisft-daemon"}
    assert services["lb-alpha!minisft-web"]["vars"] == {"minisft_monitor": "web",
                                                       "minisft_no_sinks": True}
    assert services["lb-alpha!minisft-pool-front"]["vars"] == {"minisft_pool": "front",
                                                              "minisft_no_sinks": True}
    assert services["lb-alpha!minisft-daemon"]["vars"] == {"minisft_no_monitors": True}
    for name, service in services.items():
        if name.startswith("pool-only!"):
            assert not service["command_endpoint"]  # no agent: NRPE or local instead
            continue
        assert service["check_command"] == "minisft"
        assert service["command_endpoint"] == "lb-alpha"  # runs on the node's agent
        assert service["zone"] == "master"

    # every argument the CheckCommand passes is an option check_minisft accepts
    command = next(o["properties"] for o in objects
                   if o["type"] == "CheckCommand" and o["name"] == "minisft")
    assert command["zone"] == "global-templates"  # synced to the agents
    assert command["command"] == ["/usr/lib/nagios/plugins/check_minisft"]
    assert set(command["arguments"]) <= plugin_options(), set(command["arguments"])


def test_icinga2_agent_knows_the_command_from_the_global_zone(tmp_path: Path) -> None:
    """The agent lb-alpha, with the global zone as the master's config sync leaves it
    (DataDir/api/zones/global-templates/_etc/), has the CheckCommand it must execute."""
    synced = tmp_path / "data" / "api" / "zones" / "global-templates" / "_etc"
    synced.mkdir(parents=True)
    shutil.copy(ALERTING / "icinga2" / "minisft-command.conf", synced)
    (tmp_path / "etc" / "zones.d").mkdir(parents=True)
    proc, objects_path = _icinga2(tmp_path, "lb-alpha")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert any(o["type"] == "CheckCommand" and o["name"] == "minisft"
               for o in _icinga_objects(objects_path)), out


def test_icinga2_endpoint_outside_a_zone_is_rejected(tmp_path: Path) -> None:
    """The layout the old header described (rules in conf.d/, no zone) is what Icinga
    refuses; the test above would catch a regression to it."""
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "zones.d").mkdir()
    for name in ("minisft.conf", "minisft-command.conf"):
        shutil.copy(ALERTING / "icinga2" / name, etc / "conf.d")
    (etc / "conf.d" / "hosts.conf").write_text(ICINGA_HOSTS)
    proc, _ = _icinga2(tmp_path, "master.example.org", 'include_recursive "conf.d"\n')
    assert proc.returncode != 0
    assert "command endpoint requires a zone" in proc.stdout + proc.stderr


def test_icinga2_rejects_a_broken_copy(tmp_path: Path) -> None:
    # proves the validation above really reads our file
    broken = tmp_path / "broken.conf"
    text = (ALERTING / "icinga2" / "minisft.conf").read_text()
    broken.write_text(text.replace('check_command = "minisft"', 'check_command = "nope"', 1))
    proc, _ = _icinga_master(tmp_path / "tree", broken)
    assert proc.returncode != 0
    assert "nope" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------ Nagios 4

NAGIOS_OBJECTS = """\
define timeperiod {
    timeperiod_name 24x7
    alias           always
    monday 00:00-24:00
    tuesday 00:00-24:00
    wednesday 00:00-24:00
    thursday 00:00-24:00
    friday 00:00-24:00
    saturday 00:00-24:00
    sunday 00:00-24:00
}
define command {
    command_name notify-dummy
    command_line /bin/true
}
define command {
    command_name check-host-dummy
    command_line /bin/true
}
define contact {
    contact_name                  ops
    contactgroups                 minisft-admins
    host_notifications_enabled    1
    service_notifications_enabled 1
    host_notification_period      24x7
    service_notification_period   24x7
    host_notification_options     d,u,r
    service_notification_options  w,u,c,r
    host_notification_commands    notify-dummy
    service_notification_commands notify-dummy
}
define host {
    host_name           lb-alpha
    address             127.0.0.1
    check_command       check-host-dummy
    max_check_attempts  3
    check_period        24x7
    notification_period 24x7
    contacts            ops
}
define host {
    host_name           lb-beta
    address             127.0.0.2
    check_command       check-host-dummy
    max_check_attempts  3
    check_period        24x7
    notification_period 24x7
    contacts            ops
}
"""


def _nagios4(tmp_path: Path, cfg: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "objects.cfg").write_text(NAGIOS_OBJECTS)
    (tmp_path / "resource.cfg").write_text("$USER1$=/usr/lib/nagios/plugins\n")
    (tmp_path / "cr").mkdir(exist_ok=True)
    d = tmp_path
    main = tmp_path / "nagios.cfg"
    main.write_text("\n".join([
        f"log_file={d}/nagios.log", f"cfg_file={d}/objects.cfg", f"cfg_file={cfg}",
        f"resource_file={d}/resource.cfg", f"object_cache_file={d}/objects.cache",
        f"precached_object_file={d}/objects.precache", f"status_file={d}/status.dat",
        f"temp_file={d}/nagios.tmp", f"temp_path={d}", f"lock_file={d}/nagios.lock",
        f"check_result_path={d}/cr", f"state_retention_file={d}/retention.dat",
        f"command_file={d}/nagios.cmd", "nagios_user=root", "nagios_group=root",
        "illegal_macro_output_chars=`~$&|'\"<>", "",
    ]))
    return sh(tool("nagios4"), "-v", str(main))


def test_nagios4_verifies(tmp_path: Path) -> None:
    proc = _nagios4(tmp_path, ALERTING / "nagios4" / "minisft.cfg")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Total Warnings: 0" in proc.stdout, proc.stdout
    assert "Total Errors:   0" in proc.stdout, proc.stdout
    assert "Checked 6 services." in proc.stdout  # 3 example services x 2 hosts


def test_nagios4_rejects_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cfg"
    text = (ALERTING / "nagios4" / "minisft.cfg").read_text()
    broken.write_text(text.replace("check_command           check_minisft_nrpe!",
                                   "check_command           check_nope!", 1))
    proc = _nagios4(tmp_path, broken)
    assert proc.returncode != 0
    assert "check_nope" in proc.stdout


def test_nagios_and_nrpe_command_lines_use_real_options() -> None:
    nagios = (ALERTING / "nagios4" / "minisft.cfg").read_text()
    nrpe = (ALERTING / "nrpe" / "minisft.cfg").read_text()
    lines = [line for line in (nagios + nrpe).splitlines()
             if "check_minisft " in line and not line.startswith("#")]
    assert lines
    used = {tok for line in lines for tok in re.findall(r"(?<=\s)(--?[a-z][\w-]*)", line)
            if "check_nrpe" not in line}
    assert used and used <= plugin_options(), used - plugin_options()
    # Debian's NRPE takes no arguments: no -a, no $ARGn$ on the node
    command_lines = [ln for ln in nagios.splitlines() if "check_nrpe" in ln and "#" not in ln]
    assert command_lines and not any(" -a " in ln for ln in command_lines)
    assert not any("$ARG" in ln for ln in nrpe.splitlines() if ln.startswith("command["))
    # every NRPE command a Nagios service calls is defined in the NRPE file
    defined = set(re.findall(r"^command\[(\w+)\]=", nrpe, re.M))
    called = set(re.findall(r"check_minisft_nrpe!(\w+)", nagios))
    assert called and called <= defined, called - defined


# ------------------------------------------------------------------------------ snmptrapd


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_snmptrapd_config_and_traphandler(tmp_path: Path) -> None:
    """Start snmptrapd with the shipped config on a loopback port (it has no check-only
    mode), send traps with the v2c community and the v3 user it defines, and check the
    handler logged exactly those; a wrong community must be refused."""
    snmptrapd, snmptrap = tool("snmptrapd"), tool("snmptrap")
    conf_text = (ALERTING / "snmptrapd.conf").read_text()
    handler_log = tmp_path / "traps.log"
    installed = "/usr/sbin/minisft-traphandler --log /var/log/minisft/traps.log"
    assert installed in conf_text
    conf = tmp_path / "snmptrapd.conf"
    conf.write_text(conf_text.replace(
        installed, f"{sys.executable} {ALERTING / 'minisft-traphandler'} --no-syslog "
                   f"--log {handler_log}"))
    port = _free_udp_port()
    # keep snmp's persistent state and MIB loading out of the host's directories
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(tmp_path / "persist"), "MIBS": "",
           "MIBDIRS": str(tmp_path)}
    daemon_log = tmp_path / "snmptrapd.out"
    with daemon_log.open("w") as out:
        daemon = subprocess.Popen(
            [snmptrapd, "-f", "-Lo", "-C", "-c", str(conf), "-On", "-M", str(tmp_path),
             "-m", "", f"udp:127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 10
        while "NET-SNMP version" not in daemon_log.read_text():
            assert daemon.poll() is None, daemon_log.read_text()
            assert time.monotonic() < deadline, daemon_log.read_text()
            time.sleep(0.05)
        enterprise = ".1.3.6.1.4.1.32473"
        target = f"127.0.0.1:{port}"
        sends = [
            ["-v", "2c", "-c", "minisft-traps", target, "", f"{enterprise}.1.0.1",
             f"{enterprise}.1.1.1", "s", "web"],
            ["-v", "3", "-e", "0x80001f8804706c61636568", "-u", "minisft", "-l", "authPriv",
             "-a", "SHA-256", "-A", "CHANGE-ME-auth-passphrase", "-x", "AES",
             "-X", "CHANGE-ME-priv-passphrase", target, "", f"{enterprise}.1.0.2",
             f"{enterprise}.1.1.2", "s", "db"],
            ["-v", "2c", "-c", "wrong-community", target, "", f"{enterprise}.1.0.3"],
        ]
        for argv in sends:
            proc = sh(snmptrap, *argv, env=env)
            assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 10
        while _lines(handler_log) < 2:
            assert time.monotonic() < deadline, daemon_log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)  # give a wrongly accepted third trap the chance to show up
    finally:
        daemon.terminate()
        daemon.wait(10)
    output = daemon_log.read_text()
    problems = [line for line in output.splitlines()
                if str(conf) in line or re.search(r"(?i)error|unknown token|warning", line)]
    assert not problems, output
    records = [json.loads(line) for line in handler_log.read_text().splitlines()]
    assert [r["trap_oid"] for r in records] == [f"{enterprise}.1.0.1", f"{enterprise}.1.0.2"]
    assert [r["varbinds"][-1] for r in records] == [[f"{enterprise}.1.1.1", "web"],
                                                    [f"{enterprise}.1.1.2", "db"]]


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_traphandler_reads_severity_and_forwards_with_apprise(tmp_path: Path) -> None:
    """The handler on its own, fed snmptrapd's execute format; forwarding runs the real
    apprise CLI, routed by tag to a JSON webhook on loopback."""
    apprise_cli = tool("apprise")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    port = server.server_address[1]
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "apprise.yml").write_text(
            "version: 1\nurls:\n"
            f"  - json://127.0.0.1:{port}/critical:\n      - tag: critical\n"
            f"  - json://127.0.0.1:{port}/info:\n      - tag: info\n")
        trap = ("localhost\nUDP: [127.0.0.1]:40000->[127.0.0.1]:162\n"
                ".1.3.6.1.2.1.1.3.0 0:0:01:00.00\n"
                ".1.3.6.1.6.3.1.1.4.1.0 .1.3.6.1.4.1.32473.0.7\n"
                "MINISFT-MIB::minisftEventSeverity.0 critical(2)\n"
                'MINISFT-MIB::minisftEventReason.0 "holder stopped answering"\n')
        env = {**os.environ, "PATH": f"{Path(apprise_cli).parent}:{os.environ['PATH']}"}
        proc = sh(sys.executable, str(ALERTING / "minisft-traphandler"), "--no-syslog",
                  "--log", str(tmp_path / "log"),
                  "--apprise-config", str(tmp_path / "apprise.yml"), input=trap, env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "log").read_text())
    assert record["severity"] == "critical"
    assert record["trap_oid"] == ".1.3.6.1.4.1.32473.0.7"
    assert [path for path, _ in _Collector.received] == ["/critical"]
    payload = _Collector.received[0][1]
    assert "holder stopped answering" in payload["message"]
    assert payload["title"] == "[MiniSFT critical] trap from localhost"


# ------------------------------------------------------------------------------ apprise


def test_apprise_config_routes_by_severity() -> None:
    apprise_cli = tool("apprise")
    conf = str(ALERTING / "apprise.yml")
    reached = {}
    for tag in ("critical", "warning", "info", "debug"):
        proc = sh(apprise_cli, "-c", conf, "--tag", tag, "-t", "t", "-b", "b", "--dry-run")
        assert proc.returncode in (0, 3), proc.stdout + proc.stderr  # 3: nothing matched
        reached[tag] = sorted(re.findall(r"^\s*\d+\. (\w+)://", proc.stdout, re.M))
    assert reached == {
        "critical": ["json", "mailtos", "tgram"],
        "warning": ["json", "mailtos"],
        "info": ["json"],
        "debug": [],
    }


def test_all_shipped_files_are_covered() -> None:
    shipped = {str(p.relative_to(ALERTING)) for p in ALERTING.rglob("*") if p.is_file()}
    assert shipped == {
        "README.md", "snmptrapd.conf", "minisft-traphandler", "apprise.yml",
        "icinga2/minisft.conf", "icinga2/minisft-command.conf", "nagios4/minisft.cfg",
        "nrpe/minisft.cfg", "grafana/minisft-dashboard.json", "snmptt/minisft.conf",
        "prometheus/minisft-rules.yml", "prometheus/minisft-rules.test.yml",
        "nagios4/minisft-passive.cfg",  # run by the real nagios4 in test_nagios_push_e2e
        "icinga2/minisft-passive.conf",  # run by the real icinga2 in test_icinga2_push_e2e
    }
    assert os.access(ALERTING / "minisft-traphandler", os.X_OK)
