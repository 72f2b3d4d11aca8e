"""Address hooks (`monitors[].hooks`): config validation and what the runtime runs when.

The runtime is driven with fake netlink and neighbours so the order of bind, announce,
hooks and release is observable; the hooks are real processes (the shared runner)."""

from __future__ import annotations

import asyncio
import functools
import re
import textwrap
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from minisft.config.loader import ConfigError, parse_config
from minisft.config.model import AddressHooksConfig, HookMode, MonitorConfig
from minisft.core.events import EventKind, Notice
from minisft.core.io import Command, Verb
from minisft.core.monitor import State
from minisft.runtime.monitor_runtime import MonitorRuntime
from minisft.testing.fakes import FakeHost, FakeInterface

BASE = """\
node: {name: alpha, local_ip: 192.0.2.1}
monitors:
  - name: web
    monitor_ip: 192.0.2.10
    monitor_subnet: 24
    role: primary
"""


def hooks_config(fragment: str) -> AddressHooksConfig:
    text = BASE + textwrap.indent(textwrap.dedent(fragment), "    ")
    return parse_config(text).monitors[0].hooks


def hooks_error(fragment: str) -> str:
    text = BASE + textwrap.indent(textwrap.dedent(fragment), "    ")
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return "\n".join(str(e) for e in info.value.errors)


# ====================================================================== config


def test_hooks_parse_with_placeholders_and_defaults() -> None:
    h = hooks_config("""\
        hooks:
          up: [/bin/echo, "{address}/{prefixlen}", "{interface}", "{monitor}", "{{x}}"]
          down: [true]
        """.replace("[true]", '["true"]'))
    assert h.up == ("/bin/echo", "{address}/{prefixlen}", "{interface}", "{monitor}", "{{x}}")
    assert h.down[0].endswith("/true")  # a bare name is looked up in the hooks' PATH
    assert h.mode is HookMode.AFTER and h.timeout == 30.0


@pytest.mark.parametrize(("fragment", "message"), [
    ("hooks: {up: [/bin/echo, '{addr}']}", r"hooks\.up\[1\]: unknown placeholder \{addr\}"),
    ("hooks: {up: [/bin/echo, '{address:>9}']}", r"unknown placeholder \{address:>9\}"),
    ("hooks: {up: [/bin/echo, '{']}", r"hooks\.up\[1\]: not a valid template"),
    ("hooks: {up: /bin/echo up}", r"hooks\.up: expected a list"),
    ("hooks: {up: [/no/such/hook]}", r"hooks\.up\[0\]: no such program: /no/such/hook"),
    ("hooks: {timeout: 5s}", r"hooks: names no command"),
    ("hooks: {down: [/bin/true], mode: instead}", r"hooks\.up: mode instead needs an up"),
    ("hooks: {up: [/bin/true], mode: cloud}", r"hooks\.mode: expected one of after, instead"),
    ("hooks: {up: [/bin/true], timout: 5s}", r"hooks\.timout: unknown key"),
])
def test_bad_hooks_are_refused_with_the_key(fragment: str, message: str) -> None:
    assert re.search(message, hooks_error(fragment + "\n"))


