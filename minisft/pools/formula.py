"""Which member holds which pool address: a pure, deterministic formula.

Every member computes the assignment on its own from the same inputs (pool name, the
address list, the members it considers alive with their weights, the preferred map, the
configured roster) and gets the same answer: members with the same view agree without
talking.

The formula, in three steps:

1. **Weighted rendezvous (HRW) ranking.** For an address ``a`` and member ``m`` with weight
   ``w``, ``h = sha256(pool NUL a NUL m)``; its first 8 bytes give ``u`` in (0, 1) and the
   score is ``-w / ln(u)`` (the logarithmic method of weighted rendezvous hashing, which
   makes a member win an address with probability ``w / sum(w)``). Each address ranks the
   members by descending score, ties broken by name. Only stable inputs are hashed: no
   list positions, so the order in which anything is given never matters.

2. **Bounded load on the full roster ("base" layer).** Addresses are walked in a fixed
   order (by ``sha256(pool NUL a)``). A preferred address goes to its preferred member
   first. Every other address goes to the first member of its ranking that is below its
   cap ``ceil(total * w / sum_w)``. This is done over the *configured roster*, dead or
   alive, so it does not change when members die: it is the pool's home assignment.

3. **Orphans ("alive" layer).** Addresses whose home member is alive stay home. The others
   (orphans) are walked in the same fixed order and each goes to the first *alive* member
   of its ranking that is below its cap over the alive members,
   ``ceil(total * w / sum_w_alive)`` (the home addresses a member keeps count against it).

Properties (tested with hypothesis in tests/unit/test_pool_formula.py):

* every address goes to exactly one alive member, and nothing depends on input order;
* no member holds more than its cap over the alive members (unless ``preferred`` pins more
  addresses on it than its cap: a pin always wins);
* **minimal movement from a healthy pool:** when one member of a fully alive pool dies,
  only its addresses move (step 2 does not depend on liveness), and they spread over the
  survivors within their caps instead of piling onto one; when it returns, exactly those
  come back;
* with members already dead, another death moves its own addresses and may re-spread some
  orphans of the earlier deaths (the orphan walk runs again with new caps). The measured
  extra movement is reported in docs/pools.md; plain bounded-load over the alive members
  (no base layer) moves more, even from a healthy pool.

Scores are IEEE doubles from ``math.log``: identical on every member running CPython on
the same kind of platform, which is what "members agree" requires here.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = ["assign", "caps", "home", "ranking", "score"]

_TWO64 = float(2**64)


def score(pool: str, address: str, member: str, weight: int) -> float:
    """Weighted rendezvous score of `member` for `address`: higher wins."""
    digest = hashlib.sha256(f"{pool}\0{address}\0{member}".encode()).digest()
    # (x + 1) / (2^64 + 1) lies strictly inside (0, 1): the log is finite and negative
    u = (int.from_bytes(digest[:8], "big") + 1.0) / (_TWO64 + 1.0)
    return -float(weight) / math.log(u)


def ranking(pool: str, address: str, members: Mapping[str, int]) -> list[str]:
    """Members ordered by preference for `address` (best first)."""
    return sorted(members, key=lambda m: (-score(pool, address, m, members[m]), m))


def caps(total: int, members: Mapping[str, int]) -> dict[str, int]:
    """The most addresses each member may get: ceil(total * weight / sum of weights)."""
    whole = sum(members.values())
    return {m: (total * w + whole - 1) // whole for m, w in members.items()}


def _walk_key(pool: str, address: str) -> tuple[bytes, str]:
    return hashlib.sha256(f"{pool}\0{address}".encode()).digest(), address


def _place(pool: str, todo: list[str], members: Mapping[str, int], load: Counter[str],
           out: dict[str, str], total: int) -> None:
    cap = caps(total, members)
    for address in todo:
        ranked = ranking(pool, address, members)
        chosen = next((m for m in ranked if load[m] < cap[m]), ranked[0])
        out[address] = chosen
        load[chosen] += 1


def assign(addresses: Iterable[str], members_alive: Mapping[str, int],
           preferred: Mapping[str, str] | None = None,
           roster: Mapping[str, int] | None = None, *, pool: str = "") -> dict[str, str]:
    """Map every address to one alive member (see the module docstring for the formula).

    `members_alive` maps names to weights (>= 1); `roster` is every configured member
    with its weight (defaults to `members_alive`, which degrades to plain bounded-load);
    `preferred` maps an address to the member that gets it whenever that member is alive.
    With no member alive the result is empty.
    """
    alive = dict(members_alive)
    for name, weight in alive.items():
        if weight < 1:
            raise ValueError(f"member {name!r}: weight must be at least 1, got {weight}")
    if not alive:
        return {}
    full = {**dict(roster or {}), **alive}
    pins = dict(preferred or {})
    walk = sorted(set(addresses), key=lambda a: _walk_key(pool, a))
    total = len(walk)

    home: dict[str, str] = {}
    load: Counter[str] = Counter()
    for address in walk:
        if pins.get(address) in full:
            home[address] = pins[address]
            load[pins[address]] += 1
    _place(pool, [a for a in walk if a not in home], full, load, home, total)

    out = {a: m for a, m in home.items() if m in alive}
    if len(out) == total:
        return out
    load = Counter(out.values())
    _place(pool, [a for a in walk if a not in out], alive, load, out, total)
    return out


def home(addresses: Iterable[str], roster: Mapping[str, int],
         preferred: Mapping[str, str] | None = None, *, pool: str = "") -> dict[str, str]:
    """The home assignment (step 2): where each address goes while every configured
    member is alive, its preferred owner. Monitoring compares the holder with it."""
    return assign(addresses, roster, preferred, roster, pool=pool)
