"""The alerting: section (SNMP, apprise, exec hooks, Nagios, Icinga2, NSCA, Prometheus)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from minisft.config.errors import ConfigError
from minisft.config.model import (
    HOOK_PATH,
    AlertingConfig,
    AppriseConfig,
    ExecHookConfig,
    Icinga2Config,
    NagiosConfig,
    NscaConfig,
    SnmpTargetConfig,
)
from minisft.config.redact import _got
from minisft.config.scalars import (
    _choice,
    _command,
    _duration,
    _existing_file,
    _host,
    _int,
    _is_url,
    _kinds,
    _listen,
    _name,
    _path,
    _severity,
    _str,
    _text,
)
from minisft.config.secret_sources import _private_file, _secret, _urls_file
from minisft.config.validation import Converter, _Ctx, _list, _Map

MIN_SNMP_TIMEOUT = 0.1  # alerting.snmp.targets[].timeout: an inform's round trip
MIN_SNMP_KEY = 8  # RFC 3414: USM passphrases are at least 8 octets
SNMP_AUTH = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
SNMP_PRIV = ("des", "3des", "aes128", "aes192", "aes256")
_ALERTING_KEYS = ("snmp", "apprise", "exec", "nagios", "icinga2", "nsca", "prometheus",
                  "queue_size", "max_backlog")
_NAGIOS_KEYS = ("command_file", "host", "service_prefix")
_NSCA_KEYS = ("server", "port", "config_file", "host", "service_prefix", "timeout")
_ICINGA2_KEYS = ("url", "user", "password", "password_file", "password_env", "ca_file", "host",
                 "service_prefix", "timeout")
_EXEC_KEYS = ("name", "command", "events", "min_severity", "timeout")
_SNMP_KEYS = ("targets",)
_SNMP_TARGET_KEYS = ("host", "port", "version", "type", "community", "community_file",
                     "community_env", "user", "auth_protocol", "auth_key", "auth_key_file",
                     "auth_key_env", "priv_protocol", "priv_key", "priv_key_file",
                     "priv_key_env", "kinds", "min_severity", "timeout", "retries")
_APPRISE_KEYS = ("urls", "urls_file", "config", "kinds", "min_severity", "title", "body")
_APPRISE_URL_KEYS = ("url", "tag", "tags", "kinds", "min_severity")
_PROMETHEUS_KEYS = ("listen", "max_connections")


def _alerting(ctx: _Ctx, top: _Map) -> AlertingConfig:
    m = _Map(ctx, "alerting", top.data.get("alerting"), _ALERTING_KEYS)
    d = AlertingConfig()
    targets: tuple[SnmpTargetConfig, ...] = ()
    if m.has("snmp"):
        snmp = _Map(ctx, "alerting.snmp", m.data["snmp"], _SNMP_KEYS)
        targets = tuple(t for t in (
            ctx.section(None, _snmp_target, ctx, f"alerting.snmp.targets[{i}]", item)
            for i, item in enumerate(_list(ctx, snmp, "targets", "SNMP targets"))
        ) if t is not None)
        m.failed = m.failed or snmp.failed
    apprise = m.opt("apprise", lambda p, v: _apprise(ctx, p, v))
    exec_hooks = _exec_hooks(ctx, m)
    nagios = m.opt("nagios", lambda p, v: _nagios(ctx, p, v))
    icinga2 = m.opt("icinga2", lambda p, v: _icinga2(ctx, p, v))
    nsca = m.opt("nsca", lambda p, v: _nsca(ctx, p, v))
    listen = None
    prom_max = d.prometheus_max_connections
    if m.has("prometheus"):
        prom = _Map(ctx, "alerting.prometheus", m.data["prometheus"], _PROMETHEUS_KEYS)
        listen = prom.req("listen", _listen, " (host:port, such as 127.0.0.1:9523)")
        prom_max = prom.get("max_connections", _int(1, 512), prom_max)
        m.failed = m.failed or prom.failed
    cfg = AlertingConfig(snmp_targets=targets, apprise=apprise, exec_hooks=exec_hooks,
                         nagios=nagios, icinga2=icinga2, nsca=nsca,
                         prometheus_listen=listen,
                         prometheus_max_connections=prom_max,
                         queue_size=m.get("queue_size", _int(1, 1_000_000), d.queue_size),
                         max_backlog=m.get("max_backlog", _int(1), d.max_backlog))
    m.check()
    return cfg


def _snmp_version(path: str, value: Any) -> str:
    text = str(value).strip().lower().removeprefix("v") if isinstance(
        value, str | int) and not isinstance(value, bool) else ""
    if text in ("2c", "2"):
        return "2c"
    if text == "3":
        return "3"
    if text == "1":
        raise ValueError("SNMP version 1 is not supported: use 2c or 3")
    raise ValueError(f"expected 2c or 3, got {_got(value, path)}")


def _snmp_target(ctx: _Ctx, path: str, value: Any) -> SnmpTargetConfig:
    m = _Map(ctx, path, value, _SNMP_TARGET_KEYS, what="an SNMP target (host, version, ...)")
    d = SnmpTargetConfig(host="-")
    host = m.req("host", _host)
    before = m.failed
    version = m.get("version", _snmp_version, d.version)
    if m.failed and not before:
        m.check()  # which keys apply depends on the version: stop here
    only = {"2c": ("community", "community_file", "community_env"),
            "3": ("user", "auth_key", "auth_key_file", "auth_key_env", "priv_key",
                  "priv_key_file", "priv_key_env", "auth_protocol", "priv_protocol")}
    other = "3" if version == "2c" else "2c"
    for key in only[other]:
        if m.has(key):
            m.failed = True
            ctx.add(m.key(key), f"only applies to SNMP version {other} (this target is "
                                f"version {version})")
    community = user = auth_key = priv_key = None
    if version == "2c":
        community = _secret(m, "community")
        if not m.failed and not any(m.has(k) for k in only["2c"]):
            m.failed = True
            ctx.add(m.key("community"), "required for SNMP version 2c (or community_file / "
                                        "community_env)")
    else:
        user = m.req("user", _str, " for SNMP version 3")
        auth_key = _secret(m, "auth_key", min_len=MIN_SNMP_KEY)
        priv_key = _secret(m, "priv_key", min_len=MIN_SNMP_KEY)
        has_auth = any(m.has(k) for k in ("auth_key", "auth_key_file", "auth_key_env"))
        has_priv = any(m.has(k) for k in ("priv_key", "priv_key_file", "priv_key_env"))
        if has_priv and not has_auth:
            m.failed = True
            ctx.add(m.key("auth_key"), "required when a priv key is set (SNMPv3 privacy needs "
                                       "authentication): give auth_key_file or auth_key_env")
    cfg = SnmpTargetConfig(
        host=host or d.host,
        port=m.get("port", _int(1, 65535), d.port),
        version=version,
        type=m.get("type", _choice(("trap", "inform")), d.type),
        community=community,
        user=user,
        auth_protocol=m.get("auth_protocol", _choice(SNMP_AUTH, {"sha1": "sha"}),
                            d.auth_protocol),
        priv_protocol=m.get("priv_protocol", _choice(SNMP_PRIV, {"aes": "aes128"}),
                            d.priv_protocol),
        auth_key=auth_key,
        priv_key=priv_key,
        kinds=m.get("kinds", _kinds, d.kinds),
        min_severity=m.get("min_severity", _severity, d.min_severity),
        timeout=m.get("timeout", _duration(least=MIN_SNMP_TIMEOUT), d.timeout),
        retries=m.get("retries", _int(0, 10), d.retries),
    )
    m.check()
    return cfg


def _apprise(ctx: _Ctx, path: str, value: Any) -> AppriseConfig:
    m = _Map(ctx, path, value, _APPRISE_KEYS)
    d = AppriseConfig()
    no_urls: tuple[str | dict[str, Any], ...] = ()
    urls = list(m.get("urls", lambda p, v: _apprise_urls(ctx, p, v), no_urls))
    urls += m.get("urls_file", lambda p, v: _urls_file(ctx, p, v), list[str]())
    config_file = m.opt("config", lambda p, v: _private_file(ctx, p, v))
    cfg = AppriseConfig(
        urls=tuple(urls),
        config_file=config_file,
        kinds=m.get("kinds", _kinds, d.kinds),
        min_severity=m.get("min_severity", _severity, d.min_severity),
        title=m.get("title", _template, d.title),
        body=m.get("body", _template, d.body),
    )
    if not m.failed and not any(m.has(k) for k in ("urls", "urls_file", "config")):
        ctx.fail(path, "needs urls, urls_file or config (where to send the alerts)")
    m.check()
    return cfg


def _nagios(ctx: _Ctx, path: str, value: Any) -> NagiosConfig:
    m = _Map(ctx, path, value, _NAGIOS_KEYS)
    d = NagiosConfig()
    cfg = NagiosConfig(command_file=m.get("command_file", _path(ctx), d.command_file),
                       host=m.opt("host", _nagios_text(_str)),
                       service_prefix=m.get("service_prefix", _nagios_text(_text),
                                            d.service_prefix))
    m.check()
    return cfg


def _icinga2(ctx: _Ctx, path: str, value: Any) -> Icinga2Config:
    m = _Map(ctx, path, value, _ICINGA2_KEYS, what="the Icinga 2 API (url, user, ...)")
    d = Icinga2Config(url="-", user="-")
    url = m.req("url", _icinga2_url, " (https://HOST:5665)")
    user = m.req("user", _str, " (an ApiUser allowed actions/process-check-result)")
    password = _secret(m, "password")
    if password is None and not m.failed and ctx.secrets:
        m.failed = True
        ctx.add(m.key("password_file"), "required (a file, mode 0600, holding the ApiUser's "
                                        "password; or password_env)")
    cfg = Icinga2Config(
        url=url or d.url, user=user or d.user, password=password or "",
        ca_file=m.opt("ca_file", _existing_file(ctx)),
        host=m.opt("host", _str),
        service_prefix=m.get("service_prefix", _text, d.service_prefix),
        timeout=m.get("timeout", _duration(), d.timeout),
    )
    m.check()
    return cfg


def _icinga2_url(path: str, value: Any) -> str:
    text = _str(path, value).rstrip("/")
    scheme, sep, rest = text.partition("://")
    if scheme.lower() != "https" or not sep or not rest or "@" in rest:
        raise ValueError(f"expected https://HOST[:PORT] (TLS, no credentials: use user and "
                         f"password_file), got {_got(value, path) if '@' not in text else 'a URL'}")
    return text


def _nsca(ctx: _Ctx, path: str, value: Any) -> NscaConfig:
    m = _Map(ctx, path, value, _NSCA_KEYS, what="an NSCA server (server, config_file, ...)")
    send_nsca = shutil.which("send_nsca", path=HOOK_PATH)
    if send_nsca is None:
        ctx.fail(path, "send_nsca is not installed (Debian: apt install nsca-client)")
    d = NscaConfig(server="-", config_file=Path("-"))
    server = m.req("server", _host, " (the NSCA daemon's host name or address)")
    config_file = m.req("config_file", lambda p, v: _private_file(ctx, p, v),
                        " (send_nsca.cfg with password and encryption_method, chmod 600)")
    cfg = NscaConfig(
        server=server or d.server, config_file=config_file or d.config_file,
        port=m.get("port", _int(1, 65535), d.port),
        host=m.opt("host", _nagios_text(_str)),
        service_prefix=m.get("service_prefix", _nagios_text(_text), d.service_prefix),
        timeout=m.get("timeout", _duration(), d.timeout), send_nsca=send_nsca)
    m.check()
    return cfg


def _nagios_text(convert: Converter[str]) -> Converter[str]:
    """A host or service name part: ';' and line breaks separate external commands."""
    def checked(path: str, value: Any) -> str:
        text = convert(path, value)
        if any(c in text for c in ";\n\r"):
            raise ValueError(f"must not contain ';' or a line break, got {_got(value, path)}")
        return text

    return checked


def _exec_hooks(ctx: _Ctx, m: _Map) -> tuple[ExecHookConfig, ...]:
    hooks: list[ExecHookConfig] = []
    for i, item in enumerate(_list(ctx, m, "exec", "event commands")):
        path = f"alerting.exec[{i}]"
        hook = ctx.section(None, _exec_hook, ctx, path, item)
        if hook is None:
            m.failed = True
        elif any(h.name == hook.name for h in hooks):
            m.failed = True
            ctx.add(f"{path}.name", f"another event command is already named {hook.name!r} "
                                    "(the name keys its delivery cursor)")
        else:
            hooks.append(hook)
    return tuple(hooks)


def _exec_hook(ctx: _Ctx, path: str, value: Any) -> ExecHookConfig:
    m = _Map(ctx, path, value, _EXEC_KEYS, what="an event command {name, command, events}")
    d = ExecHookConfig(name="-", command=())
    name = m.req("name", _name)
    command = m.req("command", lambda p, v: _command(ctx, p, v),
                    " (the program and its arguments, such as [/usr/local/bin/notify, "
                    "--quiet])")
    cfg = ExecHookConfig(
        name=name or d.name,
        command=command or d.command,
        kinds=m.get("events", _kinds, d.kinds),
        min_severity=m.get("min_severity", _severity, d.min_severity),
        timeout=m.get("timeout", _duration(), d.timeout),
    )
    m.check()
    return cfg


def _template(path: str, value: Any) -> str:
    import string

    text = _text(path, value)
    try:
        list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}; write {{{{ and }}}} for a literal "
                         "brace)") from None
    return text


_URL_HINT = "expected an apprise URL such as mailto://... (the value is not shown: it may " \
            "hold a password)"


def _apprise_urls(ctx: _Ctx, path: str, value: Any) -> tuple[str | dict[str, Any], ...]:
    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list):
        raise ValueError(f"expected a list of apprise URLs, got {_got(value, path)}")
    out: list[str | dict[str, Any]] = []
    for i, item in enumerate(items):
        sub = f"{path}[{i}]" if isinstance(value, list) else path
        if isinstance(item, str):
            if not _is_url(item.strip()):
                raise ConfigError(sub, _URL_HINT, line=ctx.line(sub), source=ctx.source)
            out.append(item.strip())
            continue
        if not isinstance(item, dict):
            raise ConfigError(sub, f"expected a URL or a mapping {{url, kinds, min_severity, "
                                   f"tag}}, got {_got(item, sub)}", line=ctx.line(sub),
                              source=ctx.source)
        e = _Map(ctx, sub, item, _APPRISE_URL_KEYS)
        url = e.req("url", lambda p, v: _secret_url(p, v))
        entry: dict[str, Any] = {"url": url}
        for tag_key in ("tag", "tags"):
            if e.has(tag_key):
                entry["tag"] = e.get(tag_key, _tags, list[str]())
        if e.has("kinds"):
            entry["kinds"] = list(e.get("kinds", _kinds, tuple[str, ...]()))
        if e.has("min_severity"):
            entry["min_severity"] = e.get("min_severity", _severity, "debug")
        e.check()
        out.append(entry)
    return tuple(out)


def _secret_url(path: str, value: Any) -> str:
    if not isinstance(value, str) or not _is_url(value.strip()):
        raise ValueError(_URL_HINT)
    return value.strip()


def _tags(path: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) and t for t in items):
        raise ValueError(f"expected a tag or a list of tags, got {_got(value, path)}")
    return [str(t) for t in items]
