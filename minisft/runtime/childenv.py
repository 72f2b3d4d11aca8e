"""The environment our child processes get: a clean one, never the daemon's own.

Secrets can reach the daemon through its environment (`community_env`, `auth_key_env`,
`password_env`... in the config, or a systemd `Environment=`/`EnvironmentFile=`). A child
that inherited it (an IsAlive `command` check, the apprise worker) could print it, log it
or pass it on. Children get only the variables below plus what their config sets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# what a program needs to run as it would from a login shell: no credentials
_BASE = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
_BASE_PREFIXES = ("LC_",)
# how to reach the outside world (the apprise worker sends mail and chat over HTTP)
NETWORK = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
           "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_env(extra: Mapping[str, str] | None = None, *,
              keep: tuple[str, ...] = ()) -> dict[str, str]:
    """A clean environment: the basics, the named `keep` variables, then `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k in _BASE or k in keep or k.startswith(_BASE_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(extra or {})
    return env
