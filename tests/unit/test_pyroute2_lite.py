"""The daemon loads pyroute2's rtnetlink part only, and pyroute2 still works whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_link_module_loads_rtnetlink_only() -> None:
    out = run("import sys\n"
              "import minisft.net.link as link\n"
              "assert link.IPRoute.__module__ == 'pyroute2.iproute.linux'\n"
              "loaded = sorted(m for m in sys.modules if m.startswith('pyroute2'))\n"
              "print(len(loaded))\n"
              "for m in ('pyroute2.ndb', 'pyroute2.ipdb', 'pyroute2.ipvs', 'pyroute2.plan9',\n"
              "          'pyroute2.netlink.nl80211', 'sqlite3'):\n"
              "    assert m not in sys.modules, m\n")
    # `import pyroute2` loads ~225 modules; rtnetlink alone ~150
    assert int(out) < 190


def test_the_whole_package_still_imports_afterwards() -> None:
    out = run("import minisft.net.link as link\n"
              "import pyroute2\n"
              "from pyroute2 import NDB, IPRoute, NetlinkError\n"
              "from pyroute2.netlink.exceptions import NetlinkError as E\n"
              "assert IPRoute is link.IPRoute and NetlinkError is E is link.NetlinkError\n"
              "print(pyroute2.__version__, NDB.__name__)\n")
    version, ndb = out.split()
    assert version[0].isdigit() and ndb == "NDB"


def test_a_bad_name_is_an_attribute_error() -> None:
    out = run("import minisft.net.link\n"
              "import pyroute2\n"
              "try:\n"
              "    pyroute2.no_such_thing\n"
              "except AttributeError as exc:\n"
              "    print(exc)\n")
    assert "no_such_thing" in out
