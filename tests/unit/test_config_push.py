"""`alerting.exec`: what loads, and one clear message (file, line, key) for each mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from minisft.config import ConfigError, load_config, parse_config
from minisft.config.model import ExecHookConfig
from tests.unit.test_config import EXAMPLES, NODE, assert_error, cfg, private


def reference_section(key: str) -> str:
    """`alerting.<key>` of full-reference.yaml, as a config fragment."""
    text = (EXAMPLES / "full-reference.yaml").read_text()
    start = text.index(f"\n  {key}:") + 1
    end = re.search(r"^  \w+:", text[start + 3:], re.MULTILINE)
    assert end is not None
    return "alerting:\n" + text[start:start + 3 + end.start()]


def exec_cfg(body: str) -> str:
    return cfg("alerting:\n  exec:\n" + body)


def test_an_event_command_loads_with_its_documented_keys() -> None:
    config = parse_config(exec_cfg(
        "    - name: ops\n"
        "      command: [logger, -t, minisft]\n"
        "      events: [takeover, released]\n"
        "      timeout: 5s\n"))
    assert config.alerting.exec_hooks == (ExecHookConfig(
        name="ops", command=("/usr/bin/logger", "-t", "minisft"),
        kinds=("takeover", "released"), timeout=5.0),)


def test_a_relative_program_is_relative_to_the_config_file(tmp_path: Path) -> None:
    hook = tmp_path / "hooks" / "notify"
    hook.parent.mkdir()
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    path = private(tmp_path / "minisft.yaml", NODE + "alerting:\n  exec:\n"
                   "    - {name: n, command: [hooks/notify, x]}\n", 0o644)
    (loaded,) = load_config(path).alerting.exec_hooks
    assert loaded.command == (str(hook), "x") and loaded.kinds == ()


@pytest.mark.parametrize(("body", "key", "needle", "message"), [
    ("    - {name: ops, command: '/usr/bin/logger -t x'}\n", "alerting.exec[0].command",
     "name: ops", r"expected a list: the program and its arguments, one item each \(no "
                  r"shell parsing\), such as \[/usr/local/bin/notify, --to, ops\]"),
    ("    - {name: ops, command: [/nonexistent/notify]}\n", "alerting.exec[0].command[0]",
     "name: ops", r"no such program: /nonexistent/notify"),
    ("    - {name: ops, command: [no-such-tool-xyz]}\n", "alerting.exec[0].command[0]",
     "name: ops", r"no such program: no-such-tool-xyz \(searched /usr/local/sbin:"),
    ("    - {name: ops, command: [/etc/passwd]}\n", "alerting.exec[0].command[0]",
     "name: ops", r"/etc/passwd is not executable"),
    ("    - {name: ops}\n", "alerting.exec[0].command", "name: ops", r"required"),
    ("    - {command: [logger]}\n", "alerting.exec[0].name", "command", r"required"),
    ("    - {name: ops, command: [logger], events: [takover]}\n",
     "alerting.exec[0].events[0]", "name: ops", r"did you mean 'takeover'"),
    ("    - {name: ops, command: [logger], timeout: 0}\n", "alerting.exec[0].timeout",
     "name: ops", r"must be more than 0"),
    ("    - {name: ops, command: [logger], shell: true}\n", "alerting.exec[0].shell",
     "name: ops", r"unknown key"),
    ("    - {name: ops, command: [logger]}\n    - {name: ops, command: [logger]}\n",
     "alerting.exec[1].name", "name: ops", r"already named 'ops'"),
])
def test_a_bad_event_command_gets_one_clear_message(body: str, key: str, needle: str,
                                                    message: str) -> None:
    nth = 2 if key.startswith("alerting.exec[1]") else 1
    assert_error(exec_cfg(body), key, needle, message, nth=nth)


def test_the_reference_config_has_a_working_event_command(tmp_path: Path) -> None:
    (hook,) = parse_config(cfg(reference_section("exec"))).alerting.exec_hooks
    assert hook.command[0] == "/usr/bin/logger" and "takeover" in hook.kinds


def test_exec_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match=r"alerting\.exec"):
        parse_config(cfg("alerting:\n  exec: {name: x, command: [logger]}\n"))


# ---------------------------------------------------------------------- alerting.nagios


def test_nagios_push_loads_with_defaults_and_its_keys() -> None:
    from minisft.config.model import NagiosConfig

    config = parse_config(cfg("alerting:\n  nagios: {}\n"))
    assert config.alerting.nagios == NagiosConfig()
    config = parse_config(cfg("alerting:\n  nagios:\n    command_file: /run/n.cmd\n"
                              "    host: lb-alpha\n    service_prefix: 'SFT '\n"))
    assert config.alerting.nagios == NagiosConfig(Path("/run/n.cmd"), "lb-alpha", "SFT ")


@pytest.mark.parametrize(("body", "key", "message"), [
    ("    host: 'lb;alpha'\n", "alerting.nagios.host", r"must not contain ';'"),
    ("    service_prefix: \"a\\nb\"\n", "alerting.nagios.service_prefix",
     r"must not contain ';' or a line break"),
    ("    command_fle: /x\n", "alerting.nagios.command_fle", r"did you mean 'command_file'"),
])
def test_a_bad_nagios_push_gets_one_clear_message(body: str, key: str, message: str) -> None:
    assert_error(cfg("alerting:\n  nagios:\n" + body), key, body.split(":")[0].strip(),
                 message)


def test_the_reference_config_has_a_nagios_push() -> None:
    nagios = parse_config(cfg(reference_section("nagios"))).alerting.nagios
    assert nagios is not None and nagios.host == "lb-alpha"


# ---------------------------------------------------------------------- alerting.icinga2


def icinga(tmp_path: Path, body: str) -> str:
    secret = private(tmp_path / "pw", "icinga-S3cret\n")
    return cfg(f"alerting:\n  icinga2:\n    password_file: {secret}\n" + body)


def test_icinga2_push_loads_with_its_password_from_a_file(tmp_path: Path) -> None:
    from minisft.config.model import Icinga2Config

    ca = private(tmp_path / "ca.crt", "x", 0o644)
    config = parse_config(icinga(tmp_path, f"    url: https://icinga:5665/\n    user: minisft\n"
                                           f"    ca_file: {ca}\n    host: lb-beta\n"))
    assert config.alerting.icinga2 == Icinga2Config(
        url="https://icinga:5665", user="minisft", password="icinga-S3cret", ca_file=ca,
        host="lb-beta")
    assert "S3cret" not in repr(config)


@pytest.mark.parametrize(("body", "key", "message"), [
    ("    url: http://icinga:5665\n    user: u\n", "alerting.icinga2.url",
     r"expected https://HOST\[:PORT\] \(TLS"),
    ("    url: https://u:pw@icinga:5665\n    user: u\n", "alerting.icinga2.url",
     r"no credentials.*got a URL$"),
    ("    url: https://icinga:5665\n", "alerting.icinga2.user", r"required \(an ApiUser"),
    ("    url: https://icinga:5665\n    user: u\n    ca_file: /nonexistent/ca.crt\n",
     "alerting.icinga2.ca_file", r"no such file: /nonexistent/ca.crt"),
])
def test_a_bad_icinga2_push_gets_one_clear_message(tmp_path: Path, body: str, key: str,
                                                   message: str) -> None:
    text = icinga(tmp_path, body)
    needle = key.rsplit(".", 1)[1] + ":" if key.rsplit(".", 1)[1] in body else "icinga2:"
    e = assert_error(text, key, needle, message)
    assert "pw" not in e.message.replace("password", "")


def test_icinga2_push_needs_a_password(tmp_path: Path) -> None:
    assert_error(cfg("alerting:\n  icinga2:\n    url: https://i:5665\n    user: u\n"),
                 "alerting.icinga2.password_file", "icinga2:", r"required \(a file, mode 0600")


# ---------------------------------------------------------------------- alerting.nsca


def test_nsca_push_loads_and_its_config_file_must_be_private(tmp_path: Path) -> None:
    secret = private(tmp_path / "send_nsca.cfg", "password=x\nencryption_method=14\n")
    config = parse_config(cfg(f"alerting:\n  nsca:\n    server: 192.0.2.250\n"
                              f"    config_file: {secret}\n")).alerting.nsca
    assert config is not None
    assert (config.server, config.port, config.config_file) == ("192.0.2.250", 5667, secret)
    assert config.send_nsca == "/usr/sbin/send_nsca"
    secret.chmod(0o644)
    assert_error(cfg(f"alerting:\n  nsca:\n    server: 192.0.2.250\n"
                     f"    config_file: {secret}\n"), "alerting.nsca.config_file",
                 "config_file", r"accessible to group or others .*chmod 600")
    assert_error(cfg("alerting:\n  nsca:\n    config_file: /x\n"), "alerting.nsca.server",
                 "nsca:", r"required \(the NSCA daemon")


def test_the_reference_config_has_an_nsca_push(tmp_path: Path) -> None:
    private(tmp_path / "send_nsca.cfg", "password=x\n")
    text = reference_section("nsca").replace("/etc/minisft/", f"{tmp_path}/")
    nsca = parse_config(cfg(text)).alerting.nsca
    assert nsca is not None and nsca.host == "lb-alpha"
