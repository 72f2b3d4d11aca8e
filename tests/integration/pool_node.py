"""A tiny pool member for the integration tests: one pool runtime on real sockets.

    python tests/integration/pool_node.py CONFIG.yaml JOURNAL.jsonl STATUS.json

CONFIG is an ordinary minisft config (node + pools), read by the real loader. The first
pool runs with the real Netlink, NeighbourWatch and Pinger inside the lab namespace the
process was started in: a PoolRuntime, or an EtcdPoolRuntime for `coordination.backend:
etcd`. Events are journaled as JSON lines to JOURNAL; the runtime's
snapshot is rewritten to STATUS every 100 ms. SIGTERM stops it and releases the
addresses (release_on_stop), SIGINT stops it without releasing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minisft.config.loader import load_config
from minisft.core.events import Event, Notice
from minisft.lab.netns import Host, Lab
from minisft.net.link import Netlink
from minisft.net.neighbour import NeighbourWatch
from minisft.pools.etcd_backend import EtcdPoolRuntime
from minisft.pools.runtime import PoolRuntime
from minisft.probes.looksalive import Pinger


async def main(config_path: str, journal_path: str, status_path: str) -> int:
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

    runtime: PoolRuntime | EtcdPoolRuntime
    if pool.coordination.etcd:
        runtime = EtcdPoolRuntime(pool, node=config.node.name, clock=time.monotonic,
                                  neighbours=neighbours, addresses=netlink, iface=iface,
                                  netlink_executor=executor, emit=emit, pinger=None)
    else:
        runtime = PoolRuntime(pool, node=config.node.name, clock=time.monotonic,
                              neighbours=neighbours, addresses=netlink, iface=iface,
                              netlink_executor=executor, emit=emit, pinger=Pinger())
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



# ---------------------------------------------------------------------- the test side


class PoolMembers:
    """The test side: one pool_node.py process per member host of a lab, with its journal
    and status files in `tmp`. Subclasses write each member's config (`config`).

    Members get 192.0.2.N/24 and 2001:db8::N/64 (N = 1, 2, ... in `members` order)."""

    def __init__(self, tmp: Path, members: dict[str, int], addresses: list[str]) -> None:
        self.tmp = tmp
        self.members = members
        self.addresses = addresses
        self.lab = Lab()
        self.hosts: dict[str, Host] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for i, name in enumerate(members, start=1):
                self.hosts[name] = self.lab.add_host(name, f"192.0.2.{i}/24",
                                                     f"2001:db8::{i}/64")
        except BaseException:
            self.lab.close()
            raise

    def config(self, name: str, addresses: list[str] | None = None) -> Path:
        """Write member `name`'s config file (serving `addresses`, default all)."""
        raise NotImplementedError

    def start(self, name: str, **kw: Any) -> None:
        cfg = self.config(name, **kw)
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[name] = self.hosts[name].popen(
            [sys.executable, str(Path(__file__).resolve()), str(cfg),
             str(self.journal_path(name)), str(self.status_path(name))],
            stdout=log, stderr=log)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(20)

    def journal_path(self, name: str) -> Path:
        return self.tmp / f"{name}.jsonl"

    def status_path(self, name: str) -> Path:
        return self.tmp / f"{name}.status.json"

    def status(self, name: str) -> dict[str, Any]:
        for _ in range(20):
            try:
                data: dict[str, Any] = json.loads(self.status_path(name).read_text())
                return data
            except (OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError(f"no status from {name}")

    def events(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.journal_path(name)
        if not path.exists():
            return []
        out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in out if kind is None or e["kind"] == kind]

    def holders(self, names: list[str] | None = None,
                addresses: list[str] | None = None) -> dict[str, list[str]]:
        addresses = addresses or self.addresses
        out: dict[str, list[str]] = {a: [] for a in addresses}
        for name in names or list(self.members):
            have = {a.split("/")[0] for a in self.hosts[name].addresses()}
            for a in addresses:
                if a.split("/")[0] in have:
                    out[a].append(name)
        return out

    def layout(self, names: list[str] | None = None,
               addresses: list[str] | None = None) -> dict[str, str] | None:
        """Address -> its one holder, or None while any address has 0 or 2+ holders."""
        holders = self.holders(names, addresses)
        if any(len(h) != 1 for h in holders.values()):
            return None
        return {a: h[0] for a, h in holders.items()}

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited:\n" + (
                self.tmp / f"{name}.log").read_text()[-3000:]

    def dump_logs(self) -> None:
        """The members' logs to stderr (a failed test shows them)."""
        for name in self.members:
            log = self.tmp / f"{name}.log"
            if log.exists():
                sys.stderr.write(f"\n----- {name} -----\n{log.read_text()[-4000:]}\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
