"""etcd for the pool integration tests: a real etcd cluster in lab namespaces, a reader for
its keys, and `push` (what `minisft pool push` runs). The members themselves run
tests/integration/pool_node.py, which picks EtcdPoolRuntime for an etcd pool.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minisft.lab.netns import Host, Lab

if TYPE_CHECKING:
    from tests.integration.cluster import Node

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
CLIENT_PORT = 2379
PEER_PORT = 2380


def etcd_available() -> bool:
    return os.path.exists(ETCD) and os.path.exists(ETCDCTL)


@dataclass(frozen=True)
class ServerTLS:
    """Client-facing TLS for the etcd members: their certificate and key, and the CA that
    etcdctl checks them with. With `client_cert` + `client_key` (etcdctl's) the members
    also require client certificates signed by that CA. The peer traffic stays plain (it
    is the lab's own)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert: Path | None = None
    client_key: Path | None = None


class EtcdCluster:
    """`size` etcd members, each in its own lab host `etcd<i>` on 192.0.2.(250 + i).

    Data directories live in /dev/shm (a tmpfs): fsync on a shared disk stalls raft
    heartbeats and causes spurious elections on a loaded machine. With `tls` the clients
    are served over https only; `user` ("name:password") is what `ctl` authenticates as
    once the test has enabled etcd's auth."""

    def __init__(self, lab: Lab, size: int = 3, first: int = 250,
                 tls: ServerTLS | None = None) -> None:
        self.lab = lab
        self.tls = tls
        self.user: str | None = None
        self.hosts: list[Host] = []
        self.names = [f"etcd{i}" for i in range(size)]
        self.ips = [f"192.0.2.{first + i}" for i in range(size)]
        self.data = Path(tempfile.mkdtemp(prefix=f"minisft-etcd-{lab.id}-",
                                          dir="/dev/shm" if os.path.isdir("/dev/shm")
                                          else None))
        self.logs: list[Path] = []
        self.procs: list[Any] = []
        for name, ip in zip(self.names, self.ips, strict=True):
            self.hosts.append(lab.add_host(name, f"{ip}/24"))

    @property
    def endpoints(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://{ip}:{CLIENT_PORT}" for ip in self.ips]

    def start(self, timeout: float = 60.0) -> None:
        cluster = ",".join(f"{n}=http://{ip}:{PEER_PORT}" for n, ip in zip(
            self.names, self.ips, strict=True))
        for name, ip, host in zip(self.names, self.ips, self.hosts, strict=True):
            log = self.data / f"{name}.log"
            self.logs.append(log)
            client = f"{'https' if self.tls else 'http'}://{ip}:{CLIENT_PORT}"
            argv = [ETCD, "--name", name, "--data-dir", str(self.data / name),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", f"http://{ip}:{PEER_PORT}",
                    "--initial-advertise-peer-urls", f"http://{ip}:{PEER_PORT}",
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"minisft-{self.lab.id}",
                    "--heartbeat-interval", "100", "--election-timeout", "1000",
                    "--log-level", "warn", "--logger", "zap"]
            if self.tls:
                argv += ["--cert-file", str(self.tls.cert_file),
                         "--key-file", str(self.tls.key_file)]
                if self.tls.client_cert:
                    argv += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.ca_file)]
            with open(log, "ab") as fh:
                self.procs.append(host.popen(argv, stdout=fh, stderr=fh))
        deadline = time.monotonic() + timeout
        while True:
            out = self.ctl("endpoint", "health", check=False)
            if out.returncode == 0:
                return
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"etcd did not become healthy: {out.stderr}\n"
                                     + self.tail())
            time.sleep(0.3)

    def ctl(self, *args: str, host: Host | None = None, check: bool = True,
            endpoints: list[str] | None = None) -> Any:
        h = host or self.hosts[-1]
        extra = [f"--cacert={self.tls.ca_file}"] if self.tls else []
        if self.tls and self.tls.client_cert:
            extra += [f"--cert={self.tls.client_cert}", f"--key={self.tls.client_key}"]
        extra += [f"--user={self.user}"] if self.user else []
        return h.run("env", "ETCDCTL_API=3", ETCDCTL, "--dial-timeout=2s",
                     "--command-timeout=3s", "--endpoints=" + ",".join(
                         endpoints or self.endpoints), *extra, *args, check=check,
                     timeout=15)

    def leader(self) -> int:
        """Index of the current raft leader."""
        status = json.loads(self.ctl("endpoint", "status", "-w", "json").stdout)
        by_member = {st["Status"]["header"]["member_id"]: i for i, st in enumerate(status)}
        return by_member[status[0]["Status"]["leader"]]

    def lead_elsewhere(self, avoid: int) -> None:
        """Make sure member `avoid` is not the leader (moved to the next one if it is).

        Cutting off the leader makes the majority elect a new one first (1-2 s with
        --election-timeout 1000), a gap in which nobody renews a lease: with ttl 3 s that
        can fence members of the majority too. A test of "this member loses the quorum"
        must not also be a test of "the cluster loses its leader"."""
        if self.leader() != avoid:
            return
        status = json.loads(self.ctl("endpoint", "status", "-w", "json").stdout)
        target = (avoid + 1) % len(self.ips)
        member = f"{status[target]['Status']['header']['member_id']:x}"
        self.ctl("move-leader", member, endpoints=[self.endpoints[avoid]])
        deadline = time.monotonic() + 10
        while self.leader() == avoid:
            if time.monotonic() > deadline:
                raise AssertionError(f"etcd{avoid} is still the leader")
            time.sleep(0.1)

    def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        """key -> {"value": str, "lease": int} under `prefix`."""
        out = self.ctl("get", "--prefix", prefix, "-w", "json").stdout
        data = json.loads(out)
        found = {}
        for kv in data.get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            value = base64.b64decode(kv.get("value", "")).decode()
            found[key] = {"value": value, "lease": int(kv.get("lease", 0))}
        return found

    def tail(self) -> str:
        text = ""
        for log in self.logs:
            if log.exists():
                text += f"\n----- {log.name} -----\n{log.read_text()[-2000:]}"
        return text

    def stop(self) -> None:
        for host in self.hosts:
            host.kill_processes()
        shutil.rmtree(self.data, ignore_errors=True)


# ---------------------------------------------------------------------- admin


PUSH = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from minisft.config.loader import load_config
from minisft.pools.etcd_backend import push_definition
pool = load_config(sys.argv[2]).pools[0]
print(json.dumps(asyncio.run(push_definition(pool))))
"""


def push(host: Host, config: Path) -> dict[str, Any]:
    """What `minisft pool push` runs (push_definition), in `host`; returns its result."""
    root = str(Path(__file__).resolve().parents[2])
    out = host.run(sys.executable, "-c", PUSH, root, str(config), timeout=30).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def pool_status(node: Node) -> dict[str, Any]:
    """The one pool in `node`'s `minisft status --json`."""
    pools = node.status()["pools"]
    assert len(pools) == 1
    result: dict[str, Any] = pools[0]
    return result
