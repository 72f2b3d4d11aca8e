"""`alerting.exec`: what loads, and one clear message (file, line, key) for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from minisft.config import ConfigError, load_config, parse_config
from minisft.config.model import ExecHookConfig
from tests.unit.test_config import EXAMPLES, NODE, assert_error, cfg, private


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
                  r"shell parsing\), such as \['/usr/bin/logger', \.\.\.\]"),
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
    text = (EXAMPLES / "full-reference.yaml").read_text()
    start = text.index("  exec:")
    section = text[start:text.index("  prometheus:", start)]
    (hook,) = parse_config(cfg("alerting:\n" + section)).alerting.exec_hooks
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
    text = (EXAMPLES / "full-reference.yaml").read_text()
    start = text.index("  nagios:")
    section = text[start:text.index("  prometheus:", start)]
    nagios = parse_config(cfg("alerting:\n" + section)).alerting.nagios
    assert nagios is not None and nagios.host == "lb-alpha"
