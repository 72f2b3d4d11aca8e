"""The Debian package of the current tree, installed for a test session.

`installed_package()` builds `minisft_<version>_<arch>.deb` with scripts/build-deb (cached
under build/deb-cache/ by a hash of the tree, so an unchanged tree is built once), installs
it with dpkg and yields an `InstalledPackage` with the paths PACKAGE-LAYOUT.md names; at the
end it purges the package. Every dpkg step of every worktree on the machine goes through
one lock, /tmp/minisft-dpkg.lock (flock(1) and fcntl.flock share it); it is held from
before the install to after the purge, so two sessions never install over or purge under
each other.

    @pytest.fixture(scope="session")
    def installed_minisft() -> Iterator[InstalledPackage]:
        yield from installed_package()
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "deb-cache"
LOCK = Path("/tmp/minisft-dpkg.lock")
PACKAGE = "minisft"

# Where the file-list snapshot looks (what a package can touch) and what it ignores there:
# dpkg's and apt's own bookkeeping, caches, logs of other programs, scratch space.
SNAPSHOT_ROOTS = ("/etc", "/opt", "/usr", "/var", "/srv")
SNAPSHOT_IGNORED = ("/var/lib/dpkg/", "/var/cache/", "/var/lib/apt/", "/var/log/", "/var/tmp/",
                    "/etc/netns/", "/var/lib/systemd/", "/var/lib/icinga2/", "/etc/ld.so.cache")


class PackageError(RuntimeError):
    pass


@dataclass(frozen=True)
class InstalledPackage:
    deb: Path
    version: str
    files_before: frozenset[str] = field(repr=False)  # the file list before the install
    prefix: Path = Path("/opt/minisft")
    minisft: Path = Path("/usr/bin/minisft")
    check_minisft: Path = Path("/usr/bin/check_minisft")
    snmp_pass: Path = Path("/usr/bin/minisft-snmp-pass")
    nagios_plugin: Path = Path("/usr/lib/nagios/plugins/check_minisft")
    traphandler: Path = Path("/usr/sbin/minisft-traphandler")
    log_dir: Path = Path("/var/log/minisft")
    mib: Path = Path("/usr/share/snmp/mibs/MINISFT-MIB.txt")
    unit: Path = Path("/lib/systemd/system/minisft.service")
    unit_enabled_link: Path = Path("/etc/systemd/system/multi-user.target.wants/minisft.service")
    config: Path = Path("/etc/minisft/minisft.yaml")
    man_pages: tuple[Path, ...] = (Path("/usr/share/man/man8/minisft.8.gz"),
                                   Path("/usr/share/man/man8/check_minisft.8.gz"))
    bash_completion: Path = Path("/usr/share/bash-completion/completions/minisft")
    doc_dir: Path = Path("/usr/share/doc/minisft")

    def is_installed(self) -> bool:
        return is_installed()

    def remove(self) -> None:
        """`dpkg --remove`: the programs go, the conffile and systemd state stay."""
        _dpkg("--remove", PACKAGE)

    def purge(self) -> None:
        _dpkg("--purge", PACKAGE)


def tree_hash() -> str:
    """A hash of the files git sees in the tree (tracked and new, not ignored), as they are
    now: content for files, target for symbolic links."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    digest = hashlib.sha256()
    for name in sorted(n for n in names if n):
        path = REPO / os.fsdecode(name)
        digest.update(name + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.fsencode(os.readlink(path)))
        elif path.is_file():
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build_deb() -> Path:
    """The .deb of the current tree, built by scripts/build-deb unless cached."""
    out = CACHE / tree_hash()
    debs = sorted(out.glob(f"{PACKAGE}_*.deb"))
    if debs:
        return debs[0]
    if out.parent.exists():  # keep one cached build: the tree changes often while working
        shutil.rmtree(out.parent)
    tmp = out.with_name(out.name + ".tmp")
    proc = subprocess.run([str(REPO / "scripts" / "build-deb"), "--out", str(tmp)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise PackageError(f"scripts/build-deb failed ({proc.returncode}):\n"
                           f"{proc.stdout}{proc.stderr}")
    tmp.rename(out)
    debs = sorted(out.glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise PackageError(f"scripts/build-deb left {len(debs)} packages in {out}")
    return debs[0]


def is_installed() -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True,
                          text=True, check=False)
    # "install ok installed", or "deinstall ok config-files" (removed, not purged)
    return proc.returncode == 0 and proc.stdout.split()[-1:] not in ([], ["not-installed"])


def _dpkg(*args: str) -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(["dpkg", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    if proc.returncode != 0:
        raise PackageError(f"dpkg {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def file_list() -> frozenset[str]:
    """Every path under SNAPSHOT_ROOTS except the ignored bookkeeping, plus everything under
    /var/log/minisft (the one log directory that is ours)."""
    proc = subprocess.run(["find", *SNAPSHOT_ROOTS, "-xdev"], capture_output=True, text=True,
                          check=False)
    paths = proc.stdout.splitlines()
    return frozenset(p for p in paths
                     if p.startswith("/var/log/minisft") or not p.startswith(SNAPSHOT_IGNORED))


def owned_by_another_package(paths: set[str]) -> set[str]:
    """Of these paths, those some installed package owns (e.g. installed meanwhile by a
    parallel apt-get that does not take our lock)."""
    if not paths:
        return set()
    proc = subprocess.run(["dpkg-query", "-S", *sorted(paths)], capture_output=True, text=True,
                          check=False)
    owned = set()
    for line in proc.stdout.splitlines():
        owners, _, path = line.partition(": ")
        if PACKAGE not in [o.strip() for o in owners.split(",")]:
            owned.add(path)
    return owned


def ensure_system_user(name: str) -> None:
    """The Debian user a tool runs as (nagios, Debian-snmp); their packages create them, this
    only covers a machine without them (as adduser --system would)."""
    if subprocess.run(["getent", "passwd", name], capture_output=True, check=False).returncode:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)


def installed_package() -> Iterator[InstalledPackage]:
    if os.geteuid() != 0 or shutil.which("dpkg") is None:
        raise PackageError("installing the package needs root on a Debian machine")
    deb = build_deb()
    version = subprocess.run(["dpkg-deb", "--field", str(deb), "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    with open(LOCK, "a") as lock:
        started = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.monotonic() - started
        if waited > 1:
            print(f"[package] waited {waited:.0f} s for {LOCK}", file=sys.stderr)
        try:
            if is_installed():  # left by a session that was killed: start from clean
                _dpkg("--purge", PACKAGE)
            before = file_list()
            _dpkg("--install", str(deb))
            yield InstalledPackage(deb=deb, version=version, files_before=before)
        finally:
            if is_installed():
                _dpkg("--purge", PACKAGE)
            fcntl.flock(lock, fcntl.LOCK_UN)
