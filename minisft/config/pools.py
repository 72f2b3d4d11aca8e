"""The pools: section (members, addresses, keys, etcd coordination)."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from pathlib import Path
from typing import Any

from minisft.config.durations import parse_duration
from minisft.config.errors import ConfigError, _Skip
from minisft.config.model import (
    AddressHooksConfig,
    CoordinationBackend,
    CoordinationConfig,
    EtcdTLSConfig,
    HookMode,
    IPAddress,
    IPInterface,
    MonitorConfig,
    NodeConfig,
    PoolConfig,
    PoolMemberConfig,
)
from minisft.config.monitors import _address_hooks, _fallback, _looksalive
from minisft.config.redact import _got
from minisft.config.scalars import _HOST_RE, _choice, _enum, _int, _interface, _ip, _name, _str
from minisft.config.secret_sources import _decode_secret, _read_secret_file
from minisft.config.validation import _Ctx, _hint, _list, _Map
from minisft.config.yamlfile import _join

MIN_POOL_KEY = 16
_POOL_KEYS = ("name", "members", "addresses", "key_file", "looksalive", "watch", "preferred",
              "fallback", "witness", "port", "coordination", "hooks")
_COORDINATION_KEYS = ("backend", "endpoints", "ttl", "prefix", "tls", "username",
                      "password_file")
_ETCD_TLS_KEYS = ("ca_file", "cert_file", "key_file")
# only the embedded mode's UDP heartbeats use these: refused with etcd, not silently ignored
_EMBEDDED_ONLY = ("looksalive", "watch", "witness", "port")
ETCD_MIN_TTL = 2  # etcd raises shorter leases to 1.5 x its election timeout (1 s default)
ETCD_MAX_TTL = 600
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9_.\-]+)+", re.ASCII)
_MEMBER_KEYS = ("name", "ip", "weight")


def _pools(ctx: _Ctx, top: _Map, node: NodeConfig | None,
           monitors: list[tuple[str, MonitorConfig]]) -> tuple[PoolConfig, ...]:
    taken: dict[IPAddress, str] = {m.ip: f"{p}.monitor_ip" for p, m in monitors}
    if node is not None:
        taken[node.local_ip] = "node.local_ip"
    out: list[PoolConfig] = []
    names: dict[str, str] = {}
    for i, item in enumerate(_list(ctx, top, "pools", "pools")):
        path = f"pools[{i}]"
        pool = ctx.section(None, _pool, ctx, path, item, node)
        if pool is None:
            continue
        if pool.name in names:
            ctx.add(f"{path}.name", f"pool name {pool.name!r} is already used by "
                                    f"{names[pool.name]} (line {ctx.line(names[pool.name])})")
        names.setdefault(pool.name, path)
        for j, iface in enumerate(pool.addresses):
            sub = f"{path}.addresses[{j}]"
            if iface.ip in taken:
                ctx.add(sub, f"{iface.ip} is already used by {taken[iface.ip]} (line "
                             f"{ctx.line(taken[iface.ip])})")
            taken.setdefault(iface.ip, sub)
        out.append(pool)
    return tuple(out)


def _pool(ctx: _Ctx, path: str, value: Any, node: NodeConfig | None) -> PoolConfig:
    m = _Map(ctx, path, value, _POOL_KEYS, what="a pool (name, members, addresses, ...)")
    name = m.req("name", _name)
    members = m.req("members", lambda p, v: _members(ctx, p, v),
                    " (the nodes sharing the addresses)")
    addresses = m.req("addresses", lambda p, v: _pool_addresses(ctx, p, v))
    coordination = m.get("coordination", lambda p, v: _coordination(ctx, p, v),
                         CoordinationConfig())
    raw = m.data.get("coordination")
    # a broken coordination block that asks for etcd must not add a key_file error
    says_etcd = isinstance(raw, dict) and str(raw.get("backend", "")).strip().lower() == "etcd"
    key: bytes | None = None
    if coordination.etcd or says_etcd:
        # heartbeats are gone; the key, when given, authenticates the pool definition
        # stored in etcd (an HMAC), so etcd write access alone cannot add addresses
        for extra in _EMBEDDED_ONLY:
            if m.has(extra):
                m.failed = True
                ctx.add(m.key(extra), "not used with coordination.backend etcd (liveness is "
                                      "the etcd lease, quorum is etcd's): remove it")
        if m.has("key_file") and ctx.secrets:
            key = m.opt("key_file", lambda p, v: _pool_key(ctx, p, v))
    elif not m.has("key_file"):
        m.failed = True
        ctx.add(m.key("key_file"), "required (a file of at least 16 random bytes, the same "
                                   "on every member: head -c 32 /dev/urandom > FILE)")
    else:
        key = m.opt("key_file", lambda p, v: _pool_key(ctx, p, v)) if ctx.secrets else None
    d = PoolConfig(name="-", members=(), addresses=())
    looksalive = m.get("looksalive", lambda p, v: _looksalive(ctx, p, v), d.looksalive)
    watch = m.get("watch", _choice(("neighbour", "all"), {"neighbor": "neighbour"}), d.watch)
    fallback = m.get("fallback", lambda p, v: _fallback(ctx, p, v), d.fallback)
    witness = m.opt("witness", _ip)
    port = m.get("port", _int(1, 65535), d.port)
    hooks = m.get("hooks", lambda p, v: _address_hooks(ctx, p, v), AddressHooksConfig())
    if m.has("hooks") and hooks.mode is HookMode.INSTEAD:
        m.failed = True
        ctx.add(f"{m.key('hooks')}.mode", "a pool's hooks take mode after only: its members "
                                          "move the addresses among themselves by ARP/NDP")
    if m.has("hooks") and (coordination.etcd or says_etcd):
        m.failed = True
        ctx.add(m.key("hooks"), "address hooks are not supported on an etcd pool yet (only "
                                "on monitors and embedded pools)")
    preferred: dict[str, str] = {}
    if members is not None and node is not None and node.name not in {
            mb.name for mb in members}:
        m.failed = True
        ctx.add(m.key("members"), f"this node ({node.name}, node.name) is not one of the "
                                  "members")
    if members is not None and not (coordination.etcd or says_etcd) and len(
            {mb.ip.version for mb in members}) > 1:
        # each member's heartbeat sockets are bound to its ip and connected to the others'
        m.failed = True
        ctx.add(m.key("members"), "the members' ip addresses mix IPv4 and IPv6: heartbeats "
                                  "go from each member's ip to the others', use one family")
    if members is not None and addresses is not None:
        preferred = m.get("preferred", lambda p, v: _preferred(ctx, p, v, members, addresses),
                          {})
    elif m.has("preferred"):
        m.failed = True
    m.check()
    if name is None or members is None or addresses is None:
        raise _Skip
    return PoolConfig(name=name, members=members, addresses=addresses, key=key,
                      looksalive=looksalive, watch=watch, preferred=preferred,
                      fallback=fallback, witness=witness, port=port,
                      coordination=coordination, hooks=hooks)


def _coordination(ctx: _Ctx, path: str, value: Any) -> CoordinationConfig:
    m = _Map(ctx, path, value, _COORDINATION_KEYS,
             what="a coordination mapping (backend, endpoints, ttl, ...)")
    backend = m.get("backend", _enum(CoordinationBackend), CoordinationBackend.EMBEDDED)
    if backend is CoordinationBackend.EMBEDDED:
        for extra in _COORDINATION_KEYS[1:]:
            if m.has(extra):
                m.failed = True
                ctx.add(m.key(extra), "only used with backend: etcd")
        m.check()
        return CoordinationConfig()
    if ctx.secrets and importlib.util.find_spec("aetcd") is None:
        # a full load (run, check-config, reload): say it before anything starts
        m.failed = True
        ctx.add(m.key("backend"), "etcd needs the aetcd package, which is not installed "
                                  "(pip install 'minisft[etcd]')")
    d = CoordinationConfig()
    endpoints = m.req("endpoints", _etcd_endpoints,
                      " (the etcd client URLs, e.g. [\"http://192.0.2.250:2379\"])")
    ttl = m.get("ttl", _etcd_ttl, d.ttl)
    prefix = m.get("prefix", _etcd_prefix, d.prefix)
    tls = m.opt("tls", lambda p, v: _etcd_tls(ctx, p, v))
    username = m.opt("username", _str)
    password: str | None = None
    if m.has("password_file") and ctx.secrets:
        password = m.opt("password_file", lambda p, v: _decode_secret(
            _read_secret_file(ctx, p, v), "the password file"))
    if m.has("username") != m.has("password_file"):
        m.failed = True
        ctx.add(m.key("password_file" if m.has("username") else "username"),
                "username and password_file go together")
    if endpoints is not None:
        https = {e.startswith("https://") for e in endpoints}
        if len(https) > 1:
            m.failed = True
            ctx.add(m.key("endpoints"), "mixes http:// and https:// endpoints: use one scheme")
        elif tls is not None and https == {False}:
            m.failed = True
            ctx.add(m.key("tls"), "TLS needs https:// endpoints")
    m.check()
    if endpoints is None:
        raise _Skip
    return CoordinationConfig(backend=backend, endpoints=endpoints, ttl=ttl, prefix=prefix,
                              tls=tls, username=username, password=password)


def _etcd_endpoints(path: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected a list of URLs such as http://192.0.2.250:2379, got "
                         f"{_got(value, path)}")
    out: list[str] = []
    for i, item in enumerate(items):
        sub = f"{path}[{i}]" if isinstance(value, list) else path
        try:
            url = _etcd_url(sub, item)
        except ValueError as exc:
            raise ConfigError(sub, str(exc)) from None
        if url in out:
            raise ConfigError(sub, f"{url} is listed twice")
        out.append(url)
    return tuple(out)


def _etcd_url(path: str, value: Any) -> str:
    from urllib.parse import urlsplit

    hint = "expected a URL such as http://192.0.2.250:2379 or https://etcd1.example:2379"
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(f"{hint}, got {_got(value, path)}")
    try:
        url = urlsplit(value.strip())
        port = url.port or 2379
    except ValueError:
        raise ValueError(f"{hint}, got {_got(value, path)}") from None
    host = url.hostname
    if url.scheme not in ("http", "https"):
        raise ValueError(f"the scheme must be http or https, got {url.scheme!r}")
    if not host or url.username or url.password or url.query or url.fragment or \
            url.path not in ("", "/"):
        raise ValueError(f"{hint} (no path, user or query), got {_got(value, path)}")
    try:
        ip = ipaddress.ip_address(host)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return f"{url.scheme}://{host}:{port}"


def _etcd_ttl(path: str, value: Any) -> int:
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise ValueError(f"etcd leases are whole seconds, got {_got(value, path)}")
    if not ETCD_MIN_TTL <= seconds <= ETCD_MAX_TTL:
        raise ValueError(f"must be between {ETCD_MIN_TTL}s and {ETCD_MAX_TTL}s (etcd raises "
                         "shorter leases to 1.5 election timeouts), got "
                         f"{_got(value, path)}")
    return int(seconds)


def _etcd_prefix(path: str, value: Any) -> str:
    text = value.strip().rstrip("/") if isinstance(value, str) else None
    if text is None or not _PREFIX_RE.fullmatch(text):
        raise ValueError("expected a key prefix such as /minisft (a '/' then letters, digits, "
                         "'.', '_', '-', more '/'-separated parts allowed), got "
                         f"{_got(value, path)}")
    return text


def _etcd_tls(ctx: _Ctx, path: str, value: Any) -> EtcdTLSConfig:
    m = _Map(ctx, path, value, _ETCD_TLS_KEYS, what="a mapping (ca_file, cert_file, key_file)")

    def readable(p: str, v: Any) -> Path:
        f = ctx.resolve(_str(p, v))
        if ctx.secrets and not f.is_file():
            raise ValueError(f"no such file: {f}")
        return f

    def secret(p: str, v: Any) -> Path:
        if ctx.secrets:
            _read_secret_file(ctx, p, v)  # a private key: the secret-file rules apply
        return ctx.resolve(_str(p, v))

    ca = m.opt("ca_file", readable)
    cert = m.opt("cert_file", readable)
    key = m.opt("key_file", secret)
    if m.has("cert_file") != m.has("key_file"):
        m.failed = True
        ctx.add(m.key("key_file" if m.has("cert_file") else "cert_file"),
                "cert_file and key_file go together (the client certificate and its key)")
    m.check()
    return EtcdTLSConfig(ca_file=ca, cert_file=cert, key_file=key)


def _members(ctx: _Ctx, path: str, value: Any) -> tuple[PoolMemberConfig, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise ValueError(f"expected a list of at least two members ({{name, ip, weight}}), "
                         f"got {_got(value, path) if not isinstance(value, list) else len(value)}")
    out: list[PoolMemberConfig] = []
    failed = False
    for i, item in enumerate(value):
        sub = f"{path}[{i}]"
        e = _Map(ctx, sub, item, _MEMBER_KEYS, what="a member {name, ip, weight}")
        name = e.req("name", _name)
        ip = e.req("ip", _ip)
        weight = e.get("weight", _int(1, 1000), 1)
        if name is not None and name in {mb.name for mb in out}:
            e.failed = True
            ctx.add(e.key("name"), f"member {name!r} is listed twice")
        if ip is not None and ip in {mb.ip for mb in out}:
            e.failed = True
            ctx.add(e.key("ip"), f"{ip} is listed twice")
        if e.failed or name is None or ip is None:
            failed = True
            continue
        out.append(PoolMemberConfig(name=name, ip=ip, weight=weight))
    if failed:
        raise _Skip
    return tuple(out)


def _pool_addresses(ctx: _Ctx, path: str, value: Any) -> tuple[IPInterface, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a list of addresses with prefix such as 192.0.2.101/24, "
                         f"got {_got(value, path)}")
    out: list[IPInterface] = []
    for i, item in enumerate(value):
        sub = f"{path}[{i}]"
        try:
            iface = _interface(sub, item)
        except ValueError as exc:
            raise ConfigError(sub, str(exc), line=ctx.line(sub), source=ctx.source) from None
        if iface.ip in {a.ip for a in out}:
            raise ConfigError(sub, f"{iface.ip} is listed twice", line=ctx.line(sub),
                              source=ctx.source)
        out.append(iface)
    return tuple(out)


def _pool_key(ctx: _Ctx, path: str, value: Any) -> bytes:
    key = _read_secret_file(ctx, path, value)
    if len(key) < MIN_POOL_KEY:
        raise ValueError(f"the key in {ctx.resolve(str(value))} is too short: at least "
                         f"{MIN_POOL_KEY} bytes (head -c 32 /dev/urandom > FILE)")
    return key


def _preferred(ctx: _Ctx, path: str, value: Any, members: tuple[PoolMemberConfig, ...],
               addresses: tuple[IPInterface, ...]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of address: member, got {_got(value, path)}")
    by_ip = {a.ip: a for a in addresses}
    member_names = [mb.name for mb in members]
    out: dict[str, str] = {}
    for raw, member in value.items():
        sub = _join(path, raw)
        try:
            ip = ipaddress.ip_interface(raw).ip
        except ValueError:
            ip = None
        if ip is None or ip not in by_ip:
            ctx.fail(sub, "this key is not one of this pool's addresses")
        if not isinstance(member, str) or member not in member_names:
            hint = _hint(member, member_names) if isinstance(member, str) else ""
            ctx.fail(sub, f"expected a member of this pool, got {_got(member, sub)}{hint}")
        out[str(ip)] = member
    return out
