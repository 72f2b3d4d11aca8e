"""The monitors: section (addresses, looksalive, isalive, hooks, fallback, probe, announce)."""

from __future__ import annotations

import ipaddress
from typing import Any

from minisft.config.errors import ConfigError, _Skip
from minisft.config.model import (
    HOOK_PLACEHOLDERS,
    AddressHooksConfig,
    AnnounceConfig,
    CheckConfig,
    FallbackConfig,
    FallbackMode,
    HookMode,
    IPAddress,
    IPInterface,
    IsAliveConfig,
    LooksAliveConfig,
    MonitorConfig,
    ProbeConfig,
    Role,
)
from minisft.config.scalars import (
    _bool,
    _command,
    _duration,
    _enum,
    _int,
    _ip,
    _mask,
    _name,
    _not_network_or_broadcast,
    _service_ip,
    _str,
)
from minisft.config.validation import _Ctx, _hint, _list, _Map

# Lower bounds of the timing keys: below these a value cannot work, it only burns CPU or
# floods the LAN (`looksalive.interval: 1us` pinged 825 times a second and starved IsAlive).
# contrib/examples/full-reference.yaml lists them next to each key.
MIN_PING_INTERVAL = 0.010  # looksalive.interval: a LAN ping round trip is well under 1 ms
MIN_PING_TIMEOUT = 0.001  # looksalive.timeout: shorter than any real answer
MIN_CHECK_INTERVAL = 0.1  # isalive.interval: a service check is a connection, not a ping
MIN_CHECK_TIMEOUT = 0.010  # isalive.check.timeout: a TCP connect and an answer
MIN_HOLD_DOWN = 1.0  # fallback.hold_down: "passed continuously" needs more than one check
MIN_PROBE_INTERVAL = 0.001  # probe.interval: an ARP/NDP answer takes this long at least
MIN_ANNOUNCE_INTERVAL = 0.001  # announce.interval: frames a switch can still tell apart
MIN_ANNOUNCE_REFRESH = 1.0  # announce.refresh (unless 0, off): caches keep entries minutes
_MONITOR_KEYS = ("name", "monitor_ip", "monitor_subnet", "role", "peer_ip", "looksalive",
                 "isalive", "fallback", "probe", "announce", "startup_grace", "hooks")
_HOOKS_KEYS = ("up", "down", "timeout", "mode")
_LOOKSALIVE_KEYS = ("interval", "retry", "timeout")
_ISALIVE_KEYS = ("interval", "retry", "on_holder", "check")
_FALLBACK_KEYS = ("mode", "hold_down")
_PROBE_KEYS = ("count", "interval")
_ANNOUNCE_KEYS = ("count", "interval", "refresh")


def _monitors(ctx: _Ctx, top: _Map, local_ip: IPAddress | None
              ) -> list[tuple[str, MonitorConfig]]:
    out: list[tuple[str, MonitorConfig]] = []
    for i, item in enumerate(_list(ctx, top, "monitors", "monitors")):
        path = f"monitors[{i}]"
        monitor = ctx.section(None, _monitor, ctx, path, item, local_ip)
        if monitor is not None:
            out.append((path, monitor))
    names: dict[str, str] = {}
    ips: dict[IPAddress, str] = {}
    for path, mon in out:
        if mon.name in names:
            first = names[mon.name]
            ctx.add(f"{path}.name", f"monitor name {mon.name!r} is already used by {first} "
                                    f"(line {ctx.line(first)})")
        names.setdefault(mon.name, path)
        if mon.ip in ips:
            first = ips[mon.ip]
            ctx.add(f"{path}.monitor_ip", f"{mon.ip} is already watched by {first} (line "
                                          f"{ctx.line(first)})")
        ips.setdefault(mon.ip, path)
    return out


