"""`coordination:` of a pool (the etcd backend): parsing, defaults, every error with its key
and line; and the pool definition as stored in etcd (encode, verify, decode)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from minisft.config.loader import parse_config
from minisft.config.model import (
    CoordinationBackend,
    CoordinationConfig,
    EtcdTLSConfig,
    FallbackMode,
    PoolConfig,
)
from minisft.pools.etcd_backend import (
    FenceTiming,
    decode_definition,
    definition_digest,
    definition_of,
    encode_definition,
)
from minisft.pools.protocol import config_digest
from tests.unit.test_config import assert_error, cfg, error, private

ETCD = """\
coordination:
  backend: etcd
  endpoints: ["http://192.0.2.250:2379", "http://192.0.2.251", "http://[2001:db8::252]:2379"]
"""


def pool(body: str, key: Path | None = None) -> str:
    head = ("pools:\n  - name: front\n    members:\n"
            "      - {name: alpha, ip: 192.0.2.1}\n      - {name: beta, ip: 192.0.2.2}\n"
            "    addresses: [192.0.2.101/24, 2001:db8::101/64]\n")
    if key is not None:
        head += f"    key_file: {key}\n"
    return cfg(head + textwrap.indent(textwrap.dedent(body), "    "))


def etcd(extra: str = "", key: Path | None = None) -> str:
    """An etcd pool with http endpoints only, plus `extra` under coordination."""
    body = ("coordination:\n  backend: etcd\n  endpoints: [http://192.0.2.250:2379]\n"
            + textwrap.indent(textwrap.dedent(extra), "  "))
    return pool(body, key)


@pytest.fixture
def pool_key(tmp_path: Path) -> Path:
    return private(tmp_path / "pool.key", os.urandom(32))


# ====================================================================== good configs


def test_embedded_is_the_default(pool_key: Path) -> None:
    (p,) = parse_config(pool("", pool_key)).pools
    assert p.coordination == CoordinationConfig()
    assert p.coordination.backend is CoordinationBackend.EMBEDDED
    assert not p.coordination.etcd
    (q,) = parse_config(pool("coordination: {backend: embedded}\n", pool_key)).pools
    assert q == p


def test_etcd_pool_parses_with_defaults() -> None:
    (p,) = parse_config(pool(ETCD)).pools
    c = p.coordination
    assert c.etcd and c.backend is CoordinationBackend.ETCD
    # normalised: default port, IPv6 bracketed
    assert c.endpoints == ("http://192.0.2.250:2379", "http://192.0.2.251:2379",
                           "http://[2001:db8::252]:2379")
    assert (c.ttl, c.prefix, c.tls, c.username, c.password) == (5, "/minisft", None, None,
                                                                None)
    assert p.key is None, "key_file is optional in etcd mode"


def test_etcd_pool_everything(tmp_path: Path, pool_key: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    cert = tmp_path / "client.pem"
    cert.write_text("cert")
    key = private(tmp_path / "client.key", "key")
    pw = private(tmp_path / "etcd.pw", "s3cret\n")
    text = pool(f"""\
        coordination:
          backend: ETCD
          endpoints: https://etcd1.example.net:2379
          ttl: 10s
          prefix: /sites/paris/
          tls: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}
          username: minisft
          password_file: {pw}
        """, pool_key)
    (p,) = parse_config(text).pools
    c = p.coordination
    assert c.endpoints == ("https://etcd1.example.net:2379",)
    assert (c.ttl, c.prefix, c.username, c.password) == (10, "/sites/paris", "minisft",
                                                         "s3cret")
    assert c.tls == EtcdTLSConfig(ca_file=ca, cert_file=cert, key_file=key)
    # a secret file loses its final newline (echo adds one), so a random key ending in
    # \n or \r reads one byte shorter: compare by the same rule as test_config.py
    assert p.key == pool_key.read_bytes().rstrip(b"\r\n")
    assert "s3cret" not in repr(p)


def test_secrets_false_leaves_the_password_alone(tmp_path: Path) -> None:
    text = etcd("username: u\npassword_file: /nonexistent/pw\n")
    (p,) = parse_config(text, secrets=False).pools
    assert p.coordination.username == "u" and p.coordination.password is None


def test_the_embedded_digest_ignores_coordination(pool_key: Path) -> None:
    (p,) = parse_config(pool("", pool_key)).pools
    q = dataclasses.replace(p, coordination=CoordinationConfig(
        backend=CoordinationBackend.ETCD, endpoints=("http://192.0.2.250:2379",)))
    assert config_digest(p) == config_digest(q)


# ====================================================================== errors


@pytest.mark.parametrize(("extra", "key", "needle", "message"), [
    ("ttl: 1s\n", "ttl", "ttl:", r"between 2s and 600s"),
    ("ttl: 2500ms\n", "ttl", "ttl:", "whole seconds"),
    ("ttl: 1h\n", "ttl", "ttl:", "between 2s and 600s"),
    ("prefix: minisft\n", "prefix", "prefix:", "key prefix such as /minisft"),
    ("prefix: /a b\n", "prefix", "prefix:", "key prefix"),
    ("username: u\n", "password_file", "coordination:", "go together"),
    ("tls: {ca_file: /etc/hostname}\n", "tls", "tls:", "TLS needs https://"),
    ("wat: 1\n", "wat", "wat:", "unknown key"),
])
def test_coordination_rules(extra: str, key: str, needle: str, message: str) -> None:
    assert_error(etcd(extra), f"pools[0].coordination.{key}", needle, message)


@pytest.mark.parametrize(("endpoints", "key", "message"), [
    ("[]", "endpoints", "expected a list of URLs"),
    ("[192.0.2.250:2379]", "endpoints[0]", "expected a URL such as"),
    ("[ftp://192.0.2.250]", "endpoints[0]", "scheme must be http or https"),
    ("[http://192.0.2.250:2379/v3]", "endpoints[0]", "no path"),
    ("[http://user:pw@192.0.2.250]", "endpoints[0]", "no path, user"),
    ("[http://192.0.2.250:99999]", "endpoints[0]", "expected a URL"),
    ("[http://192.0.2.250, http://192.0.2.250:2379]", "endpoints[1]", "listed twice"),
    ("[http://192.0.2.250, https://192.0.2.251]", "endpoints", "mixes http:// and https://"),
    ("[http://bad_host]", "endpoints[0]", "not a host name"),
])
def test_endpoint_rules(endpoints: str, key: str, message: str) -> None:
    text = pool(f"coordination: {{backend: etcd, endpoints: {endpoints}}}\n")
    assert_error(text, f"pools[0].coordination.{key}", "coordination:", message)


def test_a_bad_etcd_block_is_not_also_a_missing_key_file() -> None:
    errors = error(pool("coordination: {backend: etcd, endpoints: [http://192.0.2.250, "
                        "https://192.0.2.251]}\n")).errors
    assert [e.key for e in errors] == ["pools[0].coordination.endpoints"]


def test_endpoints_are_required() -> None:
    assert_error(pool("coordination: {backend: etcd}\n"), "pools[0].coordination.endpoints",
                 "coordination:", "required")


def test_etcd_without_its_client_library_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is what an uninstalled package looks like to find_spec: check-config
    # (and so ExecStartPre) says it, rather than the daemon failing at its start
    monkeypatch.setitem(sys.modules, "aetcd", None)
    text = etcd()
    assert_error(text, "pools[0].coordination.backend", "backend: etcd",
                 r"aetcd package, which is not installed \(pip install 'minisft\[etcd\]'\)")
    parse_config(text, "<string>", secrets=False)  # the CLI finding the daemon: no error


def test_unknown_backend() -> None:
    assert_error(pool("coordination: {backend: consul}\n"), "pools[0].coordination.backend",
                 "coordination:", "expected one of embedded, etcd")


def test_etcd_keys_need_backend_etcd(pool_key: Path) -> None:
    text = pool("coordination:\n  endpoints: [http://192.0.2.250]\n", pool_key)
    assert_error(text, "pools[0].coordination.endpoints", "endpoints:",
                 "only used with backend: etcd")


def test_key_file_still_required_in_embedded_mode() -> None:
    assert_error(pool("coordination: {backend: embedded}\n"), "pools[0].key_file",
                 "- name: front", "required")


@pytest.mark.parametrize(("extra", "key"), [
    ("witness: 192.0.2.254\n", "witness"), ("port: 7500\n", "port"),
    ("watch: all\n", "watch"), ("looksalive: {interval: 1s}\n", "looksalive"),
])
def test_embedded_only_keys_are_refused_with_etcd(extra: str, key: str) -> None:
    text = etcd() + textwrap.indent(extra, "    ")
    assert_error(text, f"pools[0].{key}", f"{key}:", "not used with coordination.backend etcd")


def test_tls_files(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("c")
    loose = tmp_path / "loose.key"
    loose.write_text("k")
    loose.chmod(0o644)
    https = "coordination:\n  backend: etcd\n  endpoints: [https://192.0.2.250]\n"
    text = pool(https + f"  tls: {{cert_file: {cert}}}\n")
    assert_error(text, "pools[0].coordination.tls.key_file", "tls:", "go together")
    text = pool(https + f"  tls: {{cert_file: {cert}, key_file: {loose}}}\n")
    assert_error(text, "pools[0].coordination.tls.key_file", "tls:", "chmod 600")
    text = pool(https + f"  tls: {{ca_file: {tmp_path / 'missing.pem'}}}\n")
    assert_error(text, "pools[0].coordination.tls.ca_file", "tls:", "no such file")


def test_password_file_is_a_secret(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2")
    pw.chmod(0o640)
    e = assert_error(etcd(f"username: u\npassword_file: {pw}\n"),
                     "pools[0].coordination.password_file", "password_file:", "chmod 600")
    assert "hunter2" not in e.report()


def test_all_errors_are_reported_together() -> None:
    errors = error(etcd("ttl: 1s\nprefix: x\n")).errors
    assert {e.key for e in errors} >= {"pools[0].coordination.ttl",
                                       "pools[0].coordination.prefix"}


# ====================================================================== definition in etcd


def etcd_pool(key: bytes | None = None) -> PoolConfig:
    (p,) = parse_config(etcd("ttl: 3s\n")).pools
    return dataclasses.replace(p, key=key, preferred={"192.0.2.101": "beta"})


def test_definition_round_trip() -> None:
    p = etcd_pool()
    raw = encode_definition(p)
    assert json.loads(raw)["mac"] is None
    back = decode_definition(raw, p)
    assert back == p
    assert definition_of(p)["members"][0] == {"name": "alpha", "ip": "192.0.2.1",
                                              "weight": 1}


def test_definition_from_etcd_wins_over_the_local_config() -> None:
    p = etcd_pool()
    theirs = dataclasses.replace(p, addresses=p.addresses[:1], fallback=dataclasses.replace(
        p.fallback, mode=FallbackMode.AUTO))
    got = decode_definition(encode_definition(theirs), p)
    assert got.addresses == (ipaddress.ip_interface("192.0.2.101/24"),)
    assert got.fallback.mode is FallbackMode.AUTO
    assert got.coordination == p.coordination  # local settings stay local
    assert definition_digest(definition_of(got)) != definition_digest(definition_of(p))


def test_definition_mac() -> None:
    key = os.urandom(32)
    signed = etcd_pool(key)
    assert decode_definition(encode_definition(signed), signed) == signed
    with pytest.raises(ValueError, match="HMAC does not verify"):
        decode_definition(encode_definition(etcd_pool()), signed)  # unsigned
    with pytest.raises(ValueError, match="HMAC does not verify"):
        decode_definition(encode_definition(etcd_pool(os.urandom(32))), signed)
    doc = json.loads(encode_definition(signed))
    doc["definition"]["addresses"].append("192.0.2.199/24")  # altered after signing
    with pytest.raises(ValueError, match="HMAC does not verify"):
        decode_definition(json.dumps(doc).encode(), signed)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(name="back"), "definition of pool 'back'"),
    (lambda d: d["members"].pop(), "too few members"),
    (lambda d: d["members"][0].update(weight=0), "bad weight"),
    (lambda d: d["members"][0].update(name="no spaces"), "bad member name"),
    (lambda d: d["addresses"].append("bogus"), "invalid definition"),
    (lambda d: d.update(preferred={"192.0.2.199": "alpha"}), "preferred"),
    (lambda d: d["fallback"].update(mode="sometimes"), "invalid definition"),
])
def test_bad_definitions_are_refused(mutate: object, message: str) -> None:
    p = etcd_pool()
    doc = json.loads(encode_definition(p))
    mutate(doc["definition"])  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        decode_definition(json.dumps(doc).encode(), p)
    with pytest.raises(ValueError, match="not a MiniSFT pool definition"):
        decode_definition(b"{not json", p)


def test_fence_timing() -> None:
    t = FenceTiming.for_ttl(5)
    assert (t.keepalive_interval, t.fence_after) == pytest.approx((5 / 6, 10 / 3))
    assert t.rpc_timeout <= t.keepalive_interval
    assert FenceTiming.for_ttl(3).fence_after == 2.0
    assert FenceTiming.for_ttl(600).rpc_timeout == 2.0
