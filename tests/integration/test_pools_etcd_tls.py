"""Pools in etcd mode over TLS and etcd authentication, through the real daemon.

One etcd on 192.0.2.250 serving clients over https only (a CA, a server certificate with an
IP SAN for the documentation address, and client certificates, all made in the test's tmp
dir; etcd requires a client certificate) with auth enabled: a root user, and a `minisft`
user whose role may read and write the pool's prefix only. Three `minisft run` members
configured as docs/pools.md tells an admin (`coordination.tls` with ca_file, cert_file and
key_file; `username`, `password_file`):

* a: the right CA and password: the pool goes active, a binds every address and its owner
  keys are in etcd;
* b: the wrong password: it binds nothing and `minisft status` says etcd refused the login;
* c: a CA that did not sign the server's certificate: it binds nothing and says why.

The password never shows in a daemon's log, events or status.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.cluster import Cluster, Node, wait_until
from tests.integration.etcd_support import (
    ETCDCTL,
    EtcdCluster,
    ServerTLS,
    etcd_available,
    pool_status,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not etcd_available(), reason="etcd not installed (apt-get install "
                       "etcd-server etcd-client)"),
]

MEMBERS = ["a", "b", "c"]
ADDRESSES = ["192.0.2.101/24", "192.0.2.102/24", "2001:db8::101/64"]
PREFIX = "/minisft-tls-test"
OWNERS = f"{PREFIX}/pools/front/owners/"
ROOT_PASSWORD = "root-Xq7vLz3"
PASSWORD = "pool-Secret-9fK2wQ"  # distinctive: searched for in logs and status
WRONG_PASSWORD = "not-the-Password-4hT8"


# ---------------------------------------------------------------------- certificates


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(path: Path, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str,
          usage: x509.ObjectIdentifier, cert_file: Path, key_file: Path,
          ip: str | None = None) -> None:
    """A certificate `ca` signs for `cn` (and an IP SAN for `ip`: the endpoints are IPs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_file)


def make_tls(tmp: Path, ip: str) -> tuple[ServerTLS, Path, Path]:
    """A CA; the server certificate it signed for `ip`; client certificates for etcdctl
    and for the members (returned: cert, key). The members' CN is no etcd user: etcd
    takes a client certificate's CN as the user when no token comes, and the password
    must be what decides here."""
    ca_file = tmp / "etcd-ca.pem"
    ca, ca_key = make_ca(ca_file, "minisft test etcd CA")
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    issue(ca, ca_key, "etcd0", server, tmp / "etcd.pem", tmp / "etcd.key", ip)
    issue(ca, ca_key, "etcdctl", client, tmp / "etcdctl.pem", tmp / "etcdctl.key")
    issue(ca, ca_key, "minisft-member", client, tmp / "member.pem", tmp / "member.key")
    return (ServerTLS(ca_file=ca_file, cert_file=tmp / "etcd.pem", key_file=tmp / "etcd.key",
                      client_cert=tmp / "etcdctl.pem", client_key=tmp / "etcdctl.key"),
            tmp / "member.pem", tmp / "member.key")


# ---------------------------------------------------------------------- the lab


def enable_auth(etcd: EtcdCluster) -> None:
    """root, and a `minisft` user that may read and write the pool's prefix only; then
    auth on (etcdctl authenticates as root from here on)."""
    etcd.ctl("user", "add", f"root:{ROOT_PASSWORD}", "--interactive=false")
    etcd.ctl("user", "add", f"minisft:{PASSWORD}", "--interactive=false")
    etcd.ctl("role", "add", "minisft-pool")
    etcd.ctl("role", "grant-permission", "minisft-pool", "--prefix=true", "readwrite",
             f"{PREFIX}/")
    etcd.ctl("user", "grant-role", "minisft", "minisft-pool")
    etcd.ctl("auth", "enable")
    etcd.user = f"root:{ROOT_PASSWORD}"
    # the check that auth is really on: no user, no answer
    user, etcd.user = etcd.user, None
    refused = etcd.ctl("get", "--prefix", PREFIX, check=False)
    etcd.user = user
    assert refused.returncode != 0, "etcd answered without a user: auth is not on"


def pool_cfg(endpoints: list[str], tls: dict[str, str], password_file: Path
             ) -> dict[str, Any]:
    return {
        "name": "front",
        "members": [{"name": m, "ip": f"192.0.2.{i}"} for i, m in enumerate(MEMBERS, 1)],
        "addresses": ADDRESSES,
        "fallback": {"mode": "auto", "hold_down": "1s"},
        "coordination": {"backend": "etcd", "endpoints": endpoints, "ttl": "3s",
                         "prefix": PREFIX, "tls": tls,
                         "username": "minisft", "password_file": str(password_file)},
    }