def test_check_config_names_a_bad_placeholder_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "m.yaml"
    path.write_text(BASE + "    hooks: {up: [/bin/echo, '{ip}']}\n")
    out = subprocess.run([sys.executable, "-m", "minisft", "check-config", "--config",
                          str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "hooks.up[1]: unknown placeholder {ip}" in out.stderr
    assert "Traceback" not in out.stderr


# ====================================================================== runtime


def hook_script(tmp_path: Path, log: Path, name: str, body: str = "") -> Path:
    """A hook that appends its argv and environment to `log`, then runs `body`."""
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\necho \"{name} $* env=$MINISFT_HOOK,$MINISFT_INTERFACE,"
                      f"$MINISFT_PREFIXLEN secret=${{SECRET_TOKEN:-none}}\" >> {log}\n{body}\n")
    script.chmod(0o755)
    return script


def runtime(tmp_path: Path, hooks: str, log: list[str], notices: list[Notice],
            holder: str | None = None) -> MonitorRuntime:
    """The monitor's runtime on a fake host whose record of bind/probe/announce/release
    is `log`; `holder`: another host answers ARP/NDP (not ping) for the address."""
    config: MonitorConfig = parse_config(
        BASE + textwrap.indent(textwrap.dedent(hooks), "    ")).monitors[0]
    host = FakeHost()
    host.iface = FakeInterface(name="eth7")
    host.log = log
    if holder is not None:
        host.add_neighbour(holder, str(config.ip)).answers_ping = False
    return MonitorRuntime(
        config, clock=asyncio.get_running_loop().time, pinger=host, neighbours=host,
        addresses=host, iface=host.iface, netlink_executor=ThreadPoolExecutor(1),
        emit=notices.append, check=None)


async def settle(rt: MonitorRuntime, until: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not until():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def synchronous(case: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test case in its own event loop (the project uses no asyncio plugin)."""
    @functools.wraps(case)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(case(*args, **kwargs))
    return run


@synchronous
async def test_up_runs_after_bind_and_announce_down_after_release(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")  # the daemon's env must not leak
    out = tmp_path / "hooks.log"
    up, down = hook_script(tmp_path, out, "up"), hook_script(tmp_path, out, "down")
    log: list[str] = []
    notices: list[Notice] = []
    rt = runtime(tmp_path, f"""\
        hooks:
          up: [{up}, "{{address}}", "{{prefixlen}}", "{{interface}}", "{{monitor}}"]
          down: [{down}, "{{address}}"]
        """, log, notices)
    rt.start(address_bound=False)
    await settle(rt, lambda: out.exists())
    assert rt.machine.state is State.HOLDING
    assert log[:3] == ["probe 192.0.2.10", "bind 192.0.2.10/24", "announce 192.0.2.10"]
    assert out.read_text() == "up 192.0.2.10 24 eth7 web env=up,eth7,24 secret=none\n"
    rt.feed(Command(Verb.RELEASE))
    await settle(rt, lambda: "down" in out.read_text())
    assert log[-1] == "release 192.0.2.10/24"
    assert out.read_text().splitlines()[-1].startswith("down 192.0.2.10 env=down")
    assert EventKind.HOOK_FAILED not in [n.kind for n in notices]
    await rt.stop()


@synchronous
async def test_failing_up_hook_raises_hook_failed_and_keeps_the_address(
        tmp_path: Path) -> None:
    out = tmp_path / "hooks.log"
    up = hook_script(tmp_path, out, "up", "echo 'systemctl: unit not found' >&2\nexit 5")
    log: list[str] = []
    notices: list[Notice] = []
    rt = runtime(tmp_path, f"hooks: {{up: [{up}]}}\n", log, notices)
    rt.start(address_bound=False)
    await settle(rt, lambda: EventKind.HOOK_FAILED in [n.kind for n in notices])
    failed = next(n for n in notices if n.kind is EventKind.HOOK_FAILED)
    assert failed.reason == "up hook exited with code 5: systemctl: unit not found"
    assert failed.details == {"hook": "up", "exit_code": 5,
                              "stderr": "systemctl: unit not found"}
    assert rt.machine.state is State.HOLDING and not any(
        e.startswith("release") for e in log)
    await rt.stop()


@synchronous
async def test_hook_past_its_timeout_is_killed_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "hooks.log"
    up = hook_script(tmp_path, out, "up", "sleep 30")
    notices: list[Notice] = []
    rt = runtime(tmp_path, f"hooks: {{up: [{up}], timeout: 300ms}}\n", [], notices)
    rt.start(address_bound=False)
    await settle(rt, lambda: EventKind.HOOK_FAILED in [n.kind for n in notices])
    failed = next(n for n in notices if n.kind is EventKind.HOOK_FAILED)
    assert failed.reason == "up hook still running after 0.3 s; killed it"
    assert rt.machine.state is State.HOLDING
    await rt.stop()


@synchronous
async def test_mode_instead_never_binds_and_a_failed_up_is_a_failed_takeover(
        tmp_path: Path) -> None:
    out = tmp_path / "hooks.log"
    up = hook_script(tmp_path, out, "up")
    log: list[str] = []
    notices: list[Notice] = []
    rt = runtime(tmp_path, f"hooks: {{up: [{up}, '{{address}}'], mode: instead}}\n",
                 log, notices)
    rt.start(address_bound=False)
    await settle(rt, lambda: rt.machine.state is State.HOLDING)
    assert out.read_text().startswith("up 192.0.2.10 ")
    assert log == ["probe 192.0.2.10"]  # no bind, no announce: the API moved it
    rt.feed(Command(Verb.RELEASE))
    await asyncio.sleep(0.2)
    assert log == ["probe 192.0.2.10"]  # nor a local release
    await rt.stop()

    bad = hook_script(tmp_path, out, "bad", "echo 'quota exceeded' >&2\nexit 2")
    notices2: list[Notice] = []
    rt2 = runtime(tmp_path, f"hooks: {{up: [{bad}], mode: instead}}\n", log, notices2)
    rt2.start(address_bound=False)
    await settle(rt2, lambda: EventKind.TAKEOVER_FAILED in [n.kind for n in notices2])
    assert rt2.machine.state is not State.HOLDING
    failed = next(n for n in notices2 if n.kind is EventKind.TAKEOVER_FAILED)
    assert "up hook exited with code 2: quota exceeded" in failed.reason
    await rt2.stop()


@synchronous
async def test_mode_instead_still_refuses_a_live_holder(tmp_path: Path) -> None:
    out = tmp_path / "hooks.log"
    up = hook_script(tmp_path, out, "up")
    log: list[str] = []
    notices: list[Notice] = []
    rt = runtime(tmp_path, f"hooks: {{up: [{up}], mode: instead}}\n", log, notices,
                 holder="02:00:00:00:00:99")
    rt.start(address_bound=False)
    await settle(rt, lambda: EventKind.ADDRESS_IN_USE in [n.kind for n in notices])
    await asyncio.sleep(0.2)
    assert not out.exists() and rt.machine.state is not State.HOLDING
    await rt.stop()



POOL = """\
node: {name: a, local_ip: 192.0.2.1}
pools:
  - name: front
    members: [{name: a, ip: 192.0.2.1}, {name: b, ip: 192.0.2.2}, {name: c, ip: 192.0.2.3}]
    addresses: [192.0.2.101/24]
"""


def test_pool_hooks_parse_and_refuse_what_pools_cannot_do(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(bytes(32))
    key.chmod(0o600)
    base = POOL + f"    key_file: {key}\n"
    hooks = parse_config(base + "    hooks: {up: [/bin/true, '{monitor}']}\n").pools[0].hooks
    assert hooks.up == ("/bin/true", "{monitor}") and hooks.mode is HookMode.AFTER
    with pytest.raises(ConfigError) as info:
        parse_config(base + "    hooks: {up: [/bin/true], mode: instead}\n")
    assert "pools[0].hooks.mode: a pool's hooks take mode after only" in str(info.value)
    etcd = (POOL + "    coordination: {backend: etcd, endpoints: ['http://192.0.2.250:2379']}\n"
            "    hooks: {up: [/bin/true]}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(etcd)
    assert "pools[0].hooks: address hooks are not supported on an etcd pool yet" in str(
        info.value)
