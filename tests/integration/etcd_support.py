"""etcd for the pool integration tests: a real etcd cluster in lab namespaces, a reader for
its keys, and a pool member that runs `EtcdPoolRuntime` (run this file as a script).

    python tests/integration/etcd_support.py CONFIG.yaml JOURNAL.jsonl STATUS.json

Same contract as tests/integration/pool_node.py: the first pool of CONFIG runs with the
real Netlink and NeighbourWatch in the namespace the process was started in; events go to
JOURNAL as JSON lines, the snapshot to STATUS every 100 ms; SIGTERM stops and releases,
SIGINT stops without releasing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minisft.lab.netns import Host, Lab

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
CLIENT_PORT = 2379
PEER_PORT = 2380


def etcd_available() -> bool:
    return os.path.exists(ETCD) and os.path.exists(ETCDCTL)


class EtcdCluster:
    """`size` etcd members, each in its own lab host `etcd<i>` on 192.0.2.(250 + i).

    Data directories live in /dev/shm (a tmpfs): fsync on a shared disk stalls raft
    heartbeats and causes spurious elections on a loaded machine."""

    def __init__(self, lab: Lab, size: int = 3, first: int = 250) -> None:
        self.lab = lab
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
        return [f"http://{ip}:{CLIENT_PORT}" for ip in self.ips]

    def start(self, timeout: float = 60.0) -> None:
        cluster = ",".join(f"{n}=http://{ip}:{PEER_PORT}" for n, ip in zip(
            self.names, self.ips, strict=True))
        for name, ip, host in zip(self.names, self.ips, self.hosts, strict=True):
            log = self.data / f"{name}.log"
            self.logs.append(log)
            argv = [ETCD, "--name", name, "--data-dir", str(self.data / name),
                    "--listen-client-urls", f"http://{ip}:{CLIENT_PORT}",
                    "--advertise-client-urls", f"http://{ip}:{CLIENT_PORT}",
                    "--listen-peer-urls", f"http://{ip}:{PEER_PORT}",
                    "--initial-advertise-peer-urls", f"http://{ip}:{PEER_PORT}",
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"minisft-{self.lab.id}",
                    "--heartbeat-interval", "100", "--election-timeout", "1000",
                    "--log-level", "warn", "--logger", "zap"]
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
        return h.run("env", "ETCDCTL_API=3", ETCDCTL, "--dial-timeout=2s",
                     "--command-timeout=3s", "--endpoints=" + ",".join(
                         endpoints or self.endpoints), *args, check=check, timeout=15)

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


# ---------------------------------------------------------------------- the member


async def main(config_path: str, journal_path: str, status_path: str) -> int:
    from minisft.config.loader import load_config
    from minisft.core.events import Event, Notice
    from minisft.net.link import Netlink
    from minisft.net.neighbour import NeighbourWatch
    from minisft.pools.etcd_backend import EtcdPoolRuntime

    config = load_config(config_path)
    pool = config.pools[0]
    loop = asyncio.get_running_loop()
    # one worker, as in the daemon: netlink calls run in order (a release queued after a
    # bind runs after it)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
    netlink = Netlink()
    iface = await loop.run_in_executor(executor, netlink.interface_for,
                                       config.node.local_ip)
    neighbours = NeighbourWatch(iface)
    await neighbours.start()
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115 - lives as long as main
    seq = 0

    def emit(notice: Notice) -> None:
        nonlocal seq
        seq += 1
        event = Event.stamp(notice, seq=seq, time=time.time(), node=config.node.name)
        journal.write(event.to_json() + "\n")

    runtime = EtcdPoolRuntime(pool, node=config.node.name, clock=time.monotonic,
                              neighbours=neighbours, addresses=netlink, iface=iface,
                              netlink_executor=executor, emit=emit, pinger=None)
    held = []
    for address in pool.addresses:
        if await loop.run_in_executor(executor, netlink.has_address, iface, address.ip):
            held.append(address)
    await runtime.start(held)

    stop = asyncio.Event()
    release = True

    def on_signal(rel: bool) -> None:
        nonlocal release
        release = rel
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_signal, True)
    loop.add_signal_handler(signal.SIGINT, on_signal, False)
    tmp = status_path + ".tmp"
    while not stop.is_set():
        with open(tmp, "w") as fh:
            json.dump(runtime.snapshot(), fh)
        os.replace(tmp, status_path)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    await runtime.stop(release=release)
    with open(tmp, "w") as fh:
        json.dump(runtime.snapshot(), fh)
    os.replace(tmp, status_path)
    await neighbours.close()
    netlink.close()
    executor.shutdown(wait=False)
    journal.close()
    return 0


PUSH = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from minisft.config.loader import load_config
from minisft.pools.etcd_backend import push_definition
pool = load_config(sys.argv[2]).pools[0]
print(json.dumps(asyncio.run(push_definition(pool))))
"""


def push(host: Host, config: Path) -> dict[str, Any]:
    """`minisft pool push` as the lead will wire it: run push_definition in `host`."""
    root = str(Path(__file__).resolve().parents[2])
    out = host.run(sys.executable, "-c", PUSH, root, str(config), timeout=30).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