def _monitor(ctx: _Ctx, path: str, value: Any, local_ip: IPAddress | None) -> MonitorConfig:
    m = _Map(ctx, path, value, _MONITOR_KEYS, what="a monitor (name, monitor_ip, ...)")
    name = m.req("name", _name)
    ip = m.req("monitor_ip", _service_ip)
    mask = m.req("monitor_subnet", _mask, " (MONITORSUBNET: a prefix length such as 24, or "
                 "a mask such as 255.255.255.0)")
    role = m.req("role", _enum(Role), " (primary or backup)")
    peer = m.opt("peer_ip", _ip)
    looksalive = m.get("looksalive", lambda p, v: _looksalive(ctx, p, v), LooksAliveConfig())
    isalive = m.get("isalive", lambda p, v: _isalive(ctx, p, v), IsAliveConfig())
    fallback = m.get("fallback", lambda p, v: _fallback(ctx, p, v), FallbackConfig())
    probe = m.get("probe", lambda p, v: _probe(ctx, p, v, looksalive),
                  _probe(ctx, f"{path}.probe", {}, looksalive))
    announce = m.get("announce", lambda p, v: _announce(ctx, p, v), AnnounceConfig())
    startup_grace = m.opt("startup_grace", _duration(zero=True))
    hooks = m.get("hooks", lambda p, v: _address_hooks(ctx, p, v), AddressHooksConfig())
    if startup_grace is not None and role is Role.PRIMARY:
        m.failed = True
        ctx.add(m.key("startup_grace"), "only applies to role backup (the grace a starting "
                                        "backup gives its primary before taking over)")
    address: IPInterface | None = None
    if ip is not None and local_ip is not None and ip == local_ip:
        m.failed = True
        ctx.add(m.key("monitor_ip"), f"{ip} is node.local_ip (LOCALIP, line "
                                     f"{ctx.line('node.local_ip')}): the failover address "
                                     "must be a separate address")
    if ip is not None and mask is not None:
        address = _address(m, ip, mask)
    if peer is not None and ip is not None:
        if peer.version != ip.version:
            m.failed = True
            ctx.add(m.key("peer_ip"), f"{peer} is IPv{peer.version} but monitor_ip {ip} is "
                                      f"IPv{ip.version}")
        elif peer == ip:
            m.failed = True
            ctx.add(m.key("peer_ip"), "must be the other host's own address, not monitor_ip")
    if peer is not None and local_ip is not None and peer == local_ip:
        m.failed = True
        ctx.add(m.key("peer_ip"), f"{peer} is this node's own local_ip: peer_ip is the "
                                  "other host's address")
    if m.has("fallback") and fallback.mode is FallbackMode.AUTO:
        mode_key = f"{m.key('fallback')}.mode"
        if role is Role.PRIMARY:
            m.failed = True
            ctx.add(mode_key, "fallback.mode auto only applies to role backup (the backup "
                              "hands the address back to the primary)")
        elif role is Role.BACKUP and peer is None and not m.has("peer_ip"):
            m.failed = True
            ctx.add(mode_key, "fallback.mode auto needs peer_ip (the primary host's own "
                              "address, watched to decide when to fall back)")
    m.check()
    if name is None or address is None or role is None:
        raise _Skip
    return MonitorConfig(name=name, address=address, role=role, peer_ip=peer,
                         looksalive=looksalive, isalive=isalive, fallback=fallback,
                         probe=probe, announce=announce, startup_grace=startup_grace,
                         hooks=hooks)


def _address(m: _Map, ip: IPAddress, mask: tuple[int, bool]) -> IPInterface | None:
    prefix, dotted = mask
    key = m.key("monitor_subnet")
    if ip.version == 6 and dotted:
        m.ctx.add(key, "IPv6 takes a prefix length (such as 64), not a dotted mask")
    elif not 1 <= prefix <= ip.max_prefixlen:
        m.ctx.add(key, f"prefix length must be 1-{ip.max_prefixlen} for an IPv{ip.version} "
                       f"monitor_ip, got {prefix}")
    else:
        iface = ipaddress.ip_interface(f"{ip}/{prefix}")
        try:
            _not_network_or_broadcast(iface)
        except ValueError as exc:
            m.ctx.add(m.key("monitor_ip"), str(exc))
        else:
            return iface
    m.failed = True
    return None


def _looksalive(ctx: _Ctx, path: str, value: Any) -> LooksAliveConfig:
    m = _Map(ctx, path, value, _LOOKSALIVE_KEYS)
    d = LooksAliveConfig()
    interval = m.get("interval", _duration(least=MIN_PING_INTERVAL), d.interval)
    # an unset timeout follows the interval, so `{interval: 100ms}` alone is valid
    cfg = LooksAliveConfig(interval=interval,
                           retry=m.get("retry", _int(1, 1000), d.retry),
                           timeout=m.get("timeout", _duration(least=MIN_PING_TIMEOUT),
                                         LooksAliveConfig.default_timeout(interval)))
    m.check()
    if cfg.timeout > cfg.interval:  # only an explicit timeout can be longer
        ctx.fail(m.key("timeout"), f"timeout ({cfg.timeout:g}s) must not be longer than "
                                   f"interval ({cfg.interval:g}s)")
    return cfg


def _isalive(ctx: _Ctx, path: str, value: Any) -> IsAliveConfig:
    m = _Map(ctx, path, value, _ISALIVE_KEYS)
    d = IsAliveConfig()
    interval = m.get("interval", _duration(least=MIN_CHECK_INTERVAL), d.interval)
    retry = m.get("retry", _int(1, 1000), d.retry)
    on_holder = m.get("on_holder", _bool, d.on_holder)
    check = m.get("check", lambda p, v: _check(ctx, p, v), d.check)
    m.check()
    if check.timeout > interval:
        which = "check.timeout" if m.has("check") and "timeout" in m.data["check"] else \
            "interval"
        ctx.fail(f"{path}.{which}", f"the check timeout ({check.timeout:g}s) must not be "
                                    f"longer than the isalive interval ({interval:g}s)")
    return IsAliveConfig(interval=interval, retry=retry, check=check, on_holder=on_holder)


