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
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minisft.config.loader import load_config
from minisft.core.events import Event, Notice
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