@contextmanager
def tls_lab(tmp_path: Path) -> Iterator[tuple[Cluster, EtcdCluster]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    with Cluster(tmp_path, MEMBERS) as c:
        server_tls, member_cert, member_key = make_tls(certs, "192.0.2.250")
        etcd = EtcdCluster(c.lab, 1, tls=server_tls)
        try:
            etcd.start()
            bare = etcd.hosts[0].run("env", "ETCDCTL_API=3", ETCDCTL, "--dial-timeout=2s",
                                     f"--endpoints={etcd.endpoints[0]}",
                                     f"--cacert={server_tls.ca_file}", "get", "x",
                                     check=False, timeout=15)
            assert bare.returncode != 0, "etcd answered a client without a certificate"
            enable_auth(etcd)
            untrusted = certs / "other-ca.pem"
            make_ca(untrusted, "a CA etcd's certificate does not come from")
            setups = {"a": (server_tls.ca_file, PASSWORD),
                      "b": (server_tls.ca_file, WRONG_PASSWORD), "c": (untrusted, PASSWORD)}
            for n, (ca, password) in setups.items():
                pw = tmp_path / n / "etcd.password"
                pw.write_text(password + "\n")
                pw.chmod(0o600)
                tls = {"ca_file": str(ca), "cert_file": str(member_cert),
                       "key_file": str(member_key)}
                c.nodes[n].configure([], pools=[pool_cfg(etcd.endpoints, tls, pw)])
                c.nodes[n].start(wait=False)
            for n in MEMBERS:
                wait_until(f"{n}'s daemon to listen", c.nodes[n]._ready, timeout=20)
            yield c, etcd
        except BaseException:
            print(etcd.tail())
            raise
        finally:
            etcd.stop()


def refused(node: Node) -> dict[str, Any] | None:
    """The pool's status once it reports a failed connection with its reason."""
    pool = pool_status(node)
    etcd = pool["etcd"]
    return pool if not etcd["connected"] and etcd["last_error"] else None


# ---------------------------------------------------------------------- the test


def test_tls_and_auth(tmp_path: Path) -> None:
    with tls_lab(tmp_path) as (c, etcd):
        a, b, cc = (c.nodes[n] for n in MEMBERS)
        endpoint = etcd.endpoints[0]
        assert endpoint.startswith("https://")

        # a: over TLS, logged in: active, everything bound, its owner keys in etcd
        pool = wait_until("a active with every address", lambda: (
            p if (p := pool_status(a))["phase"] == "active"
            and sorted(p["held"]) == sorted(ADDRESSES) else None), timeout=20)
        assert pool["etcd"]["connected"] and pool["etcd"]["lease"]
        assert pool["etcd"]["endpoint"] == endpoint
        for address in ADDRESSES:
            assert a.holds(address), f"{address} is not on a's interface"
        owners = {k.rsplit("/", 1)[1]: json.loads(v["value"])["member"]
                  for k, v in etcd.get_prefix(OWNERS).items()}
        assert owners == {x.split("/")[0]: "a" for x in ADDRESSES}
        members = etcd.get_prefix(f"{PREFIX}/pools/front/members/")
        assert sorted(k.rsplit("/", 1)[1] for k in members) == ["a"], \
            "b or c registered in etcd despite a failed login or TLS handshake"
        text = a.cli("status", check=True).stdout
        assert f"etcd {endpoint}: connected, lease " in text
        for address in ADDRESSES:
            assert c.client.ping(address.split("/")[0]), f"{address} unreachable"

        # b: the wrong password: one clear reason, nothing bound
        pool = wait_until("b reports the refused login", lambda: refused(b), timeout=15)
        error = pool["etcd"]["last_error"]
        print(f"\nb (wrong password): {error}")
        assert error == (f"{endpoint}: authentication failed: etcdserver: authentication "
                         "failed, invalid user ID or password")
        assert pool["phase"] != "active" and pool["held"] == []
        text = b.cli("status", check=True).stdout
        assert f"etcd {endpoint}: NOT CONNECTED, lease none (ttl 3s), last error: {error}" \
            in text

        # c: a CA that did not sign etcd's certificate: the handshake fails, nothing bound
        pool = wait_until("c reports the failed TLS handshake", lambda: refused(cc),
                          timeout=15)
        error = pool["etcd"]["last_error"]
        print(f"c (untrusted CA): {error}")
        # not "authentication failed": the request never reached etcd, the password is fine
        assert error.startswith(f"{endpoint}: cannot connect: ") and "\n" not in error
        assert "authentication" not in error
        assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error
        assert pool["phase"] != "active" and pool["held"] == []
        assert f"etcd {endpoint}: NOT CONNECTED" in cc.cli("status", check=True).stdout

        for node in (b, cc):
            assert not [x for x in ADDRESSES if node.holds(x)], f"{node.name} bound an address"
        assert {k.rsplit("/", 1)[1]: json.loads(v["value"])["member"] for k, v in
                etcd.get_prefix(OWNERS).items()} == owners, "the owners changed"

        # the secrets: in no log, event or status of any member
        for node in (a, b, cc):
            status = node.cli("status", "--json", check=True).stdout
            events = node.cli("events", "--json", "--last", "0", check=True).stdout
            text = node.cli("status", check=True).stdout
            for secret in (PASSWORD, WRONG_PASSWORD):
                for what, blob in (("log", node.log()), ("status --json", status),
                                   ("status", text), ("events", events)):
                    assert secret not in blob, f"{node.name}'s {what} shows the password"
            assert node.running, f"{node.name}'s daemon died:\n{node.log()[-3000:]}"