def _check(ctx: _Ctx, path: str, value: Any) -> CheckConfig:
    # the check's own keys are validated by its schema: no key list here
    m = _Map(ctx, path, value, None, what="a check (type: http, url: ..., ...)")
    from minisft.probes.isalive import CheckParamError, validate_check

    type_ = m.req("type", _str, " (always, http, https, tcp, tls, command or python)")
    timeout = m.get("timeout", _duration(least=MIN_CHECK_TIMEOUT), CheckConfig().timeout)
    m.check()
    assert type_ is not None
    params = {k: v for k, v in m.data.items() if k not in ("type", "timeout")}
    try:
        validated = validate_check(type_.lower(), params)
    except CheckParamError as exc:
        key = m.path if exc.key == "params" else m.key(exc.key)
        message = exc.message
        if exc.key not in ("type", "params") and exc.key in params and "unknown" in message:
            from minisft.probes.isalive.schema import SCHEMAS

            hint = _hint(exc.key, SCHEMAS.get(type_.lower(), {}))
            message = f"unknown key for a {type_.lower()} check{hint}" if hint else message
        ctx.fail(key, message)
    return CheckConfig(type=type_.lower(), timeout=timeout, params=validated)


def _address_hooks(ctx: _Ctx, path: str, value: Any) -> AddressHooksConfig:
    m = _Map(ctx, path, value, _HOOKS_KEYS, what="address hooks {up, down, timeout, mode}")
    d = AddressHooksConfig()
    argv = lambda p, v: _hook_argv(ctx, p, v)  # noqa: E731
    cfg = AddressHooksConfig(up=m.get("up", argv, d.up), down=m.get("down", argv, d.down),
                             timeout=m.get("timeout", _duration(), d.timeout),
                             mode=m.get("mode", _enum(HookMode), d.mode))
    m.check()
    if not cfg.up and not cfg.down:
        ctx.fail(path, "names no command: give up, down or both (argv lists)")
    if cfg.mode is HookMode.INSTEAD and not cfg.up:
        ctx.fail(m.key("up"), "mode instead needs an up command: it is what moves the "
                              "address to this node (nothing is bound locally)")
    return cfg


def _hook_argv(ctx: _Ctx, path: str, value: Any) -> tuple[str, ...]:
    """An event command's argv whose items may hold {address}, {prefixlen}, {interface},
    {monitor}; any other brace is an error now, not a failed hook at the first takeover."""
    import string

    argv = _command(ctx, path, value)
    allowed = ", ".join("{" + p + "}" for p in HOOK_PLACEHOLDERS)
    for i, item in enumerate(argv):
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(item)
                      if f is not None]
        except ValueError as exc:
            raise ConfigError(f"{path}[{i}]", f"not a valid template ({exc}; write {{{{ "
                                              "and }}}} for a literal brace)") from None
        for field_name, spec, conv in fields:
            if field_name not in HOOK_PLACEHOLDERS or spec or conv:
                raise ConfigError(f"{path}[{i}]", f"unknown placeholder "
                                                  f"{{{field_name}{'!' + conv if conv else ''}"
                                                  f"{':' + spec if spec else ''}}} (one of: "
                                                  f"{allowed}; write {{{{ and }}}} for a "
                                                  "literal brace)")
    return argv


def _fallback(ctx: _Ctx, path: str, value: Any) -> FallbackConfig:
    m = _Map(ctx, path, value, _FALLBACK_KEYS)
    d = FallbackConfig()
    cfg = FallbackConfig(mode=m.get("mode", _enum(FallbackMode), d.mode),
                         hold_down=m.get("hold_down", _duration(least=MIN_HOLD_DOWN),
                                         d.hold_down))
    m.check()
    return cfg


def _probe(ctx: _Ctx, path: str, value: Any, looksalive: LooksAliveConfig) -> ProbeConfig:
    m = _Map(ctx, path, value, _PROBE_KEYS)
    count = m.get("count", _int(1, 100), ProbeConfig().count)
    interval = m.get("interval", _duration(least=MIN_PROBE_INTERVAL),
                     ProbeConfig.interval_for(looksalive, count))
    cfg = ProbeConfig(count=count, interval=interval)
    m.check()
    return cfg


def _announce(ctx: _Ctx, path: str, value: Any) -> AnnounceConfig:
    m = _Map(ctx, path, value, _ANNOUNCE_KEYS)
    d = AnnounceConfig()
    cfg = AnnounceConfig(count=m.get("count", _int(1, 100), d.count),
                         interval=m.get("interval", _duration(least=MIN_ANNOUNCE_INTERVAL),
                                        d.interval),
                         refresh=m.get("refresh",
                                       _duration(least=MIN_ANNOUNCE_REFRESH, zero=True),
                                       d.refresh))
    m.check()
    return cfg
