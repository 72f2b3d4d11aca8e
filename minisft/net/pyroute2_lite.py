"""pyroute2's rtnetlink client without the rest of pyroute2.

`import pyroute2` (and so `from pyroute2 import IPRoute`) runs a package __init__ that
imports every netlink family pyroute2 supports: NDB with sqlite3, IPDB, IPVS, nl80211,
WireGuard, conntrack, plan9... 226 modules and about 12 MiB of RSS, held for the life of
the daemon, which needs rtnetlink only (148 modules, about 6 MiB).

`install()` puts an empty shell of the `pyroute2` package in sys.modules: the package's
real spec and __path__, its __init__ not run. Submodules (`pyroute2.iproute.linux`)
import through it as usual, and nothing else is loaded. Anyone who asks the shell for a
name that is not a submodule (`from pyroute2 import NDB`, `pyroute2.__version__`) runs
the real __init__ at that moment, into the same module object, and gets the whole
package: the shell changes what is loaded, never what works.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from typing import Any

PACKAGE = "pyroute2"
_lock = threading.Lock()


def install() -> None:
    """Put the shell in place unless pyroute2 is imported already (then: nothing to do)."""
    with _lock:
        if PACKAGE in sys.modules:
            return
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            raise ImportError("the Python package pyroute2 is not installed")
        shell = importlib.util.module_from_spec(spec)
        loader = spec.loader
        path = list(spec.submodule_search_locations)

        def __getattr__(name: str) -> Any:
            # The import system asks the parent for a submodule before importing it
            # (`from pyroute2 import config`): answer "not here" so it imports it.
            if importlib.machinery.PathFinder.find_spec(f"{PACKAGE}.{name}", path):
                raise AttributeError(name)
            with _lock:
                if shell.__dict__.get("__getattr__") is __getattr__:
                    del shell.__dict__["__getattr__"]
                    loader.exec_module(shell)
            try:
                return shell.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

        shell.__dict__["__getattr__"] = __getattr__
        sys.modules[PACKAGE] = shell


def rtnetlink() -> tuple[Any, Any]:
    """(IPRoute, NetlinkError), loading only what rtnetlink needs."""
    install()
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError

