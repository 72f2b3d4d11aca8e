"""A throw-away network lab in Linux network namespaces, for the demo, tests and benchmarks.

One "switch" namespace holds a bridge; every host is a namespace with one veth (`eth0`)
plugged into it. Faults are made the way they happen: a dead host is `ip link set down`,
loss is nftables `numgen random` on a host's link, a partition is a bridge filter
between two ports. Only documentation addresses are used, and only inside the lab.

Everything the lab creates (namespaces, processes) is removed by `close()`, which the
context manager, `atexit` and the demo's signal handlers all call, even after a failure.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

_ALLOWED = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32")]


class LabError(RuntimeError):
    pass


def _run(cmd: Sequence[str], *, check: bool = True, input: str | None = None,
         timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _check_documentation_address(addr: str) -> None:
    ip = ipaddress.ip_interface(addr).ip
    if not any(ip in net for net in _ALLOWED):
        raise LabError(f"{addr}: the lab only uses documentation addresses "
                       "(192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32)")


@dataclass
class Host:
    lab: Lab
    name: str
    ns: str
    port: str  # the host's port on the lab bridge, in the switch namespace
    ipv4: str | None = None  # with prefix, e.g. 192.0.2.1/24
    ipv6: str | None = None
    ifname: str = "eth0"
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def ip(self) -> str:
        """The host's first address, without prefix."""
        addr = self.ipv4 or self.ipv6
        assert addr is not None
        return str(ipaddress.ip_interface(addr).ip)

    @property
    def mac(self) -> str:
        return self.run("cat", f"/sys/class/net/{self.ifname}/address").stdout.strip()

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str, check: bool = True, input: str | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return _run(self.cmd(*argv), check=check, input=input, timeout=timeout)

    def popen(self, argv: Sequence[str], *, stdout: int | IO[Any] | None = None,
              stderr: int | IO[Any] | None = None, env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[Any]:
        """Start a process in this host; the lab kills it on close."""
        proc = subprocess.Popen(self.cmd(*argv), stdout=stdout, stderr=stderr, env=env,
                                start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def addresses(self) -> list[str]:
        out = self.run("ip", "-o", "addr", "show", "dev", self.ifname).stdout
        found = []
        for line in out.splitlines():
            parts = line.split()
            for fam in ("inet", "inet6"):
                if fam in parts:
                    found.append(parts[parts.index(fam) + 1])
        return found

    def has_address(self, addr: str) -> bool:
        ip = ipaddress.ip_interface(addr).ip
        return any(ipaddress.ip_interface(a).ip == ip for a in self.addresses())

    def add_address(self, addr: str) -> None:
        _check_documentation_address(addr)
        self.run("ip", "addr", "add", addr, "dev", self.ifname, "nodad"
                 if ":" in addr else "noprefixroute")

    def link_down(self) -> None:
        """The host dies, as far as the network can tell."""
        self.run("ip", "link", "set", self.ifname, "down")

    def link_up(self) -> None:
        self.run("ip", "link", "set", self.ifname, "up")

    def set_loss(self, percent: int) -> None:
        """Drop `percent`% of frames in each direction on this host's link (ARP too)."""
        self.clear_loss()
        if percent <= 0:
            return
        rule = (f"table netdev minisft_lab_loss {{\n chain ingress_loss {{\n"
                f"  type filter hook ingress device \"{{dev}}\" priority 0;\n"
                f"  numgen random mod 100 < {int(percent)} drop\n }}\n}}\n")
        self.run("nft", "-f", "-", input=rule.replace("{dev}", self.ifname))
        self.lab.switch_run("nft", "-f", "-", input=rule.replace("{dev}", self.port))

    def clear_loss(self) -> None:
        self.run("nft", "delete", "table", "netdev", "minisft_lab_loss", check=False)
        self.lab.switch_run("nft", "delete", "table", "netdev", "minisft_lab_loss", check=False)

    def ping(self, target: str, *, count: int = 1, timeout: float = 1.0) -> bool:
        proc = self.run("ping", "-n", "-q", "-c", str(count), "-W", f"{timeout:g}", target,
                        check=False, timeout=timeout * count + 5)
        return proc.returncode == 0

    def stop_process(self, proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
        """Stop one process started with `popen` (its whole group) and forget it."""
        stop_process_group(proc, timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def kill_processes(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


def stop_process_group(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM a process started in its own session (the whole group: daemons with their
    children), SIGKILL it if it is still there after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


class Lab:
    """A bridge and hosts in namespaces named `sft<id>-...`, unique per lab."""

    def __init__(self, name: str = "lab") -> None:
        self.id = secrets.token_hex(3)
        self.prefix = f"sft{self.id}"
        self.switch_ns = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._closed = False
        self._partitions: set[tuple[str, str]] = set()
        _run(["ip", "netns", "add", self.switch_ns])
        atexit.register(self.close)
        try:
            self.switch_run("ip", "link", "add", "br0", "type", "bridge")
            self.switch_run("ip", "link", "set", "br0", "up")
        except Exception:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def switch_run(self, *argv: str, check: bool = True,
                   input: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.switch_ns, *argv], check=check, input=input)

    def add_host(self, name: str, ipv4: str | None = None, ipv6: str | None = None) -> Host:
        if name in self.hosts:
            raise LabError(f"host {name} exists")
        for addr in (ipv4, ipv6):
            if addr:
                _check_documentation_address(addr)
        ns = f"{self.prefix}-{name}"
        port = f"p{len(self.hosts)}-{name}"[:15]
        host = Host(self, name, ns, port, ipv4, ipv6)
        self.hosts[name] = host
        _run(["ip", "netns", "add", ns])
        host.run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv6.conf.default.accept_dad=0", "net.ipv4.ping_group_range=0 0")
        _run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth",
              "peer", "name", port, "netns", self.switch_ns])
        self.switch_run("ip", "link", "set", port, "master", "br0", "up")
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "link", "set", "eth0", "up")
        if ipv4:
            host.run("ip", "addr", "add", ipv4, "dev", "eth0")
        if ipv6:
            host.run("ip", "addr", "add", ipv6, "dev", "eth0", "nodad")
        return host

    def partition(self, a: str, b: str) -> None:
        """Cut all traffic between hosts a and b (ARP included); others still see both."""
        self._partitions.add((a, b))
        self._apply_partitions()

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        if a is None:
            self._partitions.clear()
        else:
            self._partitions.discard((a, b) if (a, b) in self._partitions else (b or "", a))
        self._apply_partitions()

    def _apply_partitions(self) -> None:
        self.switch_run("nft", "delete", "table", "bridge", "minisft_lab_partition", check=False)
        if not self._partitions:
            return
        rules = []
        for a, b in sorted(self._partitions):
            pa, pb = self.hosts[a].port, self.hosts[b].port
            rules.append(f'  iifname "{pa}" oifname "{pb}" drop')
            rules.append(f'  iifname "{pb}" oifname "{pa}" drop')
        text = ("table bridge minisft_lab_partition {\n chain forward_drop {\n"
                "  type filter hook forward priority 0;\n" + "\n".join(rules) + "\n }\n}\n")
        self.switch_run("nft", "-f", "-", input=text)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            host.kill_processes()
        for ns in [h.ns for h in self.hosts.values()] + [self.switch_ns]:
            _run(["ip", "netns", "del", ns], check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)


def leftover_namespaces() -> list[str]:
    """Lab namespaces still present (a test that leaks them fails the suite)."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("sft")]
