"""A pool's definition as stored in etcd: what every member must share, encoded, signed
and checked. Pure functions (no I/O): the etcd runtime reads and writes the bytes, the
etcd machine (`minisft.pools.etcd_machine`) decides with the decoded definition."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import re
from typing import Any

from minisft.config.model import FallbackConfig, FallbackMode, PoolConfig, PoolMemberConfig

DEFINITION_VERSION = 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)


def definition_of(pool: PoolConfig) -> dict[str, Any]:
    """What every member must share, as stored in etcd (plain JSON, canonical order)."""
    preferred = {}
    for raw, member in pool.preferred.items():
        with contextlib.suppress(ValueError):
            preferred[str(ipaddress.ip_interface(raw).ip)] = member
    return {
        "name": pool.name,
        "members": [{"name": m.name, "ip": str(m.ip), "weight": m.weight}
                    for m in pool.members],
        "addresses": [str(a) for a in pool.addresses],
        "preferred": dict(sorted(preferred.items())),
        "fallback": {"mode": pool.fallback.mode.value,
                     "hold_down": pool.fallback.hold_down},
    }


def _canonical(definition: dict[str, Any]) -> bytes:
    return json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()


def definition_digest(definition: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(definition)).hexdigest()[:32]


def encode_definition(pool: PoolConfig) -> bytes:
    d = definition_of(pool)
    mac = hmac.new(pool.key, _canonical(d), hashlib.sha256).hexdigest() if pool.key else None
    return json.dumps({"v": DEFINITION_VERSION, "definition": d, "mac": mac},
                      sort_keys=True).encode()


def decode_definition(raw: bytes, local: PoolConfig) -> PoolConfig:
    """The pool as etcd defines it, on top of `local` (key, coordination). ValueError names
    what is wrong: not JSON, bad MAC (with a local key), invalid content."""
    try:
        doc = json.loads(raw)
        d = doc["definition"]
        if doc.get("v") != DEFINITION_VERSION or not isinstance(d, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a MiniSFT pool definition") from None
    if local.key is not None:
        mac = doc.get("mac")
        good = hmac.new(local.key, _canonical(d), hashlib.sha256).hexdigest()
        if not isinstance(mac, str) or not hmac.compare_digest(mac, good):
            raise ValueError("its HMAC does not verify with this pool's key_file (written "
                             "without the key, with another key, or altered)")
    try:
        members = tuple(PoolMemberConfig(name=_checked_name(m["name"]),
                                         ip=ipaddress.ip_address(m["ip"]),
                                         weight=_checked_weight(m["weight"]))
                        for m in d["members"])
        addresses = tuple(ipaddress.ip_interface(a) for a in d["addresses"])
        names = {m.name for m in members}
        ips = {str(a.ip) for a in addresses}
        preferred = {str(k): str(v) for k, v in d.get("preferred", {}).items()}
        fb = d["fallback"]
        fallback = FallbackConfig(mode=FallbackMode(fb["mode"]),
                                  hold_down=float(fb["hold_down"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"invalid definition: {exc}") from None
    if d.get("name") != local.name:
        raise ValueError(f"it is the definition of pool {d.get('name')!r}")
    if len(names) != len(members) or len(members) < 2 or not addresses or \
            len(ips) != len(addresses):
        raise ValueError("invalid definition: duplicate or too few members or addresses")
    if any(k not in ips or v not in names for k, v in preferred.items()):
        raise ValueError("invalid definition: preferred names unknown addresses or members")
    return dataclasses.replace(local, members=members, addresses=addresses,
                               preferred=preferred, fallback=fallback)


def _checked_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(f"bad member name {value!r}")
    return value


def _checked_weight(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValueError(f"bad weight {value!r}")
    return value


def differences(a: PoolConfig, b: PoolConfig) -> list[str]:
    """Which parts of the two definitions differ (the keys of `definition_of`)."""
    da, db = definition_of(a), definition_of(b)
    return [k for k in ("members", "addresses", "preferred", "fallback") if da[k] != db[k]]
